"""Export a batch compare (its rows and its summary) as CSV, JSON Lines or one HTML page.

- CSV: the table, one row per prompt, every number in its own column, in the
  file named; the summary beside it as ``<name>.summary.csv`` (key, value), so
  each file stays a plain table a spreadsheet opens.
- JSON Lines: a ``{"type": "summary", ...}`` line first, then one
  ``{"type": "row", ...}`` line per prompt.
- HTML: a self-contained page (inline CSS, no scripts, no external assets)
  with the verdict, the figures and the table; every piece of text from the
  model or the data is escaped.

Every file is written to a temporary file beside it and moved into place, so
an export interrupted half-way never leaves a truncated file. No torch here.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

from backend.compare.scoring import CompareRow, CompareSummary
from backend.core.atomic_files import write_text_atomic

FORMATS = ("csv", "jsonl", "html")

# Table columns in reading order; prompt_source is left out (it repeats the prompt as sent).
ROW_COLUMNS = [f.name for f in dataclasses.fields(CompareRow) if f.name != "prompt_source"] + [
    "length_change", "base_prefers_chosen", "aligned_prefers_chosen", "reward_prefers_chosen"]


def export_compare(path: str | Path, rows: Iterable[CompareRow], summary: CompareSummary,
                   fmt: str | None = None) -> list[Path]:
    """Write the export in ``fmt`` (default: from the suffix). Returns the files written."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt == "htm":
        fmt = "html"
    if fmt not in FORMATS:
        raise ValueError(f"Export as one of {', '.join(FORMATS)}; got {fmt or 'no suffix'!r}.")
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return export_csv(path, rows, summary)
    if fmt == "jsonl":
        return [export_jsonl(path, rows, summary)]
    return [export_html(path, rows, summary)]


def summary_path_for(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.stem + ".summary.csv")


def export_csv(path: str | Path, rows: list[CompareRow], summary: CompareSummary) -> list[Path]:
    # CRLF rows (RFC 4180): the csv module then quotes a lone \r inside an answer instead of letting it end the row.
    path = Path(path)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=ROW_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.to_dict().items()})
    write_text_atomic(path, table.getvalue())

    side = io.StringIO()
    pairs = csv.writer(side, lineterminator="\r\n")
    pairs.writerow(["key", "value"])
    pairs.writerow(["headline", _csv_value(summary.headline())])
    for key, value in summary.to_dict().items():
        pairs.writerow([key, json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else
                        _csv_value(value)])
    summary_file = summary_path_for(path)
    write_text_atomic(summary_file, side.getvalue())
    return [path, summary_file]


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection);
# OWASP's advice is a leading apostrophe, which shows the text as typed.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_value(value: Any) -> Any:
    """A cell: text from the data or a model cannot become a formula; numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise_formula(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def export_jsonl(path: str | Path, rows: list[CompareRow], summary: CompareSummary) -> Path:
    path = Path(path)
    lines = [_json_line({"type": "summary", "headline": summary.headline(), **summary.to_dict()})]
    lines += [_json_line({"type": "row", **row.to_dict()}) for row in rows]
    write_text_atomic(path, "".join(lines))
    return path


def _json_line(data: dict[str, Any]) -> str:
    from backend.core.events import _encode_floats

    return json.dumps(_encode_floats(data), ensure_ascii=False) + "\n"


def read_jsonl_export(path: str | Path) -> tuple[CompareSummary | None, list[CompareRow]]:
    """Read an export back (the window's "open a saved comparison")."""
    from backend.core.events import _decode_floats

    summary, rows = None, []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        data = _decode_floats(json.loads(line))
        kind = data.pop("type", "")
        if kind == "summary":
            summary = CompareSummary.from_dict(data)
        elif kind == "row":
            rows.append(CompareRow.from_dict(data))
    return summary, rows


# --------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1f2430;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem}
.meta{color:#5b6270;font-size:.85rem;margin-bottom:1rem}
.headline{font-size:1.05rem;background:#f3f5f9;border-left:4px solid #4a6cf7;padding:.7rem 1rem;margin:1rem 0}
.figures{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.figure{border:1px solid #dde1e8;border-radius:6px;padding:.6rem .9rem;min-width:9rem}
.figure .v{font-size:1.3rem;font-weight:600}
.figure .k{font-size:.8rem;color:#5b6270}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{border:1px solid #dde1e8;padding:.4rem .5rem;vertical-align:top;text-align:left}
th{background:#f3f5f9;position:sticky;top:0}
td.text{white-space:pre-wrap;max-width:28rem}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.yes{color:#1a7f37}.no{color:#b42318}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _flag(value: bool | None) -> str:
    if value is None:
        return "<td class='num'>–</td>"
    return f"<td class='num {'yes' if value else 'no'}'>{'yes' if value else 'no'}</td>"


def render_html(rows: list[CompareRow], summary: CompareSummary, title: str = "Base vs aligned") -> str:
    e = html.escape
    figures = [
        ("Aligned preference accuracy", _pct(summary.aligned_accuracy)),
        ("Base preference accuracy", _pct(summary.base_accuracy)),
        ("Implicit-reward accuracy", _pct(summary.reward_accuracy)),
        ("Mean reward margin", _fmt(summary.mean_reward_margin)),
        ("Mean length base → aligned",
         f"{_fmt(summary.base_mean_tokens, 1)} → {_fmt(summary.aligned_mean_tokens, 1)}"),
        ("Length ratio", _fmt(summary.length_ratio, 2)),
        ("Aligned answer out-rewards base", _pct(summary.aligned_reward_win_rate)),
        ("Pairs / prompts", f"{summary.n_pairs} / {summary.n_rows}"),
    ]
    sampling = ", ".join(f"{k}={v}" for k, v in summary.sampling.items())
    meta = [
        f"Model: {summary.model_label or '–'}",
        f"Adapter: {summary.adapter or 'none'}",
        f"Method: {summary.method.upper() or '–'}, beta {summary.beta:g}",
        f"Rows: {'held-out split' if summary.source == 'heldout' else 'given prompts'}",
        f"Sampling: {sampling or '–'}",
        f"Exported {time.strftime('%Y-%m-%d %H:%M')}",
    ]
    has_pairs = summary.n_pairs > 0
    head = ["#", "Prompt", "Base answer", "Aligned answer", "Base tokens", "Aligned tokens",
            "Base answer reward", "Aligned answer reward"]
    if has_pairs:
        head += ["Chosen", "Rejected", "Base prefers chosen", "Aligned prefers chosen", "Reward prefers chosen",
                 "Reward margin"]
    out = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<div class='meta'>{'<br>'.join(e(m) for m in meta)}</div>",
        f"<div class='headline'>{e(summary.headline())}</div>",
        "<div class='figures'>",
    ]
    out += [f"<div class='figure'><div class='v'>{e(v)}</div><div class='k'>{e(k)}</div></div>" for k, v in figures]
    out.append("</div>")
    out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for row in rows:
        cells = [
            f"<td class='num'>{row.index + 1}</td>",
            f"<td class='text'>{e(row.prompt)}</td>",
            f"<td class='text'>{e(row.base_answer)}</td>",
            f"<td class='text'>{e(row.aligned_answer)}</td>",
            f"<td class='num'>{row.base_tokens if row.base_finish else '–'}</td>",
            f"<td class='num'>{row.aligned_tokens if row.aligned_finish else '–'}</td>",
            f"<td class='num'>{_fmt(row.base_answer_reward)}</td>",
            f"<td class='num'>{_fmt(row.aligned_answer_reward)}</td>",
        ]
        if has_pairs:
            margin = (row.chosen_reward - row.rejected_reward
                      if row.chosen_reward is not None and row.rejected_reward is not None else None)
            cells += [
                f"<td class='text'>{e(row.chosen or '')}</td>",
                f"<td class='text'>{e(row.rejected or '')}</td>",
                _flag(row.base_prefers_chosen),
                _flag(row.aligned_prefers_chosen),
                _flag(row.reward_prefers_chosen),
                f"<td class='num'>{_fmt(margin)}</td>",
            ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    out.append("<p class='meta'>Log-probabilities are sums over the response tokens given the prompt; the implicit "
               "reward is beta × (log p aligned − log p base), with the base model (adapter off) as the reference. "
               "Made with AlignStudio.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def export_html(path: str | Path, rows: list[CompareRow], summary: CompareSummary, title: str | None = None) -> Path:
    path = Path(path)
    name = Path(summary.run_dir).name if summary.run_dir else ""
    write_text_atomic(path, render_html(rows, summary, title or (f"Base vs aligned: {name}" if name else
                                                                  "Base vs aligned")))
    return path
