"""What a plan string that names a folder may be: a model's label, a precision's name.

A sweep writes ``RESULTS/<label>/<corpus>/<precision>/`` (and ``RESULTS/.locks/<label>/...``),
so these strings are checked when the plan is, before any cell runs: characters a folder name
can hold everywhere, and no longer than a file system allows once the sweep's own additions are
counted.
"""

from __future__ import annotations

import re

from harness_ext.errors import MuseQuantError

#: A label: letters, digits and ``. _ + -``, starting with a letter or digit.
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
#: The longest name (bytes) of a file or folder on the usual file systems (ext4, xfs, APFS).
NAME_MAX = 255
#: A label alone names folders; a precision also names its cells' staging folders,
#: ``.<precision>.building-XXXXXXXX`` (:func:`harness_ext.files.staged_dir`).
LABEL_MAX, PRECISION_MAX = NAME_MAX, NAME_MAX - len("..building-") - 8


def shown(label: str) -> str:
    """A label as errors quote it: whole, or its start when it is long."""
    return repr(label if len(label) <= 60 else f"{label[:40]}...")


def check_label(label: str, where: str, fix: str = "rename it") -> None:
    """Refuse a label that is no folder name: characters other than letters, digits and
    ``. _ + -``, or more than :data:`LABEL_MAX` bytes."""
    if not LABEL.fullmatch(label):
        raise MuseQuantError(
            f"{where}: a label is a folder name: letters, digits and . _ + - only, starting "
            f"with a letter or digit; {fix}"
        )
    _fits(label, LABEL_MAX, where, "the label", fix)


def check_precision_name(name: str, where: str) -> None:
    """Refuse a precision name longer than its cells' folders may be named."""
    _fits(name, PRECISION_MAX, where, f"precision {name[:40]!r}...", "use a shorter spelling")


def _fits(name: str, limit: int, where: str, what: str, fix: str) -> None:
    size = len(name.encode())
    if size > limit:
        raise MuseQuantError(
            f"{where}: {what} is {size} bytes, more than the {limit} that the results folder "
            f"names made from it allow (a file name has at most {NAME_MAX}); {fix}"
        )
