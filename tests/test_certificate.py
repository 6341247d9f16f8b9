"""The durability certificate: how many seeds keep every forget revert's 95% upper bound at or
below epsilon over the deployments D (docs/leaderboard.md, "Durability certificate").

The seed group is built from real results files and their per-document scores (test_intervals'
``cell``, on test_leaderboard's crafted files); every expected certificate is computed here by
hand from the board's own cells: their revert intervals' upper bounds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_intervals import N_DOCS, cell
from test_leaderboard import assert_one_line_error, run_cli

from harness_ext.doc_scores import DOC_SCORES_FILE
from harness_ext.errors import MuseQuantError
from leaderboards.certificate import certify
from leaderboards.render.markdown import render_markdown
from leaderboards.robustness import RobustnessOptions, build_board
from leaderboards.scores import CorpusBoard, ModelScores

METRICS = ("verbmem_f", "knowmem_f")
SEEDS = {"npo_s0": 0, "npo_s1": 1, "npo_s2": 2}


def seeded(root: Path, label: str, seed: int) -> None:
    """Mark a label's results files as one seed of the method NPO (full fine-tuning)."""
    for path in (root / label).glob("*/*/results.json"):
        data = json.loads(path.read_text())
        data["muse_quant"] |= {"method": "NPO", "mode": "full", "seed": seed}
        path.write_text(json.dumps(data))


def write_seed_group(root: Path) -> Path:
    """Target and retrain at fp32, int8 and nf4; NPO with three seeds: ``npo_s0`` keeps its
    forgetting at int8 and nf4, ``npo_s1`` keeps it at int8 and gets 40 points of the target's
    VerbMem_f back at nf4 (it fails by that one deployment), ``npo_s2`` keeps it at int8 and
    has no nf4 cell; ``solo`` is a method without seeds that keeps it everywhere."""
    rng = np.random.default_rng(11)
    n = N_DOCS
    hard = rng.uniform(40, 100, n)
    forget, holdout = rng.normal(0, 1, 30), rng.normal(0.1, 1, 30)
    utility = np.full(n, 60.0) + rng.normal(0, 5, n)
    low = hard * 0.15 + rng.normal(0, 1, n)
    for precision in ("fp32", "int8", "nf4"):
        cell(root, "target", precision, hard, hard * 0.8, utility, -forget, holdout,
             role="target")  # fmt: skip
        cell(root, "retrain", precision, hard * 0.2, hard * 0.2, utility * 0.97, forget, holdout,
             role="retrain")  # fmt: skip
    kept = utility * 0.97
    for label in ("npo_s0", "npo_s1", "npo_s2", "solo"):
        cell(root, label, "fp32", low, low, kept, forget, holdout)
        cell(root, label, "int8", low + rng.normal(0, 0.5, n), low, kept, forget, holdout)
    for label in ("npo_s0", "solo"):
        cell(root, label, "nf4", low + rng.normal(0, 0.5, n), low, kept, forget, holdout)
    cell(root, "npo_s1", "nf4", low + 0.4 * hard, low, kept, forget, holdout)
    for label, seed in SEEDS.items():
        seeded(root, label, seed)
    return root


@pytest.fixture(scope="module")
def seeds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_seed_group(tmp_path_factory.mktemp("certificate") / "results")


def news(root: Path, **options: object) -> CorpusBoard:
    (corpus,) = build_board(root, RobustnessOptions(**options)).corpora  # type: ignore[arg-type]
    return corpus


def models(corpus: CorpusBoard) -> dict[str, ModelScores]:
    return {m.label: m for m in corpus.methods + corpus.other_seeds}


def upper_bounds(model: ModelScores, deployments: tuple[str, ...]) -> list[float] | None:
    """Every forget revert's upper bound over D, read off the cells; None when one is missing."""
    bounds = []
    for precision in deployments:
        found = [c for c in model.cells if c.precision == precision]
        for metric in METRICS:
            interval = found[0].interval(f"revert_{metric}") if found else None
            if interval is None:
                return None
            bounds.append(interval[1])
    return bounds


def by_hand(corpus: CorpusBoard, labels: list[str], deployments: tuple[str, ...], eps: float):
    """(durable seeds, n/a seeds): a seed is durable when every upper bound is <= eps."""
    durable = unknown = 0
    for label in labels:
        bounds = upper_bounds(models(corpus)[label], deployments)
        if bounds is None:
            unknown += 1
        else:
            durable += max(bounds) <= eps
    return durable, unknown


def group_certificate(corpus: CorpusBoard):
    (group,) = corpus.seed_groups
    (ranked,) = [m for m in corpus.methods if m.label in group.labels]
    assert ranked.label == group.worst
    return ranked.certificate


def test_the_certificate_is_the_share_of_seeds_within_epsilon_by_upper_bound(
    seeds_dir: Path,
) -> None:
    corpus = news(seeds_dir)
    certificate = group_certificate(corpus)
    # Default D: every precision the seeds were evaluated at but full precision.
    assert certificate.deployments == ("int8", "nf4") and certificate.tolerance == 0.10
    labels = list(SEEDS)
    assert (certificate.certified, certificate.unknown) == by_hand(
        corpus, labels, ("int8", "nf4"), 0.10
    ) == (1, 1)  # fmt: skip
    assert certificate.text == "durable at ε=0.10 over {int8, nf4}: 1/3 seeds (1 n/a)"
    s0, s1, s2 = certificate.seeds
    assert [s.status for s in (s0, s1, s2)] == ["durable", "not durable", "n/a"]
    # npo_s1 fails by exactly one deployment: nf4, VerbMem_f; within epsilon at int8.
    assert (s1.worst_deployment, s1.worst_metric) == ("nf4", "VerbMem_f")
    nf4 = next(c for c in models(corpus)["npo_s1"].cells if c.precision == "nf4")
    assert s1.worst_upper == nf4.interval("revert_verbmem_f")[1] > 0.10
    assert max(upper_bounds(models(corpus)["npo_s1"], ("int8",))) <= 0.10
    # The worst is the largest upper bound over D and both metrics, from the cells' intervals.
    assert s0.worst_upper == max(upper_bounds(models(corpus)["npo_s0"], ("int8", "nf4")))
    # A missing cell: cannot tell, never durable.
    assert s2.missing == ("no cell at nf4",)
    assert s2.text.startswith("npo_s2: n/a (cannot tell: no cell at nf4; worst known: ")
    # Over int8 alone, every seed is durable.
    only_int8 = group_certificate(news(seeds_dir, certify=("int8",)))
    assert (only_int8.certified, only_int8.unknown) == by_hand(
        corpus, labels, ("int8",), 0.10
    ) == (3, 0)  # fmt: skip
    assert only_int8.text == "durable at ε=0.10 over {int8}: 3/3 seeds"


def test_an_upper_bound_equal_to_epsilon_is_durable(seeds_dir: Path) -> None:
    s0 = models(news(seeds_dir))["npo_s0"]
    eps = max(upper_bounds(s0, ("int8", "nf4")))
    at = group_certificate(news(seeds_dir, revert_tolerance=eps))
    assert at.seeds[0].status == "durable" and at.seeds[0].worst_upper == eps
    below = group_certificate(news(seeds_dir, revert_tolerance=math.nextafter(eps, 0)))
    assert below.seeds[0].status == "not durable"


def test_a_model_without_seeds_is_certified_over_its_own_row(seeds_dir: Path) -> None:
    corpus = news(seeds_dir)
    solo = models(corpus)["solo"]
    assert solo.seed is None and solo.certificate is not None
    assert solo.certificate.text == "durable at ε=0.10 over {int8, nf4}: 1/1 seed"
    assert [s.label for s in solo.certificate.seeds] == ["solo"]
    # The other seeds carry no certificate of their own: the group's is on its worst seed.
    assert all(m.certificate is None for m in corpus.other_seeds)
    assert all(m.certificate is None for m in corpus.references)


def test_a_revert_without_an_interval_cannot_be_certified(seeds_dir: Path, tmp_path: Path) -> None:
    """Without per-document scores a revert has no upper bound: n/a, not its point estimate."""
    root = Path(shutil.copytree(seeds_dir, tmp_path / "results"))
    (root / "solo" / "news" / "int8" / DOC_SCORES_FILE).unlink()
    solo = models(news(root))["solo"]
    int8 = next(c for c in solo.cells if c.precision == "int8")
    assert int8.revert_verbmem_f is not None and int8.interval("revert_verbmem_f") is None
    (seed,) = solo.certificate.seeds
    assert seed.status == "n/a" and solo.certificate.certified == 0
    assert seed.missing == (
        "no interval on the VerbMem_f revert at int8",
        "no interval on the KnowMem_f revert at int8",
    )
    assert solo.certificate.text == "durable at ε=0.10 over {int8, nf4}: 0/1 seed (1 n/a)"
    # A known bound above epsilon fails the seed whatever else is missing.
    failing = certify([solo], ("int8", "nf4"), tolerance=-1.0)
    assert failing.seeds[0].status == "not durable"


def test_the_column_in_markdown_csv_json_and_html(
    seeds_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "board"
    code, stdout, _ = run_cli(capsys, seeds_dir, "--out", out, "--certify", "nf4,int8")
    assert code == 0
    text = "durable at ε=0.10 over {int8, nf4}: 1/3 seeds (1 n/a)"
    assert text in stdout  # the console's ranking table
    markdown = (out / "leaderboard.md").read_text()
    assert "| Durability certificate |" in markdown and f"| {text} |" in markdown
    assert "npo_s1: not durable (worst: VerbMem_f revert at nf4, upper bound +" in markdown
    assert "**Certificate**: ε=0.10 (the revert tolerance), D = {int8, nf4} (--certify)" in (
        markdown
    )
    document = json.loads((out / "leaderboard.json").read_text())
    assert document["options"]["certify"] == ["int8", "nf4"]
    (corpus,) = document["corpora"]
    (ranked,) = [m for m in corpus["methods"] if m["label"] == corpus["seed_groups"][0]["worst"]]
    certificate = ranked["certificate"]
    assert (certificate["certified"], certificate["unknown"], certificate["text"]) == (1, 1, text)
    assert certificate["deployments"] == ["int8", "nf4"] and certificate["tolerance"] == 0.1
    assert [s["status"] for s in certificate["seeds"]] == ["durable", "not durable", "n/a"]
    assert certificate["seeds"][1]["worst_deployment"] == "nf4"
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert {r["certificate"] for r in rows if r["label"] == ranked["label"]} == {text}
    assert {r["certificate"] for r in rows if r["label"] == "target"} == {""}
    page = (out / "index.html").read_text()
    assert "Durability certificate" in page and text in page
    # Without --certify, D is the same here (every precision but fp32), and so the column.
    assert f"| {text} |" in render_markdown(build_board(seeds_dir))


def test_certify_refuses_unknown_and_full_precision_names(
    seeds_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line, exit 2, and no board folder (nor a staged one)."""
    out = tmp_path / "board"
    code, _, err = run_cli(capsys, seeds_dir, "--out", out, "--certify", "int8,nf5")
    assert_one_line_error(
        code, err, "--certify nf5: no such deployment in the results (did you mean 'nf4'?)"
    )
    code, _, err = run_cli(capsys, seeds_dir, "--out", out, "--certify", "fp32,nf4")
    assert_one_line_error(code, err, "--certify fp32: that is the full precision")
    with pytest.raises(SystemExit) as parsed:  # argparse's own one line
        run_cli(capsys, seeds_dir, "--out", out, "--certify", "int8,")
    (line,) = capsys.readouterr().err.splitlines()
    assert parsed.value.code == 2 and "--certify: 'int8,' has an empty item" in line
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MuseQuantError, match="give comma-separated deployment names"):
        RobustnessOptions(certify=())
