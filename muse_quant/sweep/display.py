"""The console during a sweep: a line per cell, a bar on a terminal, the libraries' output
sent to the sweep log."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from tqdm.auto import tqdm

from muse_quant.sweep.keys import Job

#: What lm-eval and the model libraries print during a sweep, and one line per cell.
LOG_FILE = "sweep.log"


class Display:
    """The console during a sweep: one line per cell on stderr (done/total, seconds, time left)
    and, on a terminal, a bar over cells; meanwhile whatever the libraries print (their own bars
    and warnings, on file descriptors 1 and 2) goes to the sweep log, with the same lines."""

    def __init__(self, log: Path, jobs: Sequence[Job], progress: bool) -> None:
        self.log, self.total, self.progress = log, len(jobs), progress
        self.done = sum(job.finished for job in jobs)
        self.skipped = [job for job in jobs if job.finished]
        self.seconds: list[float] = []

    def __enter__(self) -> Display:
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.console: TextIO = os.fdopen(os.dup(self.saved[2]), "w", buffering=1)
        self.sink = open(self.log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        for fd in (1, 2):
            os.dup2(self.sink.fileno(), fd)
        self.bar = tqdm(
            total=self.total,
            initial=self.done,
            unit="cell",
            desc="sweep",
            file=self.console,
            disable=not (self.progress and self.console.isatty()),
            dynamic_ncols=True,
        )
        left = self.total - self.done
        self.say(f"sweep of {self.total} cells: {self.done} finished earlier, {left} to run")
        for job in self.skipped:
            self.say(f"{_cell_line(job)}: skipped (finished earlier)")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self.sink.close()
        self.console.close()

    def warn(self, line: str) -> None:
        """A line for the log and, whatever ``progress`` says, the console."""
        print(line, file=self.sink, flush=True)
        self.bar.write(line, file=self.console)

    def say(self, line: str) -> None:
        print(line, file=self.sink, flush=True)
        if self.progress:
            self.bar.write(line, file=self.console)

    def started(self, job: Job) -> None:
        print(f"{_cell_line(job)}: running", file=self.sink, flush=True)
        self.bar.set_postfix_str(job.cell.name)

    def waiting(self, job: Job) -> Callable[[float], None]:
        """What to say while waiting for another process's cell."""

        def note(seconds: float) -> None:
            self.say(f"{_cell_line(job)}: waiting for the process running it ({seconds:.0f} s)")

        return note

    def left_to_another(self, job: Job) -> None:
        """A cell another process holds: this sweep comes back to it at the end."""
        self.say(f"{_cell_line(job)}: another process is running it; left to it")

    def finished_elsewhere(self, job: Job) -> None:
        """A cell another process finished: counted as done, not run here."""
        self.done += 1
        self.bar.update(1)
        self.say(f"{_cell_line(job)}: finished by another process")

    def finished(self, job: Job, seconds: float, where: str | None = None) -> None:
        """A cell this sweep ran: ``where`` names the node that ran it (Ray)."""
        self.done += 1
        self.seconds.append(seconds)
        left = self.total - self.done
        eta = sum(self.seconds) / len(self.seconds) * left
        estimate = f", {left} left (about {eta:.0f} s)" if left else ""
        on = f" on {where}" if where else ""
        self.say(f"[{self.done}/{self.total}] {_cell_line(job)}: {seconds:.1f} s{on}{estimate}")
        self.bar.update(1)


def _cell_line(job: Job) -> str:
    cell = job.cell
    return f"{cell.model.label} / {cell.corpus} / {cell.precision.name}"
