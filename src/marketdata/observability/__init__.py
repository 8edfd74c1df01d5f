"""Observability: logging, statsd metrics and webhook alerts."""
