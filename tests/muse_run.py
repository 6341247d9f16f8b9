"""Shared by the MUSE task tests: run our tasks through lm-eval and read its results."""

from __future__ import annotations

from pathlib import Path


def run_tasks(model_dir: Path, data: Path, tasks: list[str], **kw) -> dict:
    """Our tasks through lm-eval's public API, the way the command line runs them."""
    from lm_eval import simple_evaluate

    import model_wrappers.muse_lm  # noqa: F401 - registers --model muse
    from muse_quant.lm_eval_tasks import task_manager

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
