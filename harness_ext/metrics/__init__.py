"""The MUSE metrics as pure functions: ROUGE-L, KnowMem prompting, MIA scores, AUC and PrivLeak.

No model code here: the tasks compute generations and token statistics, these turn them into the
numbers MUSE defines (docs/tasks.md), so each can be checked by hand.
"""

from harness_ext.metrics.auc import PUBLISHED_RETRAIN_AUC, auc_forget_holdout, privleak
from harness_ext.metrics.knowmem import KNOWMEM_CUTS, cut_answer, knowmem_prompt
from harness_ext.metrics.mia import (
    ATTACKS,
    DEFAULT_ATTACK,
    MINK_RATIOS,
    TokenStats,
    all_mia_scores,
    mink_score,
    minkpp_score,
)
from harness_ext.metrics.rouge import rouge_l_f1

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACK",
    "KNOWMEM_CUTS",
    "MINK_RATIOS",
    "PUBLISHED_RETRAIN_AUC",
    "TokenStats",
    "all_mia_scores",
    "auc_forget_holdout",
    "cut_answer",
    "knowmem_prompt",
    "mink_score",
    "minkpp_score",
    "privleak",
    "rouge_l_f1",
]
