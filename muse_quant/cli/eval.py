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
import contextlib
import logging
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, NoReturn

from harness_ext.errors import MuseQuantError
from harness_ext.evaluation import required_splits
from harness_ext.files import check_apart, check_writable
from harness_ext.muse_data import CORPORA, load_split
from muse_quant.lm_eval_patches import git_hash_quietly, muse_task_manager
from muse_quant.lm_eval_tasks import expand, muse_tasks, tasks_path
from muse_quant.threads import parse_threads, set_threads

MUSE_MODEL = "muse"
#: Model arguments lm-eval sets from its own flags, over what ``--model_args`` says.
LM_EVAL_FLAGS = ("batch_size", "max_batch_size", "device")
#: Model arguments and metadata that name folders the run reads.
INPUTS = ("pretrained", "adapter", "peft", "tokenizer", "calibration", "muse_data")


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
    """Parse with lm-eval's parser, check every input and read the model request, then run
    lm-eval's ``run`` with that request."""
    # lm-eval's command line and the muse model (torch, transformers) load slowly.
    from lm_eval._cli.run import Run
    from lm_eval.config.evaluate_config import EvaluatorConfig
    from lm_eval.utils import setup_logging

    from model_wrappers.model_arguments import parse_model_args
    from model_wrappers.muse_model import prepared  # registers --model muse
    from model_wrappers.request import read_request

    lm_eval_args = _take_threads(list(args.lm_eval_args))
    if {"-h", "--help"} & set(lm_eval_args):
        print(muse_help())  # then lm-eval's own help, below
    parser = _OneLineErrors(prog="muse-quant eval")
    Run.create(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["run", *lm_eval_args])
    pieces = _model_args_given(lm_eval_args)
    if pieces and not pieces[0].lstrip().startswith("{"):  # key=value, not a JSON object
        ns.model_args = parse_model_args(pieces)
    _check_numbers(ns)
    for name in LM_EVAL_FLAGS:  # lm-eval's flag (or its default) would win silently
        if name in (ns.model_args or {}):
            raise MuseQuantError(
                f"--model_args {name}=: give lm-eval's --{name} instead (it overrides the model "
                "argument)"
            )
    if getattr(ns, "device", None) is None and not _cuda_available():
        ns.device = "cpu"  # lm-eval's default is cuda:0, which this machine has not
    try:  # lm-eval's own checks of its flags and their combinations, before anything runs
        cfg = EvaluatorConfig.from_cli(argparse.Namespace(**vars(ns)))
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise MuseQuantError(f"lm-eval: {e}") from None
    configs = muse_tasks()
    only_muse = _check(ns, configs)
    output = _output_folder(ns.output_path)
    if output is not None:  # lm-eval would write its results among the model's or data's files
        read = {**(cfg.model_args or {}), **(ns.metadata or {})}
        check_apart(output, "--output_path", [(f"{k}=", read.get(k)) for k in INPUTS])
    ready = contextlib.nullcontext()
    if ns.model == MUSE_MODEL:  # read once, before lm-eval logs or loads anything
        given = {"batch_size": cfg.batch_size, "max_batch_size": cfg.max_batch_size}
        given["device"] = cfg.device
        extra = {k: v for k, v in given.items() if v is not None}
        request = read_request({**(cfg.model_args or {}), **extra})
        ready = prepared(request)
        weights = request.opened.weights if request.opened else None
        if weights is not None and weights.gguf is not None:  # VerbMem's reference tokenizer
            ns.metadata = {"tokenizer": weights.tokenizer_name, **(ns.metadata or {})}
    started = time.time()
    setup_logging()
    _log_to_current_stderr()
    with ready, muse_task_manager(include_defaults=not only_muse), git_hash_quietly():
        ns.func(ns)
    # With several processes (torchrun, accelerate launch), rank 0 alone writes the results.
    writer = int(os.environ.get("RANK", "0")) == 0
    if output is not None and writer and not _written_since(output, started):
        raise MuseQuantError(
            f"--output_path {ns.output_path}: lm-eval could not save the results there (see "
            "its warning above); nothing was written"
        )
    return 0


def muse_help() -> str:
    """What ``muse-quant eval --help`` says before lm-eval's help: the muse model, its
    arguments, the precisions and the MUSE tasks."""
    from model_wrappers.model_arguments import HELP
    from model_wrappers.precisions import known_precisions
    from model_wrappers.precisions.registry import precision_options_help

    def rows(items: dict[str, str]) -> str:
        return "\n".join(f"  {name:<18} {text}" for name, text in items.items())

    configs = muse_tasks()
    groups = sorted(n for n, c in configs.items() if "group" in c and n.startswith("muse_"))
    leaves = sorted(n for n, c in configs.items() if "group" not in c and n.startswith("muse_"))
    tasks = f"MUSE tasks (--tasks): groups {', '.join(groups)}; tasks {', '.join(leaves)}"
    return f"""usage: muse-quant eval [--threads N] LM_EVAL_RUN_FLAGS...

lm-eval's `run` with the muse model and the MUSE tasks registered: every lm-eval flag below
works and means the same. Bad input is refused before any model loads.

--model muse --model_args key=value,... (lm-eval's hf arguments, and these):
{rows(HELP)}
{textwrap.fill("precisions: " + ", ".join(known_precisions()), 96, subsequent_indent="  ")}
  a deployment step (pruning, relearning) goes before a precision with +: wanda-50+nf4
  (docs/deployments.md)
precision options (model arguments too):
{rows(precision_options_help())}

{textwrap.fill(tasks, 96, subsequent_indent="  ")}
task options (--metadata key=value): muse_data=FOLDER (a local MUSE data folder; default: the
  hub's), privleak_k, privleak_auc_retrain
--threads N: CPU threads for torch and llama.cpp (default: torch's own, one per core)

Example:
  muse-quant eval --model muse --model_args pretrained=RUN,precision=nf4 --tasks muse_news \\
    --metadata muse_data=DATA --output_path results/

lm-eval's flags:"""


class _OneLineErrors(argparse.ArgumentParser):
    """lm-eval's parser, whose errors are one line (argparse prints its usage, then exits)."""

    def error(self, message: str) -> NoReturn:
        raise MuseQuantError(f"{message} (muse-quant eval --help lists the flags)")


def _take_threads(argv: list[str]) -> list[str]:
    """``argv`` without ``--threads N`` (ours, not lm-eval's), which is applied now."""
    for i, token in enumerate(argv):
        name, eq, value = token.partition("=")
        if name == "--threads":
            given = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                set_threads(parse_threads(given))
            except ValueError as e:
                raise MuseQuantError(f"--threads {e}") from None
            return argv[:i] + argv[i + (1 if eq else 2) :]
    return argv


def _model_args_given(argv: list[str]) -> list[str]:
    """The ``--model_args`` values as typed (lm-eval's parser merges repeats silently)."""
    pieces: list[str] = []
    taking = False
    for token in argv:
        name, eq, value = token.partition("=")
        if name in ("--model_args", "-a"):
            taking = not eq
            pieces += [value] if eq else []
        elif token.startswith("-"):
            taking = False
        elif taking:
            pieces.append(token)
    return pieces


def _cuda_available() -> bool:
    import torch  # loaded with the muse model already

    return torch.cuda.is_available()


def _check_numbers(ns: argparse.Namespace) -> None:
    """The counts lm-eval takes as they come: ``--limit`` is a positive count or a fraction in
    (0, 1]; ``--num_fewshot`` is not negative."""
    limit = ns.limit
    if limit is not None and not (limit > 0 and (limit <= 1 or float(limit).is_integer())):
        raise MuseQuantError(
            f"--limit {limit:g}: a positive number of documents per task, or a fraction in (0, 1]"
        )
    fewshot = getattr(ns, "num_fewshot", None)
    if fewshot is not None and fewshot < 0:
        raise MuseQuantError(f"--num_fewshot {fewshot}: expected 0 or more")


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
    only_muse = all(n in configs for n in names)
    if leaves and getattr(ns, "apply_chat_template", None):
        raise MuseQuantError(
            "--apply_chat_template rewrites the prompts MUSE defines (raw text continuations), "
            "so the scores would not be MUSE's; run the MUSE tasks without it"
        )
    if only_muse and getattr(ns, "num_fewshot", None):
        raise MuseQuantError(
            f"--num_fewshot {ns.num_fewshot}: the MUSE tasks take no few-shot examples (KnowMem's "
            "prompt carries MUSE's own in-context pairs); drop it"
        )
    return only_muse
