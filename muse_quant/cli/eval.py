"""``muse-quant eval`` (lm-eval's ``run`` with our model and tasks registered) and ``tasks-path``.

``muse-quant eval ARGS`` parses ARGS with lm-eval's own ``run`` parser, so every lm-eval flag works
and means the same, then runs lm-eval's own ``run`` command with ``--model muse`` registered and our
task folder included. When only MUSE tasks are asked, lm-eval's default task index (about 17 s per
invocation) is not built. Before any model is loaded it rejects what would fail later: an unknown
``muse_*`` task (e.g. an unknown corpus), PrivLeak under a model other than ``muse``, and a
``muse_data`` folder that lacks a file, split or field the asked tasks read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness_ext.errors import MuseQuantError
from harness_ext.evaluation import required_splits
from harness_ext.files import check_writable
from harness_ext.muse_data import CORPORA, load_split
from muse_quant.lm_eval_patches import muse_task_manager
from muse_quant.lm_eval_tasks import expand, muse_tasks, tasks_path

MUSE_MODEL = "muse"


def register(subparsers: argparse._SubParsersAction) -> None:
    # Every argument belongs to lm-eval's parser, so this one must not interpret any: with a
    # prefix character nobody types, "--model" & co. all land in ``lm_eval_args``.
    p = subparsers.add_parser(
        "eval",
        help="run lm-eval with the muse model and MUSE tasks registered (all lm_eval flags)",
        description="lm_eval run, with --model muse and the MUSE tasks available. "
        "See `muse-quant eval --help` for lm-eval's flags and docs/tasks.md for examples.",
        add_help=False,
        prefix_chars="\x00",
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)
    tp = subparsers.add_parser(
        "tasks-path",
        help="print the MUSE task folder (for lm_eval --include_path)",
        description="Print the folder of the MUSE task YAML, for plain lm_eval's --include_path.",
        epilog='Example: lm_eval run --include_path "$(muse-quant tasks-path)" --model hf '
        "--tasks muse_news_knowmem_r --metadata muse_data=DATA_DIR ...",
    )
    tp.set_defaults(func=run_tasks_path)


def run_tasks_path(args: argparse.Namespace) -> int:
    print(tasks_path())
    return 0


def run(args: argparse.Namespace) -> int:
    """Parse with lm-eval's parser, check MUSE-specific input, then run lm-eval's ``run``."""
    # lm-eval's command line and the muse model (torch, transformers) load slowly.
    from lm_eval._cli.run import Run
    from lm_eval.utils import setup_logging

    from model_wrappers.muse_lm import check_arguments  # registers --model muse

    parser = argparse.ArgumentParser(prog="muse-quant eval")
    Run.create(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["run", *args.lm_eval_args])
    if ns.model == MUSE_MODEL:  # before lm-eval logs or loads anything
        check_arguments(_model_args(ns.model_args))
    configs = muse_tasks()
    only_muse = _check(ns, configs)
    output = _output_folder(ns.output_path)
    started = time.time()
    setup_logging()
    _log_to_current_stderr()
    with muse_task_manager(include_defaults=not only_muse):
        ns.func(ns)
    # With several processes (torchrun, accelerate launch), rank 0 alone writes the results.
    writer = int(os.environ.get("RANK", "0")) == 0
    if output is not None and writer and not _written_since(output, started):
        raise MuseQuantError(
            f"--output_path {ns.output_path}: lm-eval could not save the results there (see "
            "its warning above); nothing was written"
        )
    return 0


def _log_to_current_stderr() -> None:
    """lm-eval's console handler writes to the ``sys.stderr`` of the first run in the process;
    a later run in the same process (a notebook, a test) whose stderr was replaced would log into
    a closed stream: point it at this run's."""
    for handler in logging.getLogger("lm_eval").handlers:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr  # not setStream(): it flushes the old, maybe closed one


def _output_folder(output_path: str | None) -> Path | None:
    """The folder lm-eval writes results under (``--output_path`` names it, or a file in it),
    probed now: a run whose results cannot be saved is refused before any model loads."""
    if not output_path:
        return None
    path = Path(output_path).expanduser().absolute()
    folder = path.parent if path.suffix == ".json" else path
    check_writable(folder, "--output_path")
    return folder


def _written_since(folder: Path, started: float) -> bool:
    """Whether lm-eval wrote a results file under ``folder`` during this run."""
    return any(p.stat().st_mtime >= started for p in folder.rglob("results_*.json"))


def _model_args(given: Any) -> dict[str, Any]:
    """``--model_args`` as lm-eval reads it: ``k=v,k=v`` or a JSON object."""
    from lm_eval.utils import simple_parse_args_string  # loaded by run() already

    if isinstance(given, dict):
        return given
    return simple_parse_args_string(given) if given else {}


def _requested(ns: argparse.Namespace) -> list[str]:
    return [t for item in ns.tasks or [] for t in str(item).split(",") if t]


def _check(ns: argparse.Namespace, configs: dict[str, dict[str, Any]]) -> bool:
    """Fail fast on MUSE input errors; return whether only MUSE tasks were asked."""
    names = _requested(ns)
    if not names:
        if ns.config:  # tasks come from lm-eval's --config file; lm-eval checks them
            return False
        raise MuseQuantError("no --tasks given; e.g. --tasks muse_news (see muse-quant tasks-path)")
    unknown = [n for n in names if n.startswith("muse_") and n not in configs]
    if unknown:
        raise MuseQuantError(
            f"unknown MUSE task(s) {', '.join(unknown)}; corpora are {', '.join(CORPORA)} and "
            f"tasks muse_<corpus>[_verbmem_f|_knowmem_f|_knowmem_r|_privleak]"
        )
    leaves = [leaf for n in names if n in configs for leaf in expand(n, configs)]
    kinds = {t: configs[t].get("dataset_kwargs") or {} for t in leaves}  # muse_corpus, muse_task
    privleak = [t for t in leaves if kinds[t].get("muse_task") == "privleak"]
    model = ns.model or "hf"
    if privleak and model != MUSE_MODEL:
        raise MuseQuantError(
            f"{privleak[0]} needs per-token log-probs, which only --model muse returns "
            f"(got --model {model}); rerun with --model muse"
        )
    data = (ns.metadata or {}).get("muse_data")
    corpora = sorted({kind["muse_corpus"] for kind in kinds.values()})
    if data and len(corpora) > 1:
        raise MuseQuantError(
            f"muse_data={data} is one corpus, but the tasks ask for {' and '.join(corpora)}; "
            "run one corpus per command (or use muse-quant sweep, which maps each corpus to "
            "its own folder)"
        )
    if data:  # read every split the tasks will need now, not after the model has loaded
        for kind in kinds.values():
            for config, split in required_splits(kind["muse_task"]):
                load_split(kind["muse_corpus"], config, split, str(data))
    return all(n in configs for n in names)
