"""The database schema: SQLAlchemy Core tables for both dialects, under one MetaData."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """timestamptz on PostgreSQL; on SQLite a naive UTC value that comes back UTC-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every stored time is UTC-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# BIGINT on PostgreSQL, INTEGER on SQLite (so that it is SQLite's rowid alias).
RunId = BigInteger().with_variant(Integer(), "sqlite")

markets = Table(
    "markets",
    metadata,
    Column("symbol", String(24), primary_key=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("asset_class", String(16), nullable=False, server_default="crypto"),
    # provider name -> that provider's symbol, e.g. {"binance": "BTCUSDT"}
    Column("provider_symbols", JSON, nullable=False, server_default=text("'{}'")),
    Column("note", Text, nullable=True),
    # 24/7, 24/5 or an exchange code (XNYS); NULL follows the asset class (calendars.py)
    Column("calendar", String(16), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Derived columns stored beside their candles (public name -> column). "return" is a SQL
# keyword, hence simple_return. NULL on both backends (never NaN) where undefined or where
# the interval is not in ANALYTICS_INTERVALS.
INDICATOR_COLUMNS = {
    "return": "simple_return",
    "log_return": "log_return",
    "volatility_7": "volatility_7",
    "volatility_30": "volatility_30",
    "volatility_90": "volatility_90",
    "drawdown": "drawdown",
    "sma_20": "sma_20",
    "sma_50": "sma_50",
    "sma_200": "sma_200",
}

candles = Table(
    "candles",
    metadata,
    Column("symbol", String(24), primary_key=True),
    Column("interval", String(4), primary_key=True),
    Column("ts", UTCDateTime, primary_key=True),
    Column("open", Double, nullable=False),
    Column("high", Double, nullable=False),
    Column("low", Double, nullable=False),
    Column("close", Double, nullable=False),
    Column("volume", Double, nullable=False),
    Column("provider", String(16), nullable=False),
    Column("ingested_at", UTCDateTime, nullable=False),
    *(Column(column, Double, nullable=True) for column in INDICATOR_COLUMNS.values()),
)

ingestion_runs = Table(
    "ingestion_runs",
    metadata,
    Column("id", RunId, primary_key=True, autoincrement=True),
    Column("trigger", String(16), nullable=False),
    Column("providers", String(128), nullable=False),
    Column("symbols", JSON, nullable=False),
    Column("intervals", JSON, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # running | success | partial | failure | interrupted
    Column("status", String(16), nullable=False),
    Column("rows_inserted", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_updated", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_rejected", BigInteger, nullable=False, server_default=text("0")),
    Column("duration_ms", Double, nullable=True),
    Column("error", Text, nullable=True),
    Column("host", String(255), nullable=True),
    Index("ix_ingestion_runs_started_at", "started_at"),
)

# One row per (run, symbol, interval), written in the same transaction as that pair's candles,
# so a crash leaves each pair either wholly written (with its outcome) or untouched.
ingestion_outcomes = Table(
    "ingestion_outcomes",
    metadata,
    Column("run_id", RunId, ForeignKey("ingestion_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("symbol", String(24), primary_key=True),
    Column("interval", String(4), primary_key=True),
    # ok | failed | locked | disabled | skipped
    Column("status", String(16), nullable=False),
    Column("provider", String(16), nullable=True),
    Column("fetched", Integer, nullable=False, server_default=text("0")),
    Column("inserted", Integer, nullable=False, server_default=text("0")),
    Column("updated", Integer, nullable=False, server_default=text("0")),
    Column("unchanged", Integer, nullable=False, server_default=text("0")),
    Column("rejected", Integer, nullable=False, server_default=text("0")),
    Column("error", Text, nullable=True),
)

# Quarantine: rows a provider sent that failed validation, with the raw values and why.
rejects = Table(
    "rejects",
    metadata,
    Column("id", RunId, primary_key=True, autoincrement=True),
    Column("run_id", RunId, ForeignKey("ingestion_runs.id", ondelete="SET NULL"), nullable=True),
    Column("symbol", String(24), nullable=False),
    Column("interval", String(4), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("ts", BigInteger, nullable=False),  # raw epoch seconds: may be off-grid or absurd
    Column("open", Double, nullable=True),
    Column("high", Double, nullable=True),
    Column("low", Double, nullable=True),
    Column("close", Double, nullable=True),
    Column("volume", Double, nullable=True),
    Column("reason", String(64), nullable=False),
    Column("rejected_at", UTCDateTime, nullable=False),  # first seen
    Column("times_seen", Integer, nullable=False, server_default=text("1")),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Index("ix_rejects_symbol_interval", "symbol", "interval"),
    # one row per bad candle and reason: re-ingesting it counts, it does not pile up
    Index(
        "uq_rejects_provider_symbol_interval_ts_reason",
        "provider",
        "symbol",
        "interval",
        "ts",
        "reason",
        unique=True,
    ),
)
