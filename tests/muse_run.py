"""Shared by the MUSE task tests: run our tasks through lm-eval, read its results, pin threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: the toy model's matmuls are tiny, and on a shared 2-core machine two
    OpenMP threads slow down ~100x whenever another process holds the second core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_tasks(model_dir: Path, data: Path, tasks: list[str], **kw) -> dict:
    """Our tasks through lm-eval's public API, the way the command line runs them."""
    from lm_eval import simple_evaluate

    import model_wrappers  # noqa: F401 - registers --model muse
    from harness_ext.harness import task_manager

    model = kw.pop("model", "muse")
    model_args = {"pretrained": str(model_dir), **kw.pop("model_args", {})}
    metadata = {**model_args, "muse_data": str(data), **kw.pop("metadata", {})}
    return simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        task_manager=task_manager(metadata),
        batch_size=kw.pop("batch_size", 64),
        device="cpu",
        bootstrap_iters=0,
        **kw,
    )


def flat_metrics(results: dict) -> dict[str, float]:
    """``{"verbmem_f": 33.1, "auc_mink_40": 0.2, ...}`` from lm-eval's results (filter dropped)."""
    return {
        name.split(",")[0]: value
        for task in results["results"].values()
        for name, value in task.items()
        if "," in name and "_stderr" not in name
    }
