"""One model request: the arguments read once on every path, strict, and the thread policy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_cli_eval import eval_args, written_files

from harness_ext.errors import MuseQuantError
from model_wrappers.model_arguments import parse_model_args
from model_wrappers.precisions import registry
from model_wrappers.request import read_request
from muse_quant.cli import main

CALLS: Counter[str] = Counter()


def count_everywhere(monkeypatch: pytest.MonkeyPatch, function: Callable[..., Any]) -> None:
    """Count calls of ``function`` through every module that imported it by name."""

    def counted(*args: Any, **kwargs: Any) -> Any:
        CALLS[function.__name__] += 1
        return function(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, function.__name__, None) is function:
            monkeypatch.setattr(module, function.__name__, counted)


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    import model_wrappers.muse_model  # noqa: F401  (every importer of resolve_precision loaded)
    import muse_quant.sweep.keys  # noqa: F401

    CALLS.clear()
    count_everywhere(monkeypatch, registry.resolve_precision)
    return CALLS


def results_file(out: Path) -> dict[str, Any]:
    (path,) = out.rglob("results_*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("precision", ["nf4", "gguf-q8_0"])
def test_the_command_line_resolves_the_precision_once(
    micro_world: Path, tmp_path: Path, resolutions: Counter[str], precision: str
) -> None:
    """torch and llama.cpp alike: read once before lm-eval starts, never again."""
    argv = eval_args(micro_world, tmp_path, "--tasks", "muse_news_knowmem_r", "--limit", "2")
    i = argv.index("--model_args") + 1
    argv[i] += f",precision={precision}"
    assert main(argv) == 0
    assert resolutions["resolve_precision"] == 1
    provenance = results_file(tmp_path)["config"]["muse_provenance"]
    assert provenance["precision"]["name"] == precision


def test_simple_evaluate_resolves_the_precision_once(
    micro_world: Path, resolutions: Counter[str]
) -> None:
    from lm_eval import simple_evaluate

    from muse_quant.lm_eval_tasks import task_manager

    target = micro_world / "models" / "target"
    results = simple_evaluate(
        model="muse",
        model_args=f"pretrained={target},precision=rtn-w4g64",
        tasks=["muse_news_knowmem_r"],
        limit=2,
        task_manager=task_manager({"muse_data": str(micro_world / "data")}),
    )
    assert resolutions["resolve_precision"] == 1
    assert results["config"]["muse_provenance"]["precision"]["name"] == "rtn-w4g64"


def test_a_sweep_resolves_each_cell_once(
    micro_world: Path, tmp_path: Path, resolutions: Counter[str]
) -> None:
    from muse_quant.sweep import plan_from_dict, run_sweep

    plan = plan_from_dict(
        {
            "corpora": {"news": str(micro_world / "data")},
            "models": [
                {
                    "label": "target",
                    "role": "target",
                    "pretrained": str(micro_world / "models" / "target"),
                }
            ],
            "precisions": ["fp32", "nf4", "gguf-q8_0"],
        },
        tmp_path,
    )
    run_sweep(plan, tmp_path / "results", progress=False)
    assert resolutions["resolve_precision"] == 3


# --------------------------------------------------------------------------- strict inputs


#: ``--model_args`` values (TARGET: the world's target) and other flags of each bad command.
BAD_EVAL = [
    (["pretrained=TARGET,pretrained=TARGET"], [], "pretrained= is given twice"),
    (["pretrained=TARGET,precision=nf4", "precision=fp4"], [], "precision= is given twice"),
    (["precision=nf4"], [], "pretrained= is missing"),
    (["pretrained=TARGET,nf4"], [], "expected `key=value`, got 'nf4'"),
    (["pretrained=TARGET,max_length=-5"], [], "max_length=-5.0: expected a positive whole"),
    (["pretrained=TARGET,merge=maybe"], [], "merge=maybe: expected true or false"),
    (["pretrained=TARGET,context_overflow=cut"], [], "context_overflow=cut: choose one of"),
    (["pretrained=TARGET,precision=nf4,calibration=news"], [], "nf4 uses no calibration texts"),
    (["pretrained=TARGET,precision=gptq-w4g128,damp_percent=-1"], [], "between 0 and 1"),
    (["pretrained=TARGET,precision=int8,threshold=-1"], [], "a finite number of at least 0"),
    (["pretrained=TARGET,batch_size=abc"], [], "batch_size=: give lm-eval's --batch_size"),
    (["pretrained=TARGET,device=gpu"], [], "device=: give lm-eval's --device"),
    (["pretrained=TARGET"], ["--batch_size", "0"], "--batch_size 0: a positive number"),
    (["pretrained=TARGET"], ["--batch_size", "-1"], "--batch_size -1: a positive number"),
    (["pretrained=TARGET"], ["--batch_size", "auto:0"], "--batch_size auto:0"),
    (["pretrained=TARGET"], ["--limit", "0"], "--limit 0: a positive number"),
    (["pretrained=TARGET"], ["--limit", "-3"], "--limit -3"),
    (["pretrained=TARGET"], ["--limit", "2.5"], "--limit 2.5"),
    (["pretrained=TARGET"], ["--threads", "0"], "--threads '0'"),
    (["pretrained=TARGET"], ["--threads", "many"], "--threads 'many'"),
    (["pretrained=TARGET"], ["--threads", "100000000"], "'100000000': at most 1024 threads"),
    (["pretrained=TARGET"], ["--num_fewshot", "-1"], "--num_fewshot -1"),
    (["pretrained=TARGET"], ["--predict_only"], "Specify --output_path"),
    (["pretrained=TARGET"], ["--num_fewshot", "5"], "the MUSE tasks take no few-shot examples"),
    (["pretrained=TARGET"], ["--apply_chat_template"], "rewrites the prompts MUSE defines"),
    (["pretrained=TARGET"], ["--limit", "many"], "argument --limit/-L: invalid float value"),
    (["pretrained=TARGET"], ["--metadata", "muse_data"], "argument --metadata: expected"),
    (["pretrained=TARGET"], ["--samples", "{not json"], "--samples"),
]


@pytest.mark.parametrize(("model_args", "flags", "expected"), BAD_EVAL)
def test_bad_eval_input_is_one_line_before_any_work(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, model_args: list[str],
    flags: list[str], expected: str,
) -> None:  # fmt: skip
    target = str(micro_world / "models" / "target")
    out = tmp_path / "out"
    argv = ["eval", "--model", "muse", "--tasks", "muse_news_knowmem_r", "--device", "cpu"]
    argv += ["--metadata", f"muse_data={micro_world / 'data'}"]
    for value in model_args:
        argv += ["--model_args", value.replace("TARGET", target)]
    if "--predict_only" not in flags:  # (that one is refused for want of an output path)
        argv += ["--output_path", str(out)]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("muse-quant: error: ") and expected in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert written_files(out) == []


@pytest.mark.parametrize("inside", ["models/target", "data/out", "models/target/out"])
def test_results_inside_the_model_or_data_read_are_refused(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, inside: str
) -> None:
    """lm-eval would write its results among the checkpoint's or the data's files (a toy world
    finding files it did not write then rebuilds itself); a sweep's results folder likewise."""
    import yaml

    world = tmp_path / "world"  # a copy: a write that got through must not touch the fixture
    shutil.copytree(micro_world, world, ignore=shutil.ignore_patterns("pretrain"))
    before = sorted(world.rglob("*"))
    argv = [
        "eval",
        "--model",
        "muse",
        "--tasks",
        "muse_news_knowmem_r",
        "--device",
        "cpu",
        "--model_args",
        f"pretrained={world / 'models/target'}",
        "--metadata",
        f"muse_data={world / 'data'}",
        "--output_path",
        str(world / inside),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "write outside the models and data it reads" in err[0], err
    plan = {
        "corpora": {"news": str(world / "data")},
        "precisions": ["fp32"],
        "options": {"device": "cpu"},
        "results": str(world / inside),
        "models": [
            {"label": "target", "role": "target", "pretrained": str(world / "models/target")},
            {"label": "retrain", "role": "retrain", "pretrained": str(world / "models/retrain")},
        ],
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    for results in (world / inside, world):  # inside an input, or holding one
        assert main(["sweep", str(tmp_path / "plan.yaml"), "--results", str(results)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "write outside the models and data it reads" in err[0], err
    assert sorted(world.rglob("*")) == before


def test_parse_model_args_refuses_repeats_and_reads_values_as_lm_eval_does() -> None:
    assert parse_model_args(["pretrained=m,merge=false", "max_length=64"]) == {
        "pretrained": "m", "merge": False, "max_length": 64,
    }  # fmt: skip
    with pytest.raises(MuseQuantError, match="merge= is given twice"):
        parse_model_args(["merge=true", "merge=false"])


def test_a_request_is_read_once_and_decides_everything(micro_world: Path) -> None:
    target = str(micro_world / "models" / "target")
    request = read_request({"pretrained": target, "precision": "gguf-q4_0", "batch_size": "8"})
    assert request.runtime == "llama.cpp" and request.precision.name == "gguf-q4_0"
    assert request.opened is not None and request.opened.weights.files
    assert request.lm_args == {"batch_size": "8"}
    native = read_request({"pretrained": target, "peft": target})
    assert native.precision is None and native.runtime == "torch"
    with pytest.raises(MuseQuantError, match="peft= uses lm-eval's loader, which precision="):
        read_request({"pretrained": target, "peft": target, "precision": "nf4"})


# --------------------------------------------------------------------------- threads


def threads_recorded(micro_world: Path, out: Path, *extra: str) -> int:
    """``torch.get_num_threads()`` inside a lone ``muse-quant eval``, as its results record."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    argv = eval_args(micro_world, out, "--tasks", "muse_news_knowmem_r", "--limit", "1", *extra)
    command = [sys.executable, "-m", "muse_quant", *argv]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return results_file(out)["config"]["muse_provenance"]["device"]["torch_threads"]


def test_a_lone_eval_uses_torch_default_threads_and_threads_sets_them(
    micro_world: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    default = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert threads_recorded(micro_world, tmp_path / "default") == int(default)
    assert threads_recorded(micro_world, tmp_path / "one", "--threads", "1") == 1


def test_plain_lm_eval_reports_our_input_errors_as_one_line(micro_world: Path) -> None:
    """lm_eval (not ours) running our tasks: a bad muse_data is one line and exit 2, no trace."""
    from muse_quant.lm_eval_tasks import tasks_path

    lm_eval = Path(sys.executable).parent / "lm_eval"
    command = [
        str(lm_eval), "run", "--include_path", str(tasks_path()), "--model", "hf",
        "--model_args", f"pretrained={micro_world / 'models' / 'target'}",
        "--tasks", "muse_news_knowmem_r", "--metadata", "muse_data=/no/such/folder",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("lm_eval: error: muse_data=/no/such/folder: no such folder"), last
