"""Small helpers shared by the package: atomic JSON writes, file hashes, progress lines, times.

A leaf module: standard library only (no TensorFlow), so the data, features, training and
download code can all use it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from keras_captioning.errors import CaptioningError

CHUNK_BYTES = 1 << 20  # 1 MiB reads for hashing
MIB = 1024 * 1024


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ""):
    """Yields a temporary path beside ``path``; on success it is fsynced and renamed to ``path``.

    The one writer of the package: a file that exists under its final name is complete. On
    ``OSError`` (no space, no permission, a folder that is a file, read-only file system) the
    temporary file is removed and one ``CaptioningError`` names ``path`` and the reason.
    ``suffix`` keeps an ending a writer needs (Keras saves only to ``*.keras``).
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        if os.path.isfile(tmp):
            fsync_path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise _cannot_write(path, err) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _cannot_write(path: str, err: OSError) -> CaptioningError:
    return CaptioningError(f"{path}: cannot write it ({err.strerror or first_line(err)})")


def make_dirs(path: str | os.PathLike) -> str:
    """``os.makedirs(path, exist_ok=True)``; an ``OSError`` is one CaptioningError naming ``path``."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise CaptioningError(f"{path}: is a file, not a folder") from None
    except OSError as err:
        raise _cannot_write(path, err) from None
    return path


def _remove_quietly(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


def write_json_atomic(path: str | os.PathLike, payload: dict | list, indent: int = 2) -> None:
    """Writes ``payload`` to ``path`` through ``atomic_output``.

    A dict's keys starting with ``_`` are in-memory bookkeeping and are not written.
    """
    data = {k: v for k, v in payload.items() if not str(k).startswith("_")} if isinstance(payload, dict) else payload
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=indent)
        fh.flush()


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (after a rename into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utc_now() -> str:
    """ISO-8601 UTC time to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty)."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


def human_bytes(n: int | float) -> str:
    """Bytes in binary units: ``"241.2 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def clock(seconds: float) -> str:
    """``h:mm:ss`` ("?" when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Percentage, rate and ETA of a long job: the one progress reporter of the package.

    ``unit="bytes"`` (downloads, archive extraction) shows MiB and MiB/s; any other unit
    (e.g. ``"images"``) shows counts. Lines go to ``emit`` (e.g. a logger's ``info``) when
    given, else to ``stream`` (stderr). On a terminal stream one line is redrawn at most every
    ``TTY_INTERVAL`` seconds; elsewhere a new line is written at every ``STEP`` percent, or
    every ``UNKNOWN_INTERVAL`` seconds when the total is unknown; with ``interval`` set, at
    most every ``interval`` seconds instead of by percentage.
    """

    TTY_INTERVAL = 0.25
    STEP = 5.0
    UNKNOWN_INTERVAL = 10.0

    def __init__(self, label: str, total: int | None, start: int = 0, stream: TextIO | None = None,
                 enabled: bool = True, unit: str = "bytes", emit: Callable[[str], None] | None = None,
                 interval: float | None = None):
        self.label, self.total, self.start = label, total or None, start
        self.stream = stream if stream is not None else sys.stderr
        self.enabled, self.unit, self.emit, self.interval = enabled, unit, emit, interval
        self.tty = enabled and emit is None and _isatty(self.stream)
        self.t0 = self.last = time.monotonic()
        self.done = start
        self.next_pct = self._pct_step(start) + self.STEP
        self.shown = None  # the count last written
        self.closed = False

    def add(self, count: int) -> None:
        """Counts ``count`` more items done."""
        self.update(self.done + count)

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self.last >= self.TTY_INTERVAL:
                self._write(now, "\r")
        elif self.interval is not None:
            if now - self.last >= self.interval and (not self.total or done < self.total):
                self._write(now, "\n")
        elif self.total:
            if 100.0 * done / self.total >= self.next_pct:
                self.next_pct = self._pct_step(done) + self.STEP
                self._write(now, "\n")
        elif now - self.last >= self.UNKNOWN_INTERVAL:
            self._write(now, "\n")

    def close(self) -> None:
        if self.closed or not self.enabled:
            return
        self.closed = True
        now = time.monotonic()
        if self.tty:
            self._write(now, "\r")
            self.stream.write("\n")
            self.stream.flush()
        elif self.shown != self.done and self.emit is None:
            self._write(now, "\n")

    def _pct_step(self, done: int) -> float:
        if not self.total:
            return 0.0
        return (100.0 * done / self.total) // self.STEP * self.STEP

    def _text(self, now: float) -> str:
        rate = (self.done - self.start) / max(now - self.t0, 1e-6)
        if self.unit == "bytes":
            amount, speed = human_bytes(self.done), f"{rate / MIB:.1f} MiB/s"
            total = human_bytes(self.total) if self.total else None
        else:
            amount, speed = str(self.done), f"{rate:.1f} {self.unit}/s"
            total = f"{self.total} {self.unit}" if self.total else None
        if not self.total:
            return f"{self.label}: {amount} {speed}"
        eta = clock(max(self.total - self.done, 0) / rate) if rate > 0 else "?"
        pct = math.floor(1000.0 * self.done / self.total) / 10  # never "100.0%" before the end
        return f"{self.label}: {pct:5.1f}% {amount}/{total} {speed} ETA {eta}"

    def _write(self, now: float, lead: str) -> None:
        self.last, self.shown = now, self.done
        text = self._text(now)
        if self.emit is not None:
            self.emit(text)
        elif lead == "\r":
            self.stream.write("\r" + text.ljust(79))
            self.stream.flush()
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
