"""Shared by the tests: run our tasks through lm-eval and read its results; each worker's cores."""

from __future__ import annotations

import os
from pathlib import Path

from bench.results import flat_metrics


def cores_for_this_worker() -> int:
    """This pytest worker's share of the cores (all of them without pytest-xdist)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def run_tasks(model_dir: Path, data: Path, tasks: list[str], **kw) -> dict:
    """Our tasks through lm-eval's public API, the way the command line runs them."""
    from lm_eval import simple_evaluate

    import model_wrappers.muse_model  # noqa: F401 - registers --model muse
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


def one_line(error) -> str:
    """The message of a raised error (``pytest.ExceptionInfo``), checked to be one line."""
    text = str(error.value)
    assert text and "\n" not in text
    return text


def real_and_emulated_metrics(target: Path, data: Path, precision: str) -> list[dict[str, float]]:
    """The MUSE suite (lm-eval, our tasks) on a precision's real kernels, then emulated."""
    from lm_eval import simple_evaluate

    from model_wrappers.loading import load_causal_lm
    from model_wrappers.muse_model import muse_model
    from muse_quant.lm_eval_tasks import task_manager

    meta = {"pretrained": str(target), "muse_data": str(data)}
    metrics = []
    for emulated in (False, True):
        model, _ = load_causal_lm(str(target), precision=precision, emulated=emulated)
        lm = muse_model(dict(pretrained=model, tokenizer=str(target), batch_size=64))
        results = simple_evaluate(
            model=lm, tasks=["muse_news"], bootstrap_iters=0, task_manager=task_manager(meta)
        )
        metrics.append(flat_metrics(results))
    return metrics


def refused_on_the_command_line(world: Path, tmp_path: Path, capsys, precision: str) -> str:
    """``muse-quant eval`` at ``precision`` (with ``$MUSE_QUANT_CACHE`` under ``tmp_path``): exit
    2 with one error line, which is returned; no results written, nothing cached."""
    from muse_quant.cli import main

    out = tmp_path / "out"
    argv = [
        "eval", "--model", "muse", "--model_args",
        f"pretrained={world / 'models' / 'target'},precision={precision}",
        "--tasks", "muse_news_knowmem_f", "--metadata", f"muse_data={world / 'data'}",
        "--device", "cpu", "--output_path", str(out),
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("muse-quant: error: ")
    assert not out.exists() and not (tmp_path / "cache").exists()
    return err[-1]


#: A Llama block's linears, the layers weight-only quantizers replace.
BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def block_linears(model):
    """``{name: module}`` of a model's block linears."""
    return {n: m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in BLOCK_LINEARS}


def logits(model):
    """The model's logits on a fixed random batch (4 x 32 token ids)."""
    import torch

    ids = torch.randint(3, 200, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids).logits
