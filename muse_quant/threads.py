"""The thread policy of every command, stated once.

A command alone on a machine uses torch's own default (one thread per core, or
``OMP_NUM_THREADS`` when set). ``--threads N`` (every subcommand) and a plan's ``threads: N``
set it instead, for torch in this process and for the processes it starts (their OpenMP reads
``OMP_NUM_THREADS`` when torch loads). Work that runs side by side takes its share: the Ray
executor gives each cell the CPUs Ray assigned it, the zoo one thread per run (one run per
core), the toy world's training one thread (so that a seed gives the same weights whatever
the cores and their load, on CPUs of one instruction set). The tests pin one thread per pytest
worker themselves (Makefile).
"""

from __future__ import annotations

import os
import sys

#: The environment variables OpenMP and MKL read when a process loads torch.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: The most threads a command or a plan may ask for: far beyond any machine's cores, and below
#: what makes OpenMP fail to start its threads (``--threads 100000`` crashed torch with SIGSEGV).
MAX_THREADS = 1024


def thread_count_problem(threads: object) -> str | None:
    """Why ``threads`` is not a thread count (a whole number in [1, MAX_THREADS]), or None."""
    if type(threads) is not int or threads < 1:
        return "a positive whole number of threads"
    if threads > MAX_THREADS:
        return f"at most {MAX_THREADS} threads (more than any machine has cores)"
    return None


def parse_threads(text: str) -> int:
    """``--threads TEXT`` as a thread count, or a ValueError saying why it is not one."""
    try:
        threads: object = int(text)
    except ValueError:
        threads = None
    problem = thread_count_problem(threads)
    if problem:
        raise ValueError(f"{text!r}: {problem}")
    assert isinstance(threads, int)
    return threads


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads from now on, here and in the processes started from here."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:  # already loaded (a caller, a test): tell it too
        torch.set_num_threads(threads)
