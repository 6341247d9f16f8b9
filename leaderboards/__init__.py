"""Robustness leaderboards: read lm-eval results files, rank methods by how well forgetting
holds after quantization (metrics.md), render Markdown/CSV/JSON/HTML. Arrives with issue #6;
it reads results files only and imports nothing from tasks or model wrappers."""
