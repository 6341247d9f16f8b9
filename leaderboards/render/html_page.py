"""``index.html``: the board as one self-contained static page.

No network: CSS and script are inline, plots are SVG in ``data:`` image URLs (an SVG shown as an
image runs no script), and a Content-Security-Policy allows only the page's own script, by hash.
Every string from a results file is ``html.escape``d; the sorting script moves existing rows and
never writes markup.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

from leaderboards.render.columns import (
    CELL_COLUMNS,
    RANKING_COLUMNS,
    Column,
    cell_text,
    sort_value,
)
from leaderboards.render.describe import SEED_HEADERS, facts, opening_sentence, seed_rows
from leaderboards.render.plots import retention_svg, utility_forgetting_svg
from leaderboards.scores import Board, CellScores, CorpusBoard, ModelScores

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1360px;
       padding: 0 1rem; color: #1d2329; }
h1 { font-size: 1.5rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #d6dbe0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .8rem 0; font-variant-numeric: tabular-nums;
        font-size: 13px; }
th, td { border-bottom: 1px solid #e3e7eb; padding: .3rem .4rem; white-space: nowrap; }
th { white-space: normal; max-width: 7.5rem; vertical-align: bottom; }
th { background: #f3f5f7; position: sticky; top: 0; text-align: left; }
th button { all: unset; cursor: pointer; }
th[aria-sort=ascending] button::after { content: " \\25B2"; }
th[aria-sort=descending] button::after { content: " \\25BC"; }
td.num { text-align: right; }
td.pass { color: #137333; text-align: center; } td.fail { color: #b3261e; text-align: center; }
td.na { color: #8a949e; text-align: center; }
td.marks { letter-spacing: .1em; text-align: center; } td.verdict { text-align: left; }
span.ci { color: #66707a; font-size: .8em; }
p.opening { font-size: 1.05rem; font-weight: 600; }
tr.reference td { background: #fafbfc; color: #4a545e; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
.notes li, .warnings li { color: #4a545e; }
"""

#: Sorts a table by the clicked header: numbers by data-sort, text by its text; n/a last.
_SCRIPT = """
(function () {
  function key(cell, numeric) {
    if (!numeric) { return cell.textContent; }
    var raw = cell.getAttribute("data-sort");
    return raw === "" ? null : parseFloat(raw);
  }
  function compare(a, b) {
    if (a === b) { return 0; }
    return typeof a === "number" ? a - b : a.localeCompare(b);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, column) {
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        var numeric = th.getAttribute("data-type") === "number";
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var a = key(r1.cells[column], numeric), b = key(r2.cells[column], numeric);
          if (a === null || b === null) { return (a === null) - (b === null); }
          return ascending ? compare(a, b) : compare(b, a);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    return (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def _td(column: Column, model: ModelScores, cell: CellScores | None) -> str:
    text = escape(cell_text(column, model, cell))
    interval = column.interval_text(model, cell)
    if interval:  # on a line of its own, so that the columns stay narrow
        text += f'<br><span class="ci">{escape(interval)}</span>'
    css = "num" if column.sorts_by_number else ""
    if column.kind == "marks":
        css = "marks"
    elif column.kind == "verdict":
        verdict = str(column.value(model, cell))
        css = "verdict " + {"holds": "pass", "reverts": "fail"}.get(verdict, "na")
    sort = ""
    if column.sorts_by_number:
        value = sort_value(column, model, cell)
        sort = f' data-sort="{"" if value is None else repr(value)}"'
    return f'<td class="{css}"{sort}>{text}</td>'


def _table(
    caption: str, columns: tuple[Column, ...], rows: list[tuple[ModelScores, CellScores | None]]
) -> str:
    head = "".join(
        f'<th scope="col" title="{escape(c.title)}" '
        f'data-type="{"number" if c.sorts_by_number else "text"}">'
        f'<button type="button">{escape(c.header)}</button></th>'
        for c in columns
    )
    body = "\n".join(
        f'<tr class="{"method" if model.role == "method" else "reference"}">'
        + "".join(_td(c, model, cell) for c in columns)
        + "</tr>"
        for model, cell in rows
    )
    return (
        f'<div class="scroll"><table class="sortable"><caption>{escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>"
    )


def _figure(svg: str | None, alt: str, caption: str) -> str:
    if svg is None:
        return f"<p>{escape(caption)}: nothing to plot.</p>"
    url = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    return (
        f'<figure><img src="{url}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _items(css: str, texts: tuple[str, ...]) -> str:
    items = "".join(f"<li>{escape(text)}</li>" for text in texts)
    return f'<ul class="{css}">{items}</ul>' if texts else ""


def _corpus_section(board: Board, corpus: CorpusBoard) -> str:
    facts_html = "".join(
        f"<dt>{escape(name)}</dt><dd>{escape(text)}</dd>" for name, text in facts(board, corpus)
    )
    ranking = (
        _table("Ranking", RANKING_COLUMNS, [(m, None) for m in corpus.methods])
        if corpus.methods
        else "<p>No unlearned models to rank.</p>"
    )
    if corpus.seed_groups:
        head = "".join(f'<th scope="col">{escape(h)}</th>' for h in SEED_HEADERS)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(t)}</td>" for t in row) + "</tr>"
            for row in seed_rows(corpus)
        )
        ranking += (
            '<div class="scroll"><table><caption>Seeds (each method ranked by its worst seed)'
            f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )
    models = corpus.models
    cells = _table(
        "Every model at every precision",
        CELL_COLUMNS,
        [(m, cell) for m in models for cell in m.cells],
    )
    retention = _figure(
        retention_svg(corpus),
        f"Forget retention of each model at each precision, {corpus.corpus}",
        "Forget retention at each precision (100% = the target at full precision)",
    )
    tradeoff = _figure(
        utility_forgetting_svg(corpus, board.options.utility_fraction),
        f"Utility retention against forget retention at 4-bit, {corpus.corpus}",
        "Utility vs forgetting at 4-bit (lower right is forgetting that did not survive)",
    )
    return (
        f'<section id="corpus-{escape(corpus.corpus)}"><h2>{escape(corpus.corpus)}</h2>'
        f'<p class="opening">{escape(opening_sentence(corpus))}</p>'
        f'<dl class="facts">{facts_html}</dl>{ranking}{retention}{tradeoff}{cells}'
        f"{_items('notes', corpus.notes)}</section>"
    )


def render_html(board: Board) -> str:
    """The page: per corpus its facts, sortable tables and plots; then warnings and sources."""
    sections = "\n".join(_corpus_section(board, corpus) for corpus in board.corpora)
    sources = "".join(f"<li>{escape(source)}</li>" for source in board.sources)
    warnings = _items("warnings", board.warnings)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_csp()}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Unlearning robustness under quantization (MUSE)</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Unlearning robustness under quantization (MUSE)</h1>
<p>Made by <code>muse-quant leaderboard</code> from {len(board.sources)} lm-eval results files.
Click a column header to sort. Retentions are fractions of the target's score at full precision;
reverts are retention here minus retention at full precision, in percentage points.</p>
{sections}
{"<h2>Warnings</h2>" + warnings if warnings else ""}
<details><summary>Results files read ({len(board.sources)})</summary><ul>{sources}</ul></details>
<script>{_SCRIPT}</script>
</body>
</html>
"""
