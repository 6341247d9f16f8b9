"""Progress over a loop's steps: tqdm's bar on a terminal, a few plain lines anywhere else.

tqdm redraws its bar with a carriage return up to ten times a second; where stderr is a file or
a pipe (CI, ``2> build.log``) every redraw stays in the text, over a thousand for one toy-world
build. Off a terminal this prints plain lines instead: one when another tenth of the steps is
done and at least ``EVERY_SECONDS`` have passed since the last line, and one when it ends; and
transformers' own bars (one per model saved) are off there.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

#: The least time between two plain progress lines (the last line is always printed).
EVERY_SECONDS = 10.0


class PlainProgress:
    """The part of tqdm's interface the training loops use, printed as a few plain lines."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "step",
        file: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.n, self.tenth, self.postfix = 0, 0, ""
        self.started = self.last = clock()
        self.ended = False

    def update(self, n: int = 1) -> None:
        self.n += n
        tenth = 10 * self.n // self.total if self.total else 10
        if self.n >= self.total:
            self._line()
            self.ended = True
        elif tenth > self.tenth and self.clock() - self.last >= EVERY_SECONDS:
            self.tenth = tenth
            self._line()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        """The last line, unless the steps' end printed it already (a loop stopped early)."""
        if not self.ended:
            self._line()
            self.ended = True

    def _line(self) -> None:
        self.last = now = self.clock()
        percent = 100 * self.n // self.total if self.total else 100
        elapsed = now - self.started
        left = ""
        if 0 < self.n < self.total:  # tqdm's estimate: the rate so far over the steps to go
            left = f", about {elapsed / self.n * (self.total - self.n):.0f} s left"
        tail = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {self.n}/{self.total} {self.unit}s ({percent}%), "
            f"{elapsed:.0f} s{left}{tail}",
            file=self.file,
            flush=True,
        )

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoProgress:
    """The same interface, showing nothing: for a loop that runs beside another whose progress
    is the one shown (the retrain model of a real world waits for its target's epochs)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def step_progress(total: int, desc: str, unit: str = "step", shown: bool = True) -> Any:
    """A progress display over ``total`` steps on stderr: tqdm's bar (cleared when done) on a
    terminal, :class:`PlainProgress` elsewhere, :class:`NoProgress` unless ``shown``. All take
    ``update``, ``set_postfix``, ``close`` and work as context managers."""
    if not shown:
        return NoProgress()
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, leave=False)
    return PlainProgress(total, desc, unit)


@contextlib.contextmanager
def library_bars_on_terminal_only() -> Iterator[None]:
    """Inside it, transformers draws no progress bar (``Writing model shards``) unless stderr is
    a terminal; as it was afterwards."""
    if sys.stderr.isatty() or not transformers_logging.is_progress_bar_enabled():
        yield
        return
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()
