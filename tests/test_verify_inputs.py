"""What `verify` compares when not told: the default symbols, and the hint when nothing is
stored for an interval other than the daily one."""

from __future__ import annotations

import pytest

from marketdata.domain import Interval
from marketdata.errors import NoDataError
from marketdata.verify import default_symbols
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
