"""The exception tree: every error knows its exit code and its one-line message.

    MarketdataError                 exit 1   run failed
    ├── InputError                  exit 2   bad input or usage (user can fix the command)
    │   ├── ConfigError                      a setting is malformed
    │   ├── UnknownProviderError
    │   ├── UnsupportedIntervalError         asked before any request is sent
    │   ├── NoDataError                      unknown symbol / nothing stored
    │   └── DatabaseConfigError              no such database / role / privilege / table,
    │                                        a read-only or unopenable SQLite file
    ├── DatabaseUnavailableError    exit 75  server unreachable or gone mid-way (transient)
    ├── DatabaseBusyError           exit 75  deadlock, serialization failure, lock or statement
    │                                        timeout, SQLite busy (transient: retry the pair)
    ├── DatabaseDataError           exit 1   integrity, data, disk full, pool timeout: the
    │                                        pair fails, a run goes on (and ends with exit 3)
    ├── SchemaError                 exit 1   migrations pending / schema drift
    ├── ProviderError               exit 1   raised at the provider boundary
    │   ├── ProviderUnavailableError         transient: outage, 5xx, timeouts, 429
    │   ├── SymbolNotListedError             permanent: provider does not list it
    │   ├── OutOfReachError                  permanent: window beyond what it serves
    │   ├── AccessRefusedError               permanent: key missing or refused, location blocked
    │   └── BadPayloadError                  permanent: body is not what the API promises
    ├── PartialRunError             exit 3   some pairs failed, others were written
    └── RunInterruptedError         exit 130 / 143

Vendor exceptions (httpx, psycopg, sqlalchemy) are translated where they are raised: nothing
above this module sees them. Database errors are sorted by SQLSTATE and SQLite result code,
never by exception class, in one table (storage/dberrors.py). Only the CLI root turns these
into exit codes.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in README."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    PARTIAL = 3
    TEMPFAIL = 75
    SIGINT = 130
    SIGTERM = 143


class MarketdataError(Exception):
    """Base of every error this tool raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE
    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and, when there is one, what to do next, on a single line, with every
        known secret masked (this line goes to stderr, logs, JSON and the run ledger)."""
        from marketdata.redact import scrub

        text = self.message if not self.hint else f"{self.message}: {self.hint}"
        return scrub(" ".join(text.split()))


class InputError(MarketdataError):
    """Bad input or usage: the command line, a setting or a file the user gave."""

    exit_code = ExitCode.USAGE


class ConfigError(InputError):
    """A setting is malformed."""


class UnknownProviderError(InputError):
    """A provider name that is not registered."""


class UnsupportedIntervalError(InputError):
    """An interval the provider (or the tool) does not serve."""


class NoDataError(InputError):
    """Nothing stored (or listed) for what was asked."""


class DatabaseConfigError(InputError):
    """The database is reachable but not usable as configured: a database, role, privilege or
    table that does not exist, a read-only or unopenable SQLite file. The user must fix it."""


class DatabaseUnavailableError(MarketdataError):
    """The database server cannot be reached now; trying later may work."""

    exit_code = ExitCode.TEMPFAIL
    transient = True


class DatabaseBusyError(MarketdataError):
    """The server is up but this statement lost a conflict or hit one of our timeouts
    (deadlock, serialization failure, lock or statement timeout, SQLite busy): retry it."""

    exit_code = ExitCode.TEMPFAIL
    transient = True


class DatabaseDataError(MarketdataError):
    """The database refused this write or read for a reason retrying will not fix
    (a constraint, a value out of range, a full disk, no free pooled connection, a bug)."""


class SchemaError(MarketdataError):
    """The database schema is not at the revision this version expects."""


class ProviderError(MarketdataError):
    """A data provider failed; raised at the provider boundary, never a vendor exception."""

    def __init__(
        self, message: str, *, provider: str, symbol: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.provider = provider
        self.symbol = symbol


class ProviderUnavailableError(ProviderError):
    """Outage, 5xx, timeout or rate limit: worth a retry or the next provider."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        symbol: str | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, symbol=symbol, hint=hint)
        self.retry_after = retry_after
        # the wait before the retry it causes, once decided: providers wait on the run's
        # cancellable clock, not in stamina, so stamina's own record of the wait is 0
        self.retry_wait: float | None = None


class SymbolNotListedError(ProviderError):
    """The provider does not list this symbol (unknown or delisted)."""


class OutOfReachError(ProviderError):
    """The asked window lies beyond what the provider serves."""


class AccessRefusedError(ProviderError):
    """The provider refuses us: an API key missing or refused, a blocked location or a bot
    check. Retrying will not help; the next provider in the chain may."""


class BadPayloadError(ProviderError):
    """The provider answered with something that is not its documented format."""


class PartialRunError(MarketdataError):
    """Some pairs failed while others were written."""

    exit_code = ExitCode.PARTIAL


class RunInterruptedError(MarketdataError):
    """SIGINT or SIGTERM arrived; pairs not yet committing were rolled back."""

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(
            f"interrupted by {name}; pairs already stored are kept, the others were rolled back"
        )
        self.exit_code = ExitCode.SIGTERM if signum == signal.SIGTERM else ExitCode.SIGINT
