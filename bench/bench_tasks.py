"""Benchmark: the MUSE suite at MUSE's shape, our lm-eval tasks vs a batch-1 reference, one run.

The data is MUSE-News-shaped (``muse_quant.toyworld.muse_shaped``: MUSE's counts and lengths,
fictional text); the model a random Llama large enough that compute, not Python, dominates
(hidden 512, 8 layers, a tokenizer trained on the data and padded to Llama's 32k vocabulary,
context 4096), or with ``--base`` a real pretrained one (SmolLM2-135M: byte-level BPE, 49k
vocabulary, 30 layers). Each side runs in a fresh process on the same model, data and machine,
so each pays its own imports and start-up and its peak memory is its own:

- ``reference``: bench/reference_muse.py, MUSE's metric code written naively (one ``generate``
  per prompt, one forward per text, scikit-learn's AUC), importing nothing from muse-quant;
- ``tasks``: ``lm_eval.simple_evaluate`` over our ``muse_news`` tasks with ``--model muse``.

It prints the wall-clock ratio (reference / tasks), each side's peak resident memory, the largest
metric difference, and the fixed cost of a ``muse-quant eval`` process (a 1-document task, minus
the model's own load).

    python bench/bench_tasks.py                       # 16 records per file, batch 16, 1 thread
    python bench/bench_tasks.py --records 100         # MUSE-News's full counts (about an hour)
    python bench/bench_tasks.py --records 4 --base smollm2-135m   # the real pretrained model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from bench.shaped import shaped_work  # noqa: E402
from muse_quant.toyworld.config import ModelShape  # noqa: E402

CORPUS = "news"
GENERATION = ("verbmem_f", "knowmem_f", "knowmem_r")


def side_reference(model_dir: Path, data: Path) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.reference_muse import evaluate

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return evaluate(model, tokenizer, data, auc_retrain=0.5)


def side_tasks(model_dir: Path, data: Path, batch_size: str, model_args: str) -> dict[str, float]:
    from lm_eval import simple_evaluate

    import model_wrappers.muse_model  # noqa: F401 - registers --model muse
    from bench.results import flat_metrics
    from muse_quant.lm_eval_tasks import task_manager

    args = {"pretrained": str(model_dir)}
    args |= dict(kv.split("=", 1) for kv in model_args.split(",") if kv)
    results = simple_evaluate(
        model="muse", model_args=args, tasks=[f"muse_{CORPUS}"], batch_size=batch_size,
        device="cpu", bootstrap_iters=0,
        task_manager=task_manager({**args, "muse_data": str(data), "privleak_auc_retrain": 0.5}),
    )  # fmt: skip
    return flat_metrics(results)


def side_load(model_dir: Path) -> dict[str, float]:
    """The model's own load, as a fresh process pays it after importing torch and transformers
    (their model classes load on first use, so they count here)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    AutoTokenizer.from_pretrained(model_dir)
    return {"load_s": time.perf_counter() - start}


def run_side(args: argparse.Namespace, side: str, *extra: str) -> dict:
    """One side in a fresh process: its metrics, wall time and peak resident memory."""
    cmd = [sys.executable, __file__, "--side", side, "--records", str(args.records),
           "--hidden", str(args.hidden), "--layers", str(args.layers), "--vocab", str(args.vocab),
           "--batch-size", args.batch_size, "--model-args", args.model_args,
           "--work", str(args.work), *(["--base", args.base] if args.base else []),
           *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench: the {side} side failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out | {"wall_s": wall}


def fixed_cost(args: argparse.Namespace, data: Path, model_dir: Path) -> tuple[float, float]:
    """Wall time of ``muse-quant eval`` on one KnowMem document, and the model's own load."""
    cmd = [sys.executable, "-m", "muse_quant", "eval", "--model", "muse",
           "--model_args", f"pretrained={model_dir}", "--tasks", f"muse_{CORPUS}_knowmem_r",
           "--metadata", f"muse_data={data}", "--device", "cpu", "--limit", "1",
           "--output_path", str(args.work / "fixed-cost")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench: muse-quant eval --limit 1 failed:\n{done.stderr[-3000:]}")
    return wall, run_side(args, "load")["load_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=16, help="records per file (MUSE: 100)")
    parser.add_argument("--batch-size", default="16", help="the tasks' batch size (or auto)")
    parser.add_argument("--model-args", default="", help="more muse model arguments, k=v,...")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each side (a shared 2-core box wants 1)")
    parser.add_argument("--base", help="a pretrained model instead of the random Llama: a known "
                        "base (smollm2-135m), a GGUF file or a Llama folder")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-muse-shaped")
    parser.add_argument("--side", choices=("reference", "tasks", "load"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = ModelShape(hidden=args.hidden, layers=args.layers, heads=args.hidden // 64,
                       intermediate=args.hidden * 3, vocab=args.vocab, context=4096)  # fmt: skip
    data, model_dir = shaped_work(args.work, args.records, shape)
    if args.base:  # a real pretrained model on the same data: its float32 folder
        from muse_quant.toyworld.pretrained import resolve_base

        model_dir = resolve_base(args.base).folder
    if args.side is not None:
        import torch

        torch.set_num_threads(args.threads)
        start = time.perf_counter()
        if args.side == "reference":
            out = side_reference(model_dir, data)
        elif args.side == "tasks":
            out = side_tasks(model_dir, data, args.batch_size, args.model_args)
        else:
            out = side_load(model_dir)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB
        print(json.dumps(out | {"eval_s": time.perf_counter() - start, "peak_gb": peak}))
        return

    model = (f"{args.base} ({model_dir})" if args.base else f"random Llama hidden {args.hidden}, "
             f"{args.layers} layers, vocabulary {args.vocab}")  # fmt: skip
    print(f"MUSE-News-shaped data, {args.records} records per file; {model}; tasks batch "
          f"{args.batch_size}; {args.threads} thread(s) per side")  # fmt: skip
    tasks = run_side(args, "tasks")
    reference = run_side(args, "reference")
    metrics = [k for k in reference if k not in ("eval_s", "peak_gb", "wall_s")]
    diffs = {k: abs(tasks[k] - reference[k]) for k in metrics}
    worst = max(diffs, key=diffs.get)
    memorization = max(diffs[k] for k in GENERATION)
    aucs = max(v for k, v in diffs.items() if k.startswith("auc_"))
    print(f"suite, whole process: reference {reference['wall_s']:.1f} s, tasks "
          f"{tasks['wall_s']:.1f} s: {reference['wall_s'] / tasks['wall_s']:.2f}x")
    print(f"suite, after imports: reference {reference['eval_s']:.1f} s, tasks "
          f"{tasks['eval_s']:.1f} s: {reference['eval_s'] / tasks['eval_s']:.2f}x")
    print(f"peak resident memory: reference {reference['peak_gb']:.2f} GB, tasks "
          f"{tasks['peak_gb']:.2f} GB: {tasks['peak_gb'] / reference['peak_gb']:.2f}x")
    print(f"largest metric difference: {diffs[worst]:.3g} ({worst}); VerbMem/KnowMem "
          f"{memorization:.3g} points, AUCs {aucs:.3g}")
    for name in (*GENERATION, "auc_mink_40", "auc_mink++_40", "auc_zlib"):
        print(f"  {name:14s} tasks {tasks[name]:9.4f}  reference {reference[name]:9.4f}")
    wall, load = fixed_cost(args, data, model_dir)
    print(f"fixed cost of muse-quant eval (1 KnowMem document): {wall:.1f} s wall, model load "
          f"{load:.2f} s, the rest {wall - load:.1f} s")


if __name__ == "__main__":
    main()
