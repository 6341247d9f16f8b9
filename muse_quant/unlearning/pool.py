"""Several independent unlearning runs at once: one single-threaded process per core.

A toy model's steps are many small matmuls: one thread per run keeps each run's weights what a
lone single-threaded run gives (the order of floating-point reductions depends on the thread
count), and runs side by side use the cores that one run cannot.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from muse_quant.unlearning.config import UnlearnConfig
from muse_quant.unlearning.recipe import unlearn


def workers_for(runs: int, workers: int | None = None) -> int:
    """How many processes ``runs`` runs take: ``workers`` (default: one per core), at most one
    per run."""
    return max(1, min(runs, workers or os.cpu_count() or 1))


def unlearn_all(
    target: Path,
    data: Path,
    configs: Mapping[str, UnlearnConfig],
    folder: Path,
    workers: int | None = None,
    on_done: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Run each of ``configs`` into ``folder / name``; ``workers`` processes (default: one per
    core, at most one per run); ``on_done(name)`` as each run finishes. The first failure is
    raised (runs not yet started are cancelled) once the runs under way have ended."""
    workers = workers_for(len(configs), workers)
    spawn = multiprocessing.get_context("spawn")  # no torch state forked into the workers
    one_thread = {"initializer": torch.set_num_threads, "initargs": (1,)}
    with ProcessPoolExecutor(workers, spawn, **one_thread) as pool:
        futures = {
            pool.submit(unlearn, target, data, config, folder / name, progress=False): name
            for name, config in configs.items()
        }
        try:
            for future in as_completed(futures):
                future.result()
                if on_done is not None:
                    on_done(futures[future])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return {name: folder / name for name in configs}
