"""Operations tests run the installed command like the CLI tests do."""

from tests.cli.conftest import env

__all__ = ["env"]
