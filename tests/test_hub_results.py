"""The Hub's evaluation-results files a board writes: ``hub/<label>/.eval_results/*.yaml``.

Boards are built from results files crafted the way ``test_leaderboard.py`` crafts them (no
model runs); every value read back from the YAML is checked against the board's own number for
its model, corpus, precision and metric, and every file is read with ``huggingface_hub``'s own
parser of the format (https://huggingface.co/docs/hub/eval-results).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import eval_result_entries_to_yaml, parse_eval_result_entries
from test_leaderboard import HOSTILE, WORLD, results, run_cli, write, write_world

from harness_ext.errors import MuseQuantError
from leaderboards.render.board_files import render_all
from leaderboards.render.hub_results import METRICS, model_folder, render_hub_results
from leaderboards.render.model_index import file_name
from leaderboards.robustness import Board, build_board
from leaderboards.write import write_folder

#: Deployments (any precision name the results carry) beside the plain precisions, and a label
#: that is no plain file name.
DEPLOYMENTS = ("wanda-50+nf4", "relearn-forget-k10")
ODD_LABEL = "org/npo+lora"
#: The keys the format defines (the Hub's documentation, huggingface_hub.EvalResultEntry).
ENTRY_KEYS = {"dataset", "value", "verifyToken", "date", "source", "notes"}
DATASET_KEYS = {"id", "task_id", "revision"}


def _from_the_hub(data: dict[str, Any]) -> dict[str, Any]:
    """The results file as if its data had come from the Hub (no local ``muse_data``)."""
    for config in data["configs"].values():
        config["metadata"].pop("muse_data", None)
    return data


def write_publishable_world(root: Path, hub_data: bool = False) -> Path:
    """WORLD on news, every model also at the deployments, the odd label, and three models on
    books too (a label on two corpora gets both corpora's files in its one folder)."""
    prepare = _from_the_hub if hub_data else (lambda data: data)
    world = {
        label: (role, {**cells, **{d: cells["nf4"] for d in DEPLOYMENTS}})
        for label, (role, cells) in WORLD.items()
    }
    world[ODD_LABEL] = ("method", dict(world["steady"][1]))
    for label, (role, cells) in world.items():
        for precision, scores in cells.items():
            write(root, prepare(results(label, precision, scores, role=role)))
    for label in ("target", "retrain", "steady"):
        role, cells = WORLD[label]
        for precision, scores in cells.items():
            write(root, prepare(results(label, precision, scores, role=role, corpus="books")))
    return root


@pytest.fixture
def board(tmp_path: Path) -> Board:
    return build_board(write_publishable_world(tmp_path / "results"))


def read_entries(path: Path) -> list[dict[str, Any]]:
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(entries, list) and entries, path
    return entries


def test_every_entry_is_the_boards_number_with_its_precision(board: Board, tmp_path: Path) -> None:
    out = tmp_path / "board"
    write_folder(out, render_all(board))
    expected_files = set()
    fields = dict(METRICS)
    for corpus in board.corpora:
        for model in corpus.models:
            for cell in model.cells:
                path = (
                    out / "hub" / model_folder(model.label) / ".eval_results"
                    / file_name(f"muse_{corpus.corpus}_{cell.precision}")
                )  # fmt: skip
                expected_files.add(path)
                entries = read_entries(path)
                # One entry per metric the board has for this cell, in METRICS' order.
                wanted = [f for f in fields if getattr(cell, f) is not None]
                assert [e["dataset"]["task_id"] for e in entries] == [
                    f"muse_{corpus.corpus}_{f}" for f in wanted
                ]
                for entry, field in zip(entries, wanted, strict=True):
                    assert entry["value"] == round(getattr(cell, field), 6)
                    assert entry["value"] == pytest.approx(getattr(cell, field), abs=5e-7)
                    assert entry["dataset"]["id"] == f"muse-bench/MUSE-{corpus.corpus.capitalize()}"
                    assert entry["notes"].startswith(f"precision: {cell.precision}; ")
                    assert fields[field] in entry["notes"]
                    # The required fields, and nothing the format does not define.
                    assert isinstance(entry["dataset"]["id"], str)
                    assert isinstance(entry["dataset"]["task_id"], str)
                    assert isinstance(entry["value"], int | float)
                    assert set(entry) <= ENTRY_KEYS and set(entry["dataset"]) <= DATASET_KEYS
    written = {p for p in (out / "hub").rglob("*") if p.is_file()}
    assert written == expected_files
    # Every precision and deployment, the odd label, and both corpora of a label are there.
    steady = {p.name for p in (out / "hub" / "steady" / ".eval_results").iterdir()}
    assert steady == {
        file_name(f"muse_{c}_{p}")
        for c, precisions in (("news", ("fp32", "nf4", *DEPLOYMENTS)), ("books", ("fp32", "nf4")))
        for p in precisions
    }
    assert (out / "hub" / model_folder(ODD_LABEL)).is_dir() and model_folder(ODD_LABEL) != ODD_LABEL
    # The reverts (robustness) and PrivLeak at a deployment are published.
    (news,) = [c for c in board.corpora if c.corpus == "news"]
    (reverts,) = [m for m in news.models if m.label == "reverts"]
    deployed = read_entries(
        out / "hub" / "reverts" / ".eval_results" / file_name("muse_news_wanda-50+nf4")
    )
    by_task = {e["dataset"]["task_id"]: e for e in deployed}
    cell = next(c for c in reverts.cells if c.precision == "wanda-50+nf4")
    assert by_task["muse_news_revert_knowmem_f"]["value"] == round(cell.revert_knowmem_f, 6) > 0
    assert "attack mink_40, against " in by_task["muse_news_privleak"]["notes"]


def test_huggingface_hubs_own_parser_reads_every_file_back_unchanged(board: Board) -> None:
    """The installed ``huggingface_hub`` parses each file as ``EvalResultEntry`` objects and
    writes them back as the very same data: only the format's fields, each where it belongs."""
    files = render_hub_results(board)
    assert files
    for path, text in files.items():
        data = yaml.safe_load(text)
        entries = parse_eval_result_entries(data)
        assert eval_result_entries_to_yaml(entries) == data, path
        assert all(e.dataset_id and e.task_id and e.value is not None for e in entries)


def test_data_from_the_hub_or_a_local_folder_is_said(tmp_path: Path) -> None:
    local = build_board(write_publishable_world(tmp_path / "local"))
    hub = build_board(write_publishable_world(tmp_path / "hub", hub_data=True))
    for board, says_local in ((local, True), (hub, False)):
        for text in render_hub_results(board).values():
            for entry in yaml.safe_load(text):
                assert ("data: local folder " in entry["notes"]) is says_local


def test_the_example_in_the_docs_is_what_the_board_writes(tmp_path: Path) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "leaderboard.md").read_text(encoding="utf-8")
    example = docs.split("A file as written", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    board = build_board(write_publishable_world(tmp_path / "results", hub_data=True))
    assert render_hub_results(board)["hub/steady/.eval_results/muse_news_nf4.yaml"] == example


def test_hostile_labels_and_precisions_stay_text_and_plain_file_names(tmp_path: Path) -> None:
    label, precision = "a: b\n- dataset: {id: evil}\n" + HOSTILE, "nf4'\n  value: 0 # x"
    world = {
        "target": ("target", {"fp32": (80, 60, 50, 0.05), precision: (78, 59, 49, 0.06)}),
        label: ("method", {"fp32": (18, 14, 46, 0.49), precision: (19, 15, 46, 0.51)}),
    }
    board = build_board(write_world(tmp_path / "results", world))
    files = render_hub_results(board)
    assert len(files) == 4
    for path, text in files.items():
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in path.split("/")), path
        entries = yaml.safe_load(text)
        assert {e["dataset"]["id"] for e in entries} == {"muse-bench/MUSE-News"}
        assert all(re.fullmatch(r"muse_news_[a-z_]+", e["dataset"]["task_id"]) for e in entries)
    ours = [t for p, t in files.items() if p.startswith(f"hub/{model_folder(label)}/")]
    notes = {e["notes"].split("; ")[0] for t in ours for e in yaml.safe_load(t)}
    assert notes == {"precision: fp32", f"precision: {precision}"}


def test_output_is_deterministic_and_sorted(tmp_path: Path) -> None:
    root = write_publishable_world(tmp_path / "results")
    first, second = render_hub_results(build_board(root)), render_hub_results(build_board(root))
    assert first == second and list(first) == sorted(first)


def test_an_interval_the_board_knows_is_in_the_notes(board: Board) -> None:
    corpus = board.corpora[0]
    model = corpus.models[0]
    cell = dataclasses.replace(model.cells[0], intervals={"verbmem_f": (1.25, 2.5)})
    model = dataclasses.replace(model, cells=(cell, *model.cells[1:]))
    corpus = dataclasses.replace(corpus, methods=(model,), other_seeds=(), references=())
    files = render_hub_results(dataclasses.replace(board, corpora=(corpus,)))
    text = files[
        f"hub/{model_folder(model.label)}/.eval_results/"
        + file_name(f"muse_{corpus.corpus}_{cell.precision}")
    ]
    notes = {e["dataset"]["task_id"]: e["notes"] for e in yaml.safe_load(text)}
    assert "95% interval [1.25, 2.5]" in notes[f"muse_{corpus.corpus}_verbmem_f"]
    assert not any("interval" in n for t, n in notes.items() if not t.endswith("_verbmem_f"))


# --- the board folder: hub files are a board's own files ----------------------------------


def test_the_cli_writes_the_hub_folders_and_replaces_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results_dir = write_world(tmp_path / "results")
    out = tmp_path / "board"
    assert run_cli(capsys, results_dir, "--out", out)[0] == 0
    document = json.loads((out / "leaderboard.json").read_text())
    labels = {m["label"] for c in document["corpora"] for m in c["methods"] + c["references"]}
    assert {p.name for p in (out / "hub").iterdir()} == {model_folder(label) for label in labels}
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # A stale file of an older board (say, a precision no longer swept) is a board's file.
    (out / "hub" / "steady" / ".eval_results" / "muse_news_int8.yaml").write_text("- {}\n")
    assert run_cli(capsys, results_dir, "--out", out)[0] == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first


@pytest.mark.parametrize(
    ("stray", "named"),
    [
        ("hub/steady/.eval_results/notes.txt", None),
        ("hub/steady/.eval_results/.hidden.yaml", None),
        ("hub/steady/README.md", None),
        ("hub/steady/x.yaml", None),
        ("hub/steady/.eval_results/deeper/a.yaml", "hub/steady/.eval_results/deeper"),
        ("hub/.eval_results/a.yaml", "hub/.eval_results"),
        ("hub/x.yaml", None),
        ("hub/.git/config", "hub/.git"),
        ("hub/new-model/.eval_results/own.txt", None),
    ],
)
def test_a_file_the_board_did_not_write_under_hub_is_refused_by_name(
    stray: str, named: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results_dir = write_world(tmp_path / "results")
    out = tmp_path / "board"
    write_folder(out, render_all(build_board(results_dir)))
    (out / stray).parent.mkdir(parents=True, exist_ok=True)
    (out / stray).write_text("mine")
    with pytest.raises(MuseQuantError, match="which the board did not write"):
        write_folder(out, render_all(build_board(results_dir)))
    code, _, err = run_cli(capsys, results_dir, "--out", out)
    assert code == 2 and f"holds {named or stray}, which the board did not write" in err
    assert (out / stray).read_text() == "mine"
