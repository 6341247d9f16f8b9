"""``muse-quant sweep``: every model x precision x corpus of a plan through the MUSE tasks.

Build a :class:`Plan` in code or load one from YAML (:func:`load_plan`), then
:func:`run_sweep` writes one lm-eval results file per cell and returns their paths; it is
resumable, and reuses checkpoints, built models and tasks across cells (docs/sweep.md).
"""

from muse_quant.sweep.keys import plan_jobs, recorded_method
from muse_quant.sweep.plan import Cell, ModelSpec, Plan, PrecisionSpec, SweepOptions
from muse_quant.sweep.plan_yaml import load_plan, plan_from_dict
from muse_quant.sweep.report import format_cells, summary_table
from muse_quant.sweep.runner import run_sweep

__all__ = [
    "Cell",
    "ModelSpec",
    "Plan",
    "PrecisionSpec",
    "SweepOptions",
    "format_cells",
    "load_plan",
    "plan_from_dict",
    "plan_jobs",
    "recorded_method",
    "run_sweep",
    "summary_table",
]
