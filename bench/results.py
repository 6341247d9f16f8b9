"""lm-eval's results read as plain numbers, shared by the benchmarks and the tests.

It lives in ``bench/`` (not the package) because only measurements compare whole metric sets:
the board reads results files through ``leaderboards.collect``, which checks every key it takes.
"""

from __future__ import annotations


def flat_metrics(results: dict) -> dict[str, float]:
    """``{"verbmem_f": 33.1, "auc_mink_40": 0.2, ...}`` from lm-eval's results (filter dropped)."""
    return {
        name.split(",")[0]: value
        for task in results["results"].values()
        for name, value in task.items()
        if "," in name and "_stderr" not in name
    }
