"""What `verify` compares when not told: the default symbols, and the hint when nothing is
stored for an interval other than the daily one."""

from __future__ import annotations

import pytest

from marketdata.domain import Interval
from marketdata.errors import InputError, NoDataError
from marketdata.verify import MAX_LOOKBACK_DAYS, default_symbols, verify_window
from tests.test_verify import app, check, kraken, kraken_fake  # noqa: F401 - fixtures


def test_nothing_stored_at_another_interval_names_it_in_the_command_to_run(app):  # noqa: F811
    with pytest.raises(NoDataError) as raised:
        check(app, interval=Interval.H1)
    assert raised.value.one_line() == (
        "nothing stored for BTC-USD 1h: run `marketdata ingest --symbols BTC-USD --interval 1h` "
        "first"
    )


def test_default_symbols_are_the_setting_s_less_the_disabled(app_factory):
    configured = app_factory(
        ingestion_symbols="BTC-USD,ETH-USD,SOL-USD", ingestion_disabled_symbols="ETH-USD"
    )
    assert default_symbols(configured) == ["BTC-USD", "SOL-USD"]


def test_only_the_window_s_candles_of_the_interval_name_the_providers(app_factory):
    from marketdata.domain import DAY, Candles, Window
    from marketdata.storage.candles import write_candles
    from marketdata.storage.engine import connect
    from marketdata.verify import stored_providers
    from tests.test_verify import NOW, TODAY

    fresh = app_factory()
    bar = (1.0, 2.0, 0.5, 1.5, 10.0)
    batches = [
        Candles.from_rows("BTC-USD", Interval.D1, "coinbase", [(TODAY - 3 * DAY, *bar)]),
        Candles.from_rows("BTC-USD", Interval.D1, "binance", [(TODAY - 30 * DAY, *bar)]),
        Candles.from_rows("BTC-USD", Interval.D1, "yahoo", [(TODAY + DAY, *bar)]),
        Candles.from_rows("BTC-USD", Interval.H1, "kraken", [(TODAY - 3 * DAY, *bar)]),
        Candles.from_rows("ETH-USD", Interval.D1, "stooq", [(TODAY - 3 * DAY, *bar)]),
    ]
    with connect(fresh.engine(), fresh.target) as conn, conn.begin():
        for batch in batches:
            write_candles(conn, batch, NOW)
    window = Window(TODAY - 3 * DAY, TODAY + DAY)  # starts on the coinbase candle
    with connect(fresh.engine(), fresh.target) as conn:
        assert stored_providers(conn, "BTC-USD", Interval.D1, window) == ("coinbase",)


@pytest.mark.parametrize("days", [1, MAX_LOOKBACK_DAYS])
def test_the_lookback_s_limits_are_accepted(days):
    now = 1_712_750_400  # 2024-04-10T12:00Z
    window = verify_window(Interval.D1, now, days)
    assert (window.start, window.end) == (1_712_707_200 - days * 86_400, 1_712_793_600)


@pytest.mark.parametrize("days", [0, MAX_LOOKBACK_DAYS + 1])
def test_a_lookback_beyond_its_limits_is_refused(days):
    with pytest.raises(InputError, match="--lookback-days must be between 1 and 36500"):
        verify_window(Interval.D1, 1_712_750_400, days)
