"""The GPU check: the MUSE-News-shaped suite on a Llama-2-7B-shaped model at the precisions
people deploy, one command, within 10 minutes on one modern GPU.

A random-weight Llama of Llama-2-7B's shape is built on the device and saved locally (no
download), with MUSE-News-shaped data (``muse_quant.toyworld.muse_shaped``). Each precision runs
in its own process (so its peak memory is its own) through our lm-eval tasks and ``--model
muse``; the table gives per precision the wall time, tokens/s (prompt, generated and scored
tokens over the suite's time), peak GPU memory (peak resident memory on CPU), and, for the
precisions with an exact emulation, the largest metric difference between the real kernel and
the emulation. GPTQ runs on a smaller shape unless ``--gptq-7b``.

    python bench/gpu_check.py                  # CUDA: 7B shape, 25 records per file
    python bench/gpu_check.py --small          # CPU: a tiny shape, 3 records, same table
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

from bench.shaped import LLAMA_7B, read, shaped_work  # noqa: E402
from muse_quant.toyworld.config import ModelShape  # noqa: E402

PRECISIONS = ("bf16", "int8", "nf4", "fp4", "gptq-w4g128")
#: Precisions whose emulated path reproduces the real kernel's weights exactly.
EMULATED = ("nf4", "fp4", "gptq-w4g128")
SMALL = ModelShape(hidden=256, layers=2, heads=4, intermediate=768, vocab=32000, context=4096)
#: GPTQ quantizes layer by layer with calibration passes: on the 7B shape that alone can take
#: most of the budget, so by default it runs on this shape.
GPTQ_SHAPE = ModelShape(hidden=2048, layers=16, heads=16, intermediate=5504, vocab=32000,
                        context=4096)  # fmt: skip
METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "auc_mink_40", "privleak")


def suite_tokens(data: Path) -> int:
    """Tokens the suite pushes through the model (prompts, new tokens, PrivLeak texts twice),
    counted with the model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data.parent / "model")

    def n(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    verbmem = sum(n(r["prompt"]) + 128 for r in read(data, "verbmem", "forget"))
    knowmem = 0
    for which in ("forget", "retain"):
        shots = "".join(f"Question: {q['question']}\nAnswer: {q['answer']}\n\n"
                        for q in read(data, "knowmem", f"{which}_qa_icl"))  # fmt: skip
        knowmem += sum(n(f"{shots}Question: {r['question']}\nAnswer: ") + 32
                       for r in read(data, "knowmem", f"{which}_qa"))  # fmt: skip
    privleak = sum(
        n(t) + n(t.lower()) for s in ("forget", "holdout") for t in read(data, "privleak", s)
    )
    return verbmem + knowmem + privleak


def one_precision(model: Path, data: Path, precision: str, emulated: bool, device: str) -> dict:
    """The suite at one precision in this process: metrics, seconds, peak memory (GB)."""
    import torch
    from lm_eval import simple_evaluate

    import model_wrappers.muse_model  # noqa: F401 - registers --model muse
    from bench.results import flat_metrics
    from muse_quant.lm_eval_tasks import task_manager

    args = {"pretrained": str(model), "precision": precision}
    if emulated:
        args["emulated"] = True
    if precision.startswith("gptq"):
        args["calibration"] = str(data)
    start = time.perf_counter()
    results = simple_evaluate(
        model="muse", model_args=args, tasks=["muse_news"], batch_size="auto" if device ==
        "cuda" else 16, device=device, bootstrap_iters=0,
        task_manager=task_manager({**args, "muse_data": str(data), "privleak_auc_retrain": 0.5}),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"metrics": flat_metrics(results), "seconds": seconds, "peak_gb": peak}


def run_child(args: argparse.Namespace, precision: str, emulated: bool) -> dict:
    flags = [flag for flag, on in (("--emulated", emulated), ("--small", args.small),
                                   ("--gptq-7b", args.gptq_7b)) if on]  # fmt: skip
    cmd = [sys.executable, __file__, "--child", precision, *flags,
           "--records", str(args.records), "--work", str(args.work)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def shape_for(args: argparse.Namespace, precision: str) -> ModelShape:
    if args.small:
        return SMALL
    return LLAMA_7B if args.gptq_7b or not precision.startswith("gptq") else GPTQ_SHAPE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny shape and 3 records (CPU)")
    parser.add_argument("--records", type=int, default=None, help="records per file (25; 3 small)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--gptq-7b", action="store_true", help="GPTQ on the 7B shape too")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "gpu-check")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--emulated", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.small:
        sys.exit("gpu_check: no CUDA device; run with --small for the CPU version of the table")
    args.records = args.records or (3 if args.small else 25)
    dtype = "bfloat16" if device == "cuda" else "float32"
    if args.child:
        data, model = shaped_work(args.work, args.records, shape_for(args, args.child), dtype,
                                  device)  # fmt: skip
        print(json.dumps(one_precision(model, data, args.child, args.emulated, device)))
        return

    start = time.perf_counter()
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"gpu_check on {name}: MUSE-News-shaped suite, {args.records} records per file")
    rows = []
    for precision in args.precisions.split(","):
        shape = shape_for(args, precision)
        data, _ = shaped_work(args.work, args.records, shape, dtype, device)
        real = run_child(args, precision, emulated=False)
        emulated = run_child(args, precision, emulated=True) if precision in EMULATED else None
        rows.append((precision, shape, suite_tokens(data), real, emulated))
        print(format_row(*rows[-1]), flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")


def format_row(
    precision: str, shape: ModelShape, tokens: int, real: dict, emulated: dict | None
) -> str:
    where = f"h{shape.hidden}/l{shape.layers}"
    if "error" in real:
        return f"{precision:12s} {where:10s} failed: {real['error']}"
    agree = "no emulation"
    if emulated is not None:
        if "error" in emulated:
            agree = f"emulated failed: {emulated['error']}"
        else:
            diff = max(abs(real["metrics"][m] - emulated["metrics"][m]) for m in METRICS)
            agree = f"emulated vs real: max |diff| {diff:.3g}"
    return (
        f"{precision:12s} {where:10s} {real['seconds']:7.1f} s  "
        f"{tokens / real['seconds']:9.0f} tok/s  peak {real['peak_gb']:6.2f} GB  {agree}"
    )


if __name__ == "__main__":
    main()
