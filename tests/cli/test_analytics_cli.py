"""`show`, `compare` and `analytics rebuild` run as a user would, on synthetic candles."""

from __future__ import annotations

import json
import os
import re
import sqlite3

import pytest

from marketdata.cli.analytics import block_chart
from tests.cli.test_cli import one_error_line, run

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CANDLE_KEYS = [
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "return",
    "log_return",
    "volatility_7",
    "volatility_30",
    "volatility_90",
    "drawdown",
    "sma_20",
    "sma_50",
    "sma_200",
]
ROI_KEYS = ["1d", "7d", "30d", "90d", "180d", "365d", "ytd", "inception"]
# 2024-01-01 .. 2024-03-31: 91 daily candles for crypto, 65 weekdays for AAPL
INGEST = ["ingest", "--provider", "synthetic", "--symbols", "BTC-USD,ETH-USD,AAPL"]
WINDOW = ["--since", "2024-01-01", "--until", "2024-04-01"]


def make_env(home) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    return {
        **keep,
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "COLUMNS": "200",
    }


def ingest(env) -> None:
    result = run([*INGEST, *WINDOW], env)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> dict[str, str]:
    """An embedded SQLite database with three symbols, filled once for the read-only tests."""
    env = make_env(tmp_path_factory.mktemp("analytics"))
    ingest(env)
    return env


def json_of(args, env):
    result = run(args, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_show_json_prints_exactly_the_documented_keys_with_iso_times(filled):
    data = json_of(["show", "btc-usd", "--last", "5", "--json"], filled)

    assert list(data) == ["symbol", "interval", "candles", "roi", "source", "cached_at"]
    assert (data["symbol"], data["interval"]) == ("BTC-USD", "1d")
    assert [list(c) for c in data["candles"]] == [CANDLE_KEYS] * 5
    assert [c["ts"] for c in data["candles"]] == [
        f"2024-03-{day}T00:00:00Z" for day in range(27, 32)
    ]
    assert all(ISO.match(c["ts"]) for c in data["candles"])
    assert list(data["roi"]) == ROI_KEYS


def test_show_json_has_null_where_a_value_is_undefined(filled):
    data = json_of(["show", "BTC-USD", "--last", "91", "--json"], filled)

    first, latest = data["candles"][0], data["candles"][-1]
    assert first["ts"] == "2024-01-01T00:00:00Z"
    assert first["return"] is None and first["drawdown"] == 0.0
    assert latest["sma_200"] is None and isinstance(latest["sma_50"], float)
    assert data["roi"]["90d"] is not None and data["roi"]["180d"] is None
    assert data["roi"]["ytd"] is None  # nothing stored before January 1
    assert data["roi"]["inception"] == pytest.approx(latest["close"] / first["close"] - 1)


def test_show_aggregate_month_json_gives_one_bar_per_month(filled):
    data = json_of(["show", "AAPL", "--aggregate", "month", "--json"], filled)

    assert (data["symbol"], data["period"]) == ("AAPL", "month")
    periods = data["periods"]
    assert [p["period_start"] for p in periods] == [
        "2024-01-01T00:00:00Z",
        "2024-02-01T00:00:00Z",
        "2024-03-01T00:00:00Z",
    ]
    assert list(periods[0]) == [
        "period_start",
        *("open", "high", "low", "close", "volume", "vwap", "bars", "return"),
    ]
    assert [p["bars"] for p in periods] == [21, 20, 20]  # NYSE sessions per month
    assert periods[0]["return"] is None
    assert periods[1]["return"] == pytest.approx(periods[1]["close"] / periods[0]["close"] - 1)


def test_compare_json_has_every_documented_key_per_symbol(filled):
    data = json_of(
        ["compare", "BTC-USD", "ETH-USD,AAPL", "--benchmark", "ETH-USD", "--json"], filled
    )

    assert list(data) == [
        "window",
        "benchmark",
        "symbols",
        "roi",
        "volatility",
        "beta",
        "relative_performance",
        "volatility_ratio",
        "correlation",
        "returns_used",
        "source",
        "cached_at",
    ]
    symbols = ["BTC-USD", "ETH-USD", "AAPL"]
    assert (data["window"], data["benchmark"], data["symbols"]) == (30, "ETH-USD", symbols)
    assert data["returns_used"] == 30
    for key in ("roi", "volatility", "beta", "relative_performance", "volatility_ratio"):
        assert list(data[key]) == symbols
    assert data["beta"]["ETH-USD"] == pytest.approx(1.0)
    assert data["relative_performance"]["ETH-USD"] == 0.0
    assert [data["correlation"][s][s] for s in symbols] == [1.0, 1.0, 1.0]
    assert data["correlation"]["BTC-USD"]["AAPL"] == data["correlation"]["AAPL"]["BTC-USD"]


def test_compare_tables_show_every_symbol_and_the_correlation_matrix(filled):
    result = run(["compare", "BTC-USD", "ETH-USD", "--window", "10"], filled)

    assert result.returncode == 0, result.stderr
    assert "last 10 common daily returns, benchmark BTC-USD" in result.stderr  # titles
    assert "correlation of daily log returns" in result.stderr
    assert result.stdout.count("+1.00") == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["show", "BTC-XYZ"],
            "nothing stored for BTC-XYZ 1d: run `marketdata ingest --symbols BTC-XYZ "
            "--interval 1d` first",
        ),
        (["show", "BTC-USD", "--aggregate", "week", "-i", "1h"], "--aggregate rolls up daily"),
        (["compare", "BTC-USD"], "at least two symbols"),
        (["analytics", "rebuild", "--symbols", "NOPE-USD"], "nothing stored for NOPE-USD"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(filled, args, fragment):
    result = run(args, filled)

    assert result.returncode == 2, result.stderr
    assert fragment in one_error_line(result)
    assert result.stdout == ""


def test_show_chart_draws_close_and_volume_under_the_table(filled):
    result = run(["show", "ETH-USD", "--last", "30", "--chart", "--volume"], filled)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ETH-USD 1d: latest 30 candles" in result.stderr  # piped, a title is a note
    assert "ROI as of 2024-03-31" in out
    chart = [line for line in out.splitlines() if "█" in line]
    assert len(chart) >= 8  # ten rows of close, four of volume; flat stretches may be empty
    assert re.search(r"\bclose\b", out) and re.search(r"\bvolume\b", out)
    assert "2024-03-02" in out.splitlines()[-1] and "2024-03-31" in out.splitlines()[-1]


def test_block_chart_scales_from_the_lowest_to_the_highest_value():
    rows = block_chart([1.0, 2.0, 3.0], height=2, width=3)

    assert rows == [" ▁█", "▁██"]  # 1/16, 9/16 and 16/16 of the height
    assert block_chart([5.0, 5.0], height=1, width=2) == ["▄▄"]
    assert block_chart([0.0, 4.0], height=1, width=2, from_zero=True) == [" █"]
    assert block_chart(list(range(100)), height=1, width=10)[0].endswith("█")
    assert len(block_chart(list(range(100)), height=1, width=10)[0]) == 10


def test_analytics_rebuild_dry_run_reports_without_writing_and_rebuild_fixes(tmp_path):
    env = make_env(tmp_path)
    ingest(env)
    database = tmp_path / "data" / "marketdata" / "marketdata.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("update candles set sma_20 = 123.0 where symbol = 'ETH-USD'")

    dry = json_of(["analytics", "rebuild", "--dry-run", "--json"], env)

    assert dry["dry_run"] is True
    assert [
        (p["symbol"], p["interval"], p["rows"], p["updated"], p["status"]) for p in dry["pairs"]
    ] == [
        ("AAPL", "1d", 61, 0, "ok"),  # NYSE sessions
        ("BTC-USD", "1d", 91, 0, "ok"),
        ("ETH-USD", "1d", 91, 91, "ok"),
    ]
    with sqlite3.connect(database) as conn:
        assert conn.execute("select count(*) from candles where sma_20 = 123.0").fetchone() == (91,)

    result = run(["analytics", "rebuild", "--symbols", "ETH-USD"], env)

    assert result.returncode == 0, result.stderr
    assert "91 of 91 rows updated" in result.stderr
    with sqlite3.connect(database) as conn:
        assert conn.execute("select count(*) from candles where sma_20 = 123.0").fetchone() == (0,)
        assert conn.execute(
            "select count(*) from candles where symbol = 'ETH-USD' and sma_20 is not null"
        ).fetchone() == (91 - 19,)


def test_show_and_rebuild_work_on_postgresql(tmp_path, pg_database):
    from tests.conftest import _truncate

    _truncate(pg_database)
    env = {**make_env(tmp_path), "DATABASE_URL": pg_database}
    ingest(env)

    data = json_of(["show", "AAPL", "--last", "3", "--json"], env)
    rebuilt = json_of(["analytics", "rebuild", "--json"], env)

    assert [c["ts"] for c in data["candles"]] == [
        "2024-03-26T00:00:00Z",
        "2024-03-27T00:00:00Z",
        "2024-03-28T00:00:00Z",  # the 29th was Good Friday
    ]
    assert isinstance(data["candles"][-1]["sma_50"], float)
    assert [(p["symbol"], p["updated"]) for p in rebuilt["pairs"]] == [
        ("AAPL", 0),
        ("BTC-USD", 0),
        ("ETH-USD", 0),
    ]
