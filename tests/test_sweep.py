"""``muse-quant sweep``: plan checks, reuse that changes no number, and resuming after SIGKILL.

One small sweep (target and retrain x fp32 and emulated nf4 on the micro world's news data) runs
in-process once; every cell must equal a fresh, independent lm-eval run of that cell. The same
plan then runs as a real ``muse-quant sweep`` process that is SIGKILLed twice (after a finished
cell, then in the middle of a cell) and restarted: finished cells are skipped untouched and the
final results equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from muse_run import run_tasks
from test_loading import logits, make_adapter
from transformers import AutoModelForCausalLM

import model_wrappers.muse_model as muse_model_module
from harness_ext.errors import MuseQuantError
from harness_ext.metrics.auc import auc_forget_holdout
from model_wrappers.checkpoints import Checkpoint
from model_wrappers.loading import load_causal_lm
from model_wrappers.opening import open_checkpoint, reusing_checkpoints
from muse_quant.cli import main
from muse_quant.sweep import (
    ModelSpec,
    Plan,
    PrecisionSpec,
    SweepOptions,
    format_cells,
    load_plan,
    plan_from_dict,
    plan_jobs,
    run_sweep,
)
from muse_quant.sweep.cell import TaskSet

#: The cells of the resumed sweep's plan, in the order it runs them.
CELLS = [
    ("target", "news", "fp32"),
    ("target", "news", "nf4"),
    ("retrain", "news", "fp32"),
    ("retrain", "news", "nf4"),
]
#: The uninterrupted sweep also reads a copy of the data as "books": one model and precision
#: serves both corpora (model first, then precision, then corpus).
SWEPT = [
    (label, corpus, precision) for label, _, precision in CELLS for corpus in ("news", "books")
]
#: lm-eval's results keys that a fresh run of a cell must reproduce exactly.
SAME_AS_FRESH = ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples")


def plan_data(
    world: Path, corpora: tuple[str, ...] = ("news",), books: Path | None = None, **options: object
) -> dict:
    """A plan over the world's data; a second corpus needs a folder of its own (``books``)."""
    folders = {"news": world / "data", "books": books}
    return {
        "results": "results",
        "corpora": {corpus: str(folders[corpus]) for corpus in corpora},
        "precisions": ["fp32", "nf4"],
        "options": {"device": "cpu", "batch_size": 64, "bootstrap_iters": 0, "emulated": True}
        | options,
        "models": [
            {"label": "target", "role": "target", "pretrained": str(world / "models/target")},
            {"label": "retrain", "role": "retrain", "pretrained": str(world / "models/retrain")},
        ],
    }


def write_plan(folder: Path, data: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plan.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def leftovers(results: Path) -> list[Path]:
    """Staging folders or temporary files a sweep should never leave behind."""
    names = (".sweep-", "tmp")
    return [p for p in results.rglob("*") if p.name.startswith(names) or ".building-" in p.name]


#: What the uninterrupted sweep did, counted by :func:`counting`.
WORK: Counter[str] = Counter()


def counting(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
    """Count calls of ``owner.name`` in :data:`WORK`; the real one still does the work."""
    real = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        WORK[f"{owner.__name__}.{name}"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


@pytest.fixture(scope="module")
def books(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the world's data, read as the books corpus (a folder is one corpus)."""
    return Path(shutil.copytree(micro_world / "data", tmp_path_factory.mktemp("books") / "data"))


@pytest.fixture(scope="module")
def swept(micro_world: Path, books: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted in-process sweep; returns its results folder."""
    data = plan_data(micro_world, ("news", "books"), books)
    plan = load_plan(write_plan(tmp_path_factory.mktemp("sweep"), data))
    assert plan.results is not None
    with pytest.MonkeyPatch.context() as monkeypatch:
        counting(monkeypatch, Checkpoint, "open")  # check and hash a checkpoint's files
        counting(monkeypatch, AutoModelForCausalLM, "from_pretrained")  # read weights from disk
        counting(monkeypatch, muse_model_module, "build")  # build a model at a precision
        counting(monkeypatch, TaskSet, "build")  # build a corpus's lm-eval tasks
        paths = run_sweep(plan, plan.results, progress=False)
    assert [p.relative_to(plan.results).parts[:3] for p in paths] == SWEPT
    return plan.results


# --------------------------------------------------------------------------- reuse


def test_reused_checkpoint_builds_what_a_fresh_load_builds(target: Path, tmp_path: Path) -> None:
    """Inside ``reusing_checkpoints`` each precision is built from one in-memory copy of the
    float32 weights (merged adapter included): same logits and provenance as a fresh load."""
    base = load_causal_lm(str(target))[0]
    adapter = str(make_adapter(base, tmp_path / "lora"))
    builds = [
        {"precision": "fp32"},
        {"precision": "nf4"},
        {"precision": "rtn-w4g128"},
        {"precision": "fp4", "emulated": True},
        {"precision": "nf4", "adapter": adapter, "merge": True},
        {"precision": "nf4", "adapter": adapter, "merge": False},
    ]
    fresh = [load_causal_lm(str(target), **kw) for kw in builds]
    with reusing_checkpoints():
        first, second = (load_causal_lm(str(target))[0] for _ in range(2))
        opened = open_checkpoint(str(target))
        assert opened is open_checkpoint(str(target))  # files checked and hashed once
        held = opened.source._float32_model
        # fp32 builds share the held tensors: no second copy in memory, nothing read again.
        embeddings = [m.get_input_embeddings().weight for m in (first, second, held)]
        assert len({w.data_ptr() for w in embeddings}) == 1
        reused = [load_causal_lm(str(target), **kw) for kw in builds]
        assert opened.source._float32_model is None  # let go once another checkpoint opened
    for kw, (model, provenance), (fresh_model, fresh_provenance) in zip(
        builds, reused, fresh, strict=True
    ):
        assert torch.equal(logits(model), logits(fresh_model)), kw
        assert provenance == fresh_provenance, kw


def test_sweep_does_shared_work_once(swept: Path) -> None:
    """8 cells: 2 checkpoints hashed and read once each, 4 models (one per checkpoint and
    precision, serving both corpora), 2 task sets (one per corpus; target and retrain have the
    same tokenizer files)."""
    assert WORK == {
        "Checkpoint.open": 2,
        "AutoModelForCausalLM.from_pretrained": 2,
        "model_wrappers.muse_model.build": 4,
        "TaskSet.build": 2,
    }


def test_every_cell_equals_a_fresh_run(swept: Path, micro_world: Path, books: Path) -> None:
    """Reused checkpoints, models and tasks change nothing lm-eval reports; the per-document
    scores beside each file give back its aggregates."""
    data = {"news": micro_world / "data", "books": books}
    for label, corpus, precision in SWEPT:
        written = read(swept / label / corpus / precision / "results.json")
        args = {"precision": precision} | ({"emulated": True} if precision == "nf4" else {})
        fresh = run_tasks(micro_world / "models" / label, data[corpus], [f"muse_{corpus}"],
                          model_args=args)  # fmt: skip
        scores = read(swept / label / corpus / precision / "scores.json")["tasks"]
        for metric in ("verbmem_f", "knowmem_f", "knowmem_r"):
            per_doc = scores[f"muse_{corpus}_{metric}"]["scores"][metric]
            average = written["results"][f"muse_{corpus}_{metric}"][f"{metric},none"]
            assert sum(per_doc) / len(per_doc) == pytest.approx(average)
        privleak = scores[f"muse_{corpus}_privleak"]
        sets, mink = privleak["sets"], privleak["scores"]["mink_40"]
        auc = auc_forget_holdout(
            [s for s, k in zip(mink, sets, strict=True) if k == "forget"],
            [s for s, k in zip(mink, sets, strict=True) if k == "holdout"],
        )
        aucs = written["results"][f"muse_{corpus}_privleak"]
        assert auc == pytest.approx(aucs["auc_mink_40,none"])
        for key in SAME_AS_FRESH:
            assert written[key] == fresh[key], (label, precision, key)
        for key in ("model", "model_args", "muse_provenance", "batch_size", "device"):
            assert written["config"][key] == fresh["config"][key], (label, precision, key)
        ident = written["muse_quant"]
        assert {k: ident[k] for k in ("schema", "label", "corpus", "precision")} == {
            "schema": 1, "label": label, "corpus": corpus, "precision": precision,
        }  # fmt: skip
        assert ident["role"] == label and ident["mode"] == "full" and ident["method"] is None
        assert len(ident["cell_key"]) == 64
    assert leftovers(swept) == []
    log = (swept / "sweep.log").read_text()
    assert "[8/8] retrain / books / nf4:" in log


# --------------------------------------------------------------------------- the command line


def test_dry_run_lists_cells_and_what_is_finished(
    swept: Path, micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(tmp_path, plan_data(micro_world))
    assert main(["sweep", str(plan), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "4 cells: 0 finished, 4 to run"
    listed = [line.split() for line in lines[2:]]
    assert [(row[0], row[3], row[4], row[5:]) for row in listed] == [
        (label, corpus, precision, ["yes" if precision == "nf4" else "no", "to", "run"])
        for label, corpus, precision in CELLS
    ]
    assert not (tmp_path / "results").exists()
    assert main(["sweep", str(plan), "--dry-run", "--results", str(swept)]) == 0
    assert capsys.readouterr().out.startswith("4 cells: 4 finished, 0 to run")  # its news cells
    # Anything that determines a result is in the cell key: another batch size redoes all.
    other = write_plan(tmp_path / "other", plan_data(micro_world, batch_size=32))
    assert main(["sweep", str(other), "--dry-run", "--results", str(swept)]) == 0
    assert capsys.readouterr().out.startswith("4 cells: 0 finished, 4 to run")


def test_plan_built_in_code_with_per_model_precisions_and_corpora(
    micro_world: Path, books: Path, tmp_path: Path
) -> None:
    models = micro_world / "models"
    plan = Plan(
        corpora={"news": str(micro_world / "data"), "books": str(books)},
        precisions=(PrecisionSpec("fp32"), PrecisionSpec("fp4", emulated=True)),
        models=(
            ModelSpec("target", "target", str(models / "target")),
            ModelSpec("retrain", "retrain", str(models / "retrain"), corpora=("books",)),
            ModelSpec(
                "base", "method", str(models / "base"), method="no unlearning",
                precisions=(PrecisionSpec("rtn-w4g128", options={"sym": False}),),
                corpora=("books",),
            ),
        ),
        options=SweepOptions(device="cpu"),
    )  # fmt: skip
    jobs = plan_jobs(plan, tmp_path)
    assert [job.cell.name for job in jobs] == [
        "target/news/fp32", "target/books/fp32", "target/news/fp4", "target/books/fp4",
        "retrain/books/fp32", "retrain/books/fp4", "base/books/rtn-w4g128",
    ]  # fmt: skip
    base = jobs[-1]
    assert base.model_args == {
        "pretrained": str(models / "base"), "precision": "rtn-w4g128", "sym": False,
    }  # fmt: skip
    assert base.identity["method"] == "no unlearning" and base.identity["mode"] == "full"
    assert [job.cell.emulated for job in jobs[:4]] == [False, False, True, True]
    assert len({job.identity["cell_key"] for job in jobs}) == len(jobs)
    assert "no unlearning" in format_cells(jobs) and not any(tmp_path.iterdir())


def test_documented_plan_is_valid(tmp_path: Path) -> None:
    """docs/sweep.md's example plan parses and passes every check that needs no files."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "sweep.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    plan = plan_from_dict(yaml.safe_load(example), tmp_path)
    cells = plan.cells()
    assert len(cells) == 4 * 5 + 2 and plan.results == tmp_path / "results"
    lora = next(c for c in cells if c.model.label == "ga_gdr_lora")
    assert lora.model.adapter == "runs/ga_gdr_lora" and lora.model.merge  # no such folder here
    assert {c.precision.name: c.emulated for c in cells if c.model.label == "target"} == {
        "fp32": False, "int8": False, "nf4": True, "fp4": False, "gptq-w4g128": True,
    }  # fmt: skip


def test_seeds_make_one_model_per_seed_and_one_group(tmp_path: Path) -> None:
    """``seeds: [...]`` with ``{seed}`` in the run's folder: one model per seed, one method."""
    for run in ("npo_s1", "npo_s2", "npo_s3", "ga/7"):
        (tmp_path / run).mkdir(parents=True)
    data = {
        "corpora": {"news": "hub"},
        "precisions": ["fp32"],
        "models": [
            {"label": "target", "role": "target", "pretrained": "t"},
            {"label": "npo", "role": "method", "mode": "full", "pretrained": "npo_s{seed}",
             "seeds": [1, 2, 3]},
            {"label": "ga_{seed}_lora", "role": "method", "pretrained": "t",
             "adapter": "ga/{seed}", "seeds": [7]},
        ],
    }  # fmt: skip
    models = plan_from_dict(data, tmp_path).models
    assert [(m.label, m.seed, m.method_name, m.mode_name) for m in models[1:]] == [
        ("npo_s1", 1, "npo", "full"), ("npo_s2", 2, "npo", "full"), ("npo_s3", 3, "npo", "full"),
        ("ga_7_lora", 7, "ga_lora", "lora"),
    ]  # fmt: skip
    assert [m.pretrained for m in models[1:4]] == [str(tmp_path / f"npo_s{s}") for s in (1, 2, 3)]
    assert models[4].adapter == str(tmp_path / "ga" / "7")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"seeds": [1, 2]}, "seeds needs {seed} in pretrained or adapter"),
        ({"seeds": [1, 1], "pretrained": "r{seed}"}, "seeds lists a seed twice"),
        ({"seeds": "1,2", "pretrained": "r{seed}"}, "seeds must be a list of integers"),
        ({"seeds": [1], "seed": 1, "pretrained": "r{seed}"}, "seed (one run) or seeds"),
        ({"sedes": [1]}, "unknown key(s) sedes (did you mean 'seeds'?)"),
    ],
)
def test_bad_seeds_are_refused(change: dict, expected: str, tmp_path: Path) -> None:
    model = {"label": "npo", "role": "method", "pretrained": "runs/npo"} | change
    data = {"corpora": {"news": "hub"}, "precisions": ["fp32"], "models": [model]}
    with pytest.raises(MuseQuantError) as err:
        plan_from_dict(data, tmp_path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def bad_plans(world: Path) -> dict[str, tuple[dict | str, str]]:
    """Plan mistakes and the words of the one-line error each must give."""
    good = plan_data(world)
    target, retrain = good["models"]
    return {
        "unknown precision": (
            good | {"precisions": ["fp32", "nf5"]}, "unknown precision 'nf5' (did you mean 'nf4'?)"
        ),
        "duplicate precision": (good | {"precisions": ["fp32", "fp32"]}, "duplicate cell"),
        "same model twice": (
            good | {"models": [target, retrain, target | {"label": "t2", "role": "method"}]},
            "duplicate cell",
        ),
        "missing model path": (
            good | {"models": [target, retrain | {"pretrained": "/no/such/model"}]},
            "model 'retrain': pretrained=/no/such/model: no such folder",
        ),
        "unknown role": (
            good | {"models": [target, retrain | {"role": "oracle"}]},
            "unknown role 'oracle'",
        ),
        "unknown corpus": (good | {"corpora": {"news": "hub", "wiki": "hub"}}, "unknown corpus"),
        "adapter without base": (
            good | {"models": [target, {"label": "m", "role": "method", "adapter": "/x"}]},
            "no pretrained (the base model its adapter adapts)",
        ),
        "two targets": (
            good | {"models": [target, retrain | {"role": "target"}]},
            "exactly one target",
        ),
        "int8 emulated": (good | {"precisions": ["int8"]}, "emulated=true cannot reproduce"),
        "missing data": (good | {"corpora": {"news": "/no/such/data"}}, "no such folder"),
        "bad YAML": ("models: [unclosed\n", "not valid YAML"),
        "empty results": (good | {"results": ""}, "results: empty"),
        "empty adapter": (
            good | {"models": [target, retrain, target | {"label": "m", "role": "method",
                                                          "adapter": " "}]},
            "adapter: empty",
        ),
        "merge without adapter": (
            good | {"models": [target, retrain | {"merge": False}]},
            "merge says how an adapter is applied",
        ),
    }


@pytest.mark.parametrize(
    "mistake",
    ["unknown precision", "duplicate precision", "same model twice", "missing model path",
     "unknown role", "unknown corpus", "adapter without base", "two targets", "int8 emulated",
     "missing data", "bad YAML", "empty results", "empty adapter", "merge without adapter"],
)  # fmt: skip
def test_bad_plan_is_one_line_and_writes_nothing(
    mistake: str, micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, expected = bad_plans(micro_world)[mistake]
    plan = write_plan(tmp_path / "plan", data)
    assert main(["sweep", str(plan)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("muse-quant: error:") and "\n" not in err and expected in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plan", "plan.yaml"]


def test_unwritable_results_folder(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(tmp_path, plan_data(micro_world))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["sweep", str(plan), "--results", str(blocker / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("muse-quant: error: results folder") and "cannot write" in err, err
    assert "\n" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a_file", "plan.yaml"]


# --------------------------------------------------------------------------- resuming


def start_sweep(plan: Path, *args: str) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "CI": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "muse_quant", "sweep", str(plan), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (it must not finish first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the sweep ended before the kill point"
        assert time.monotonic() < deadline, "timed out waiting for the kill point"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkilled_sweep_resumes_without_redoing_cells(
    swept: Path, micro_world: Path, tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, plan_data(micro_world))
    results = tmp_path / "results"
    files = [
        results / label / corpus / precision / "results.json" for label, corpus, precision in CELLS
    ]
    log = results / "sweep.log"

    # 1. Killed as soon as the first cell is finished.
    kill_when(start_sweep(plan), files[0].exists)
    first = files[0].stat()

    # 2. Restarted, and killed in the middle of a cell it is running.
    offset = log.stat().st_size

    def mid_cell() -> bool:
        lines = log.read_text()[offset:].splitlines() if log.exists() else []
        running = [line.removesuffix(": running") for line in lines if line.endswith(": running")]
        if not running:
            return False
        label, corpus, precision = running[-1].split(" / ")
        return not (results / label / corpus / precision / "results.json").exists()

    kill_when(start_sweep(plan), mid_cell)
    finished = {f: f.stat() for f in files if f.exists()}
    assert files[0] in finished and len(finished) < len(files)

    # 3. Restarted once more: it finishes, skipping what was finished, touching none of it.
    proc = start_sweep(plan)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    for path, stat in finished.items():
        label, corpus, precision = path.relative_to(results).parts[:3]
        assert f"{label} / {corpus} / {precision}: skipped (finished earlier)" in err
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert files[0].stat().st_mtime_ns == first.st_mtime_ns
    assert f"[{len(files)}/{len(files)}]" in err
    for path in files:
        uninterrupted = read(swept / path.relative_to(results))
        resumed = read(path)
        assert resumed["results"] == uninterrupted["results"], path
        assert resumed["muse_quant"] == uninterrupted["muse_quant"], path
    assert leftovers(results) == []
    table = out.splitlines()
    assert table[0].split() == ["news", "precision", "VerbMem_f", "KnowMem_f", "KnowMem_r", "AUC"]
    assert [row.split()[:2] for row in table[1:]] == [[c[0], c[2]] for c in CELLS]


def test_cells_an_edited_plan_no_longer_names_are_reported_and_pruned(
    micro_world: Path, swept: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The plan loses its books corpus: its cells are named, the board says NOT ONE PLAN, and
    --prune moves them aside (nothing deleted, nothing evaluated again). The sweep writes its
    console lines to the terminal's file descriptor, hence capfd."""
    results = Path(shutil.copytree(swept, tmp_path / "results"))
    plan = write_plan(tmp_path / "edited", plan_data(micro_world))  # news only
    assert main(["sweep", str(plan), "--results", str(results), "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert "warning: 4 cell(s) in" in err and "are not in this plan" in err and "--prune" in err
    record = json.loads((results / "sweep-plan.json").read_text())
    assert len(record["cells"]) == 4 and all("/news/" in cell for cell in record["cells"])
    assert main(["leaderboard", str(results), "--out", str(tmp_path / "board")]) == 0
    assert "NOT ONE PLAN: 4 results file(s)" in capfd.readouterr().err
    assert main(["sweep", str(plan), "--results", str(results), "--prune", "--no-progress"]) == 0
    pruned = sorted(p.relative_to(results).parts[2:] for p in results.rglob(".pruned/*/*/*/*"))
    assert pruned == [(label, "books", precision) for label in ("retrain", "target")
                      for precision in ("fp32", "nf4")]  # fmt: skip
    assert not list(results.glob("*/books"))
    capfd.readouterr()
    assert main(["leaderboard", str(results), "--out", str(tmp_path / "board")]) == 0
    assert "NOT ONE PLAN" not in capfd.readouterr().err


def test_two_sweeps_on_one_results_folder_run_each_cell_once(
    swept: Path, micro_world: Path, tmp_path: Path
) -> None:
    """Two ``muse-quant sweep`` processes at once on one folder: each cell is evaluated by
    exactly one of them (counted from both consoles), the other leaves it or waits for it, and
    every result equals the single uninterrupted sweep's."""
    plan = write_plan(tmp_path, plan_data(micro_world))
    results = tmp_path / "results"
    first, second = start_sweep(plan), start_sweep(plan)
    errs = []
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        errs.append(err)
    for label, corpus, precision in CELLS:
        line = f"{label} / {corpus} / {precision}: "
        ran = [row for err in errs for row in err.splitlines()
               if row.startswith("[") and line in row]  # "[k/n] cell: seconds", once it ran
        assert len(ran) == 1, (line, errs)
        path = results / label / corpus / precision / "results.json"
        assert read(path)["results"] == read(swept / path.relative_to(results))["results"]
    assert any("another process" in err for err in errs)
    assert leftovers(results) == []


def test_a_cell_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    """The OS drops a dead process's lock: the next process holds it at once."""
    from harness_ext.locks import try_lock

    lock = tmp_path / ".locks" / "m" / "news" / "nf4.lock"
    script = (
        "import time\nfrom harness_ext.locks import try_lock\n"
        f"with try_lock({str(lock)!r}) as mine:\n"
        "    print(mine, flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "True"
    with try_lock(lock) as mine:
        assert not mine  # held by the living process
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with try_lock(lock) as mine:
        assert mine


def test_a_shared_cache_entry_is_computed_once_by_concurrent_processes(tmp_path: Path) -> None:
    """Two processes needing one GPTQ cache entry at once: one computes it, the other waits and
    reads it (``cached_checkpoint``, the function the GPTQ precision caches through)."""
    script = (
        "import os, sys, time\n"
        "from model_wrappers.precisions.cached import cached_checkpoint\n"
        "def write(folder):\n"
        "    with open(sys.argv[1], 'a') as f: f.write(f'{os.getpid()}\\n')\n"
        "    time.sleep(3)\n"
        "    (folder / 'model.safetensors').write_text('weights')\n"
        "folder, hit = cached_checkpoint({'weights': 'same'}, write)\n"
        "print(hit, (folder / 'model.safetensors').read_text())\n"
    )
    calls = tmp_path / "calls"
    env = os.environ | {"MUSE_QUANT_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(calls)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = sorted(proc.communicate(timeout=120)[0].split() for proc in procs)
    assert outs == [["False", "weights"], ["True", "weights"]]
    assert len(calls.read_text().split()) == 1


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster of two worker nodes, one CPU each (Ray's own test utility)."""
    from ray.cluster_utils import Cluster

    small = {"num_cpus": 1, "object_store_memory": 150 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args=small)
    cluster.add_node(**small)
    yield cluster
    cluster.shutdown()


def assert_equals_local(results: Path, swept: Path) -> None:
    """Every cell's metrics and key equal the local executor's run, and nothing half-written."""
    for cell in CELLS:
        data = read(results / Path(*cell) / "results.json")
        local = read(swept / Path(*cell) / "results.json")
        assert data["results"] == local["results"] and data["muse_quant"] == local["muse_quant"]
    assert leftovers(results) == []


def test_a_sweep_on_a_two_node_ray_cluster_equals_the_local_one(
    swept: Path, micro_world: Path, tmp_path: Path, ray_cluster, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every cell a Ray task, spread over both nodes: the same metrics and cell keys as the
    local executor's, one line per cell naming its node."""
    plan = write_plan(tmp_path, plan_data(micro_world) | {"options": plan_data(micro_world)[
        "options"] | {"executor": "ray", "ray_address": ray_cluster.address}})  # fmt: skip
    assert main(["sweep", str(plan)]) == 0
    err = capfd.readouterr().err
    assert "ray: 4 cell(s) on 2 node(s)" in err
    nodes = {line.split(" on ")[1].split(",")[0] for line in err.splitlines()
             if line.startswith("[") and " on " in line}  # fmt: skip
    assert len(nodes) == 2, err
    assert_equals_local(tmp_path / "results", swept)


def test_a_ray_worker_killed_mid_cell_is_retried_and_changes_nothing(
    swept: Path, micro_world: Path, tmp_path: Path, ray_cluster
) -> None:
    """SIGKILL of the worker process running a cell: Ray runs the cell again elsewhere (the
    dead worker's lock is free), the sweep finishes, and every result equals the local run's."""
    plan = write_plan(tmp_path, plan_data(micro_world))
    results = tmp_path / "results"
    proc = start_sweep(plan, "--executor", "ray", "--ray-address", ray_cluster.address)
    deadline = time.monotonic() + 240
    while not list(results.rglob("*.building-*")):  # a cell is being written
        assert time.monotonic() < deadline and proc.poll() is None, "no cell started"
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-f", "ray::_run_cell"], capture_output=True, text=True)
    pid = int(workers.stdout.split()[0])
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"[{len(CELLS)}/{len(CELLS)}]" in err
    assert_equals_local(results, swept)


def running_cells() -> list[int]:
    """Pids of Ray worker processes evaluating a cell now (an idle worker is ``ray::IDLE``)."""
    found = subprocess.run(["pgrep", "-f", "ray::_run_cell"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:  # it ended meanwhile
        return None


def test_a_node_that_leaves_mid_cell_has_its_cell_retried_elsewhere(
    swept: Path, micro_world: Path, tmp_path: Path, ray_cluster
) -> None:
    """A third node joins, takes a cell, and leaves (its raylet and workers killed) while the
    cell runs: Ray runs it again on the nodes that stay; every result equals the local run's."""
    node = ray_cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
    raylet = node.all_processes["raylet"][0].process.pid
    plan = write_plan(tmp_path, plan_data(micro_world))
    results = tmp_path / "results"
    proc = start_sweep(plan, "--executor", "ray", "--ray-address", ray_cluster.address)
    deadline = time.monotonic() + 240
    while raylet not in {parent_of(pid) for pid in running_cells()}:
        assert time.monotonic() < deadline and proc.poll() is None, "no cell ran on the new node"
        time.sleep(0.05)
    ray_cluster.remove_node(node, allow_graceful=False)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"[{len(CELLS)}/{len(CELLS)}]" in err
    assert_equals_local(results, swept)


def test_a_sigkilled_ray_driver_resumes_without_redoing_finished_cells(
    swept: Path, micro_world: Path, tmp_path: Path, ray_cluster
) -> None:
    """SIGKILL of the ``muse-quant sweep`` driver once a cell is finished: Ray ends the dead
    driver's tasks; a resumed sweep skips every finished cell, leaves it untouched, and finishes
    the rest with the local run's results."""
    plan = write_plan(tmp_path, plan_data(micro_world))
    results = tmp_path / "results"
    ray = ("--executor", "ray", "--ray-address", ray_cluster.address)
    kill_when(start_sweep(plan, *ray), lambda: bool(list(results.rglob("results.json"))), 600)
    deadline = time.monotonic() + 60
    while running_cells():  # the dead driver's tasks are cancelled by Ray
        assert time.monotonic() < deadline, "a dead driver's cell is still being evaluated"
        time.sleep(0.2)
    finished = {path: path.stat().st_mtime_ns for path in results.rglob("results.json")}
    assert 0 < len(finished) < len(CELLS)
    proc = start_sweep(plan, *ray)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    for path, mtime in finished.items():
        label, corpus, precision = path.relative_to(results).parts[:3]
        assert f"{label} / {corpus} / {precision}: skipped (finished earlier)" in err
        assert path.stat().st_mtime_ns == mtime
    assert_equals_local(results, swept)


def test_ctrl_c_on_a_ray_sweep_stops_its_tasks_and_keeps_finished_cells(
    micro_world: Path, tmp_path: Path, ray_cluster
) -> None:
    """SIGINT to the driver once a cell is finished: exit 130, the running and pending tasks
    are cancelled (no worker keeps evaluating), the finished cell stays as it is."""
    data = plan_data(micro_world)
    # Twelve cells, not the four of CELLS: a micro-world cell takes about a second on a warm
    # worker, and with four the two workers could finish the rest between the check below and
    # the signal.
    data["precisions"] = ["fp32", "nf4", "fp4", "bf16", "rtn-w4g128", "rtn-w8g128"]
    plan = write_plan(tmp_path, data)
    results = tmp_path / "results"
    proc = start_sweep(plan, "--executor", "ray", "--ray-address", ray_cluster.address)
    deadline = time.monotonic() + 240
    # Interrupt with a cell finished and another still being evaluated: warm workers can finish
    # the rest so fast that a signal sent later reaches a driver that has already ended.
    while not (list(results.rglob("results.json")) and running_cells()):
        assert time.monotonic() < deadline and proc.poll() is None, "no cell to interrupt"
        time.sleep(0.02)
    finished = {path: path.stat().st_mtime_ns for path in results.rglob("results.json")}
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    deadline = time.monotonic() + 30
    while running_cells():
        assert time.monotonic() < deadline, "a cancelled cell is still being evaluated"
        time.sleep(0.2)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items())
    assert len(list(results.rglob("results.json"))) < len(data["models"]) * len(data["precisions"])


@pytest.mark.parametrize(
    ("flags", "options", "expected"),
    [
        (["--executor", "raay"], {}, "executor='raay' (did you mean 'ray'?)"),
        (["--ray-address", "auto"], {}, "--ray-address is for --executor ray"),
        ([], {"executor": "slurm"}, "executor='slurm'; executors are local, ray"),
    ],
)
def test_a_wrong_executor_is_one_line_and_writes_nothing(
    flags: list[str], options: dict, expected: str, micro_world: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data = plan_data(micro_world)
    data["options"] |= options
    plan = write_plan(tmp_path / "plan", data)
    assert main(["sweep", str(plan), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("muse-quant: error:") and "\n" not in err and expected in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plan", "plan.yaml"]
