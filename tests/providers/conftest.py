"""Fixtures for provider tests."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.fakes.server import FakeServer, serve


@pytest.fixture
def serve_fake() -> Callable[[Any], AbstractContextManager[FakeServer]]:
    """Serve a fake provider on a loopback port for the duration of a with-block."""
    return serve
