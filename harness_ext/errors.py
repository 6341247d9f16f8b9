"""One exception type for bad input, so the command line can print it as one line and exit 2."""

from __future__ import annotations


class MuseQuantError(Exception):
    """Bad input or state the user can fix; the message says what is wrong and how to fix it."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line
    errors that wrap a library's."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
