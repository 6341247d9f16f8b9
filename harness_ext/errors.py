"""One exception type for bad input, so the command line can print it as one line and exit 2."""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Iterable
from types import TracebackType


class MuseQuantError(Exception):
    """Bad input or state the user can fix; the message says what is wrong and how to fix it."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line
    errors that wrap a library's."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the known name closest to a mistyped one, else ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_line_when_uncaught() -> None:
    """Make an uncaught :class:`MuseQuantError` one line on stderr and exit status 2, as
    ``muse-quant`` prints it, in a program that is not ours: plain ``lm_eval`` running our
    tasks or model lets our errors reach the interpreter as tracebacks with status 1.

    Any other exception keeps the hook it had. The process exits from the hook (``os._exit``
    after flushing the logs and streams): the interpreter would otherwise exit with status 1.
    """
    previous = sys.excepthook
    if getattr(previous, "muse_quant", False):
        return

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(error, MuseQuantError):
            previous(kind, error, tb)
            return
        logging.shutdown()
        sys.stdout.flush()
        print(f"{os.path.basename(sys.argv[0]) or 'python'}: error: {error}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)

    hook.muse_quant = True  # type: ignore[attr-defined]
    sys.excepthook = hook
