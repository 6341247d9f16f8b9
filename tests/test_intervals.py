"""Uncertainty: every number's 95% bootstrap interval, paired where documents are shared, and
verdicts and ranks that the intervals decide (holds / reverts / inconclusive, shared ranks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_leaderboard import results, write

from harness_ext.doc_scores import DOC_SCORES_FILE
from leaderboards.audit import audit_results
from leaderboards.intervals import (
    N_RESAMPLES,
    auc_interval,
    auc_statistic,
    mean_interval,
    revert_interval,
)
from leaderboards.render.markdown import render_markdown
from leaderboards.robustness import build_board
from muse_quant.cli import main

N_DOCS = 40


def percentile_bootstrap(statistic, *samples: np.ndarray, paired: bool) -> tuple[float, float]:
    """A plain bootstrap, written here from its definition (numpy only, its own seed)."""
    rng = np.random.default_rng(2026)
    n = len(samples[0])
    values = []
    for _ in range(20000):
        if paired:
            index = rng.integers(0, n, n)
            values.append(statistic(*(s[index] for s in samples)))
        else:
            values.append(statistic(*(s[rng.integers(0, len(s), len(s))] for s in samples)))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def test_mean_and_auc_intervals_match_an_independent_bootstrap() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 100, N_DOCS)
    low, high = mean_interval(scores)
    ref = percentile_bootstrap(np.mean, scores, paired=True)
    assert low == pytest.approx(ref[0], abs=1.0) and high == pytest.approx(ref[1], abs=1.0)
    # and the normal approximation agrees roughly too
    half = 1.96 * scores.std(ddof=1) / np.sqrt(N_DOCS)
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    forget, holdout = rng.normal(0, 1, 30), rng.normal(0.7, 1, 30)
    auc = auc_interval(forget, holdout)
    ref = percentile_bootstrap(lambda f, h: auc_statistic(f, h), forget, holdout, paired=False)
    assert auc[0] == pytest.approx(ref[0], abs=0.02) and auc[1] == pytest.approx(ref[1], abs=0.02)


def test_a_paired_revert_is_narrower_than_an_unpaired_one_on_correlated_documents() -> None:
    rng = np.random.default_rng(1)
    hardness = rng.uniform(0, 100, N_DOCS)  # documents differ a lot, models track each other
    target = np.clip(hardness + rng.normal(0, 3, N_DOCS), 0, 100)
    at_full = np.clip(0.3 * hardness + rng.normal(0, 3, N_DOCS), 0, 100)
    at_p = np.clip(at_full + 8 + rng.normal(0, 2, N_DOCS), 0, 100)
    paired = revert_interval(at_p, at_full, target)
    unpaired = revert_interval(at_p, at_full, target, paired=False)
    assert paired[1] - paired[0] < 0.5 * (unpaired[1] - unpaired[0])
    stat = lambda p, f, t: (p.mean() - f.mean()) / t.mean()  # noqa: E731
    ref = percentile_bootstrap(stat, at_p, at_full, target, paired=True)
    assert paired == pytest.approx(ref, abs=0.01)


# --------------------------------------------------------------------------- boards


def cell(
    root: Path, label: str, precision: str, verbmem: np.ndarray, knowmem: np.ndarray,
    utility: np.ndarray, forget: np.ndarray, holdout: np.ndarray, role: str = "method",
) -> None:  # fmt: skip
    """A results file and its scores.json, the aggregates being the scores' own."""
    auc = float(auc_statistic(forget, holdout))
    data = results(label, precision, (verbmem.mean(), knowmem.mean(), utility.mean(), auc),
                   role=role, method=label if role == "method" else None)  # fmt: skip
    path = write(root, data)
    sets = ["forget"] * len(forget) + ["holdout"] * len(holdout)
    tasks = {
        f"muse_news_{name}": {"doc_ids": list(range(len(v))), "scores": {name: list(v)}}
        for name, v in (("verbmem_f", verbmem), ("knowmem_f", knowmem), ("knowmem_r", utility))
    }
    privleak = np.concatenate([forget, holdout]).tolist()
    tasks["muse_news_privleak"] = {
        "doc_ids": list(range(len(sets))), "sets": sets, "scores": {"mink_40": privleak}
    }
    (path.parent / DOC_SCORES_FILE).write_text(json.dumps({"schema": 1, "tasks": tasks}))


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Target, retrain and four methods on 40 documents: ``holds`` keeps its forgetting,
    ``reverts`` gets 40 points of the target's VerbMem_f back at nf4, ``unsure`` a noisy 10,
    ``twin`` is ``holds`` with tiny noise (indistinguishable), ``broken`` lost its utility."""
    root = tmp_path_factory.mktemp("board") / "results"
    rng = np.random.default_rng(7)
    n = N_DOCS
    hard = rng.uniform(40, 100, n)
    forget, holdout = rng.normal(0, 1, 30), rng.normal(0.1, 1, 30)
    target = (hard, hard * 0.8, np.full(n, 60.0) + rng.normal(0, 5, n))
    low = hard * 0.15 + rng.normal(0, 1, n)
    utility = target[2] * 0.97
    for precision, shift in (("fp32", 0.0), ("nf4", 0.5)):
        cell(root, "target", precision, target[0], target[1], target[2], -forget, holdout,
             role="target")  # fmt: skip
        cell(root, "retrain", precision, hard * 0.2 + shift, hard * 0.2, utility, forget, holdout,
             role="retrain")  # fmt: skip
    cell(root, "holds", "fp32", low, low, utility, forget, holdout)
    cell(root, "holds", "nf4", low + rng.normal(0, 0.5, n), low, utility, forget, holdout)
    cell(root, "twin", "fp32", low + 0.1, low, utility, forget, holdout)
    cell(root, "twin", "nf4", low + rng.normal(0, 0.5, n), low, utility, forget, holdout)
    cell(root, "reverts", "fp32", low, low, utility, forget, holdout)
    cell(root, "reverts", "nf4", low + 0.4 * hard, low, utility, forget, holdout)
    cell(root, "unsure", "fp32", low, low, utility, forget, holdout)
    noisy = low + 0.1 * hard + rng.normal(0, 20, n)
    cell(root, "unsure", "nf4", np.clip(noisy, 0, 100), low, utility, forget, holdout)
    cell(root, "broken", "fp32", low, low, utility * 0.5, forget, holdout)
    cell(root, "broken", "nf4", low, low, utility * 0.5, forget, holdout)
    return root


def test_every_number_has_its_interval_and_verdicts_follow_them(board_dir: Path) -> None:
    (news,) = build_board(board_dir).corpora
    by_label = {m.label: m for m in news.methods}
    for model in news.methods:
        for scores in model.cells:
            for name in ("verbmem_f", "knowmem_f", "knowmem_r", "auc", "privleak",
                         "retention_verbmem_f", "utility_retention"):  # fmt: skip
                low, high = scores.interval(name)
                assert low <= getattr(scores, name) <= high, (model.label, name)
    nf4 = next(c for c in by_label["reverts"].cells if c.precision == "nf4")
    assert nf4.interval("revert_verbmem_f")[0] > 0.10  # the lower bound clears the tolerance
    assert {label: m.verdict for label, m in by_label.items()} == {
        "holds": "holds", "twin": "holds", "reverts": "reverts", "unsure": "inconclusive",
        "broken": "lost utility",
    }  # fmt: skip


def test_ranks_follow_robustness_and_the_intervals_make_ties(board_dir: Path) -> None:
    (news,) = build_board(board_dir).corpora
    ranks = {m.label: m.rank for m in news.methods}
    assert ranks["holds"] == ranks["twin"] == 1  # their worst reverts' intervals overlap
    assert ranks["unsure"] == 3 and ranks["reverts"] == 4
    assert ranks["broken"] == 5  # lost utility: below every model that kept it


def test_the_audit_says_which_verdict_and_shows_the_interval(board_dir: Path) -> None:
    audit = audit_results(board_dir, "unsure", precisions=("fp32", "nf4"))
    full, nf4 = audit.verdicts
    assert (full.status, nf4.status) == ("forgets", "inconclusive")
    assert "straddles the tolerance 0.10" in nf4.text and "[" in nf4.text
    assert audit.headline.startswith("INCONCLUSIVE: ") and audit.exit_status == 1
    reverts = audit_results(board_dir, "reverts", precisions=("fp32", "nf4"))
    assert reverts.verdicts[1].status == "reverts" and reverts.headline.startswith("FAIL")
    assert N_RESAMPLES >= 1000


def test_seeds_of_one_method_show_mean_worst_and_durability_and_rank_by_the_worst(
    board_dir: Path, tmp_path: Path
) -> None:
    """Three seeds of one method: two hold, one reverts; the board ranks the method by the
    reverting seed, and says 2 of 3 seeds hold."""
    root = Path(shutil.copytree(board_dir, tmp_path / "results"))
    for label, seed in (("holds", 0), ("twin", 1), ("reverts", 2)):
        for path in (root / label).glob("*/*/results.json"):
            data = json.loads(path.read_text())
            data["muse_quant"] |= {"method": "NPO+GDR", "mode": "full", "seed": seed}
            path.write_text(json.dumps(data))
    (news,) = build_board(root).corpora
    (group,) = news.seed_groups
    assert (group.method, group.seeds) == ("NPO+GDR", (0, 1, 2))
    assert group.labels == ("holds", "twin", "reverts")
    assert group.durability == pytest.approx(2 / 3) and group.worst == "reverts"
    by_label = {m.label: m for m in news.models}
    reverts = [by_label[label].worst_revert for label in group.labels]
    assert group.mean_worst_revert == pytest.approx(sum(reverts) / 3)
    ranked = [m.label for m in news.methods]
    assert "reverts" in ranked and "holds" not in ranked and "twin" not in ranked
    assert {m.label for m in news.other_seeds} == {"holds", "twin"}
    assert [m.label for m in news.methods] == ["unsure", "reverts", "broken"]
    page = render_markdown(build_board(root))
    assert "| NPO+GDR | full | 3 (0, 1, 2) | 67% hold |" in page


def test_the_revert_tolerance_is_an_option_of_the_board(board_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "board"
    argv = ["leaderboard", str(board_dir), "--out", str(out), "--revert-tolerance", "0.6"]
    assert main(argv) == 0
    (news,) = json.loads((out / "leaderboard.json").read_text())["corpora"]
    verdicts = {m["label"]: m["verdict"] for m in news["methods"]}
    assert verdicts["reverts"] == "holds"  # its +0.4 revert is within a 0.6 tolerance
    assert json.loads((out / "leaderboard.json").read_text())["options"]["revert_tolerance"] == 0.6


def test_a_plain_lm_eval_run_with_log_samples_gets_the_same_intervals(
    board_dir: Path, tmp_path: Path
) -> None:
    """The board from lm-eval's own layout (``results_<stamp>.json`` and, from ``--log_samples``,
    ``samples_<task>_<stamp>.jsonl`` with lm-eval's per-sample records) has the intervals and
    verdicts of the same scores read from a sweep's ``scores.json``."""
    root = tmp_path / "lm-eval"
    for path in sorted(board_dir.glob("*/*/*/results.json")):
        data = json.loads(path.read_text())
        del data["muse_quant"]  # a plain lm-eval results file
        folder = root / path.parent.relative_to(board_dir)
        folder.mkdir(parents=True)
        stamp = "2026-12-01T10-00-00.000001"
        (folder / f"results_{stamp}.json").write_text(json.dumps(data))
        tasks = json.loads((path.parent / DOC_SCORES_FILE).read_text())["tasks"]
        for task, entry in tasks.items():
            lines = []
            for i, doc_id in enumerate(entry["doc_ids"]):
                record = {"doc_id": doc_id, "doc": {}, "filter": "none"}
                if "sets" in entry:
                    scores = {f"auc_{a}": {"set": entry["sets"][i], "score": v[i]}
                              for a, v in entry["scores"].items()}  # fmt: skip
                    record |= scores | {"privleak": {"set": entry["sets"][i], "score": 0.0}}
                else:
                    record |= {name: v[i] for name, v in entry["scores"].items()}
                lines.append(json.dumps(record))
            (folder / f"samples_{task}_{stamp}.jsonl").write_text("\n".join(lines) + "\n")
    (ours,) = build_board(board_dir).corpora
    (theirs,) = build_board(root, target="/models/target", retrain="/models/retrain").corpora
    verdicts = {m.label.removeprefix("/models/"): m.verdict for m in theirs.methods}
    assert verdicts == {m.label: m.verdict for m in ours.methods}
    for model in ours.methods:
        other = next(m for m in theirs.methods if m.label == f"/models/{model.label}")
        for mine, foreign in zip(model.cells, other.cells, strict=True):
            assert foreign.intervals == mine.intervals and mine.intervals
