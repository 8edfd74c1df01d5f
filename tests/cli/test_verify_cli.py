"""`marketdata verify` run as a user would: ingest from a fake Coinbase, check a fake Kraken."""

from __future__ import annotations

import json
import time

import pytest

from tests.cli.helpers import one_error_line, run
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.kraken import FakeKraken
from tests.fakes.market import walk
from tests.fakes.server import serve

DAY = 86_400


@pytest.fixture
def now() -> int:
    return int(time.time())


@pytest.fixture
def rows(now):
    today = now - now % DAY
    return walk(today - 99 * DAY, DAY, 100)


@pytest.fixture
def kraken(now, rows):
    # the fake's clock and the provider's (the real one) agree on which bar is still open
    fake = FakeKraken(now=now)
    fake.add("XXBTZUSD", 1440, list(rows))
    with serve(fake) as server:
        server.fake = fake
        yield server


@pytest.fixture
def ingested(env, rows, kraken):
    fake = FakeCoinbase()
    fake.add("BTC-USD", DAY, list(rows))
    with serve(fake) as coinbase:
        env.update(COINBASE_BASE_URL=coinbase.url, KRAKEN_BASE_URL=kraken.url)
        result = run(["ingest", "--symbols", "BTC-USD", "--lookback-days", "30"], env)
        assert result.returncode == 0, result.stderr
    return env


def test_verify_exits_0_and_says_so_when_both_providers_agree(ingested):
    result = run(["verify", "--symbols", "BTC-USD", "--against", "kraken"], ingested)
    assert result.returncode == 0, result.stderr
    assert "BTC-USD 1d: all 30 candles agree with kraken" in result.stdout
    assert "stored (coinbase) vs kraken" in result.stdout


def test_verify_exits_1_after_reporting_a_mismatch_in_json(ingested, kraken, rows, now):
    day = now - now % DAY - 3 * DAY
    index = next(i for i, r in enumerate(rows) if r[0] == day)
    ts, o, h, low, c, v = rows[index]
    kraken.fake.candles["XXBTZUSD"][1440][index] = (ts, o, h, low, round(c * 1.02, 2), v)
    result = run(["verify", "--symbols", "BTC-USD", "--against", "kraken", "--json"], ingested)
    assert result.returncode == 1, result.stderr
    [report] = json.loads(result.stdout)
    assert report["ours"] == ["coinbase"] and report["against"] == "kraken"
    assert report["compared"] == 30
    assert report["only_ours"] == [] and report["only_theirs"] == []
    [mismatch] = report["mismatches"]
    assert mismatch["field"] == "close" and mismatch["ours"] == c
    assert mismatch["theirs"] == round(c * 1.02, 2)
    assert mismatch["diff"] == pytest.approx(0.02 / 1.02, abs=1e-4)
    assert time.strftime("%Y-%m-%d", time.gmtime(day)) in mismatch["ts"]
    assert "BTC-USD 1d: 1 value differs in 1 of 30 candles from kraken" in one_error_line(result)


def test_verify_shows_mismatches_and_one_sided_bars_to_people(ingested, kraken, rows, now):
    today = now - now % DAY
    kept = [r for r in rows if not today - 6 * DAY <= r[0] <= today - 5 * DAY]
    index = next(i for i, r in enumerate(kept) if r[0] == today - DAY)
    ts, o, h, low, c, v = kept[index]
    theirs = round(o + 0.01, 2)
    kept[index] = (ts, theirs, h, low, c, v)
    kraken.fake.candles["XXBTZUSD"][1440] = kept
    result = run(["verify", "-s", "BTC-USD", "-a", "kraken", "--tolerance", "0"], ingested)
    assert result.returncode == 1, result.stderr
    [row] = [line for line in result.stdout.splitlines() if "\topen\t" in line]
    cells = row.split("\t")  # piped, a table is tab-separated
    diff = f"{(theirs - o) / theirs * 100:.3f}"
    assert cells == [
        time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(ts)),
        "open",
        repr(o),
        repr(theirs),
        diff,
    ]
    start = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(today - 6 * DAY))
    end = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(today - 5 * DAY))
    assert f"only in ours (2): {start} .. {end} (2 bars)" in result.stdout


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--tolerance", "abc", "--tolerance 'abc' is not a number"),
        ("--tolerance", "5", "--tolerance '5' is more than 100%: write 5% for a percentage"),
        ("--volume-tolerance", "-2%", "--volume-tolerance must be between 0% and 100%"),
    ],
)
def test_a_bad_tolerance_is_one_line_and_exit_2(env, flag, value, fragment):
    result = run(["verify", "--symbols", "BTC-USD", "--against", "kraken", flag, value], env)
    assert result.returncode == 2, result.stderr
    assert fragment in one_error_line(result)


def test_nothing_stored_is_one_line_and_exit_2_and_creates_no_database(env, kraken, tmp_path):
    env["KRAKEN_BASE_URL"] = kraken.url
    result = run(["verify", "--symbols", "BTC-USD", "--against", "kraken"], env)
    assert result.returncode == 2, result.stderr
    assert one_error_line(result) == (
        "marketdata: error: nothing stored for BTC-USD 1d: "
        "run `marketdata ingest --symbols BTC-USD` first"
    )
    assert kraken.requests == []
    assert not (tmp_path / "data" / "marketdata" / "marketdata.sqlite3").exists()


def test_verify_help_documents_the_exit_codes_and_the_volume_tolerance(env):
    result = run(["verify", "--help"], env)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Exit 0 when everything agrees" in text
    assert "exit 1 after the report when anything disagrees" in text
    assert "--volume-tolerance" in text and "volumes legitimately differ more" in text
