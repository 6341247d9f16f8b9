"""One exception type for bad input, so the command line can print it as one line and exit 2."""


class MuseQuantError(Exception):
    """Bad input or state the user can fix; the message says what is wrong and how to fix it."""
