"""The sweep on Ray: each unfinished cell is one Ray task, on a laptop or a cluster.

Without an address Ray starts a local runtime; with ``auto`` or an address the driver joins a
running cluster (Ray's own launchers start one on SLURM, Kubernetes or cloud machines). A task
asks for the resources its precision needs (plan: ``num_cpus`` / ``num_gpus`` per precision;
default one GPU on CUDA, else one CPU) and runs the cell exactly as the local executor does
(:mod:`.cell`), under the cell's lock, so the files are the same and a cell is never run twice.
Ray retries a task whose worker died (a killed process, a node that left) up to ``RETRIES``
times; a cell that still fails is named at the end, after every other cell finished.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from model_wrappers.muse_model import muse_model
from model_wrappers.opening import reusing_checkpoints
from muse_quant.lm_eval_patches import environment_report_once, git_hash_quietly
from muse_quant.sweep.cell import TaskSet, cell_lock, evaluate_cell
from muse_quant.sweep.display import Display
from muse_quant.sweep.keys import Job
from muse_quant.sweep.plan import SweepOptions

#: Tries of a cell after the first whose worker died before it finished.
RETRIES = 2
#: How often the driver looks up from waiting for a cell, to honour a Ctrl-C (seconds).
POLL_SECONDS = 0.5


def run_on_ray(jobs: list[Job], options: SweepOptions, display: Display) -> list[str]:
    """Run ``jobs`` as Ray tasks; returns one line per cell that failed (none on success).

    Ctrl-C cancels every task still pending or running and re-raises (exit 130); finished
    cells stay, and a resumed sweep redoes none of them.
    """
    context = ray.init(
        address=options.ray_address, log_to_driver=False, configure_logging=False,
        ignore_reinit_error=True,
    )  # fmt: skip
    dashboard = getattr(context, "dashboard_url", None)
    display.warn(
        f"ray: {len(jobs)} cell(s) on {_nodes()} node(s)"
        + (f", dashboard http://{dashboard}" if dashboard else "")
    )
    remote = ray.remote(max_retries=RETRIES, retry_exceptions=False)(_run_cell)
    pending = {
        remote.options(**_resources(job, options)).remote(job, options): job for job in jobs
    }
    failures = []
    try:
        with _ctrl_c_kept() as interrupted:
            while pending:
                if interrupted():
                    raise KeyboardInterrupt
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                if done:
                    _collect(done[0], pending, failures, display)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()
    return failures


def _collect(ref: Any, pending: dict, failures: list[str], display: Display) -> None:
    """One finished task: its cell shown as finished, or its failure kept for the end."""
    job = pending.pop(ref)
    try:
        outcome = ray.get(ref)
    except (ray.exceptions.RayError, MemoryError) as e:
        failures.append(f"{job.cell.name}: {type(e).__name__}: {_first_line(e)}")
        display.warn(f"{job.cell.name}: failed after {RETRIES + 1} tries ({failures[-1]})")
        return
    if outcome["ran"]:
        display.finished(job, outcome["seconds"], where=outcome["node"])
    else:
        display.finished_elsewhere(job)


@contextlib.contextmanager
def _ctrl_c_kept() -> Iterator[Callable[[], bool]]:
    """Yields "was Ctrl-C pressed?". A SIGINT that lands while Ray's own code runs in the
    driver can be swallowed there (seen: a sweep interrupted as a cell finished ran to its
    end, exit 0); the flag set here outlives that, and the loop polls it between waits."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signals reach the main thread only
        return
    pressed = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        pressed.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pressed.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _resources(job: Job, options: SweepOptions) -> dict[str, Any]:
    """What a cell asks Ray for: its precision's ``num_cpus`` (default: the plan's ``threads``,
    else one) and ``num_gpus`` (default: one on a CUDA device)."""
    spec = job.cell.spec
    on_gpu = job.cell.device.startswith("cuda")
    return {
        "num_cpus": spec.num_cpus if spec.num_cpus is not None else options.threads or 1,
        "num_gpus": spec.num_gpus if spec.num_gpus is not None else (1 if on_gpu else 0),
    }


def _run_cell(job: Job, options: SweepOptions) -> dict[str, Any]:
    """In a Ray worker: evaluate one cell under its lock (waiting for another process holding
    it, and skipping it if that process finished it)."""
    import torch

    assigned = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
    torch.set_num_threads(options.threads or assigned)  # its share of the node
    started = time.perf_counter()
    _reuse_in_this_worker()
    with cell_lock(job, True, lambda _s: None):
        if job.finished_now():
            return {"ran": False}
        key = (job.cell.corpus, job.tokenizer_id)
        if key not in _TASK_SETS:
            _TASK_SETS[key] = TaskSet.build(job.cell.corpus, job.metadata)
        lm = muse_model(
            job.model_kwargs(), {"batch_size": options.batch_size, "device": job.cell.device}
        )
        evaluate_cell(job, lm, _TASK_SETS[key], options)
    node = f"{socket.gethostname()}:{ray.get_runtime_context().get_node_id()[:8]}"
    return {"ran": True, "seconds": time.perf_counter() - started, "node": node}


#: What a worker process keeps between the cells Ray gives it, as the local executor keeps it
#: between cells: the corpus tasks, the last checkpoint's weights, lm-eval's environment report.
_TASK_SETS: dict[tuple[str, str], TaskSet] = {}


@functools.cache
def _reuse_in_this_worker() -> contextlib.ExitStack:
    """Entered at the worker's first cell, left open until the worker process ends."""
    kept = contextlib.ExitStack()
    kept.enter_context(reusing_checkpoints())
    kept.enter_context(environment_report_once())
    kept.enter_context(git_hash_quietly())
    return kept


def _nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
