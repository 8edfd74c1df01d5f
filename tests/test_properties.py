"""Property tests (hypothesis) for bad input: symbols, command-line options, CSV files, every
provider's payload and candle validation. Whatever comes in either works or fails with one of
our errors (one line, its exit code): never a traceback, never a partial write."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from marketdata.config import load_settings
from marketdata.domain import (
    DAY,
    SYMBOL_PATTERN,
    Candles,
    Interval,
    Window,
    parse_symbol,
    parse_symbols,
)
from marketdata.errors import ExitCode, InputError, MarketdataError, ProviderError
from marketdata.providers.base import USER_AGENT, ProviderContext
from marketdata.providers.registry import build_provider
from marketdata.validation import validate
from tests.fakes.limits import no_wait
from tests.fakes.server import Request

# `make mutation` runs every mutant against the same examples, so a kill is not luck
settings.register_profile("mutation", derandomize=True, database=None)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_one_clear_line(exc: MarketdataError) -> None:
    line = exc.one_line()
    assert line and "\n" not in line and "Traceback" not in line


# ------------------------------------------------------------------------------------ symbols


@FUZZ
@given(st.text(max_size=40))
def test_any_text_is_a_canonical_symbol_or_one_usage_error(raw):
    try:
        symbol = parse_symbol(raw)
    except InputError as exc:
        assert exc.exit_code == ExitCode.USAGE
        assert_one_clear_line(exc)
        return
    assert SYMBOL_PATTERN.fullmatch(symbol)
    assert parse_symbol(symbol) == symbol  # canonical forms are fixed points
    assert symbol == raw.strip().upper()


@FUZZ
@given(st.lists(st.text(alphabet="abcXYZ019.^=-, ", max_size=20), max_size=5))
def test_symbol_lists_keep_order_drop_repeats_or_fail_as_usage_errors(values):
    try:
        symbols = parse_symbols(values)
    except InputError as exc:
        assert_one_clear_line(exc)
        return
    assert len(symbols) == len(set(symbols))
    assert all(SYMBOL_PATTERN.fullmatch(s) for s in symbols)


@FUZZ
@given(st.one_of(st.text(max_size=12), st.floats().map(str), st.floats().map(lambda f: f"{f}%")))
def test_a_tolerance_option_is_a_fraction_from_0_to_1_or_one_usage_error(raw):
    from marketdata.verify import parse_tolerance

    try:
        value = parse_tolerance(raw, name="--volume-tolerance")
    except InputError as exc:
        assert exc.exit_code == ExitCode.USAGE and "--volume-tolerance" in exc.one_line()
        assert_one_clear_line(exc)
        return
    assert 0.0 <= value <= 1.0


@FUZZ
@given(st.one_of(st.text(max_size=24), st.datetimes().map(lambda d: d.isoformat())))
@example("¹")  # a digit to str.isdigit(), not to int(): once a ValueError (exit 1)
@example("-²")
def test_a_time_option_is_epoch_seconds_or_one_usage_error(raw):
    from marketdata.domain import parse_time

    try:
        value = parse_time(raw, name="--since")
    except InputError as exc:
        assert exc.exit_code == ExitCode.USAGE and "--since" in exc.one_line()
        assert_one_clear_line(exc)
        return
    assert isinstance(value, int)


# ------------------------------------------------------------------------ command-line options


def run_cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """The console entry point in this process (as `marketdata ARGS`): exit code, out, err."""
    from marketdata.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr(main, "OPTIONS", type(main.OPTIONS)())
        patch.setattr("marketdata.cli.state.OPTIONS", main.OPTIONS)
        try:
            main.run(args)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return code, out.getvalue(), err.getvalue()


option_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["1d", "1h", "5m", "7x", "", " ", "0", "-1", "1e9", "2024-01-31", "nan", "-99999999999999"]
    ),
    st.integers().map(str),
)


@settings(FUZZ, max_examples=20)
@given(
    symbols=option_text,
    interval=option_text,
    since=option_text,
    lookback=option_text,
    provider=st.sampled_from(["synthetic", "synthetic,csv", "nosuch", ""]),
)
def test_ingest_options_plan_or_fail_with_one_line_and_exit_2_writing_nothing(
    tmp_path_factory, symbols, interval, since, lookback, provider
):
    home = tmp_path_factory.mktemp("cli")
    database = home / "md.sqlite3"
    args = [
        "--database-url",
        f"sqlite:///{database}",
        "ingest",
        "--dry-run",
        "--symbols",
        symbols,
        "--interval",
        interval,
        "--since",
        since,
        "--lookback-days",
        lookback,
        "--provider",
        provider,
    ]
    code, _out, err = run_cli(args, {"XDG_DATA_HOME": str(home)})
    assert "Traceback" not in err
    assert code in (ExitCode.OK, ExitCode.USAGE), err
    if code == ExitCode.USAGE:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("marketdata: error: ")]
        usage = [line for line in lines if "Error" in line or "Usage" in line]
        assert len(errors) == 1 or usage, err  # ours, or the option parser's usage message
    assert not database.exists()  # a dry run, good or bad, never creates the database


# ------------------------------------------------------------------------------------ CSV files

csv_field = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["", "nan", "inf", "-1", "1e400", "abc", '"1"', "1,5", " 2 "]),
    st.text(alphabet="0123456789.-eE:TZ ", max_size=12),
)
csv_time = st.one_of(
    st.integers(min_value=1_700_000_000, max_value=1_712_000_000).map(lambda t: str(t - t % DAY)),
    st.sampled_from(["2024-01-02", "2024-01-02T00:00:00Z", "1704153600000", "yesterday", ""]),
    st.text(max_size=10),
)


@settings(FUZZ, max_examples=20)
@given(
    header=st.booleans(),
    rows=st.lists(st.tuples(csv_time, *[csv_field] * 5), max_size=6),
    garbage=st.one_of(st.none(), st.text(max_size=30)),
)
def test_a_csv_file_is_imported_whole_or_fails_with_one_line_and_writes_nothing(
    app_factory, tmp_path_factory, header, rows, garbage
):
    from marketdata.pipeline import IngestRequest, run_ingest
    from marketdata.storage.candles import count_candles
    from marketdata.storage.engine import connect

    folder = tmp_path_factory.mktemp("csv")
    lines = ["time,open,high,low,close,volume"] if header else []
    lines += [",".join(row) for row in rows]
    if garbage is not None:
        lines.append(garbage)
    path = folder / "file.csv"
    path.write_text("\n".join(lines) + "\n")
    app = app_factory(ingestion_provider="csv", ingestion_lookback_days=36_500)
    app.clock = lambda: datetime(2024, 6, 1, tzinfo=UTC)
    from marketdata.markets import add_market

    add_market(app, "ACME-USD", None, [f"csv={path}"], None)
    try:
        result = run_ingest(app, IngestRequest(symbols=["ACME-USD"]))
    except MarketdataError as exc:  # pragma: no cover - a pair's failure is recorded instead
        pytest.fail(f"the run raised {exc.one_line()}")
    [outcome] = result.outcomes
    with connect(app.engine(), app.target) as conn:
        stored = count_candles(conn, "ACME-USD")
    if outcome.status == "failed":
        assert outcome.error and "\n" not in outcome.error
        assert stored == 0
    else:
        assert outcome.status == "ok"
        assert stored == outcome.inserted == outcome.fetched - outcome.rejected


# ----------------------------------------------------------------------- provider payloads


@dataclass
class Case:
    """One provider with a fake that serves valid replies, and what to ask it for."""

    name: str
    fake: Callable[[], Callable[[Request], Any]]
    symbol: str
    interval: Interval
    window: Window
    now: float
    settings: dict[str, Any]


def _coinbase():
    from tests.fakes.coinbase import FakeCoinbase
    from tests.fakes.market import walk

    fake = FakeCoinbase()
    fake.add("BTC-USD", DAY, walk(1_712_707_200 - 20 * DAY, DAY, 21))
    return fake


def _kraken():
    from tests.fakes.kraken import FakeKraken
    from tests.providers.test_kraken import NOW

    fake = FakeKraken(now=NOW)
    fake.fill("XXBTZUSD", 1440, 40)
    return fake


def _binance():
    from tests.fakes.binance import FakeBinance
    from tests.fakes.market import walk
    from tests.providers.test_binance import START

    fake = FakeBinance()
    fake.add("BTCUSDT", "1d", walk(START, DAY, 30, seed=2))
    return fake


def _coingecko():
    from tests.fakes.coingecko import FakeCoinGecko
    from tests.providers.test_coingecko import NOW, POINTS

    return FakeCoinGecko(now=NOW, coins={"bitcoin": POINTS[: 8 * 24]})


def _yahoo():
    from tests.fakes.yahoo import FakeYahoo, Listing
    from tests.providers.test_yahoo import AAPL_DAILY, NOW

    return FakeYahoo(now=NOW, listings={"AAPL": Listing(bars={"1d": list(AAPL_DAILY)})})


def _stooq():
    from tests.fakes.stooq import FakeStooq, Series
    from tests.providers.test_stooq import AAPL

    return FakeStooq(series={"aapl.us": Series(list(AAPL))})


def _cases() -> list[Case]:
    from tests.providers import test_binance, test_coingecko, test_kraken, test_stooq, test_yahoo

    cg_first = test_coingecko.FIRST
    return [
        Case(
            "coinbase",
            _coinbase,
            "BTC-USD",
            Interval.D1,
            Window(1_712_707_200 - 20 * DAY, 1_712_707_200),
            1_712_707_200,
            {},
        ),
        Case(
            "kraken",
            _kraken,
            "BTC-USD",
            Interval.D1,
            Window(test_kraken.TODAY - 30 * DAY, test_kraken.TODAY),
            test_kraken.NOW,
            {},
        ),
        Case(
            "binance",
            _binance,
            "BTC-USDT",
            Interval.D1,
            Window(test_binance.START, test_binance.START + 30 * DAY),
            test_binance.CLOCK,
            {},
        ),
        Case(
            "coingecko",
            _coingecko,
            "BTC-USD",
            Interval.D1,
            Window(cg_first, cg_first + 7 * DAY),
            test_coingecko.NOW,
            {},
        ),
        Case(
            "yahoo",
            _yahoo,
            "AAPL",
            Interval.D1,
            Window(test_yahoo.NOW - 14 * DAY, test_yahoo.NOW),
            test_yahoo.NOW,
            {},
        ),
        Case(
            "stooq",
            _stooq,
            "AAPL",
            Interval.D1,
            test_stooq.FEB,
            test_stooq.FEB.end + DAY,
            {"stooq_api_key": "k"},
        ),
    ]


CASES = {case.name: case for case in _cases()}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def mutate_json(value: Any, data: st.DataObject) -> Any:
    """The value with one part (chosen by hypothesis) replaced, removed or retyped."""
    if isinstance(value, list | dict) and value and data.draw(st.booleans(), label="descend"):
        keys = list(range(len(value))) if isinstance(value, list) else list(value)
        key = data.draw(st.sampled_from(keys), label="key")
        copy = list(value) if isinstance(value, list) else dict(value)
        if data.draw(st.booleans(), label="remove"):
            del copy[key]
        else:
            copy[key] = mutate_json(value[key], data)
        return copy
    return data.draw(json_values, label="replacement")


def mutate_text(text: str, data: st.DataObject) -> str:
    """CSV with one field of one line replaced, or cut short."""
    lines = text.splitlines()
    if not lines or data.draw(st.booleans(), label="truncate"):
        return text[: data.draw(st.integers(0, len(text)), label="cut")]
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    fields = lines[i].split(",")
    j = data.draw(st.integers(0, len(fields) - 1), label="field")
    fields[j] = data.draw(st.one_of(csv_field, st.text(max_size=8)), label="value")
    lines[i] = ",".join(fields)
    return "\n".join(lines) + "\n"


def bridge(fake: Callable[[Request], Any], data: st.DataObject) -> httpx.MockTransport:
    """An httpx transport answering from the fake, its body mutated by hypothesis."""

    def handle(request: httpx.Request) -> httpx.Response:
        url = request.url
        reply = fake(
            Request(
                request.method,
                url.path,
                dict(url.params.multi_items()),
                {k.lower(): v for k, v in request.headers.items()},
                request.content,
            )
        )
        body, content_type = reply.encoded()
        if reply.status == 200 and data.draw(st.booleans(), label="mutate"):
            if content_type == "application/json":
                mutated = mutate_json(json.loads(body), data)
                body = json.dumps(mutated, allow_nan=True).encode()
            else:
                body = mutate_text(body.decode(), data).encode()
        headers = {"Content-Type": content_type, **reply.headers}
        return httpx.Response(reply.status, content=body, headers=headers)

    return httpx.MockTransport(handle)


def provider_context(case: Case, transport: httpx.MockTransport) -> ProviderContext:
    values = {
        "http_retry_attempts": 2,
        f"{case.name}_base_url": "https://fake.test",
        **case.settings,
    }
    return ProviderContext(
        load_settings(values, environ={}).settings,
        http=httpx.Client(transport=transport, headers={"User-Agent": USER_AGENT}),
        limiter_factory=no_wait,
        clock=lambda: case.now,
    )


@pytest.mark.parametrize("name", CASES)
def test_each_fake_serves_its_provider_valid_candles(name):
    case = CASES[name]
    with provider_context(case, bridge(case.fake(), Replacing((), None, mutate=False))) as ctx:
        candles = build_provider(case.name, ctx).fetch(case.symbol, case.interval, case.window)
    assert len(candles) > 5


@pytest.mark.parametrize("name", CASES)
@FUZZ
@given(data=st.data())
def test_a_damaged_payload_gives_candles_or_one_provider_error_never_a_traceback(name, data):
    case = CASES[name]
    with provider_context(case, bridge(case.fake(), data)) as ctx:
        provider = build_provider(case.name, ctx)
        try:
            candles = provider.fetch(case.symbol, case.interval, case.window)
        except ProviderError as exc:
            assert_one_clear_line(exc)
            return
    assert isinstance(candles, Candles)
    ts = candles.ts
    assert ts.dtype == np.int64 and candles.close.dtype == np.float64
    assert np.all(np.diff(ts) > 0), "ascending, one row per timestamp"
    assert np.all((ts >= case.window.start) & (ts < case.window.end))
    lengths = {len(getattr(candles, c)) for c in ("open", "high", "low", "close", "volume")}
    assert lengths == {len(ts)}


HOSTILE = [2**64, -(2**63) - 1, True, 1e308, "1e999", None, {}, "x"]


def leaf_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to every value of a JSON document, looking into the first two items of a list."""
    found = [prefix]
    if isinstance(value, list):
        for i, item in enumerate(value[:2]):
            found += leaf_paths(item, (*prefix, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            found += leaf_paths(item, (*prefix, key))
    return found


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


class Replacing:
    """Answers hypothesis' questions in `bridge` so that one chosen value is replaced."""

    def __init__(self, path: tuple, new: Any, *, mutate: bool = True) -> None:
        self.path, self.new, self.mutate = list(path), new, mutate

    def draw(self, strategy, label=None):
        if label == "mutate":
            return self.mutate
        if label == "descend":
            return bool(self.path)
        if label == "key":
            return self.path.pop(0)
        if label == "remove":
            return False
        return self.new


def first_reply(case: Case) -> Any:
    """The JSON of the first reply the provider gets for the case, undamaged."""
    bodies: list[bytes] = []
    transport = bridge(case.fake(), Replacing((), None, mutate=False))

    def record(request: httpx.Request) -> httpx.Response:
        response = transport.handle_request(request)
        bodies.append(response.read())
        return response

    with provider_context(case, httpx.MockTransport(record)) as ctx:
        build_provider(case.name, ctx).fetch(case.symbol, case.interval, case.window)
    return json.loads(bodies[0])


@pytest.mark.parametrize("name", [n for n in CASES if n != "stooq"])
def test_every_value_of_a_reply_replaced_by_a_hostile_one_gives_candles_or_one_error(name):
    case = CASES[name]
    paths = leaf_paths(first_reply(case))
    assert len(paths) > 5
    failures = 0
    for path in paths:
        for value in HOSTILE:
            with provider_context(case, bridge(case.fake(), Replacing(path, value))) as ctx:
                try:
                    build_provider(name, ctx).fetch(case.symbol, case.interval, case.window)
                except ProviderError as exc:
                    assert_one_clear_line(exc)
                    failures += 1
    assert failures > len(paths)  # most damage is noticed, not just survived


# ---------------------------------------------------------------------------- candle validation

prices = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 1e-300, 1e300]),
)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.integers(min_value=-3, max_value=40).map(lambda k: 1_712_707_200 + k * 3600 // 2),
            prices,
            prices,
            prices,
            prices,
            prices,
        ),
        max_size=30,
    )
)
def test_validation_splits_any_batch_into_sound_rows_and_reasoned_rejects(rows):
    batch = Candles.from_rows("BTC-USD", Interval.H1, "test", rows)
    now = 1_712_707_200 + 10 * 3600
    good, rejected = validate(batch, now)
    assert len(good) + len(rejected) == len(batch)
    assert all(r.reason for r in rejected)
    kept = list(good.rows())
    assert len({r[0] for r in kept}) == len(kept)
    for ts, o, h, lo, c, v in kept:
        assert all(math.isfinite(x) and x > 0 for x in (o, h, lo, c))
        assert math.isfinite(v) and v >= 0
        assert lo <= min(o, c) and h >= max(o, c)
        assert ts % 3600 == 0 and ts <= now
    # what is kept is a subsequence of the input, in its order
    remaining = iter(batch.rows())
    assert all(any(same_row(row, given) for given in remaining) for row in kept)


def same_row(a: tuple, b: tuple) -> bool:
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))
