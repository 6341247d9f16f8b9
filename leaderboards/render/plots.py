"""The board's plots, as SVG text: per model the forget retention at each precision, and utility
against forgetting at 4-bit.

matplotlib writes labels as escaped SVG ``<text>`` (``svg.fonttype: none``), never parses them
as mathtext (``text.parse_math: False``), and with a fixed hash salt and no date the same board
gives the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness_ext.precision_names import is_four_bit
from leaderboards.scores import CorpusBoard, ModelScores

_STYLE = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "svg.hashsalt": "muse-quant leaderboard",
    "font.size": 9,
}
_MARKERS = "osD^vP*X<>"
_ROLE_COLORS = {"target": "black", "retrain": "0.55"}
_ROLE_LINES = {"method": "-", "target": ":", "retrain": "--"}


def _legend_text(model: ModelScores) -> str:
    """The legend entry of a model (matplotlib hides labels that start with ``_``; a space keeps
    them)."""
    text = model.label if model.role == "method" else f"{model.label} ({model.role})"
    return " " + text if text.startswith("_") else text


def _colors(models: Sequence[ModelScores]) -> dict[str, object]:
    palette = matplotlib.colormaps["tab10"]
    methods = [m for m in models if m.role == "method"]
    colors: dict[str, object] = {m.label: palette(i % 10) for i, m in enumerate(methods)}
    colors.update({m.label: _ROLE_COLORS[m.role] for m in models if m.role != "method"})
    return colors


def _legend_columns(labels: Sequence[str]) -> int:
    return 1 if max(len(label) for label in labels) > 40 else min(3, len(labels))


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


def _percent(value: float | None) -> float:
    return math.nan if value is None else 100 * value


def retention_svg(corpus: CorpusBoard) -> str | None:
    """Per model, VerbMem_f and KnowMem_f retention at each precision of P (None: nothing known)."""
    models = corpus.models
    panels = (
        ("retention_verbmem_f", "VerbMem_f retention"),
        ("retention_knowmem_f", "KnowMem_f retention"),
    )
    known = [getattr(c, name) for m in models for c in m.cells for name, _ in panels]
    if all(value is None for value in known):
        return None
    colors = _colors(models)
    position = {precision: i for i, precision in enumerate(corpus.precisions)}
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(9, 3.4))
        axes = figure.subplots(1, 2, sharey=True)
        for ax, (name, title) in zip(axes, panels, strict=True):
            for model in models:
                ax.plot(
                    [position[c.precision] for c in model.cells],
                    [_percent(getattr(c, name)) for c in model.cells],
                    _ROLE_LINES[model.role],
                    marker="o",
                    color=colors[model.label],
                    label=_legend_text(model),
                )
            ax.axhline(100, color="0.85", linewidth=0.8, zorder=0)
            ax.set_xticks(range(len(corpus.precisions)), corpus.precisions)
            ax.set_title(f"{title} ({corpus.corpus})")
            ax.set_xlabel("precision")
            ax.grid(axis="y", color="0.92")
        axes[0].set_ylabel(f"% of the target at {corpus.full_precision}")
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=_legend_columns(labels),
            frameon=False,
        )
        return _svg(figure)


def utility_forgetting_svg(corpus: CorpusBoard, utility_fraction: float) -> str | None:
    """Utility retention against forget retention at the 4-bit precisions of P (None: no point)."""
    four_bit = [p for p in corpus.precisions if is_four_bit(p)]
    models = corpus.models
    points = [
        (model, cell)
        for model in models
        for cell in model.cells
        if cell.precision in four_bit
        and cell.forget_retention is not None
        and cell.utility_retention is not None
    ]
    if not points:
        return None
    colors = _colors(models)
    marker = {precision: _MARKERS[i % len(_MARKERS)] for i, precision in enumerate(four_bit)}
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(6.5, 4.2))
        ax = figure.subplots()
        for model, cell in points:
            ax.scatter(
                _percent(cell.forget_retention),
                _percent(cell.utility_retention),
                color=colors[model.label],
                marker=marker[cell.precision],
                s=60,
                edgecolors="white",
                linewidths=0.6,
                zorder=3,
            )
        ax.axhline(100 * utility_fraction, color="0.5", linestyle="--", linewidth=0.9)
        ax.annotate(
            f"C4: utility >= {utility_fraction:g} x target",
            (0.01, 100 * utility_fraction),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            color="0.4",
        )
        ax.set_xlabel(
            "forget retention, % of target (max of VerbMem_f, KnowMem_f; lower is better)"
        )
        ax.set_ylabel("utility retention, % of target (KnowMem_r)")
        ax.set_title(f"Utility vs forgetting at 4-bit ({corpus.corpus})")
        ax.grid(color="0.92")
        plotted = list(dict.fromkeys(model for model, _ in points))
        model_handles = [
            Line2D([], [], color=colors[m.label], marker="o", linestyle="", label=_legend_text(m))
            for m in plotted
        ]
        precision_handles = [
            Line2D([], [], color="0.3", marker=marker[p], linestyle="", label=p) for p in four_bit
        ]
        figure.legend(
            handles=model_handles + precision_handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=_legend_columns([h.get_label() for h in model_handles + precision_handles]),
            frameon=False,
        )
        return _svg(figure)
