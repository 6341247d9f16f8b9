"""The layout of a sweep's results folder: what the sweep writes and the leaderboard reads.

``RESULTS/<label>/<corpus>/<precision>/results.json`` (with ``scores.json``, see
:mod:`harness_ext.doc_scores`) per cell; ``RESULTS/sweep-plan.json`` lists the cells of the plan
last run into the folder; ``RESULTS/.pruned/`` holds the cells ``--prune`` moved aside;
``RESULTS/.locks/<label>/<corpus>/<precision>.lock`` is the lock of the process writing a cell.
"""

RESULTS_FILE = "results.json"
#: The record of the plan last run into a results folder.
PLAN_RECORD, PLAN_RECORD_KIND = "sweep-plan.json", "muse-quant sweep plan"
#: Where ``--prune`` moves the cells a plan no longer names (the leaderboard skips it).
PRUNED = ".pruned"
#: Per-cell locks (harness_ext.locks): one writer per cell, whichever process or machine.
LOCKS = ".locks"
