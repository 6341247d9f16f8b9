"""Benchmark: the MUSE suite through our lm-eval tasks vs the batch-1 reference loop, one run.

Prints (1) the wall-clock ratio reference / tasks for the full suite (VerbMem, KnowMem forget and
retain, PrivLeak) on the same toy-world model, data and machine, each timed from the model folder
to the final numbers, and the largest difference between the two sets of metrics; (2) Min-K%
scoring throughput (token statistics of every PrivLeak text and its lowercase, through the muse
model) against a bare batched forward pass over the same padded batches.

    python bench/bench_tasks.py                 # tiny world, target model, batch 64, 1 thread
    python bench/bench_tasks.py --scale default --model retrain --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from harness_ext.metrics.auc import PUBLISHED_RETRAIN_AUC  # noqa: E402
from muse_quant.toyworld.build import build_world  # noqa: E402
from tests.muse_run import flat_metrics  # noqa: E402
from tests.reference_muse import evaluate as reference_evaluate  # noqa: E402

CORPUS = "news"


def run_reference(model_dir: Path, data: Path) -> tuple[dict[str, float], float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    metrics = reference_evaluate(model, tokenizer, data, PUBLISHED_RETRAIN_AUC[CORPUS])
    return metrics, time.perf_counter() - start


def run_tasks(model_dir: Path, data: Path, batch_size: int) -> tuple[dict[str, float], float]:
    from lm_eval import simple_evaluate

    import model_wrappers.muse_lm  # noqa: F401 - registers --model muse
    from muse_quant.lm_eval_tasks import task_manager

    start = time.perf_counter()
    args = {"pretrained": str(model_dir)}
    results = simple_evaluate(
        model="muse", model_args=args, tasks=[f"muse_{CORPUS}"], batch_size=batch_size,
        device="cpu", bootstrap_iters=0,
        task_manager=task_manager({**args, "muse_data": str(data)}),
    )
    elapsed = time.perf_counter() - start
    return flat_metrics(results), elapsed


def scoring_throughput(model_dir: Path, data: Path, batch_size: int, repeats: int) -> dict:
    """Tokens/s of the muse model's token statistics vs ``model(batch)`` on the same batches."""
    from model_wrappers import MuseLM

    lm = MuseLM(pretrained=str(model_dir), batch_size=batch_size, device="cpu")
    texts = [t for s in ("forget", "holdout")
             for t in json.loads((data / "privleak" / f"{s}.json").read_text())]
    seqs = [lm.tokenizer(t)["input_ids"] for t in texts + [t.lower() for t in texts]]
    seqs.sort(key=len, reverse=True)
    batches = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        batch = torch.full((len(chunk), len(chunk[0])), lm.tokenizer.pad_token_id)
        for row, ids in enumerate(chunk):
            batch[row, : len(ids)] = torch.tensor(ids)
        batches.append(batch)
    tokens = sum(len(s) for s in seqs)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    def bare() -> None:
        with torch.no_grad():
            for batch in batches:
                lm.model(batch).logits  # noqa: B018 - the forward is the point

    ours = tokens / best(lambda: lm.token_stats(texts, disable_tqdm=True))
    plain = tokens / best(bare)
    return {"tokens": tokens, "ours_tok_s": ours, "bare_tok_s": plain, "ratio": ours / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny", help="toy world scale (tiny, default)")
    parser.add_argument("--model", default="target", help="target, retrain or base")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a shared 2-core box 2 threads can be ~100x slower)")
    parser.add_argument("--repeats", type=int, default=3, help="throughput: best of N")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    world = build_world(scale=args.scale)
    model_dir, data = world / "models" / args.model, world / "data"
    print(f"world {world.name}, model {args.model}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")

    ours, t_ours = run_tasks(model_dir, data, args.batch_size)
    ref, t_ref = run_reference(model_dir, data)
    diffs = {name: abs(ours[name] - ref[name]) for name in ref}
    worst = max(diffs, key=diffs.get)
    generation = max(diffs[m] for m in ("verbmem_f", "knowmem_f", "knowmem_r"))
    aucs = max(v for k, v in diffs.items() if k.startswith("auc_"))
    ratio = t_ref / t_ours
    print(f"suite: reference {t_ref:.1f} s, tasks {t_ours:.1f} s, speed ratio {ratio:.1f}x")
    print(f"largest metric difference: {diffs[worst]:.3g} ({worst}); VerbMem/KnowMem "
          f"{generation:.3g} points, AUCs {aucs:.3g}, privleak {diffs['privleak']:.3g}")
    for name in ("verbmem_f", "knowmem_f", "knowmem_r", "auc_mink_40", "privleak"):
        print(f"  {name:12s} tasks {ours[name]:9.4f}  reference {ref[name]:9.4f}")

    tp = scoring_throughput(model_dir, data, args.batch_size, args.repeats)
    print(f"Min-K% scoring: {tp['ours_tok_s']:.0f} tok/s vs bare batched forward "
          f"{tp['bare_tok_s']:.0f} tok/s over {tp['tokens']} tokens: {tp['ratio']:.2f}x")


if __name__ == "__main__":
    main()
