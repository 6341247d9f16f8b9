"""The pure MUSE metrics against values worked out by hand (LCS counts, sorted log-probs, pairs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness_ext.errors import MuseQuantError
from harness_ext.metrics import (
    KNOWMEM_CUTS,
    MINK_RATIOS,
    PUBLISHED_RETRAIN_AUC,
    TokenStats,
    all_mia_scores,
    auc_forget_holdout,
    cut_answer,
    knowmem_prompt,
    mink_score,
    minkpp_score,
    privleak,
    rouge_l_f1,
)

# ---------------------------------------------------------------- ROUGE-L F1


@pytest.mark.parametrize(
    ("reference", "candidate", "expected"),
    [
        # LCS "the cat on the mat" = 5; P = 5/5, R = 5/6 -> F = 2PR/(P+R) = 10/11.
        ("the cat sat on the mat", "the cat on the mat", 10 / 11),
        # No stemming: "running" != "run"; LCS "he is" = 2 of 3 each side -> 2/3 (stemmed: 1.0).
        ("he is running", "he is run", 2 / 3),
        # Subsequence, not bag of words: reversed order keeps LCS 1 of 4 -> 1/4.
        ("a b c d", "d c b a", 1 / 4),
        # Lowercased, punctuation dropped: both are [hello, world].
        ("Hello, world!", "hello world", 1.0),
        # The apostrophe splits: [don, t, stop] vs [dont, stop]; LCS 1, P 1/2, R 1/3 -> 2/5.
        ("don't stop", "dont stop", 2 / 5),
        # The hyphen splits too: [covid, 19, cases] vs [covid19, cases]; LCS 1, P 1/2, R 1/3.
        ("COVID-19 cases", "covid19 cases", 2 / 5),
        # Nothing but punctuation leaves no tokens -> 0.
        ("the answer", "?!...", 0.0),
        ("the answer", "", 0.0),
    ],
)
def test_rouge_l_f1_hand_values(reference: str, candidate: str, expected: float) -> None:
    assert rouge_l_f1(reference, candidate) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_f1_equals_rouge_score_on_random_texts() -> None:
    """Our ROUGE-L against ``rouge_score``'s own scorer (what MUSE runs), exactly, on texts of
    repeated words, case, digits, punctuation, non-ASCII letters and odd whitespace."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    rng = np.random.default_rng(11)
    pieces = ["the", "The", "cat", "CATS", "sat", "on", "mat", "19", "x2", "don't", "co-op",
              "café", "naïve", "İstanbul", "ß", "...", ",", "!", "\n\n", "\t", " ", "Answer:"]
    for _ in range(2000):
        texts = [
            " ".join(rng.choice(pieces, size=rng.integers(0, 40)).tolist()) for _ in range(2)
        ]
        expected = scorer.score(texts[0], texts[1])["rougeL"].fmeasure
        assert rouge_l_f1(texts[0], texts[1]) == expected, texts


def test_rouge_l_f1_is_a_fraction_not_a_percentage() -> None:
    assert rouge_l_f1("same words here", "same words here") == 1.0


# ---------------------------------------------------------------- KnowMem


def test_knowmem_cuts_match_muse() -> None:
    assert KNOWMEM_CUTS == ("\n\n", "\nQuestion", "Question:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris\n\nmore text", "Paris"),  # "\n\n"
        ("Paris\nQuestions remain", "Paris"),  # "\nQuestion" (no colon needed)
        ("Paris Question: next", "Paris "),  # "Question:", the space before it is kept
        # "\nQuestion" at 5 beats "Question:" at 6: cut before the newline too.
        ("Paris\nQuestion: who?", "Paris"),
        # "Question:" (listed last) comes first in the text, before "\n\n": earliest wins.
        ("A Question: B\n\nC", "A "),
        ("\n\nParis", ""),  # a cut at position 0 leaves nothing
        ("Paris\nFrance", "Paris\nFrance"),  # a single newline is not a cut
        ("question: lower case", "question: lower case"),  # case-sensitive
        (" Paris, France. ", " Paris, France. "),  # none present: unchanged, not stripped
    ],
)
def test_cut_answer(text: str, expected: str) -> None:
    assert cut_answer(text) == expected


def test_knowmem_prompt_exact_string() -> None:
    icl = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    assert knowmem_prompt(icl, "Q3?") == (
        "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q3?\nAnswer: "
    )


def test_knowmem_prompt_without_examples() -> None:
    assert knowmem_prompt([], "Who?") == "Question: Who?\nAnswer: "


# ---------------------------------------------------------------- Min-K% and Min-K%++

# -1 .. -10, shuffled so that sorting matters.
TEN = np.array([-3, -1, -10, -2, -7, -5, -9, -4, -8, -6], dtype=np.float32)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (0.05, 10.0),  # 10 * 0.05 = 0.5 -> int 0 -> at least 1 token: -(-10)
        (0.1, 10.0),  # exactly 1
        (0.19, 10.0),  # 1.9 -> 1 (floor, not round)
        (0.2, 9.5),  # (10 + 9) / 2
        (0.3, 9.0),  # (10 + 9 + 8) / 3
        (0.4, 8.5),  # (10 + 9 + 8 + 7) / 4
        (0.5, 8.0),  # 40 / 5
        (0.6, 7.5),  # 45 / 6
        (1.0, 5.5),  # every token: the mean NLL
    ],
)
def test_mink_score_hand_values(k: float, expected: float) -> None:
    assert mink_score(TEN, k) == pytest.approx(expected, abs=1e-12)


def test_mink_score_short_texts_use_at_least_one_token() -> None:
    assert mink_score(np.array([-0.5, -2.0]), 0.05) == 2.0  # 0.1 -> 1 token, not NaN
    assert mink_score(np.array([-0.5, -2.0, -1.0]), 0.4) == 2.0  # 1.2 -> 1
    assert mink_score(np.array([-0.5]), 0.6) == 0.5


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5])
def test_mink_score_rejects_bad_ratio(k: float) -> None:
    with pytest.raises(MuseQuantError, match="ratio"):
        mink_score(TEN, k)


def test_minkpp_hand_values() -> None:
    lp, mu, sigma = [-1.0, -2.0, -4.0], [-2.0, -3.0, -5.0], [0.5, 2.0, 0.25]
    # z = (1 / 0.5, 1 / 2, 1 / 0.25) = (2, 0.5, 4); sorted (0.5, 2, 4).
    assert minkpp_score(lp, mu, sigma, 0.4) == pytest.approx(-0.5)  # 1.2 -> 1 value
    assert minkpp_score(lp, mu, sigma, 0.7) == pytest.approx(-1.25)  # 2.1 -> 2 values
    assert minkpp_score(lp, mu, sigma, 1.0) == pytest.approx(-6.5 / 3)
    assert mink_score(lp, 0.4) == 4.0  # plain Min-K% ranks these tokens differently


def test_minkpp_floors_sigma() -> None:
    # sigma 0 would divide by zero; floored at 1e-3: z = 0.002 / 0.001 = 2 (and 0 / 0.001 = 0).
    assert minkpp_score([-0.001], [-0.003], [0.0], 1.0) == pytest.approx(-2.0)
    assert minkpp_score([0.0, -1.0], [0.0, -1.0], [0.0, 0.0], 1.0) == 0.0


# ---------------------------------------------------------------- the attack registry


def _stats(logprobs: list[float], lowercase: list[float] | None = None, text: str = "ab"):
    n = len(logprobs)
    return TokenStats(
        logprobs=np.array(logprobs, dtype=np.float32),
        mu=np.full(n, -3.0),
        sigma=np.full(n, 2.0),
        text=text,
        lowercase_logprobs=None if lowercase is None else np.array(lowercase),
    )


def test_all_mia_scores_names_and_hand_values() -> None:
    scores = all_mia_scores(_stats([-5.0, -15.0], lowercase=[-5.0, -5.0, -5.0]))
    names = {"loss", "zlib", "lowercase"}
    names |= {f"mink_{p}" for p in (5, 10, 20, 30, 40, 50, 60)}
    names |= {f"mink++_{p}" for p in (5, 10, 20, 30, 40, 50, 60)}
    assert set(scores) == names
    assert scores["loss"] == 10.0
    # zlib of b"ab": 2 header bytes, 4 bytes of fixed-Huffman block (3 + 8 + 8 + 7 bits), 4 Adler.
    assert scores["zlib"] == 10.0 / 10
    assert scores["lowercase"] == 10.0 / 5.0
    assert scores["mink_40"] == 15.0  # int(0.8) -> 1 token
    assert scores["mink_50"] == 15.0
    # z = ((-5 + 3) / 2, (-15 + 3) / 2) = (-1, -6)
    assert scores["mink++_40"] == 6.0
    assert scores["mink++_5"] == 6.0


def test_mink_ratios_match_muse() -> None:
    assert MINK_RATIOS == (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def test_lowercase_is_left_out_without_its_pass() -> None:
    scores = all_mia_scores(_stats([-1.0, -2.0]))
    assert "lowercase" not in scores and len(scores) == 16


def test_every_attack_scores_a_member_lower() -> None:
    """One direction for all: the better-predicted (member-like) text scores lower."""
    member = all_mia_scores(_stats([-0.5, -1.0, -0.2, -0.8], lowercase=[-3.0, -3.0, -3.0]))
    other = all_mia_scores(_stats([-4.0, -6.0, -3.5, -5.0], lowercase=[-3.0, -3.0, -3.0]))
    for name, value in member.items():
        assert value < other[name], name


def test_lowercase_with_zero_loss_is_an_error() -> None:
    with pytest.raises(MuseQuantError, match="lowercase"):
        all_mia_scores(_stats([-1.0], lowercase=[0.0, 0.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logprobs": []}, "non-empty"),
        ({"logprobs": [-1.0, math.nan]}, "NaN"),
        ({"mu": [-1.0]}, "length"),
        ({"sigma": [1.0, math.inf]}, "NaN or inf"),
    ],
)
def test_token_stats_rejects_bad_arrays(kwargs: dict, message: str) -> None:
    fields = {"logprobs": [-1.0, -2.0], "mu": [-1.0, -1.0], "sigma": [1.0, 1.0], "text": "x"}
    with pytest.raises(MuseQuantError, match=message):
        TokenStats(**(fields | kwargs))


# ---------------------------------------------------------------- AUC and PrivLeak


def test_auc_memorized_forget_set_gives_zero() -> None:
    # Forget texts score lower (look like members) than every holdout text.
    assert auc_forget_holdout([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == 0.0


def test_auc_reversed_gives_one() -> None:
    assert auc_forget_holdout([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]) == 1.0


def test_auc_identical_distributions_give_half() -> None:
    # Pairs (holdout, forget) ranked: (1,1) tie 1/2, (1,2) 0, (2,1) 1, (2,2) tie 1/2 -> 2/4.
    assert auc_forget_holdout([1.0, 2.0], [1.0, 2.0]) == 0.5


def test_auc_partial_overlap() -> None:
    # Holdout above forget in -score (i.e. lower score) in 1 of 4 pairs: (2 vs 3) -> 0.25.
    assert auc_forget_holdout([1.0, 3.0], [2.0, 4.0]) == 0.25


@pytest.mark.parametrize(
    ("forget", "holdout", "message"),
    [([], [1.0], "no forget"), ([1.0], [], "no holdout"), ([1.0, math.nan], [2.0], "NaN")],
)
def test_auc_rejects_bad_input(forget: list, holdout: list, message: str) -> None:
    with pytest.raises(MuseQuantError, match=message):
        auc_forget_holdout(forget, holdout)


def test_privleak_sign_and_value() -> None:
    auc = auc_forget_holdout([1.0, 3.0], [2.0, 4.0])  # 0.25, as above
    assert privleak(auc, 0.5) == -50.0  # (0.25 - 0.5) / 0.5 * 100: under-unlearning
    assert privleak(0.0, 0.5) == -100.0
    assert privleak(0.75, 0.5) == 50.0  # over-unlearning is positive
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.1, PUBLISHED_RETRAIN_AUC["news"]) == pytest.approx(-377200 / 4772)


def test_published_retrain_auc() -> None:
    assert PUBLISHED_RETRAIN_AUC == {"news": 0.4772, "books": 0.5393}


@pytest.mark.parametrize(
    ("auc_model", "auc_retrain"), [(0.3, 0.0), (0.3, -0.2), (0.3, math.nan), (math.nan, 0.5)]
)
def test_privleak_rejects_bad_auc(auc_model: float, auc_retrain: float) -> None:
    with pytest.raises(MuseQuantError, match="PrivLeak"):
        privleak(auc_model, auc_retrain)
