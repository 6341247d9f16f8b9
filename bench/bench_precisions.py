"""Benchmark: every precision on the toy world, real kernels vs emulated, in one run.

For each precision (and mode): load time; resident weight bytes as really held (quantization
state included), for the whole model and for the quantized transformer-block linears, as a ratio
to fp32; the MUSE suite's wall time through lm-eval (``muse_news`` on the world's data, our
tasks, ``--model muse``), also as a ratio to fp32's; and a bare forward pass's throughput. Then,
per quantized precision, emulated vs real: suite speed ratio and the largest metric difference.
A ``gguf-*`` precision's real row runs on llama.cpp (the lm-eval model ``--model muse`` hands it
to); its bytes are the GGUF file's tensors, its emulated row the same file dequantized in torch.

Goals (issue 4): 4-bit resident bytes <= 0.3x fp32 for what is quantized; emulated >= 3x faster
than bitsandbytes on CPU with equal metrics.

    python bench/bench_precisions.py                       # tiny world, target, 1 thread
    python bench/bench_precisions.py --scale default --precisions nf4,fp4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.results import flat_metrics  # noqa: E402
from model_wrappers.loading import load_causal_lm  # noqa: E402
from model_wrappers.precisions import resolve_precision  # noqa: E402
from model_wrappers.provenance import resident_weight_bytes  # noqa: E402
from muse_quant.toyworld.build import build_world  # noqa: E402

PRECISIONS = (
    "fp32,bf16,fp8-e4m3,int8,nf4,fp4,gptq-w4g128,awq-w4g128,rtn-w4g128,hqq-w4g64,"
    "gguf-q8_0,gguf-q4_k_m"
)
METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")


def block_linear_bytes(model: torch.nn.Module) -> int:
    """Resident bytes of the transformer blocks' linears (what the quantizers target)."""
    head = model.get_output_embeddings()
    linears = [
        m
        for n, m in model.named_modules()
        if ".layers." in n and m is not head and hasattr(m, "in_features")
    ]
    return sum(resident_weight_bytes(m) for m in linears)


def muse_suite(model: torch.nn.Module, model_dir: Path, data: Path, batch_size: int) -> tuple:
    """The MUSE suite through lm-eval on an already loaded model: (metrics, seconds)."""
    from lm_eval import simple_evaluate

    from model_wrappers.muse_model import muse_model
    from muse_quant.lm_eval_tasks import task_manager

    start = time.perf_counter()
    lm = muse_model({"pretrained": model, "tokenizer": str(model_dir), "batch_size": batch_size})
    meta = {"pretrained": str(model_dir), "muse_data": str(data)}
    results = simple_evaluate(
        model=lm, tasks=["muse_news"], bootstrap_iters=0, task_manager=task_manager(meta)
    )
    elapsed = time.perf_counter() - start
    return flat_metrics(results), elapsed


def forward_tokens_per_s(model: torch.nn.Module, repeats: int = 3) -> float:
    """Best-of-N throughput of one forward over a 16 x 256 batch of token ids."""
    batch = torch.randint(
        3, model.config.vocab_size, (16, 256), generator=torch.Generator().manual_seed(0)
    )
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    return batch.numel() / min(times)


def llama_cpp_row(name: str, model_dir: Path, data: Path, batch_size: int) -> dict:
    """A gguf precision on llama.cpp's kernels: the same row as a torch model's. Bytes are the
    GGUF file's tensors (blocks: the 2-D ``blk.*`` ones); the forward is one 256-token text
    (llama.cpp decodes one sequence at a time), best of 3."""
    import gguf
    from lm_eval import simple_evaluate

    from model_wrappers.muse_model import muse_model
    from muse_quant.lm_eval_tasks import task_manager

    start = time.perf_counter()
    args = {"pretrained": str(model_dir), "precision": name, "batch_size": batch_size}
    lm = muse_model(args)
    load_s = time.perf_counter() - start
    library = lm.provenance["precision"]["library_config"]
    reader = gguf.GGUFReader(library["file"])
    blocks = sum(
        int(t.n_bytes) for t in reader.tensors if t.name.startswith("blk.") and len(t.shape) == 2
    )
    start = time.perf_counter()
    meta = {"pretrained": str(model_dir), "muse_data": str(data)}
    results = simple_evaluate(
        model=lm, tasks=["muse_news"], bootstrap_iters=0, task_manager=task_manager(meta)
    )
    suite_s = time.perf_counter() - start
    times = []
    for seed in range(3):  # another text each time: no KV cache of a shared prefix reused
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(3, len(lm.tokenizer), (256,), generator=gen).tolist()
        started = time.perf_counter()
        lm._logits(ids)
        times.append(time.perf_counter() - started)
    return {
        "load_s": load_s,
        "cache": "hit" if library["cache"]["hit"] else "miss",
        "bytes": lm.provenance["resident_weight_bytes"],
        "block_bytes": blocks,
        "suite_s": suite_s,
        "tok_s": 256 / min(times),
        "metrics": flat_metrics(results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny", help="toy world scale (tiny, default)")
    parser.add_argument("--model", default="target", help="target, retrain or base")
    parser.add_argument("--precisions", default=PRECISIONS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    world = build_world(scale=args.scale)
    model_dir, data = world / "models" / args.model, world / "data"
    print(
        f"world {world.name}, model {args.model}, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}, batch {args.batch_size}"
    )

    rows = {}
    for name in args.precisions.split(","):
        modes = [False]
        try:
            if resolve_precision(name, {}, emulated=True).emulated:
                modes.append(True)
        except Exception:  # a precision that refuses emulated mode (int8)
            pass
        for emulated in modes:
            if not emulated and resolve_precision(name).runtime == "llama.cpp":
                rows[name, emulated] = llama_cpp_row(name, model_dir, data, args.batch_size)
                continue
            start = time.perf_counter()
            model, prov = load_causal_lm(str(model_dir), precision=name, emulated=emulated)
            load_s = time.perf_counter() - start
            cache = prov["precision"]["library_config"].get("cache")
            metrics, suite_s = muse_suite(model, model_dir, data, args.batch_size)
            rows[name, emulated] = {
                "load_s": load_s,
                "cache": "" if cache is None else ("hit" if cache["hit"] else "miss"),
                "bytes": prov["resident_weight_bytes"],
                "block_bytes": block_linear_bytes(model),
                "suite_s": suite_s,
                "tok_s": forward_tokens_per_s(model),
                "metrics": metrics,
            }
            del model

    base = rows["fp32", False] if ("fp32", False) in rows else next(iter(rows.values()))
    print(
        f"\n{'precision':22s} {'load s':>7s} {'bytes':>6s} {'blocks':>6s} {'suite s':>8s} "
        f"{'suite':>6s} {'fwd tok/s':>10s}  " + " ".join(f"{m:>9s}" for m in METRICS)
    )
    for (name, emulated), row in rows.items():
        label = (
            name
            + (" emulated" if emulated else "")
            + (f" ({row['cache']})" if row["cache"] else "")
        )
        print(
            f"{label:22s} {row['load_s']:7.2f} {row['bytes'] / base['bytes']:6.2f} "
            f"{row['block_bytes'] / base['block_bytes']:6.2f} {row['suite_s']:8.2f} "
            f"{row['suite_s'] / base['suite_s']:6.2f} {row['tok_s']:10.0f}  "
            + " ".join(f"{row['metrics'][m]:9.3f}" for m in METRICS)
        )
    print(
        "(bytes, blocks: resident bytes of the whole model / of the block linears, x fp32; "
        "suite: suite time x fp32)"
    )

    print("\nemulated vs real kernels:")
    for (name, emulated), row in rows.items():
        if not emulated:
            continue
        real = rows[name, False]
        worst = max(abs(row["metrics"][m] - real["metrics"][m]) for m in METRICS)
        print(
            f"  {name:12s} suite {real['suite_s'] / row['suite_s']:5.2f}x faster, forward "
            f"{row['tok_s'] / real['tok_s']:5.2f}x, largest metric difference {worst:.3f} points"
        )


if __name__ == "__main__":
    main()
