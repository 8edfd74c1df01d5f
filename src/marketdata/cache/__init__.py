"""The cache in front of the database: Redis, or a local disk cache, with automatic fallback.

`base` holds the interface every backend implements, `redis_backend` and `disk` the two
backends, `fallback` the wrapper a command uses (Redis failing -> disk -> uncached), `keys`
the documented key names, and `market` what is cached for `show` and `compare`.
"""
