"""LOG_FILE: JSON lines, rotated and pruned, shared safely by every process that writes it.

Each record is one `write(2)` on a descriptor opened with O_APPEND, so lines from two
processes never interleave. Rotation happens under a lock file beside the log: the first
process to find the file due renames it; every process notices (the path no longer names
the file it has open) and reopens the path. Retention prunes rotated files by count or age.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loguru import Message, Record

DEFAULT_ROTATION = "10 MB"
DEFAULT_RETENTION = "10 files"
_SIZE = re.compile(r"^(\d+)\s*(b|kb|mb|gb)$")
_FILES = re.compile(r"^(\d+)(\s*files?)?$")
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
_ROTATED_STAMP = r"\d{8}T\d{6}\.\d{6}Z(-\d+)?"


@dataclass(frozen=True, slots=True)
class Rotation:
    """When the current file is rotated: at a size, or when a period boundary (UTC) passes."""

    max_bytes: int | None = None
    period: int | None = None  # seconds: 1d rotates at 00:00 UTC, 1h on the hour


@dataclass(frozen=True, slots=True)
class Retention:
    """Which rotated files are kept: the newest `files`, or those younger than `max_age`."""

    files: int | None = None
    max_age: int | None = None


def parse_rotation(raw: str) -> Rotation:
    """LOG_ROTATION: a size ('10 MB', '500 KB', '1 GB') or a period ('1d', '12h', '1w').

    Raises:
        ValueError: With what is accepted.
    """
    from marketdata.domain import parse_duration
    from marketdata.errors import InputError

    text = raw.strip().lower()
    size = _SIZE.fullmatch(text)
    if size and int(size[1]) > 0:
        return Rotation(max_bytes=int(size[1]) * _SIZE_UNITS[size[2]])
    try:
        return Rotation(period=parse_duration(text))
    except InputError:
        raise ValueError(
            "use a size such as 10 MB (B, KB, MB, GB) or a period such as 1d or 12h"
        ) from None


def parse_retention(raw: str) -> Retention:
    """LOG_RETENTION: how many rotated files to keep ('10 files', '10') or for how long ('14d').

    Raises:
        ValueError: With what is accepted.
    """
    from marketdata.domain import parse_duration
    from marketdata.errors import InputError

    text = raw.strip().lower()
    files = _FILES.fullmatch(text)
    if files and int(files[1]) > 0:
        return Retention(files=int(files[1]))
    try:
        return Retention(max_age=parse_duration(text))
    except InputError:
        raise ValueError("use a number of files such as 10 files or an age such as 14d") from None


def flat_record(record: Record) -> dict[str, Any]:
    """One log record as a flat JSON-ready object: time, level, message, then context
    (run_id, trigger, symbol, interval, provider, ...), logger name, process id, exception."""
    from marketdata.redact import scrub

    data: dict[str, Any] = {
        "time": record["time"]
        .astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record["level"].name,
        "message": record["message"],
    }
    for key, value in record["extra"].items():
        if key not in data and not key.startswith("_"):
            data[key] = value if isinstance(value, int | float | bool | None) else str(value)
    data["logger"] = record["name"]
    data["pid"] = record["process"].id
    if record["exception"] is not None:
        import traceback

        kind, value, tb = record["exception"]
        data["exception"] = scrub("".join(traceback.format_exception(kind, value, tb)))
    return data


class SharedLogFile:
    """A loguru sink appending JSON lines to `path`; see the module docstring."""

    def __init__(
        self,
        path: Path,
        rotation: Rotation,
        retention: Retention,
        *,
        clock: Any = time.time,
    ) -> None:
        self.path = path
        self.rotation = rotation
        self.retention = retention
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()

    def write(self, message: Message) -> None:
        """Append one record (loguru calls this with the formatted message)."""
        line = json.dumps(flat_record(message.record), ensure_ascii=False, default=str)
        data = (line + "\n").encode()
        with self._lock:
            self._follow()
            if self._due(len(data)):
                self._rotate(len(data))
            os.write(self._fd, data)

    def close(self) -> None:
        """Close the descriptor."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- rotation ---------------------------------------------------------------------------

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _follow(self) -> None:
        """Reopen the path when another process rotated (or someone removed) our file."""
        try:
            current = self.path.stat()
        except FileNotFoundError:
            current = None
        mine = os.fstat(self._fd)
        if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
            os.close(self._fd)
            self._fd = self._open()

    def _due(self, incoming: int) -> bool:
        st = os.fstat(self._fd)
        if st.st_size == 0:
            return False
        if self.rotation.max_bytes is not None:
            return st.st_size + incoming > self.rotation.max_bytes
        if self.rotation.period is not None:
            period = self.rotation.period
            return int(st.st_mtime // period) < int(self._clock() // period)
        return False

    def _rotate(self, incoming: int) -> None:
        from filelock import FileLock

        with FileLock(f"{self.path}.lock"):
            self._follow()  # another process may have rotated while we waited
            if self._due(incoming):
                self.path.rename(self._rotated_name(os.fstat(self._fd).st_mtime))
                os.close(self._fd)
                self._fd = self._open()
            self._prune()

    def _rotated_name(self, mtime: float) -> Path:
        stamp = datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        candidate = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        n = 1
        while candidate.exists():
            candidate = self.path.with_name(f"{self.path.stem}.{stamp}-{n}{self.path.suffix}")
            n += 1
        return candidate

    def rotated_files(self) -> list[Path]:
        """Rotated files of this log, oldest first."""
        pattern = re.compile(
            re.escape(self.path.stem) + r"\." + _ROTATED_STAMP + re.escape(self.path.suffix)
        )
        return sorted(p for p in self.path.parent.iterdir() if pattern.fullmatch(p.name))

    def _prune(self) -> None:
        rotated = self.rotated_files()
        doomed: list[Path] = []
        if self.retention.files is not None:
            doomed = rotated[: max(0, len(rotated) - self.retention.files)]
        if self.retention.max_age is not None:
            oldest = self._clock() - self.retention.max_age
            doomed = [p for p in rotated if p.stat().st_mtime < oldest]
        for path in doomed:
            path.unlink(missing_ok=True)
