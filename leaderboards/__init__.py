"""Robustness leaderboards: read lm-eval results files, rank unlearning methods by how well their
forgetting holds after quantization (docs/leaderboard.md), and publish the board.

``collect`` (a folder of results files -> rows, each file read by ``results_file`` with its
per-document scores, ``consistency`` refusing files measured differently) -> ``robustness`` (per
corpus: what each model is measured against, its numbers from ``cell_scores`` with
``intervals``; the types are in ``scores``) -> ``verdicts`` (holds / reverts / inconclusive,
the full-precision gate) and ``ranking`` -> ``render`` (Markdown, CSV, JSON, HTML with plots,
model-index YAML, the audit report) -> ``write`` (board folders, report files). ``audit``
chooses the rows one audit reads.
A board is reproducible from results files alone: nothing here imports models, tasks or lm-eval
(an import-linter contract, docs/architecture.md).
"""
