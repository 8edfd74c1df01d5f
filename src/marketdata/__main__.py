"""Entry point for `python -m marketdata`."""

from marketdata.cli.main import run

run()
