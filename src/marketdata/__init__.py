"""marketdata: keeps a database of market data fresh and correct."""

__version__ = "0.1.0"
