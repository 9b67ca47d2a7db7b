"""The one base of the project's own errors: a problem a person can fix, said in one line.

A ``ProjectError`` carries the problem (its message, which names the file, key or step) and, where
one exists, the fix (``hint``, e.g. "run `sd run features` first"). The CLI prints both on one line
and exits non-zero without a traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ProjectError(Exception):
    """An error of the user's inputs or of the run's state, not of the code."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        """The problem and its fix on one line (newlines of a long message folded)."""
        text = " ".join(str(self).split())
        return f"{text} ({self.hint})" if self.hint else text


def exit_on_project_error(work: Callable[[], T]) -> T:
    """Run ``work`` for a command line: a ProjectError becomes one line on stderr and a non-zero exit,
    without a traceback; any other exception propagates (it is a bug). ``sd`` and ``python -m training``
    share it."""
    try:
        return work()
    except ProjectError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
