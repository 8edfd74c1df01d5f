"""CSV provider: file lookup, header and delimiter sniffing, timestamp formats, bad lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marketdata.domain import Interval, Window
from marketdata.errors import BadPayloadError, SymbolNotListedError, UnsupportedIntervalError
from marketdata.providers.csvfile import CsvProvider
from marketdata.providers.registry import build_provider

DAY = 86_400
START = 1_704_067_200  # 2024-01-01T00:00:00Z
ALL = Window(0, 4_000_000_000)

ROWS = [  # ts, open, high, low, close, volume
    (START, 100.0, 110.0, 95.0, 105.0, 1000.0),
    (START + DAY, 105.0, 112.5, 101.25, 111.0, 2000.5),
    (START + 2 * DAY, 111.0, 111.0, 90.0, 92.75, 0.0),
]


@pytest.fixture
def provider(provider_context, tmp_path, monkeypatch) -> CsvProvider:
    monkeypatch.chdir(tmp_path)  # the default root, data/, is relative to the working directory
    (tmp_path / "data").mkdir()
    return CsvProvider(provider_context())


def write(name: str, text: str, folder: Path = Path("data")) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rows_of(candles) -> list[tuple]:
    return list(candles.rows())


def test_a_headed_file_is_read_into_ordered_columns(provider):
    write(
        "BTC-USD.csv",
        "ts,open,high,low,close,volume\n"
        + "".join(f"{t},{o},{h},{lo},{c},{v}\n" for t, o, h, lo, c, v in ROWS),
    )
    candles = provider.fetch("BTC-USD", Interval.D1, ALL)
    assert rows_of(candles) == ROWS
    assert candles.ts.dtype == np.int64 and candles.close.dtype == np.float64
    assert candles.provider == "csv" and candles.interval is Interval.D1


def test_header_names_match_in_any_order_and_case_and_extra_columns_are_ignored(provider):
    write(
        "AAPL.csv",
        "Volume, CLOSE ,Adj Close,Low,High,Open,Date\n"
        "1000,105,104,95,110,100,2024-01-01\n"
        "2000.5,111,110,101.25,112.5,105,2024-01-02\n"
        "0,92.75,92,90,111,111,2024-01-03\n",
    )
    assert rows_of(provider.fetch("AAPL", Interval.D1, ALL)) == ROWS


@pytest.mark.parametrize("name", ["ts", "time", "Timestamp", "DATE", "datetime"])
def test_every_time_column_name_is_recognised(provider, name):
    write("AAPL.csv", f"{name},open,high,low,close\n2024-01-01,1,2,0.5,1.5\n")
    assert provider.fetch("AAPL", Interval.D1, ALL).ts.tolist() == [START]


def test_separate_date_and_time_columns_are_joined(provider):
    write("EURUSD=X.csv", "Date,Time,Open,High,Low,Close\n2024-01-01,06:00,1,2,0.5,1.5\n")
    assert provider.fetch("EURUSD=X", Interval.H6, ALL).ts.tolist() == [START + 6 * 3600]


def test_a_file_without_header_is_ts_open_high_low_close_volume(provider):
    write("BTC-USD.csv", "".join(f"{t},{o},{h},{lo},{c},{v}\n" for t, o, h, lo, c, v in ROWS))
    assert rows_of(provider.fetch("BTC-USD", Interval.D1, ALL)) == ROWS


def test_a_missing_volume_column_means_zero_volume(provider):
    write("^GSPC.csv", "Date,Open,High,Low,Close\n2024-01-01,1,2,0.5,1.5\n2024-01-02,2,3,1,2.5\n")
    write("IBM.csv", "2024-01-01,1,2,0.5,1.5\n2024-01-02,2,3,1,2.5,7\n2024-01-03,2,3,1,2.5,\n")
    assert provider.fetch("^GSPC", Interval.D1, ALL).volume.tolist() == [0.0, 0.0]
    assert provider.fetch("IBM", Interval.D1, ALL).volume.tolist() == [0.0, 7.0, 0.0]


def test_semicolons_and_decimal_commas_are_sniffed(provider):
    write(
        "SAP.DE.csv",
        "Datum;Open;High;Low;Close;Volume\n".replace("Datum", "date")
        + "2024-01-01;100,5;110;95,25;105;1000\n"
        + "2024-01-02;105;112.5;101.25;111;2000.5\n",
    )
    candles = provider.fetch("SAP.DE", Interval.D1, ALL)
    assert candles.open.tolist() == [100.5, 105.0]
    assert candles.low.tolist() == [95.25, 101.25]


def test_tabs_and_windows_line_endings_and_a_byte_order_mark_are_fine(provider):
    path = Path("data/BTC-USD.csv")
    path.write_bytes(
        b"\xef\xbb\xbfts\topen\thigh\tlow\tclose\r\n1704067200\t1\t2\t0.5\t1.5\r\n\r\n"
    )
    assert rows_of(provider.fetch("BTC-USD", Interval.D1, ALL)) == [
        (START, 1.0, 2.0, 0.5, 1.5, 0.0)
    ]


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-01-01",
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01 00:00:00",
        "2024-01-01T01:00:00+01:00",
        "2023-12-31T19:00:00-05:00",
        "2024-01-01T00:00:00.000Z",
        "20240101",
        "1704067200",
        "1704067200.0",
        "1704067200000",
        "1704067200000000",
        "1704067200000000000",
    ],
)
def test_iso_dates_datetimes_offsets_and_epoch_seconds_or_milliseconds_are_understood(
    provider, stamp
):
    write("BTC-USD.csv", f"time,open,high,low,close\n{stamp},1,2,0.5,1.5\n")
    assert provider.fetch("BTC-USD", Interval.D1, ALL).ts.tolist() == [START]


def test_a_bad_line_is_named_with_its_number_and_the_others_are_counted(provider):
    lines = ["ts,open,high,low,close,volume"]
    lines += [f"{START + i * DAY},1,2,0.5,1.5,10" for i in range(20)]
    lines[16] = f"{START + 15 * DAY},1,2,0.5,abc,10"  # line 17 of the file
    lines[18] = f"{START + 17 * DAY},1,2,0.5,x,10"
    lines[19] = "not-a-date,1,2,0.5,1.5,10"
    lines[20] = f"{START + 19 * DAY},1,2"
    write("BTC-USD.csv", "\n".join(lines) + "\n")
    with pytest.raises(BadPayloadError) as caught:
        provider.fetch("BTC-USD", Interval.D1, ALL)
    message = caught.value.message
    assert (
        message
        == "csv data/BTC-USD.csv line 17: close 'abc' is not a number (and 3 more bad lines)"
    )
    assert caught.value.provider == "csv" and caught.value.symbol == "BTC-USD"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("2024-01-01,1,2,0.5", "expected at least 5 fields, got 4"),
        ("2024-13-01,1,2,0.5,1.5", "time '2024-13-01' is not a timestamp"),
        ("2024-01-01,1,2,,1.5", "low '' is not a number"),
        ("2024-01-01,1,nan,0.5,1.5", "high 'nan' is not a finite number"),
        ("2024-01-01,1,2,0.5,1.5,lots", "volume 'lots' is not a number"),
        ('2024-01-01,1,2,0.5,"1,5"', "close '1,5' is not a number"),
    ],
)
def test_each_kind_of_bad_value_is_explained(provider, row, reason):
    write("BTC-USD.csv", f"2024-01-02,1,2,0.5,1.5\n{row}\n")
    with pytest.raises(BadPayloadError, match="line 2: ") as caught:
        provider.fetch("BTC-USD", Interval.D1, ALL)
    assert reason in caught.value.message
    assert "more bad lines" not in caught.value.message


def test_a_header_without_the_needed_columns_is_refused(provider):
    write("BTC-USD.csv", "when,open,high,close\n2024-01-01,1,2,1.5\n")
    with pytest.raises(BadPayloadError, match=r"line 1: header lacks a time .* low column"):
        provider.fetch("BTC-USD", Interval.D1, ALL)


@pytest.mark.parametrize(
    ("header", "lacks"),
    [
        ("ts,open,high,low", "close"),  # a time, but not every price
        ("when,open,high,low,close", "a time (ts, time, timestamp, date or datetime)"),
    ],
)
def test_a_header_lacking_only_a_price_or_only_the_time_is_refused(provider, header, lacks):
    write("BTC-USD.csv", f"{header}\n2024-01-01,1,2,0.5,1.5\n")
    with pytest.raises(BadPayloadError) as caught:
        provider.fetch("BTC-USD", Interval.D1, ALL)
    assert caught.value.message.endswith(f"line 1: header lacks {lacks} column (it has: "
                                         f"{', '.join(header.split(','))})")  # fmt: skip


def test_a_row_shorter_than_the_headers_last_used_column_is_a_bad_line(provider):
    write("BTC-USD.csv", "ts,open,high,low,close,volume\n1704067200,1,2,0.5,1.5\n")
    with pytest.raises(BadPayloadError, match="line 2: expected at least 6 fields, got 5"):
        provider.fetch("BTC-USD", Interval.D1, ALL)


def test_rows_outside_the_window_are_dropped_and_the_end_is_exclusive(provider):
    write("BTC-USD.csv", "".join(f"{START + i * DAY},1,2,0.5,{i},1\n" for i in range(10)))
    candles = provider.fetch("BTC-USD", Interval.D1, Window(START + 2 * DAY, START + 5 * DAY))
    assert candles.ts.tolist() == [START + 2 * DAY, START + 3 * DAY, START + 4 * DAY]
    assert candles.close.tolist() == [2.0, 3.0, 4.0]


def test_unordered_rows_are_sorted_and_the_last_duplicate_wins(provider):
    write(
        "BTC-USD.csv",
        f"{START + DAY},1,2,0.5,1.5,1\n{START},1,2,0.5,1.0,1\n{START + DAY},1,2,0.5,9.0,1\n",
    )
    candles = provider.fetch("BTC-USD", Interval.D1, ALL)
    assert candles.ts.tolist() == [START, START + DAY]
    assert candles.close.tolist() == [1.0, 9.0]


def test_an_interval_specific_file_is_preferred_to_the_plain_one(provider):
    write("BTC-USD_1h.csv", f"{START + 3600},1,2,0.5,1.5\n")
    write("BTC-USD.csv", f"{START},3,4,2.5,3.5\n")
    assert provider.fetch("BTC-USD", Interval.H1, ALL).ts.tolist() == [START + 3600]
    assert provider.fetch("BTC-USD", Interval.D1, ALL).ts.tolist() == [START]


def test_a_missing_file_says_where_it_looked_and_how_to_point_elsewhere(provider):
    with pytest.raises(SymbolNotListedError) as caught:
        provider.fetch("BTC-USD", Interval.D1, ALL)
    assert caught.value.message == (
        "csv has no file for BTC-USD (looked in data/BTC-USD_1d.csv, data/BTC-USD.csv)"
    )
    assert "--provider-symbol csv=PATH" in (caught.value.hint or "")


def test_an_override_may_name_a_file_anywhere(provider_context, tmp_path):
    path = write("prices.csv", f"{START},1,2,0.5,1.5,3\n", folder=tmp_path / "elsewhere")
    ctx = provider_context()
    ctx.symbol_overrides = {"csv": {"XBT-USD": str(path)}}
    provider = CsvProvider(ctx)
    assert provider.provider_symbol("XBT-USD") == str(path)
    assert rows_of(provider.fetch("XBT-USD", Interval.D1, ALL)) == [
        (START, 1.0, 2.0, 0.5, 1.5, 3.0)
    ]


def test_an_override_may_name_a_folder_of_symbol_files(provider_context, tmp_path):
    folder = tmp_path / "exports"
    write("ETH-USD_15m.csv", f"{START + 900},1,2,0.5,1.5\n", folder=folder)
    ctx = provider_context()
    ctx.symbol_overrides = {"csv": {"ETH-USD": str(folder), "SOL-USD": str(folder)}}
    provider = CsvProvider(ctx)
    assert provider.fetch("ETH-USD", Interval.M15, ALL).ts.tolist() == [START + 900]
    with pytest.raises(SymbolNotListedError, match=r"looked in .*exports/SOL-USD_1d.csv, .*"):
        provider.fetch("SOL-USD", Interval.D1, ALL)


def test_an_override_to_a_missing_path_names_that_path(provider_context, tmp_path):
    ctx = provider_context()
    ctx.symbol_overrides = {"csv": {"BTC-USD": str(tmp_path / "gone.csv")}}
    with pytest.raises(SymbolNotListedError, match=r"\(looked in .*gone\.csv\)$"):
        CsvProvider(ctx).fetch("BTC-USD", Interval.D1, ALL)


def test_the_root_folder_can_be_changed(provider_context, tmp_path, monkeypatch):
    write("BTC-USD.csv", f"{START},1,2,0.5,1.5\n", folder=tmp_path / "candles")
    monkeypatch.setattr(CsvProvider, "root", tmp_path / "candles")
    assert len(CsvProvider(provider_context()).fetch("BTC-USD", Interval.D1, ALL)) == 1


def test_a_header_only_or_empty_file_gives_no_candles(provider):
    write("BTC-USD.csv", "ts,open,high,low,close\n")
    write("ETH-USD.csv", "")
    assert len(provider.fetch("BTC-USD", Interval.D1, ALL)) == 0
    assert len(provider.fetch("ETH-USD", Interval.D1, ALL)) == 0


def test_a_file_that_is_not_text_is_a_bad_payload(provider):
    Path("data/BTC-USD.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(BadPayloadError, match="not UTF-8"):
        provider.fetch("BTC-USD", Interval.D1, ALL)


def test_every_interval_is_served_and_a_fetch_is_one_read(provider):
    write("BTC-USD.csv", f"{START},1,2,0.5,1.5\n")
    for interval in Interval:
        assert len(provider.fetch("BTC-USD", interval, ALL)) == 1
    assert provider.requests_needed(Interval.M1, ALL) == 1
    assert provider.check() == 0.0


def test_an_unknown_interval_never_reaches_the_disk(provider, monkeypatch):
    monkeypatch.setattr(CsvProvider, "intervals", frozenset({Interval.D1}))
    with pytest.raises(UnsupportedIntervalError):
        provider.fetch("NO-FILE", Interval.H1, ALL)


def test_the_registry_builds_it(provider_context):
    assert isinstance(build_provider("csv", provider_context()), CsvProvider)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1700000000", 1_700_000_000),
        ("100000000000", 100_000_000_000),  # 1e11 itself is still seconds
        ("100000000001", 100_000_000),  # above it, milliseconds
        ("1700000000999", 1_700_000_000),
        ("-1700000000001", -1_700_000_001),  # floored, not truncated
        ("100000000000000", 100_000_000_000),  # 1e14 ms
        ("1700000000000001", 1_700_000_000),  # microseconds
        ("100000000000000000", 100_000_000_000),  # 1e17 us
        ("1700000000000000001", 1_700_000_000),  # nanoseconds
        ("1700000000.5", 1_700_000_000),
        ("-0.5", -1),
        ("1e11", 100_000_000_000),
        ("1.7e12", 1_700_000_000),
        ("1.7e15", 1_700_000_000),
        ("1.7e18", 1_700_000_000),
        ("-1.7e12", -1_700_000_000),
    ],
)
def test_an_epoch_number_is_seconds_or_a_finer_unit_by_its_size(text, seconds):
    from marketdata.providers.csvfile import _epoch_number

    assert _epoch_number(text) == seconds


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "abc", "", "2024-01-02"])
def test_what_is_no_finite_number_is_no_epoch_number(text):
    from marketdata.providers.csvfile import _epoch_number

    assert _epoch_number(text) is None


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        (" 20240102 ", START + DAY),
        ("20241340", 20_241_340),  # no such date: epoch seconds
        ("2024-01-02", START + DAY),
        ("2024-01-02 03:04:05", START + DAY + 3 * 3600 + 4 * 60 + 5),
        ("2024-01-02T03:04:05z", START + DAY + 3 * 3600 + 4 * 60 + 5),
        ("2024-01-02T03:04:05.7Z", START + DAY + 3 * 3600 + 4 * 60 + 5),
        ("2024-01-02T03:04:05+01:00", START + DAY + 2 * 3600 + 4 * 60 + 5),
        ("1969-12-31T23:59:59.5Z", -1),
    ],
)
def test_a_timestamp_is_a_compact_date_an_epoch_number_or_iso_8601(raw, seconds):
    from marketdata.providers.csvfile import _timestamp

    assert _timestamp(raw) == seconds


def test_a_timestamp_that_is_none_of_those_is_explained():
    from marketdata.providers.csvfile import _BadValue, _timestamp

    with pytest.raises(_BadValue) as caught:
        _timestamp(" noon ")
    assert str(caught.value) == (
        "time ' noon ' is not a timestamp (ISO 8601 or epoch seconds/milliseconds)"
    )


@pytest.mark.parametrize(
    ("fields", "decimal_comma", "header"),
    [
        (["ts", "open", "high"], False, True),
        (["Date", "Price"], True, True),
        (["2024-01-02", "x"], False, False),  # a timestamp
        (["x", "105"], False, False),  # a number
        (["x", "187,15"], True, False),  # a decimal-comma number
        (["x", "187,15"], False, True),
        (["x", "nan"], False, True),  # not a finite number
    ],
)
def test_a_first_line_is_a_header_when_no_field_is_a_time_or_a_number(
    fields, decimal_comma, header
):
    from marketdata.providers.csvfile import _is_header

    assert _is_header(fields, decimal_comma) is header


@pytest.mark.parametrize(
    ("raw", "decimal_comma", "value"),
    [(" 187,15 ", True, 187.15), ("187.15", True, 187.15), ("-2", False, -2.0)],
)
def test_a_number_may_use_a_decimal_comma_in_separated_exports(raw, decimal_comma, value):
    from marketdata.providers.csvfile import _number

    assert _number(raw, "open", decimal_comma) == value


@pytest.mark.parametrize(
    ("raw", "decimal_comma", "reason"),
    [
        ("187,15", False, "open '187,15' is not a number"),
        ("1,234.5", True, "open '1,234.5' is not a number"),
        ("inf", False, "open 'inf' is not a finite number"),
        ("nan", True, "open 'nan' is not a finite number"),
    ],
)
def test_a_value_that_is_not_a_finite_number_is_explained(raw, decimal_comma, reason):
    from marketdata.providers.csvfile import _BadValue, _number

    with pytest.raises(_BadValue) as caught:
        _number(raw, "open", decimal_comma)
    assert str(caught.value) == reason


def test_the_candles_name_their_symbol_interval_and_provider_and_are_floats(provider):
    write("BTC-USD.csv", "ts,open,high,low,close\n1704067200,1,2,0.5,1.5\n")
    candles = provider.fetch("BTC-USD", Interval.D1, ALL)
    assert (candles.symbol, candles.interval, candles.provider) == ("BTC-USD", Interval.D1, "csv")
    assert {column.dtype for column in (candles.open, candles.close, candles.volume)} == {
        np.dtype(np.float64)
    }


def test_blank_lines_and_lines_of_empty_fields_are_skipped_not_the_end(provider):
    write(
        "BTC-USD.csv",
        "ts,open,high,low,close\n1704067200,1,2,0.5,1.5\n\n , ,\n1704153600,2,3,1,2\n",
    )
    candles = provider.fetch("BTC-USD", Interval.D1, ALL)
    assert candles.ts.tolist() == [START, START + DAY]


def test_one_or_two_bad_lines_are_counted_in_words(provider):
    write("BTC-USD.csv", "1704067200,1,2,0.5,x\n")
    with pytest.raises(BadPayloadError) as caught:
        provider.fetch("BTC-USD", Interval.D1, ALL)
    assert caught.value.message == "csv data/BTC-USD.csv line 1: close 'x' is not a number"
    write("BTC-USD.csv", "1704067200,1,2,0.5,x\n1704153600,1,2,0.5,y\n")
    with pytest.raises(BadPayloadError) as caught:
        provider.fetch("BTC-USD", Interval.D1, ALL)
    assert caught.value.message.endswith("close 'x' is not a number (and 1 more bad lines)")


def test_a_first_line_with_a_decimal_comma_number_is_a_row_not_a_header(provider):
    write("BTC-USD.csv", "noon;187,15;2;1;1\n")
    with pytest.raises(BadPayloadError, match="line 1: time 'noon' is not a timestamp"):
        provider.fetch("BTC-USD", Interval.D1, ALL)
