"""Statistics about a loaded dataset, and their rendering for a terminal.

Lengths are counted in tokens when a ``tokenizer.json`` is given. Without
one they are estimated as ``ceil(characters / 4)``, the usual rule of thumb
for English text under BPE tokenizers; the report labels that unit
"approx. tokens" so nobody mistakes the estimate for a count. Chat messages
are measured as their contents joined by newlines: the chat template adds a
few tokens per turn that neither method sees.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from backend.data.formats import REASON_LABELS, DataFormat, data_kind
from backend.data import token_counts
from backend.models import tokenizer_cache
from backend.models.tokenizer_cache import load_tokenizer, tokenizer_file

if TYPE_CHECKING:  # the window imports this module before it shows; the loader comes with the first file
    from backend.data.loading import LoadedDataset

# The verbosity check: a preference learner rewarded for length learns
# "longer is better" instead of the preference the data was meant to carry.
VERBOSITY_FRACTION = 0.65
VERBOSITY_RATIO = 1.2
SMALL_DATASET_ROWS = 100
MAX_DROPPED_EXAMPLES = 20
_ENCODE_BATCH = 512
_MEASURE_BATCH = 1000
_SAMPLE_RUNS = 100


@dataclass
class LengthStats:
    count: int
    min: int
    mean: float
    median: float
    p95: float
    max: int


@dataclass
class DataReport:
    path: str
    format: str
    format_label: str
    source_kind: str
    conversational: bool
    rows_total: int
    rows_kept: int
    rows_dropped: int
    position_unit: str
    drop_reasons: dict[str, int]
    dropped_examples: list[dict[str, Any]]
    supported_methods: list[str]
    column_mapping: dict[str, str]
    notes: list[str]
    length_unit: str
    tokenizer: str | None
    rows_measured: int
    lengths: dict[str, LengthStats]
    suggested_max_length: int | None
    chosen_longer_fraction: float | None
    # Mean of the per-pair chosen/rejected ratios. A few very uneven pairs pull it far
    # from the typical pair, so it is kept for scripts but never shown: next to
    # "chosen longer in 44% of pairs" a mean ratio of 1.54 reads as a contradiction.
    mean_length_ratio: float | None
    duplicates: int
    identical_pairs: int
    warnings: list[str] = field(default_factory=list)
    drop_warnings: list[str] = field(default_factory=list)  # those of ``warnings`` about rows left out
    rejected_longer_fraction: float | None = None
    median_length_ratio: float | None = None  # chosen/rejected in the median pair
    length_ratio_of_means: float | None = None  # mean chosen length / mean rejected length
    label_counts: dict[str, int] | None = None  # answers labelled {"good": n, "bad": m}, for unpaired data
    # (prompt, longest answer) of each measured row, for ``length_fit``; left out of to_dict.
    example_lengths: list[tuple[int, int]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("example_lengths", None)
        return data

    def length_fit(self, max_length: int):
        """How the measured rows fit in ``max_length`` (``backend.data.long_prompts.LengthFit``),
        counts scaled to every kept row when only a sample was measured; None for data
        without prompts."""
        from backend.data.long_prompts import measure_fit

        if not self.example_lengths:
            return None
        fit = measure_fit(self.example_lengths, max_length)
        if self.rows_measured and self.rows_kept > self.rows_measured:
            scale = self.rows_kept / self.rows_measured
            for name in ("fits", "answer_cut", "answer_lost", "prompt_cut", "answer_still_cut"):
                setattr(fit, name, round(getattr(fit, name) * scale))
            fit.rows = self.rows_kept
        return fit


def build_report(
    loaded: LoadedDataset, tokenizer_path: str | None = None, max_rows: int = 20000
) -> DataReport:
    """Measure ``loaded``; lengths come from at most ``max_rows`` rows taken
    evenly across it (``_sample_indices``) so a huge file still reports in seconds."""
    warnings: list[str] = []
    measure, unit, tokenizer_name = _length_function(tokenizer_path, warnings)

    table = loaded.table  # pyarrow: the report never waits for `datasets` to import
    if loaded.format is DataFormat.PROMPT_ONLY:
        # The other columns are the graders' (a reference answer, tests): not text the model reads.
        table = table.select(["prompt"])
    n = table.num_rows
    if n > max_rows:
        table = table.take(_sample_indices(n, max_rows))
    lengths_by_part = _measure_parts(table, measure)
    lengths = {name: _stats(values) for name, values in lengths_by_part.items() if values}

    total = _total_lengths(lengths_by_part)
    example_lengths = _example_lengths(lengths_by_part)
    suggested = _round_up(max(_percentile(sorted(total), 0.95), 1), 64) if total else None

    fraction = ratio = rejected_longer = median_ratio = ratio_of_means = None
    if "chosen" in lengths_by_part and "rejected" in lengths_by_part:
        chosen, rejected = lengths_by_part["chosen"], lengths_by_part["rejected"]
        ratios = [max(c, 1) / max(r, 1) for c, r in zip(chosen, rejected)]
        ratio = statistics.fmean(ratios)
        median_ratio = statistics.median(ratios)
        ratio_of_means = max(statistics.fmean(chosen), 1e-9) / max(statistics.fmean(rejected), 1e-9)
        fraction = sum(c > r for c, r in zip(chosen, rejected)) / len(ratios)
        rejected_longer = sum(r > c for c, r in zip(chosen, rejected)) / len(ratios)
        # The median pair's ratio agrees in direction with "longer in N% of pairs",
        # which a mean of ratios does not: both bias warnings lean on it.
        if fraction >= VERBOSITY_FRACTION and median_ratio > VERBOSITY_RATIO:
            warnings.append(
                f"Verbosity bias: the chosen answer is longer in {fraction:.0%} of pairs "
                f"(in the median pair {median_ratio:.2f}× the rejected one), so the model may learn that "
                "longer = better rather than the preference you meant."
            )
        elif rejected_longer >= VERBOSITY_FRACTION and median_ratio < 1 / VERBOSITY_RATIO:
            warnings.append(
                f"Brevity bias: the chosen answer is shorter in {rejected_longer:.0%} of pairs "
                f"(in the median pair {median_ratio:.2f}× the rejected one), so the model may learn that "
                "shorter = better rather than the preference you meant."
            )

    drop_warnings = _drop_warnings(loaded)
    warnings.extend(drop_warnings)
    if loaded.rows_kept < SMALL_DATASET_ROWS:
        warnings.append(
            f"Only {loaded.rows_kept} usable row{'s' if loaded.rows_kept != 1 else ''}: expect the model to "
            "memorise them rather than generalise. A few hundred or more work better."
        )
    if n > max_rows:
        loaded_note = f"Lengths were measured on {table.num_rows} rows taken evenly across all {n}."
    else:
        loaded_note = None

    report = DataReport(
        path=loaded.path,
        format=loaded.format.value,
        format_label=loaded.format.label,
        source_kind=loaded.source_kind,
        conversational=loaded.conversational,
        rows_total=loaded.rows_total,
        rows_kept=loaded.rows_kept,
        rows_dropped=loaded.rows_dropped,
        position_unit=loaded.position_unit,
        drop_reasons=_reason_counts(loaded),
        dropped_examples=[
            {"line": d.line, "field": d.field, "reason": d.reason}
            for d in loaded.dropped[:MAX_DROPPED_EXAMPLES]
        ],
        supported_methods=list(loaded.supported_methods),
        column_mapping=dict(loaded.column_mapping),
        notes=list(loaded.notes) + ([loaded_note] if loaded_note else []),
        length_unit=unit,
        tokenizer=tokenizer_name,
        rows_measured=table.num_rows,
        lengths=lengths,
        suggested_max_length=suggested,
        chosen_longer_fraction=fraction,
        mean_length_ratio=ratio,
        rejected_longer_fraction=rejected_longer,
        median_length_ratio=median_ratio,
        length_ratio_of_means=ratio_of_means,
        example_lengths=example_lengths,
        duplicates=loaded.duplicates,
        identical_pairs=loaded.identical_pairs,
        warnings=warnings,
        drop_warnings=drop_warnings,
        label_counts=_label_counts(loaded),
    )
    _add_method_notes(report, data_kind(loaded.format))
    return report


def _label_counts(loaded: LoadedDataset) -> dict[str, int] | None:
    if loaded.format is not DataFormat.UNPAIRED_PREFERENCE:
        return None
    labels = loaded.table.column("label").to_pylist()
    good = sum(1 for label in labels if label)
    return {"good": good, "bad": len(labels) - good}


def method_advice(cfg, report: DataReport | None) -> list[str]:
    """What the method of ``cfg`` advises about this data with these settings (class weights
    against the label counts, say); empty when it has nothing to say or there is no report."""
    from backend.methods import find_method

    spec = find_method(getattr(cfg, "method", ""))
    if report is None or spec is None or spec.data_advice is None or spec.key not in report.supported_methods:
        return []
    return spec.data_advice(cfg, report)


def _add_method_notes(report: DataReport, kind: str) -> None:
    """What each usable method makes of this data (its conversion, its advice): from the
    specs, so the report knows no method by name."""
    from backend.methods import get_method

    if report.label_counts is not None:
        good, bad = report.label_counts["good"], report.label_counts["bad"]
        report.notes.insert(0, f"{good:,} answer{'s' if good != 1 else ''} labelled good, {bad:,} bad.")
    for key in report.supported_methods:
        spec = get_method(key)
        note = spec.data.convert_notes.get(kind)
        if note:
            report.notes.append(note.format(name=spec.label))
        if spec.data_advice is not None:
            report.warnings.extend(spec.data_advice(None, report))


def scan_progress_text(done: int, total: int) -> str:
    """How far a scan has got, e.g. "Scanning… 43% (1.2 of 2.8 GB)"."""
    percent = min(100, 100 * done // total) if total else 100
    unit, scale = next((u, s) for u, s in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10), ("bytes", 1))
                       if total >= s or s == 1)
    amount = f"{done / scale:.1f} of {total / scale:.1f} {unit}" if scale > 1 else f"{done} of {total} bytes"
    return f"Scanning… {percent}% ({amount})"


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _length_function(
    tokenizer_path: str | None, warnings: list[str]
) -> tuple[Callable[[list[str]], list[int]], str, str | None]:
    heuristic = (lambda texts: [approx_tokens(t) for t in texts], "approx. tokens", None)
    if not tokenizer_path:
        return heuristic
    file = tokenizer_file(tokenizer_path)
    try:
        count = _token_counter(file)
    except Exception as err:  # a missing or foreign file must not sink the report
        warnings.append(
            f"The tokenizer at {tokenizer_path} could not be loaded ({str(err) or type(err).__name__}); "
            "lengths are estimated from characters instead."
        )
        return heuristic

    def measure(texts: list[str]) -> list[int]:
        counts = []
        for start in range(0, len(texts), _ENCODE_BATCH):
            counts.extend(count(texts[start : start + _ENCODE_BATCH]))
        return counts

    name = file.parent.name if file.name == "tokenizer.json" else file.name
    return measure, "tokens", name


def _token_counter(file: Path) -> Callable[[list[str]], list[int]]:
    """Counts tokens with the tokenizer in ``file``: parsed in this process, or, in the window
    (``token_counts.helpers_enabled``), in a helper process when this one has not parsed it, so
    that the parse does not stop the window's thread."""
    tokenizer = None

    def in_process(texts: list[str]) -> list[int]:
        nonlocal tokenizer
        if tokenizer is None:
            tokenizer = load_tokenizer(file)
        return [len(enc.ids) for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]

    if not token_counts.helpers_enabled() or tokenizer_cache.is_loaded(file):
        in_process([])  # parsed now, so that a file that cannot be is reported as such
        return in_process
    helper = token_counts.counter_for(file)

    def in_helper(texts: list[str]) -> list[int]:
        try:
            return helper.counts(texts)
        except token_counts.TokenCounterError:  # the helper went away: count here, as without it
            return in_process(texts)

    return in_helper


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return "" if value is None else str(value)


def _parts(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The texts to measure, by role: prompt and the answer(s)."""
    if not rows:
        return {}
    columns = rows[0].keys()
    if "messages" in columns:
        prompts, responses = [], []
        for row in rows:
            messages = row["messages"]
            last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
            prompts.append(_as_text(messages[:last]))
            responses.append(_as_text(messages[last : last + 1]))
        return {"prompt": prompts, "response": responses}
    names = [c for c in ("prompt", "chosen", "rejected", "completion", "text") if c in columns]
    return {name: [_as_text(row[name]) for row in rows] for name in names}


def _sample_indices(n: int, count: int) -> list[int]:
    """About ``count`` of ``n`` row numbers (a multiple of the number of runs), in
    up to ``_SAMPLE_RUNS`` evenly spaced runs of neighbouring rows. Single rows
    spread over a memory-mapped dataset would touch nearly every page of it (a
    page holds a few rows), making the whole file resident; runs touch a few
    megabytes."""
    runs = min(count, _SAMPLE_RUNS)
    per_run = count // runs
    return [r * n // runs + k for r in range(runs) for k in range(per_run)]


def _measure_parts(table, measure: Callable[[list[str]], list[int]]) -> dict[str, list[int]]:
    """Lengths of each part of every row, read a batch at a time: only the
    numbers are kept, and no single call holds the interpreter for long (the
    window's thread needs it while a big file is measured in the background)."""
    lengths: dict[str, list[int]] = {}
    for batch in table.to_batches(max_chunksize=_MEASURE_BATCH):
        rows = batch.to_pylist()
        for name, texts in _parts(rows).items():
            lengths.setdefault(name, []).extend(measure(texts))
    return lengths


def _total_lengths(by_part: dict[str, list[int]]) -> list[int]:
    if not by_part:
        return []
    prompt = by_part.get("prompt", [0] * len(next(iter(by_part.values()))))
    answers = [by_part[k] for k in ("chosen", "rejected", "completion", "response", "text") if k in by_part]
    return [p + max(a) for p, *a in zip(prompt, *answers)] if answers else list(prompt)


def _example_lengths(by_part: dict[str, list[int]]) -> list[tuple[int, int]]:
    prompt = by_part.get("prompt")
    answers = [by_part[k] for k in ("chosen", "rejected", "completion", "response") if k in by_part]
    if not prompt or not answers:
        return []
    return [(p, max(a)) for p, *a in zip(prompt, *answers)]


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not ordered:
        return 0.0
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _stats(values: list[int]) -> LengthStats:
    ordered = sorted(values)
    return LengthStats(
        count=len(ordered),
        min=ordered[0],
        mean=round(statistics.fmean(ordered), 2),
        median=float(statistics.median(ordered)),
        p95=round(_percentile(ordered, 0.95), 2),
        max=ordered[-1],
    )


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _reason_counts(loaded: LoadedDataset) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for code, count in loaded.drop_counts.items():
        counts[REASON_LABELS.get(code, code)] += count
    return dict(counts.most_common())


def _drop_warnings(loaded: LoadedDataset) -> list[str]:
    warnings = []
    other_drops = loaded.rows_dropped - loaded.duplicates - loaded.identical_pairs
    if other_drops:
        share = other_drops / max(loaded.rows_total, 1)
        warnings.append(
            f"{other_drops} of {loaded.rows_total} rows ({share:.1%}) could not be used; "
            "see the dropped rows below."
        )
    if loaded.identical_pairs:
        pairs = "1 pair had" if loaded.identical_pairs == 1 else f"{loaded.identical_pairs} pairs had"
        warnings.append(
            f"{pairs} the same chosen and rejected answer and {'was' if loaded.identical_pairs == 1 else 'were'} "
            "removed: they carry no preference signal."
        )
    if loaded.duplicates:
        rows = ("1 row repeated an earlier row and was" if loaded.duplicates == 1
                else f"{loaded.duplicates} rows repeated earlier rows and were")
        warnings.append(f"{rows} removed (the first copy of each was kept).")
    return warnings


# --------------------------------------------------------------- rendering


def length_balance_text(report: DataReport) -> str | None:
    """How chosen and rejected lengths compare, each figure named for what it is, so
    that the share of pairs and the ratios cannot be read as contradicting each other.
    The terminal report and the window show this same sentence."""
    if report.chosen_longer_fraction is None:
        return None
    text = f"Chosen is longer than rejected in {report.chosen_longer_fraction:.0%} of pairs"
    if report.rejected_longer_fraction is not None:
        equal = max(0.0, 1 - report.chosen_longer_fraction - report.rejected_longer_fraction)
        text += f", shorter in {report.rejected_longer_fraction:.0%}"
        if equal >= 0.005:
            text += f", equal in {equal:.0%}"
    if report.median_length_ratio is not None:
        text += f"; in the median pair chosen is {report.median_length_ratio:.2f}× as long as rejected"
    chosen, rejected = report.lengths.get("chosen"), report.lengths.get("rejected")
    if report.length_ratio_of_means is not None and chosen and rejected:
        text += (f"; on average chosen has {chosen.mean:.0f} {report.length_unit} and rejected "
                 f"{rejected.mean:.0f} ({report.length_ratio_of_means:.2f}×)")
    return text + "."



def format_report_text(report: DataReport) -> str:
    """The report as plain text for a terminal (about 80 columns)."""
    lines = [
        f"Dataset   {report.path}",
        f"Format    {report.format_label}" + (f"  [{report.source_kind}]" if report.source_kind else ""),
    ]
    mapped = [f"{src} → {fld}" for fld, src in report.column_mapping.items() if src != fld]
    if mapped:
        lines.append(f"Columns   {', '.join(mapped)}")
    lines.append(
        f"Rows      {report.rows_total} read, {report.rows_kept} kept, {report.rows_dropped} dropped"
    )
    from backend.methods import method_label

    methods = ", ".join(method_label(m) for m in report.supported_methods)
    lines.append(f"Use for   {methods or 'no method the studio can train yet'}")

    if report.lengths:
        unit = report.length_unit + (f", {report.tokenizer}" if report.tokenizer else ", characters ÷ 4")
        lines += ["", f"Lengths ({unit}; {report.rows_measured} rows)"]
        lines.append(f"  {'':<11}{'min':>7}{'mean':>9}{'median':>9}{'p95':>9}{'max':>8}")
        for name, s in report.lengths.items():
            lines.append(f"  {name:<11}{s.min:>7}{s.mean:>9.1f}{s.median:>9.1f}{s.p95:>9.1f}{s.max:>8}")
        if report.suggested_max_length and report.format == DataFormat.PROMPT_ONLY.value:
            lines.append(
                f"  95% of prompts fit in {report.suggested_max_length} {report.length_unit}; "
                "leave room for the answers the model writes."
            )
        elif report.suggested_max_length:
            lines.append(
                f"  95% of examples fit in {report.suggested_max_length} {report.length_unit} "
                "(suggested max length)."
            )
    balance = length_balance_text(report)
    if balance:
        lines.append(f"  {balance}")

    if report.drop_reasons:
        lines += ["", "Dropped rows"]
        lines += [f"  {count:>6}  {reason}" for reason, count in report.drop_reasons.items()]
        for d in report.dropped_examples:
            where = f"{report.position_unit} {d['line']}"
            fld = f" [{d['field']}]" if d["field"] else ""
            lines.append(f"  {where:>12}{fld}: {d['reason']}")
        hidden = report.rows_dropped - len(report.dropped_examples)
        if hidden > 0:
            lines.append(f"  … and {hidden} more")

    if report.warnings:
        lines += ["", "Warnings"]
        lines += [f"  ! {w}" for w in report.warnings]
    if report.notes:
        lines += ["", "Notes"]
        lines += [f"  - {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
