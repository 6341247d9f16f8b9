"""The MUSE lm-eval tasks: faithful to a plain reference evaluator, and strict about bad input.

The faithfulness test runs our tasks through lm-eval's ``simple_evaluate`` (batched, ``--model
muse``) and the batch-1 reference of ``bench/reference_muse.py`` (written from MUSE's definitions
alone, docs/tasks.md) on the toy world's target, retrain and a perturbed copy of the target,
and asks every metric to agree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from muse_run import run_tasks
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.reference_muse import evaluate as reference_evaluate
from bench.results import flat_metrics
from harness_ext.errors import MuseQuantError
from harness_ext.evaluation import muse_dataset
from harness_ext.metrics.auc import PUBLISHED_RETRAIN_AUC

CORPUS = "news"  # the toy world's data is read as one corpus; its name picks AUC_retrain
GENERATION_METRICS = ("verbmem_f", "knowmem_f", "knowmem_r")


@pytest.fixture(scope="module")
def models(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """target, retrain, and the target with seeded noise on every weight (a third model)."""
    target = micro_world / "models" / "target"
    perturbed = tmp_path_factory.mktemp("perturbed")
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2 * p.std())
    model.save_pretrained(perturbed)
    AutoTokenizer.from_pretrained(target).save_pretrained(perturbed)
    return {"target": target, "retrain": micro_world / "models" / "retrain", "perturbed": perturbed}


@pytest.mark.parametrize("name", ["target", "retrain", "perturbed"])
def test_tasks_equal_the_reference(
    name: str, models: dict[str, Path], micro_world: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # lm-eval asks git for a commit hash of the working directory
    data = micro_world / "data"
    model = AutoModelForCausalLM.from_pretrained(models[name], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(models[name])
    expected = reference_evaluate(model, tokenizer, data, PUBLISHED_RETRAIN_AUC[CORPUS])
    got = flat_metrics(run_tasks(models[name], data, [f"muse_{CORPUS}"]))

    assert set(got) == set(expected)
    for metric in GENERATION_METRICS:
        assert got[metric] == pytest.approx(expected[metric], abs=0.01), metric
    for metric in (m for m in expected if m.startswith("auc_")):
        assert got[metric] == pytest.approx(expected[metric], abs=1e-6), metric
    assert got["privleak"] == pytest.approx(expected["privleak"], abs=1e-4)
    if name == "target":  # it was fine-tuned on the forget set: strongly negative PrivLeak
        assert got["privleak"] < -50


def test_batch_size_does_not_change_results(
    models: dict[str, Path], micro_world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Left-padded batched generation and right-padded scoring give batch-1's numbers."""
    monkeypatch.chdir(tmp_path)
    tasks = [f"muse_{CORPUS}_verbmem_f", f"muse_{CORPUS}_privleak"]
    one = run_tasks(models["target"], micro_world / "data", tasks, batch_size=1, log_samples=True)
    many = run_tasks(models["target"], micro_world / "data", tasks, batch_size=7, log_samples=True)
    verb = f"muse_{CORPUS}_verbmem_f"
    assert [s["resps"] for s in one["samples"][verb]] == [s["resps"] for s in many["samples"][verb]]
    for metric, value in flat_metrics(one).items():
        assert flat_metrics(many)[metric] == pytest.approx(value, abs=1e-9), metric


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def data_copy(micro_world: Path, tmp_path: Path) -> Path:
    """A private copy of the toy world's data folder, to break."""
    return Path(shutil.copytree(micro_world / "data", tmp_path / "data"))


def load(data: Path, muse_task: str, **extra) -> None:
    """Build one task's documents the way lm-eval does (metadata + the YAML's dataset_kwargs)."""
    muse_dataset(muse_corpus=CORPUS, muse_task=muse_task, muse_data=str(data), **extra)


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_config_names_the_file(data_copy: Path) -> None:
    shutil.rmtree(data_copy / "privleak")
    with pytest.raises(MuseQuantError) as e:
        load(data_copy, "privleak")
    assert "privleak/forget.json: missing" in one_line_error(e)


def test_missing_split_names_the_file(data_copy: Path) -> None:
    (data_copy / "knowmem" / "retain_qa.json").unlink()
    with pytest.raises(MuseQuantError) as e:
        load(data_copy, "knowmem_r")
    assert "knowmem/retain_qa.json: missing" in one_line_error(e)


def test_no_icl_split_names_the_file(data_copy: Path) -> None:
    (data_copy / "knowmem" / "forget_qa_icl.json").unlink()
    with pytest.raises(MuseQuantError) as e:
        load(data_copy, "knowmem_f")
    assert "knowmem/forget_qa_icl.json: missing" in one_line_error(e)


def test_missing_field_names_file_record_and_field(data_copy: Path, micro_world: Path) -> None:
    path = data_copy / "verbmem" / "forget.json"
    records = json.loads(path.read_text())
    del records[1]["gt"]
    path.write_text(json.dumps(records))
    with pytest.raises(MuseQuantError) as e:
        load(data_copy, "verbmem_f", pretrained=str(micro_world / "models" / "target"))
    message = one_line_error(e)
    assert "verbmem/forget.json" in message and "record 1" in message and "gt" in message


def test_empty_split(data_copy: Path) -> None:
    (data_copy / "privleak" / "holdout.json").write_text("[]")
    with pytest.raises(MuseQuantError) as e:
        load(data_copy, "privleak")
    assert "privleak/holdout.json: split is empty" in one_line_error(e)


def test_unknown_corpus(data_copy: Path) -> None:
    with pytest.raises(MuseQuantError) as e:
        muse_dataset(muse_corpus="wiki", muse_task="privleak", muse_data=str(data_copy))
    assert "unknown MUSE corpus 'wiki'" in one_line_error(e)


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(MuseQuantError) as e:
        load(tmp_path / "nowhere", "privleak")
    assert "no such folder" in one_line_error(e)


def test_misspelled_option(data_copy: Path) -> None:
    with pytest.raises(MuseQuantError) as e:
        load(data_copy, "privleak", privleak_auc_retrian=0.5)
    assert "privleak_auc_retrian" in one_line_error(e)


def test_other_k_needs_its_own_auc_retrain(data_copy: Path) -> None:
    with pytest.raises(MuseQuantError) as e:
        load(data_copy, "privleak", privleak_k=20)
    assert "privleak_auc_retrain" in one_line_error(e)


def test_verbmem_needs_the_model_tokenizer(data_copy: Path) -> None:
    with pytest.raises(MuseQuantError) as e:
        load(data_copy, "verbmem_f")
    assert "pretrained=" in one_line_error(e)


def test_stock_hf_model_on_privleak_names_muse(
    micro_world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MuseQuantError) as e:
        run_tasks(micro_world / "models" / "target", micro_world / "data",
                  [f"muse_{CORPUS}_privleak"], model="hf", limit=2)
    assert "--model muse" in one_line_error(e)


def test_text_longer_than_context(
    data_copy: Path, micro_world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MUSE does not truncate: an error naming the file, unless context_overflow=truncate."""
    monkeypatch.chdir(tmp_path)
    path = data_copy / "privleak" / "forget.json"
    texts = json.loads(path.read_text())
    texts[0] = " ".join([texts[0]] * 40)
    path.write_text(json.dumps(texts))
    target = micro_world / "models" / "target"
    with pytest.raises(MuseQuantError) as e:
        run_tasks(target, data_copy, [f"muse_{CORPUS}_privleak"], limit=2)
    message = one_line_error(e)
    assert "privleak/forget.json record 0" in message and "context_overflow=truncate" in message
    assert message.startswith("1 of 4 texts are longer than the model's context")
    results = run_tasks(target, data_copy, [f"muse_{CORPUS}_privleak"], limit=2,
                        model_args={"context_overflow": "truncate"})
    assert 0.0 <= flat_metrics(results)["auc_mink_40"] <= 1.0
    report = results["config"]["muse_truncation"]
    (task,) = report["tasks"]  # the forget text (its lowercase is scored as cut, not counted)
    assert report["policy"] == "truncate" and task == f"muse_{CORPUS}_privleak"
    assert report["tasks"][task]["documents"] == 1 and report["tasks"][task]["max_tokens_cut"] > 0


def test_limit_takes_n_texts_of_each_privleak_set(
    micro_world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--limit 3 scores the first 3 forget and the first 3 holdout texts, and the AUC is theirs."""
    from harness_ext.metrics.auc import auc_forget_holdout

    monkeypatch.chdir(tmp_path)
    results = run_tasks(micro_world / "models" / "target", micro_world / "data",
                        [f"muse_{CORPUS}_privleak"], limit=3, log_samples=True)
    samples = results["samples"][f"muse_{CORPUS}_privleak"]
    scored = sorted((s["doc"]["set"], s["doc"]["index"]) for s in samples)
    assert scored == [(name, i) for name in ("forget", "holdout") for i in range(3)]
    assert results["n-samples"][f"muse_{CORPUS}_privleak"]["effective"] == 6
    scores = {name: [s["auc_mink_40"]["score"] for s in samples if s["doc"]["set"] == name]
              for name in ("forget", "holdout")}
    auc = auc_forget_holdout(scores["forget"], scores["holdout"])
    assert flat_metrics(results)["auc_mink_40"] == auc


def test_prompt_leaving_no_room_to_generate(
    data_copy: Path, micro_world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    path = data_copy / "verbmem" / "forget.json"
    records = json.loads(path.read_text())
    records[0]["prompt"] = " ".join([records[0]["prompt"]] * 40)
    path.write_text(json.dumps(records))
    with pytest.raises(MuseQuantError) as e:
        run_tasks(micro_world / "models" / "target", data_copy, [f"muse_{CORPUS}_verbmem_f"],
                  limit=1)
    message = one_line_error(e)
    assert "verbmem/forget.json record 0" in message and "128 new tokens" in message
    assert message.startswith("1 of 1 prompts leave no room to generate")


def test_yaml_lists_every_attack() -> None:
    """Every MIA score the metrics produce has an AUC metric (and aggregation) in the YAML."""
    from harness_ext.metrics.mia import ATTACKS
    from muse_quant.lm_eval_tasks import muse_tasks

    config = muse_tasks()[f"muse_{CORPUS}_privleak"]
    listed = {m["metric"] for m in config["metric_list"]}
    assert listed == {f"auc_{name}" for name in ATTACKS} | {"privleak"}


def test_max_batch_tokens_bounds_each_scoring_batch_and_changes_no_number(
    micro_world: Path,
) -> None:
    """PrivLeak's scoring batches never hold more than ``max_batch_tokens`` padded tokens (one
    text at least), and the statistics are those of one text per batch."""
    from model_wrappers.muse_model import muse_model

    target = str(micro_world / "models" / "target")
    texts = json.loads((micro_world / "data" / "privleak" / "forget.json").read_text())[:12]
    stats, shapes = {}, {}
    for limit in (1, 600, 100000):
        args = dict(pretrained=target, batch_size=64, device="cpu", max_batch_tokens=limit)
        lm = muse_model(args)
        shapes[limit] = seen = []
        decoder = lm.model.get_decoder()  # what sees each scoring batch (_row_logits)
        decoder.register_forward_hook(lambda _m, args, _o, seen=seen: seen.append(args[0].shape))
        stats[limit] = lm.token_stats(texts, disable_tqdm=True)
    assert all(rows == 1 for rows, _ in shapes[1])
    assert all(rows * width <= 600 or rows == 1 for rows, width in shapes[600])
    assert 1 < len(shapes[600]) < len(shapes[1]) and len(shapes[100000]) == 1
    for limit in (600, 100000):
        for ours, alone in zip(stats[limit], stats[1], strict=True):
            for field in ("logprobs", "mu", "sigma", "lowercase_logprobs"):
                assert np.abs(getattr(ours, field) - getattr(alone, field)).max() <= 1e-5


def test_logits_one_row_at_a_time_are_the_batch_logits(micro_world: Path, monkeypatch) -> None:
    """The output head applied row by row to the batch's last hidden states (the memory of one
    row's logits) gives exactly the statistics of the whole batch's logits."""
    from model_wrappers import muse_lm
    from model_wrappers.muse_model import muse_model

    texts = json.loads((micro_world / "data" / "privleak" / "forget.json").read_text())
    lm = muse_model({"pretrained": str(micro_world / "models" / "target"), "batch_size": 8})
    assert lm.model.config.model_type in muse_lm.ROW_HEAD_MODELS
    rows = lm.token_stats(texts, disable_tqdm=True)
    monkeypatch.setattr(muse_lm, "ROW_HEAD_MODELS", ())
    whole = lm.token_stats(texts, disable_tqdm=True)
    for a, b in zip(rows, whole, strict=True):
        for field in ("logprobs", "mu", "sigma", "lowercase_logprobs"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_scratch_buffers_change_no_statistic() -> None:
    """Token statistics written into reused buffers (longest text first, then shorter ones over
    the same memory) equal those of fresh tensors, bit for bit."""
    from model_wrappers.muse_requests import Scratch, row_stats

    generator = torch.Generator().manual_seed(0)
    scratch = Scratch()
    for n in (40, 25, 40, 3):
        logits = torch.randn(n, 500, generator=generator)
        targets = torch.randint(0, 500, (n,), generator=generator)
        for moments in (True, False):
            fresh = row_stats(logits, targets, moments)
            reused = row_stats(logits, targets, moments, scratch)
            for a, b in zip(fresh, reused, strict=True):
                assert (a is None and b is None) or np.array_equal(a, b)


def test_max_batch_tokens_must_be_a_positive_count(micro_world: Path) -> None:
    from model_wrappers.muse_model import muse_model

    with pytest.raises(MuseQuantError, match="max_batch_tokens=0: expected a positive whole"):
        muse_model({"pretrained": str(micro_world / "models" / "target"), "max_batch_tokens": 0})


def test_a_shared_prefix_is_found_and_the_padding_moved_after_it() -> None:
    from model_wrappers.prefix_cache import move_padding_after, shared_prefix_length

    pad = 0
    context = torch.tensor([[0, 0, 5, 6, 7, 8, 9], [5, 6, 7, 8, 3, 4, 2], [0, 5, 6, 7, 8, 1, 2]])
    mask = (context != pad).long()
    assert shared_prefix_length(context, mask) == 4  # 5 6 7 8, then the rows differ
    moved, moved_mask = move_padding_after(context, mask, 4)
    assert moved.tolist() == [[5, 6, 7, 8, 0, 0, 9], [5, 6, 7, 8, 3, 4, 2], [5, 6, 7, 8, 0, 1, 2]]
    assert moved_mask.tolist() == [[1, 1, 1, 1, 0, 0, 1], [1] * 7, [1, 1, 1, 1, 0, 1, 1]]
    same = torch.tensor([[0, 5, 6, 7], [5, 6, 7, 8]])
    assert shared_prefix_length(same, (same != pad).long()) == 2  # each row keeps a token


@pytest.mark.parametrize("batch_size", [64, 5])
def test_knowmem_with_the_prefix_cache_generates_what_it_generates_without(
    micro_world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, batch_size: int
) -> None:
    """The in-context prefix computed once (reused across batches at batch 5) changes no
    generation: every response is the one computed from the whole prompt."""
    from model_wrappers.prefix_cache import PrefixCache

    monkeypatch.chdir(tmp_path)
    computed, for_batch = [], PrefixCache.for_batch

    def counting(self: PrefixCache, model: object, prefix: torch.Tensor, rows: int) -> object:
        computed.append(len(prefix))
        return for_batch(self, model, prefix, rows)

    monkeypatch.setattr(PrefixCache, "for_batch", counting)
    responses = {}
    for cached in (False, True):
        results = run_tasks(micro_world / "models" / "target", micro_world / "data",
                            [f"muse_{CORPUS}_knowmem_f", f"muse_{CORPUS}_knowmem_r"],
                            batch_size=batch_size, log_samples=True,
                            model_args={"prefix_cache": cached})  # fmt: skip
        responses[cached] = {task: [s["resps"] for s in samples]
                             for task, samples in results["samples"].items()}  # fmt: skip
    assert responses[True] == responses[False]
    assert all(len(r) > 10 for r in responses[True].values())
    assert computed and min(computed) >= 32  # the cache was used, for the in-context pairs


def test_verbmem_with_each_row_prefilled_alone_generates_what_it_generates_without(
    micro_world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """VerbMem's padded prompts, each prefilled alone into one batch cache, generate every
    response the batch's own padded prefill generates."""
    from model_wrappers import muse_lm

    monkeypatch.chdir(tmp_path)
    used, prefilled = [], muse_lm.prefilled_rows

    def counting(model: object, context: torch.Tensor, mask: torch.Tensor) -> object:
        cache = prefilled(model, context, mask)
        used.append(cache is not None)
        return cache

    monkeypatch.setattr(muse_lm, "prefilled_rows", counting)
    responses = {}
    for cached in (False, True):
        results = run_tasks(micro_world / "models" / "target", micro_world / "data",
                            [f"muse_{CORPUS}_verbmem_f"], batch_size=64, log_samples=True,
                            model_args={"prefix_cache": cached})  # fmt: skip
        responses[cached] = [s["resps"] for s in results["samples"][f"muse_{CORPUS}_verbmem_f"]]
    assert responses[True] == responses[False] and len(responses[True]) > 1
    assert used and all(used)
