"""The Provider protocol, the shared HTTP machinery (rate limit, retries, breaker) and paging.

A provider module holds endpoints, parameters and the payload -> candles mapping; everything
about talking HTTP well lives here, once. Vendor exceptions (httpx) stop here: providers raise
only the ProviderError family.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from marketdata.cancel import Cancel
from marketdata.domain import Candles, Interval, Window
from marketdata.errors import (
    BadPayloadError,
    ProviderError,
    ProviderUnavailableError,
    SymbolNotListedError,
    UnsupportedIntervalError,
)
from marketdata.observability.metrics import Metrics, NullMetrics
from marketdata.providers.ratelimit import LocalRateLimiter, RateLimit, RateLimiter
from marketdata.redact import mask_url
from marketdata.tls import untrusted_certificate

if TYPE_CHECKING:
    import httpx

    from marketdata.config import Settings

# A browser-like User-Agent: Yahoo answers 429 to anything else, Kraken wants one at all.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36 marketdata/0.1"
)
# After this many symbols in a row fail with transient errors (each after its own retries),
# the provider is given up for the rest of the run instead of retrying every symbol.
BREAKER_THRESHOLD = 3
# The longest Retry-After a run waits for before retrying; longer means "not this run".
RETRY_AFTER_LIMIT = 60.0


class Provider(Protocol):
    """A source of candles."""

    name: ClassVar[str]
    intervals: ClassVar[frozenset[Interval]]
    max_rows_per_request: ClassVar[int]
    rate_limit: ClassVar[RateLimit]

    def __init__(self, ctx: ProviderContext) -> None:
        """Providers are built from the run's context (and never build their own client)."""
        ...

    def provider_symbol(self, symbol: str) -> str:
        """The provider's own name for a canonical symbol."""
        ...

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Candles of `symbol` starting inside `window`, ascending, no duplicates."""
        ...

    def requests_needed(self, interval: Interval, window: Window) -> int:
        """How many requests `fetch` would send for this window (for dry-run plans)."""
        ...

    def check(self) -> float:
        """Send one cheap request; return its latency in ms or raise ProviderError."""
        ...

    @property
    def base_url(self) -> str:
        """Where the provider is reached ('' for local ones)."""
        ...


@dataclass
class ProviderContext:
    """What a provider is handed: settings, one shared HTTP client, metrics and limits."""

    settings: Settings
    http: httpx.Client | None = None
    metrics: Metrics = field(default_factory=NullMetrics)
    # provider name -> canonical symbol -> provider symbol (from the markets table)
    symbol_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # canonical symbol -> the trading calendar its market follows (from the markets table)
    calendars: Mapping[str, str] = field(default_factory=dict)
    limiter_factory: Callable[[str, RateLimit], RateLimiter] = LocalRateLimiter.create
    # the run's stop request: every wait of a provider watches it
    cancel: Cancel = field(default_factory=Cancel)
    # replaces the waiting itself (tests record the seconds asked for instead of sleeping);
    # None waits on `cancel`, returning early when a stop is asked for
    sleep: Callable[[float], None] | None = None
    # "now" in epoch seconds for what a provider can still serve (Kraken's 720 bars, Yahoo's
    # intraday reach): the run's clock, so a pinned clock pins the whole run
    clock: Callable[[], float] = time.time

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def wait(self, seconds: float) -> None:
        """Wait `seconds` (Retry-After, backoff, a provider's pause); RunInterruptedError as
        soon as the run is asked to stop, so no wait outlives a signal by more than a moment."""
        self.cancel.check()
        if self.sleep is None:
            self.cancel.sleep(seconds)
        else:
            self.sleep(seconds)
            self.cancel.check()

    def client(self) -> httpx.Client:
        """The shared HTTP client, built on first use (once, whichever thread asks first)."""
        with self._lock:
            if self.http is None:
                self.http = build_http_client(self.settings)
            return self.http

    def close(self) -> None:
        """Close the HTTP client (and its keep-alive connections) if one was built."""
        if self.http is not None:
            self.http.close()
            self.http = None

    def __enter__(self) -> ProviderContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_http_client(settings: Settings) -> httpx.Client:
    """The one place an httpx client is built: timeouts, keep-alive limits, headers."""
    import httpx

    from marketdata.tls import ssl_context

    timeout = httpx.Timeout(settings.http_timeout, connect=min(settings.http_timeout, 5.0))
    return httpx.Client(
        timeout=timeout,
        verify=ssl_context(settings.http_ca_bundle),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json, text/csv;q=0.9"},
        follow_redirects=True,
    )


class BaseProvider:
    """Common behaviour: symbol mapping with overrides, interval checks, paging windows."""

    name: ClassVar[str] = ""
    intervals: ClassVar[frozenset[Interval]] = frozenset()
    max_rows_per_request: ClassVar[int] = 1000
    rate_limit: ClassVar[RateLimit] = RateLimit(per_second=5.0, burst=5)
    symbol_word: ClassVar[str] = "ID"  # what the provider calls its own symbol, for hints

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx
        self._overrides = ctx.symbol_overrides.get(self.name, {})

    @property
    def base_url(self) -> str:
        """Local providers have none."""
        return ""

    def provider_symbol(self, symbol: str) -> str:
        """The stored override for this provider, else the provider's own mapping."""
        return self._overrides.get(symbol) or self.map_symbol(symbol)

    def map_symbol(self, symbol: str) -> str:
        """Default mapping: the canonical symbol as it is."""
        return symbol

    def not_listed(
        self, symbol: str | None, detail: str = "", *, hint: str | None = None
    ) -> SymbolNotListedError:
        """The per-symbol error for a symbol this provider does not list, with by default the
        hint to map it to the provider's own name (`symbol_word`: PRODUCT, PAIR, ID ...)."""
        return SymbolNotListedError(
            f"{self.name} does not list {symbol or 'the symbol asked for'}"
            + (f": {detail}" if detail else ""),
            provider=self.name,
            symbol=symbol,
            hint=hint
            or "check the symbol, or map it with `marketdata markets add "
            f"{symbol or 'SYMBOL'} --provider-symbol {self.name}={self.symbol_word}`",
        )

    def require_interval(self, interval: Interval) -> None:
        """Refuse an interval this provider does not serve, before any request is sent."""
        if interval not in self.intervals:
            raise unsupported_interval(self, interval)

    def pages(self, interval: Interval, window: Window) -> Iterator[Window]:
        """Consecutive sub-windows of at most `max_rows_per_request` bars each."""
        span = self.max_rows_per_request * interval.seconds
        start = interval.floor(window.start)
        while start < window.end:
            end = min(start + span, window.end)
            yield Window(start, end)
            start = end

    def requests_needed(self, interval: Interval, window: Window) -> int:
        """One request per page."""
        return sum(1 for _ in self.pages(interval, window))

    def fetch(self, symbol: str, interval: Interval, window: Window) -> Candles:
        """Fetch page by page and normalise: ordered, no duplicates, inside the window."""
        self.require_interval(interval)
        pages = [self.fetch_page(symbol, interval, page) for page in self.pages(interval, window)]
        batch = Candles.joined(symbol, interval, self.name, pages)
        return batch.normalised(window.start, window.end)

    def fetch_page(self, symbol: str, interval: Interval, page: Window) -> Candles:
        """One request's worth of candles; providers that page by window implement this."""
        raise NotImplementedError

    def check(self) -> float:
        """Providers override with one cheap request."""
        return 0.0


class CircuitBreaker:
    """Failures in a row of one provider, shared by every worker thread of a run.

    Each count is a read-modify-write, so it happens under a lock: without it two threads
    failing at once can count one failure, and a success can be undone by a stale write.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._failed_in_a_row = 0
        self._lock = threading.Lock()

    @property
    def failed_in_a_row(self) -> int:
        """Failures since the last success."""
        with self._lock:
            return self._failed_in_a_row

    def open_after(self) -> int | None:
        """The failures in a row when the breaker is open (the provider is given up), else
        None."""
        with self._lock:
            failed = self._failed_in_a_row
        return failed if failed >= self.threshold else None

    def failure(self) -> None:
        """Count one request that failed after its retries."""
        with self._lock:
            self._failed_in_a_row += 1

    def success(self) -> None:
        """A request went through: the provider is up again."""
        with self._lock:
            self._failed_in_a_row = 0


class HttpProvider(BaseProvider):
    """A provider reached over HTTP: rate-limited, retried, and given up when clearly down."""

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx)
        self._limiter = ctx.limiter_factory(self.name, self.rate_limit)
        self.breaker = CircuitBreaker(BREAKER_THRESHOLD)

    @property
    def base_url(self) -> str:
        """From <PROVIDER>_BASE_URL."""
        return self.ctx.settings.base_url(self.name)

    def get(
        self, path: str, params: Mapping[str, Any] | None = None, *, symbol: str | None = None
    ) -> httpx.Response:
        """GET with rate limiting and retries; returns a response that `classify` accepted."""
        import stamina

        failed = self.breaker.open_after()
        if failed is not None:
            raise ProviderUnavailableError(
                f"{self.name} is given up for the rest of this run after "
                f"{failed} failures in a row",
                provider=self.name,
                symbol=symbol,
            )
        settings = self.ctx.settings
        waits = _Waits()
        try:
            for attempt in stamina.retry_context(
                on=waits.hook,
                attempts=settings.http_retry_attempts,
                timeout=None,
                wait_initial=0.5,
                wait_max=settings.http_retry_wait_max,
                wait_jitter=0,
            ):
                with attempt:
                    # the wait before a retry happens here, on the run's cancellable clock
                    # (stamina is told to wait 0): a stop signal ends it at once
                    if waits.pending is not None:
                        self.ctx.wait(waits.pending)
                        waits.pending = None
                    waits.backoff = attempt.next_wait
                    response = self._send(path, params, symbol)
        except ProviderUnavailableError:
            self.breaker.failure()
            raise
        self.breaker.success()
        return response

    def _send(
        self, path: str, params: Mapping[str, Any] | None, symbol: str | None
    ) -> httpx.Response:
        import httpx

        self._limiter.acquire()
        metrics = self.ctx.metrics
        metrics.incr(f"provider.{self.name}.requests")
        started = time.perf_counter()
        try:
            response = self.ctx.client().get(
                self.base_url + path, params=params, headers=self.headers()
            )
        except httpx.TimeoutException:
            metrics.incr(f"provider.{self.name}.errors")
            raise ProviderUnavailableError(
                f"{self.name} timed out after {self.ctx.settings.http_timeout:g}s",
                provider=self.name,
                symbol=symbol,
            ) from None
        except httpx.HTTPError as exc:
            metrics.incr(f"provider.{self.name}.errors")
            refused = untrusted_certificate(exc)
            if refused is not None:  # not transient: retrying the same certificate is futile
                raise ProviderError(
                    f"{self.name} at {mask_url(self.base_url)} presented a certificate that is "
                    f"not trusted ({refused.verify_message})",
                    provider=self.name,
                    symbol=symbol,
                    hint="if a proxy or mirror re-signs TLS, set HTTP_CA_BUNDLE to its CA "
                    "certificate file",
                ) from None
            raise ProviderUnavailableError(
                f"{self.name} unreachable at {mask_url(self.base_url)}: {_cause(exc)}",
                provider=self.name,
                symbol=symbol,
            ) from None
        finally:
            metrics.timing(f"provider.{self.name}.latency_ms", elapsed_ms(started))
        error = self.classify(response, symbol)
        if error is not None:
            metrics.incr(f"provider.{self.name}.errors")
            raise error
        return response

    def headers(self) -> dict[str, str]:
        """Extra request headers (API keys); none by default."""
        return {}

    def classify(self, response: httpx.Response, symbol: str | None) -> ProviderError | None:
        """Turn an answer into an error, or None when it carries data.

        The default: 429, 418 (a ban after 429s) and 5xx are transient (Retry-After
        honoured), other 4xx permanent.
        Providers extend this for errors hidden in 200 bodies and for unknown symbols.
        """
        status = response.status_code
        if status == 429 or status == 418 or status >= 500:
            return ProviderUnavailableError(
                f"{self.name} answered HTTP {status}{_snippet(response)}",
                provider=self.name,
                symbol=symbol,
                retry_after=retry_after_seconds(response, self.ctx.clock()),
            )
        if status >= 400:
            return BadPayloadError(
                f"{self.name} refused the request with HTTP {status}{_snippet(response)}",
                provider=self.name,
                symbol=symbol,
            )
        return None

    def json(self, response: httpx.Response, symbol: str | None = None) -> Any:
        """The JSON body, or BadPayloadError for truncated, HTML or other non-JSON bodies."""
        try:
            return response.json()
        except ValueError:
            raise BadPayloadError(
                f"{self.name} sent a body that is not JSON{_snippet(response)}",
                provider=self.name,
                symbol=symbol,
            ) from None


def unsupported_interval(provider: Provider, interval: Interval) -> UnsupportedIntervalError:
    """The error for an interval a provider does not serve, listing those it does."""
    served = ", ".join(i.value for i in sorted(provider.intervals, key=lambda i: i.seconds))
    return UnsupportedIntervalError(
        f"{provider.name} does not serve {interval.value} candles", hint=f"it serves {served}"
    )


# Added to each computed backoff so that many workers do not retry in step.
BACKOFF_JITTER = 0.5


@dataclass
class _Waits:
    """The wait before the next attempt of one request: decided by `hook` when an attempt
    fails, taken by the caller through ProviderContext.wait (which a stop interrupts)."""

    pending: float | None = None
    backoff: float = 0.0  # stamina's backoff for the attempt in flight (0 in testing mode)

    def hook(self, exc: Exception) -> bool | float:
        """Retry transient provider errors only; Retry-After replaces the backoff.

        A Retry-After longer than RETRY_AFTER_LIMIT (a Binance IP ban can last days) is not
        waited for: the error goes straight to the fallback chain instead. The answer to
        stamina is always a wait of 0: the real wait is `pending`.
        """
        if not isinstance(exc, ProviderUnavailableError):
            return False
        if exc.retry_after is None:
            # jitter spreads retries out; nothing secret depends on it
            jitter = random.uniform(0, BACKOFF_JITTER) if self.backoff else 0.0  # nosec B311
            self.pending = self.backoff + jitter
        elif exc.retry_after <= RETRY_AFTER_LIMIT:
            self.pending = exc.retry_after
        else:
            return False
        exc.retry_wait = self.pending
        return 0.0


def retry_after_seconds(response: httpx.Response, now: float) -> float | None:
    """Retry-After as seconds (delta-seconds, or an HTTP date less `now`: the run's clock,
    ProviderContext.clock, in epoch seconds)."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - now
    if math.isnan(seconds):
        return None
    return max(seconds, 0.0)


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started`, a `time.perf_counter()` reading (request latencies)."""
    return (time.perf_counter() - started) * 1e3


def _cause(exc: Exception) -> str:
    """The exception's own words (e.g. 'Temporary failure in name resolution'), one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__} ({text[:120]})" if text else type(exc).__name__


def _snippet(response: httpx.Response) -> str:
    text = " ".join(response.text[:120].split())
    return f": {text}" if text else ""


def finite_number(value: Any) -> float:
    """A finite float from a JSON number or a decimal string (as Kraken, Binance and Stooq
    send them); ValueError for anything else, booleans, NaN and infinities included."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


# Timestamps a payload may carry, in seconds: 1833 to 3058. Wider values cannot be dates
# (datetime and numpy's int64 columns would overflow on them), only damage.
EPOCH_RANGE = (-(2**32), 2**35)


def epoch_int(value: Any, per_second: int = 1) -> int:
    """Epoch seconds from a JSON integer time (`per_second=1000` for milliseconds); ValueError
    for booleans, non-integers and times outside EPOCH_RANGE."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(value)
    seconds = value // per_second
    if not EPOCH_RANGE[0] <= seconds < EPOCH_RANGE[1]:
        raise ValueError(value)
    return seconds


def bad_row(provider: str, symbol: str, row: Any, reason: str) -> BadPayloadError:
    """A BadPayloadError naming provider, symbol and the offending row."""
    shown = repr(row)
    if len(shown) > 160:
        shown = shown[:157] + "..."
    return BadPayloadError(
        f"{provider} sent a bad row for {symbol}: {reason} in {shown}",
        provider=provider,
        symbol=symbol,
    )
