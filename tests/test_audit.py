"""``muse-quant audit``: the verdict rule, the report, and a real audit on the micro toy world.

The verdict tests craft results files from a real one (``data/muse_results_target_nf4.json``,
through test_leaderboard's helpers) and state every expected sentence, computed by hand from the
crafted scores. The end-to-end tests run the command on the micro world (target, retrain and an
audited model at fp32 and emulated nf4), then again to check that finished cells are reused.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from test_certificate import write_seed_group
from test_leaderboard import results, write

from harness_ext.errors import MuseQuantError
from leaderboards.audit import Audit, AuditOptions, audit_results
from leaderboards.certificate import certify
from leaderboards.robustness import build_board
from leaderboards.verdicts import PASSING
from leaderboards.write import check_report_folder, write_report
from muse_quant.cli import main

#: label -> role, {precision: (VerbMem_f, KnowMem_f, KnowMem_r, Min-40% AUC)}. The target's
#: fp32 scores (80, 60) are every retention's denominator.
WORLD = {
    "target": ("target", {"fp32": (80, 60, 50, 0.05), "nf4": (78, 59, 49, 0.06)}),
    "retrain": ("retrain", {"fp32": (20, 15, 48, 0.50), "nf4": (21, 16, 47, 0.52)}),
    # C1, C2 pass at both; retentions rise 1/80 and 1/60 at nf4: holds.
    "steady": ("method", {"fp32": (18, 14, 46, 0.49), "nf4": (19, 15, 46, 0.51)}),
    # VerbMem_f retention 0 -> 25/80 (+0.31) and C1 lost (25 > 21) at nf4.
    "reverts": ("method", {"fp32": (0, 6, 47, 0.50), "nf4": (25, 6, 47, 0.40)}),
    # VerbMem_f retention 4/80 -> 16/80 (+0.15): over 0.10, though C1 still passes (16 <= 21).
    "drifts": ("method", {"fp32": (4, 6, 47, 0.50), "nf4": (16, 6, 47, 0.50)}),
    # KnowMem_f retention +0.03 only: C2 passed (15 <= 15) and is lost (16.8 > 16), within the
    # tolerance, so it is named but forgetting holds.
    "loses_c2": ("method", {"fp32": (10, 15, 47, 0.50), "nf4": (10, 16.8, 47, 0.50)}),
    # Fails C1 and C2 at fp32: nothing was forgotten; nf4 changes nothing.
    "never_forgot": ("method", {"fp32": (70, 50, 48, 0.10), "nf4": (70, 50, 48, 0.10)}),
}

#: label -> expected (precision, status, sentence) per precision, and the exit status.
EXPECTED = {
    "steady": (
        [
            ("fp32", "forgets", "forgets at fp32: VerbMem_f 18.0 <= retrain's 20.0, "
             "KnowMem_f 14.0 <= retrain's 15.0"),
            ("nf4", "holds", "forgetting holds at nf4"),
        ],
        0,
    ),
    "reverts": (
        [
            ("fp32", "forgets", "forgets at fp32: VerbMem_f 0.0 <= retrain's 20.0, "
             "KnowMem_f 6.0 <= retrain's 15.0"),
            ("nf4", "reverts", "reverts at nf4: VerbMem_f 0.0 -> 25.0, retention 0.00 -> 0.31, "
             "C1 fails (retrain's 21.0)"),
        ],
        1,
    ),
    "drifts": (
        [
            ("fp32", "forgets", "forgets at fp32: VerbMem_f 4.0 <= retrain's 20.0, "
             "KnowMem_f 6.0 <= retrain's 15.0"),
            ("nf4", "reverts", "reverts at nf4: VerbMem_f 4.0 -> 16.0, retention 0.05 -> 0.20"),
        ],
        1,
    ),
    "loses_c2": (
        [
            ("fp32", "forgets", "forgets at fp32: VerbMem_f 10.0 <= retrain's 20.0, "
             "KnowMem_f 15.0 <= retrain's 15.0"),
            ("nf4", "holds", "forgetting holds at nf4 (within the revert tolerance: KnowMem_f "
             "15.0 -> 16.8, retention 0.25 -> 0.28, C2 fails (retrain's 16.0))"),
        ],
        0,
    ),
    "never_forgot": (
        [
            ("fp32", "no forgetting", "no forgetting at fp32: VerbMem_f 70.0 > retrain's 20.0 "
             "(C1 fails), KnowMem_f 50.0 > retrain's 15.0 (C2 fails)"),
            ("nf4", "holds", "forgetting holds at nf4"),
        ],
        1,
    ),
}  # fmt: skip


def write_world(root: Path, world: dict = WORLD) -> Path:
    for label, (role, cells) in world.items():
        for precision, scores in cells.items():
            write(root, results(label, precision, scores, role=role))
    return root


@pytest.fixture
def world_dir(tmp_path: Path) -> Path:
    return write_world(tmp_path / "results")


def verdicts(audit: Audit) -> list[tuple[str, str, str]]:
    return [(v.precision, v.status, v.text) for v in audit.verdicts]


# --------------------------------------------------------------------------- the verdict rule


@pytest.mark.parametrize("label", EXPECTED)
def test_verdict_per_precision(world_dir: Path, label: str) -> None:
    audit = audit_results(world_dir, label)
    expected, status = EXPECTED[label]
    assert verdicts(audit) == expected
    assert (audit.passed, audit.exit_status) == (status == 0, status)
    failing = "; ".join(text for _, verdict, text in expected if verdict not in PASSING)
    assert audit.headline == (
        "PASS: forgetting holds at every precision (fp32, nf4)"
        if status == 0
        else f"FAIL: {failing}"
    )
    # The evidence is the board's: the audited model and the two references, nothing else.
    shown = [m.label for m in (audit.model, *audit.corpus.references)]
    assert shown == [label, "target", "retrain"]


def test_revert_tolerance_is_an_option(world_dir: Path) -> None:
    """A +0.15 rise holds under tolerance 0.2; a negative tolerance is refused."""
    audit = audit_results(world_dir, "drifts", AuditOptions(revert_tolerance=0.2))
    assert [v.status for v in audit.verdicts] == ["forgets", "holds"]
    assert audit.exit_status == 0
    with pytest.raises(MuseQuantError, match="revert tolerance -0.1: must be >= 0"):
        AuditOptions(revert_tolerance=-0.1)


def test_missing_reference_is_not_a_pass(tmp_path: Path) -> None:
    """Without the retrain model at fp32, C1/C2 there are n/a: the audit cannot tell whether the
    model forgot, and fails. At nf4 the verdict needs only retentions (target-relative)."""
    world = dict(WORLD, retrain=("retrain", {"nf4": WORLD["retrain"][1]["nf4"]}))
    audit = audit_results(write_world(tmp_path / "results", world), "steady")
    assert verdicts(audit)[0][:2] == ("fp32", "n/a")
    assert verdicts(audit)[1] == ("nf4", "holds", "forgetting holds at nf4")
    assert audit.exit_status == 1


def test_audited_precisions_and_what_the_folder_cannot_answer(world_dir: Path) -> None:
    """Only the asked precisions count (another one in the folder changes nothing); a model or a
    precision the folder lacks, a reference as the audited model, no full precision: errors."""
    write(world_dir, results("reverts", "fp4", (80, 60, 50, 0.05), role="method"))
    only_fp32 = audit_results(world_dir, "reverts", precisions=["fp32"], corpus="news")
    assert [v.status for v in only_fp32.verdicts] == ["forgets"]
    assert only_fp32.corpus.precisions == ("fp32",)
    with pytest.raises(MuseQuantError, match="no results for 'nobody' \\(labels found: drifts,"):
        audit_results(world_dir, "nobody")
    with pytest.raises(MuseQuantError, match="'retrain' is the retrain model; audit an unlearned"):
        audit_results(world_dir, "retrain")
    with pytest.raises(MuseQuantError, match="'steady' has no news results at int8"):
        audit_results(world_dir, "steady", precisions=["fp32", "int8"])
    with pytest.raises(MuseQuantError, match="'steady' has no results on books"):
        audit_results(world_dir, "steady", corpus="books")
    with pytest.raises(MuseQuantError, match="target 'target' has no full-precision results"):
        audit_results(world_dir, "steady", precisions=["nf4"])


# --------------------------------------------------------------------------- the report


def test_report_files(world_dir: Path, tmp_path: Path) -> None:
    """report.json holds the verdicts, the rule, the board's numbers and each file's provenance;
    report.md says the same for people; a rewrite replaces them and leaves other files alone."""
    audit = audit_results(world_dir, "reverts")
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    write_report(audit, out)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "results"]
    report = json.loads((out / "report.json").read_text())
    assert report["generator"] == "muse-quant audit"
    assert (report["passed"], report["exit_status"]) == (False, 1)
    assert report["verdict"] == "FAIL: " + EXPECTED["reverts"][0][1][2]
    assert [v["status"] for v in report["verdicts"]] == ["forgets", "reverts"]
    assert report["rule"]["revert_tolerance"] == 0.1
    (model, *_) = report["evidence"]["methods"]
    assert model["cells"][1]["revert_verbmem_f"] == 25 / 80
    assert model["cells"][1]["criteria"] == {"c1": False, "c2": True, "c3": False, "c4": True}
    cells = report["provenance"]["cells"]
    assert [(c["label"], c["precision"]) for c in cells] == [
        (label, precision)
        for label in ("reverts", "target", "retrain")
        for precision in ("fp32", "nf4")
    ]
    sample = cells[0]["muse_provenance"]
    assert sample["weights_sha256"]["model.safetensors"] and sample["libraries"]["lm_eval"]
    assert cells[0]["source"] == "reverts/news/fp32/results.json"
    assert report["provenance"]["task_versions"]["muse_news_verbmem_f"] == 1.0
    markdown = (out / "report.md").read_text()
    assert "**FAIL: reverts at nf4: VerbMem_f 0.0 -> 25.0, retention 0.00 -> 0.31" in markdown
    assert "&gt;" not in markdown and "\\_" not in markdown  # the raw text reads as it renders
    assert sample["weights_sha256"]["model.safetensors"] in markdown
    before = (out / "report.json").read_bytes()
    write_report(audit_results(world_dir, "reverts"), out)
    assert (out / "report.json").read_bytes() == before  # nothing depends on when
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "results"]


def test_report_escapes_labels(tmp_path: Path) -> None:
    """A foreign results file's label lands in the report as text, not markup."""
    label = "evil|<b>_x</b>"
    world = {**WORLD, label: WORLD["steady"]}
    audit = audit_results(write_world(tmp_path / "results", world), label)
    write_report(audit, tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "# Unlearning audit: evil|\\<b>_x\\</b>" in markdown
    assert "| evil\\|\\<b>_x\\</b> |" in markdown  # in the evidence table, | is escaped too
    assert re.search(r"(?<!\\)<[A-Za-z/]", markdown) is None  # every tag opener is escaped


def test_report_folder_refusals(world_dir: Path, tmp_path: Path) -> None:
    """A file where the folder should be, or report files that no audit wrote: refused, and
    nothing changes."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MuseQuantError, match="is not a folder"):
        check_report_folder(blocker / "out")
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "report.md").write_text("my notes")
    with pytest.raises(MuseQuantError, match="report.md that muse-quant audit did not write"):
        write_report(audit_results(world_dir, "steady"), foreign)
    assert [p.name for p in foreign.iterdir()] == ["report.md"]
    assert (foreign / "report.md").read_text() == "my notes"


def test_the_report_states_the_durability_certificate(tmp_path: Path) -> None:
    """The audit certifies its one model with the board's rule over its own row (one seed):
    the same numbers as that seed on a board of the whole folder."""
    seeds_dir = write_seed_group(tmp_path / "results")
    audit = audit_results(seeds_dir, "npo_s1", AuditOptions(certify=("int8", "nf4")))
    certificate = audit.certificate
    assert certificate.text == "durable at ε=0.10 over {int8, nf4}: 0/1 seed"
    assert certificate == certify([audit.model], ("int8", "nf4"), 0.10)
    (board,) = build_board(seeds_dir).corpora
    (group_worst,) = [m for m in board.methods if m.label == "npo_s1"]
    assert certificate.seeds == group_worst.certificate.seeds[1:2]  # the board's npo_s1
    write_report(audit, tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    (line,) = [line for line in markdown.splitlines() if "Durability certificate" in line]
    assert line.startswith(
        "**Durability certificate**: durable at ε=0.10 over {int8, nf4}: 0/1 seed (npo_s1: not "
        "durable (worst: VerbMem_f revert at nf4, upper bound +0.40 > 0.10))"
    ), line
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["certificate"]["text"] == certificate.text
    assert report["options"]["certify"] == ["int8", "nf4"]
    # Default D: every audited precision but full; a seed that holds there is certified.
    assert audit_results(seeds_dir, "npo_s0").certificate.text == (
        "durable at ε=0.10 over {int8, nf4}: 1/1 seed"
    )
    with pytest.raises(MuseQuantError, match="--certify nf5: no such deployment in the results"):
        audit_results(seeds_dir, "npo_s0", AuditOptions(certify=("nf5",)))


def test_without_intervals_the_audit_cannot_certify(world_dir: Path, tmp_path: Path) -> None:
    """Results files without per-document scores: the verdict rests on point estimates, the
    certificate (a bound) says n/a."""
    audit = audit_results(world_dir, "steady")
    assert audit.exit_status == 0
    assert audit.certificate.text == "durable at ε=0.10 over {nf4}: 0/1 seed (1 n/a)"
    write_report(audit, tmp_path / "out")
    assert (
        "(steady: n/a (cannot tell: no interval on the VerbMem_f revert at nf4, no interval on "
        "the KnowMem_f revert at nf4))" in (tmp_path / "out" / "report.md").read_text()
    )


# --------------------------------------------------------------------------- the command


def audit_args(world: Path, model: Path, out: Path, *extra: str) -> list[str]:
    models = world / "models"
    return [
        "audit", "--model", str(model), "--target", str(models / "target"),
        "--retrain", str(models / "retrain"), "--data", str(world / "data"),
        "--precisions", "fp32,nf4", "--emulated", "--device", "cpu", "--out", str(out),
        "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def candidate(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The retrain model's files under another name: a third party's model that forgot exactly
    as much as the retrain model."""
    copy = tmp_path_factory.mktemp("third-party") / "candidate"
    return Path(shutil.copytree(micro_world / "models" / "retrain", copy))


def test_audit_on_the_toy_world_then_reuse(
    micro_world: Path, candidate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit"
    code = main(audit_args(micro_world, candidate, out))
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file()
    # Its scores equal the retrain model's, so C1 and C2 pass everywhere; it holds at nf4 unless
    # the retrain model's own retention rises by more than 0.10 there.
    (model,) = report["evidence"]["methods"]
    retrain = report["evidence"]["references"][1]
    assert [c["verbmem_f"] for c in model["cells"]] == [c["verbmem_f"] for c in retrain["cells"]]
    rise = max(retrain["cells"][1]["revert_verbmem_f"], retrain["cells"][1]["revert_knowmem_f"])
    # The toy retrain model keeps less than 0.9 x the target's utility: C4 gates it at fp32.
    kept = model["cells"][0]["criteria"]["c4"]
    expected = ["forgets" if kept else "lost utility", "holds" if rise <= 0.10 else "reverts"]
    assert [v["status"] for v in report["verdicts"]] == expected
    assert code == report["exit_status"] == (0 if expected == ["forgets", "holds"] else 1)
    first = "forgets at fp32: VerbMem_f" if kept else "lost utility at fp32: KnowMem_r"
    assert report["verdict"] in printed and first in printed
    # Provenance: the audited file's hash, from its own results file.
    own = report["provenance"]["cells"][0]
    weights = hashlib.sha256((candidate / "model.safetensors").read_bytes()).hexdigest()
    assert own["muse_provenance"]["weights_sha256"]["model.safetensors"] == weights
    assert own["source"] == "candidate/news/fp32/results.json" and len(own["cell_key"]) == 64
    nf4 = report["provenance"]["cells"][1]["muse_provenance"]["precision"]
    assert (nf4["name"], nf4["emulated"]) == ("nf4", True)
    # Again: every cell is reused (no results file rewritten), the report is the same.
    files = sorted((out / "results").rglob("results.json"))
    assert len(files) == 6
    stamps = [f.stat().st_mtime_ns for f in files]
    before = (out / "report.json").read_bytes()
    assert main(audit_args(micro_world, candidate, out)) == code
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert (out / "report.json").read_bytes() == before
    # The target's files as the audited model, in the same results folder: the references are
    # reused, and nothing was forgotten (exit 1).
    stale = Path(shutil.copytree(micro_world / "models" / "target", tmp_path / "stale"))
    shared = ("--results", str(out / "results"))
    capsys.readouterr()
    assert main(audit_args(micro_world, stale, tmp_path / "stale-audit", *shared)) == 1
    assert [f.stat().st_mtime_ns for f in files] == stamps
    printed = capsys.readouterr().out
    assert "FAIL: no forgetting at fp32: VerbMem_f" in printed


def assert_bad_input(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("muse-quant: error: ") and message in line, line


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--model", "missing", "missing"),
        ("--precisions", "fp32,nf5", "unknown precision 'nf5'"),
        ("--precisions", "nf4", "include a full precision (fp32 or bf16)"),
        ("--revert-tolerance", "-1", "revert tolerance -1.0: must be >= 0"),
        ("--data", "no-such-data", "no-such-data"),
        ("--label", "a/b", "label 'a/b': a label is a folder name: letters, digits and . _ + -"),
        (
            "--certify",
            "nf5",
            "--certify nf5: no such deployment in --precisions (did you mean "
            "'nf4'?); present: fp32, nf4",
        ),
        ("--certify", "fp32", "--certify fp32: that is the full precision"),
    ],
)
def test_bad_input_writes_nothing(
    micro_world: Path,
    candidate: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    message: str,
) -> None:
    """One line, exit 2, and no report or results folder (argparse keeps a flag's last value)."""
    value = str(tmp_path / value) if flag in ("--model", "--data") else value
    assert_bad_input(
        capsys, audit_args(micro_world, candidate, tmp_path / "out", flag, value), message
    )
    assert list(tmp_path.iterdir()) == []


def test_unwritable_out_writes_nothing(
    micro_world: Path, candidate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An --out under a file (root can write anywhere else) is refused before any cell runs."""
    (tmp_path / "file").write_text("x")
    assert_bad_input(
        capsys, audit_args(micro_world, candidate, tmp_path / "file" / "out"), "not a folder"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
