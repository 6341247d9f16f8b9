"""Robustness leaderboards: read lm-eval results files, rank unlearning methods by how well their
forgetting holds after quantization (docs/leaderboard.md), and publish the board.

Data flows one way: ``collect`` (results files -> rows, with ``consistency`` refusing files
measured differently) -> ``robustness`` (metrics, criteria, ranking) -> ``render`` (Markdown,
CSV, JSON, HTML with plots, model-index YAML) -> ``write`` (atomic folder). A board is
reproducible from results files alone: nothing here imports models, tasks or lm-eval.

For Python callers (the audit): ``robustness.build_board(results_dir, RobustnessOptions(...),
target=..., retrain=...)`` returns a ``Board``; see docs/leaderboard.md.
"""
