"""One progress helper for every long step: a tqdm bar on a terminal, periodic plain lines in a pipe.

A bar redraws itself with ``\\r``, which a pipe (docker logs, CI, ``| tee``) keeps as one endless line;
there, ``progress`` prints a plain line every ``every_s`` seconds and one at the end instead::

    label corpus: 12288/51234 texts (24%), 141.2 texts/s, eta 4m36s

``TQDM_DISABLE=1`` silences both (the fuzz run sets it). Work an earlier run already did (the label
shards a resumed run keeps) goes in with ``skip(n)``: it moves the count but not the rate, so the eta of a
resumed step is the pace of this run's work.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

T = TypeVar("T")
EVERY_S = 10.0


class Progress(Protocol):
    def update(self, n: int = 1) -> object: ...

    def skip(self, n: int) -> None: ...

    def set_postfix(self, refresh: bool = True, **values: Any) -> None: ...

    def close(self) -> None: ...


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PlainProgress:
    """Progress as a plain line every ``every_s`` seconds and at the end (no carriage returns)."""

    def __init__(self, total: int | None, desc: str, unit: str, every_s: float = EVERY_S, leave: bool = True) -> None:
        self.total, self.desc, self.unit = total, desc, unit.strip() or "it"
        self.every_s, self.leave = every_s, leave
        self.n = self.skipped = 0
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.closed = False

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.n - self.skipped) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n} {self.unit}"
        if self.total:
            done = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        parts = [f"{self.desc}: {done}"]
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {_duration((self.total - self.n) / rate)}")
        else:
            parts.append(f"{_duration(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            print(self._line(), file=sys.stderr, flush=True)

    def skip(self, n: int) -> None:
        """``n`` items done before this run: counted, but not in the rate."""
        self.n += n
        self.skipped += n

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed and self.leave:
            print(self._line(), file=sys.stderr, flush=True)
        self.closed = True

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Bar(tqdm):
    """tqdm with ``skip``: the items go into the count and into ``initial``, which tqdm leaves out of its
    rate, and into ``last_print_n``, so the smoothed rate never sees them as progress."""

    def skip(self, n: int) -> None:
        self.n += n
        self.initial += n
        self.last_print_n += n
        self.refresh()


class _Silent(PlainProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def on_terminal() -> bool:
    return sys.stderr.isatty()


def quiet_library_bars() -> None:
    """In a pipe, the libraries' own bars (transformers' "Loading weights", the hub's downloads) would be
    endless ``\r`` lines too: turn them off there. Call it before transformers is imported (it reads the
    variable then); an explicit ``HF_HUB_DISABLE_PROGRESS_BARS`` wins."""
    if not on_terminal():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def progress(total: int | None = None, desc: str = "", unit: str = "it", leave: bool = True,
             every_s: float = EVERY_S) -> Any:
    """A bar (tqdm) on a terminal, plain periodic lines in a pipe; use it as a context manager."""
    if os.environ.get("TQDM_DISABLE", "") not in ("", "0"):
        return _Silent(total, desc, unit)
    if on_terminal():
        return Bar(total=total, desc=desc, unit=unit, mininterval=1.0, leave=leave)
    return PlainProgress(total, desc, unit, every_s, leave)


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          leave: bool = True) -> Iterator[T]:
    """Iterate ``items`` with progress (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress(total, desc, unit, leave)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def note(message: str) -> None:
    """A line of its own that does not break a bar on a terminal."""
    if on_terminal():
        tqdm.write(message)
    else:
        print(message, flush=True)
