"""One exception type for bad input, so the command line can print it as one line and exit 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
