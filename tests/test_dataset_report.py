"""The dataset report: numbers, warnings, rendering, and the demo datasets."""

import importlib.util
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from backend.data.formats import DataFormat
from backend.data.loading import load_dataset_file
from backend.data.report import build_report, format_report_text

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# Lengths in characters -> approx. tokens (ceil(chars / 4)):
#   prompt   4, 8, 12 chars -> 1, 2, 3
#   chosen   8, 8, 16 chars -> 2, 2, 4
#   rejected 4, 8, 4 chars  -> 1, 2, 1
LONG_CHOSEN = [
    {"prompt": "abcd", "chosen": "aaaaaaaa", "rejected": "bbbb"},
    {"prompt": "abcdefgh", "chosen": "cccccccc", "rejected": "dddddddd"},
    {"prompt": "abcdefghijkl", "chosen": "eeeeeeeeeeeeeeee", "rejected": "ffff"},
]


def test_hand_computed_lengths_and_verbosity_warning(tmp_path):
    report = build_report(load_dataset_file(write_jsonl(tmp_path / "p.jsonl", LONG_CHOSEN)))
    assert report.length_unit == "approx. tokens" and report.tokenizer is None
    prompt = report.lengths["prompt"]
    assert (prompt.count, prompt.min, prompt.mean, prompt.median, prompt.max) == (3, 1, 2.0, 2.0, 3)
    assert prompt.p95 == pytest.approx(2.9)  # between ranks 2 and 3: 2 + 0.9 * (3 - 2)
    chosen = report.lengths["chosen"]
    assert (chosen.min, chosen.mean, chosen.median, chosen.max) == (2, pytest.approx(2.67), 2.0, 4)
    assert report.lengths["rejected"].mean == pytest.approx(1.33)
    # per-pair ratios 2/1, 2/2, 4/1 -> mean 7/3; chosen strictly longer in 2 of 3
    assert report.mean_length_ratio == pytest.approx(7 / 3)
    assert report.chosen_longer_fraction == pytest.approx(2 / 3)
    assert any(w.startswith("Verbosity bias") and "longer = better" in w for w in report.warnings)
    # prompt + longer answer = 3, 4, 7 -> p95 6.7 -> next multiple of 64
    assert report.suggested_max_length == 64
    assert report.rows_total == report.rows_kept == 3 and report.rows_dropped == 0
    assert report.format == "preference" and report.format_label == DataFormat.PREFERENCE.label


def test_no_verbosity_warning_when_lengths_are_balanced(tmp_path):
    rows = [
        {"prompt": "p1", "chosen": "aaaaaaaa", "rejected": "bbbb"},
        {"prompt": "p2", "chosen": "cccc", "rejected": "dddddddd"},
        {"prompt": "p3", "chosen": "eeee", "rejected": "ffff"},
    ]
    report = build_report(load_dataset_file(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert report.chosen_longer_fraction == pytest.approx(1 / 3)
    assert not any("bias" in w for w in report.warnings)


def test_mostly_longer_but_small_ratio_does_not_warn(tmp_path):
    # chosen longer in every pair, but only by ~10%: below the 1.2 ratio threshold
    rows = [{"prompt": f"p{i}", "chosen": "x" * 44, "rejected": "y" * 40} for i in range(3)]
    report = build_report(load_dataset_file(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert report.chosen_longer_fraction == 1.0
    assert report.mean_length_ratio == pytest.approx(1.1)
    assert not any("bias" in w for w in report.warnings)


def test_brevity_bias_is_the_mirror_warning(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "x" * 4, "rejected": "y" * 12} for i in range(3)]
    report = build_report(load_dataset_file(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert any(w.startswith("Brevity bias") for w in report.warnings)


def test_tokenizer_counts_real_tokens(tmp_path):
    vocab = {"[UNK]": 0, "one": 1, "two": 2, "three": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "tok").mkdir()
    tokenizer.save(str(tmp_path / "tok" / "tokenizer.json"))
    rows = [
        {"prompt": "one two", "completion": "three"},
        {"prompt": "one", "completion": "two three one two"},
    ]
    loaded = load_dataset_file(write_jsonl(tmp_path / "pc.jsonl", rows))
    for path in (tmp_path / "tok", tmp_path / "tok" / "tokenizer.json"):
        report = build_report(loaded, tokenizer_path=str(path))
        assert report.length_unit == "tokens" and report.tokenizer == "tok"
        assert (report.lengths["prompt"].min, report.lengths["prompt"].max) == (1, 2)
        assert (report.lengths["completion"].min, report.lengths["completion"].max) == (1, 4)
        assert report.chosen_longer_fraction is None


def test_unloadable_tokenizer_falls_back_with_a_warning(tmp_path):
    loaded = load_dataset_file(FIXTURES / "text.jsonl")
    report = build_report(loaded, tokenizer_path=str(tmp_path))
    assert report.length_unit == "approx. tokens"
    assert any("could not be loaded" in w for w in report.warnings)


def test_dropped_rows_duplicates_and_identical_pairs_are_reported():
    report = build_report(load_dataset_file(FIXTURES / "bad_values.jsonl"))
    assert report.rows_dropped == 5
    assert report.drop_reasons == {"missing or empty value": 2, "not text": 2, "empty text": 1}
    assert report.dropped_examples[0] == {"line": 2, "field": "chosen", "reason": "is empty (null)"}
    assert any("5 of 7 rows" in w for w in report.warnings)

    report = build_report(load_dataset_file(FIXTURES / "identical_and_duplicates.jsonl"))
    assert (report.duplicates, report.identical_pairs) == (2, 2)
    assert report.drop_reasons == {"chosen identical to rejected": 2, "repeated rows": 2}
    assert any("no preference signal" in w for w in report.warnings)
    assert any("2 rows repeated earlier rows" in w for w in report.warnings)
    assert not any("could not be used" in w for w in report.warnings)


def test_messages_are_measured_as_prompt_and_final_reply():
    report = build_report(load_dataset_file(FIXTURES / "messages.jsonl"))
    assert set(report.lengths) == {"prompt", "response"}
    # "Madrid." = 7 chars -> 2; "Hello, how can I help?" = 22 chars -> 6
    assert (report.lengths["response"].min, report.lengths["response"].max) == (2, 6)


def test_max_rows_samples_evenly(tmp_path):
    rows = [{"text": "x" * (4 * (i + 1))} for i in range(10)]
    report = build_report(load_dataset_file(write_jsonl(tmp_path / "t.jsonl", rows)), max_rows=5)
    assert report.rows_measured == 5
    assert [report.lengths["text"].min, report.lengths["text"].max] == [1, 9]  # rows 0, 2, 4, 6, 8
    assert any("5 rows taken evenly across all 10" in n for n in report.notes)


def test_report_is_json_serialisable_and_renders_as_text():
    report = build_report(load_dataset_file(FIXTURES / "preference_aliases.jsonl"))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["lengths"]["chosen"]["max"] == report.lengths["chosen"].max
    assert data["column_mapping"]["prompt"] == "Query"

    text = format_report_text(report)
    assert "Preference pairs (prompt, chosen, rejected)" in text
    assert "Query → prompt" in text
    assert "2 read, 2 kept, 0 dropped" in text
    # Only methods the studio can train, named as the registry names them (it grows).
    from backend.methods import method_label

    assert f"Use for   {', '.join(method_label(m) for m in report.supported_methods)}\n" in text
    assert {"SFT", "DPO", "ORPO"} <= set(text.split("Use for   ")[1].split("\n")[0].split(", "))
    assert "approx. tokens" in text and "median" in text
    assert "Only 2 usable rows" in text

    text = format_report_text(build_report(load_dataset_file(FIXTURES / "broken_lines.jsonl")))
    assert "line 3" in text and "not valid JSON" in text


# ------------------------------------------------------------------ demo data


def test_demo_preferences_are_a_clean_unbiased_preference_set():
    loaded = load_dataset_file(DEMO / "demo_preferences.jsonl")
    assert loaded.format is DataFormat.PREFERENCE
    assert loaded.rows_kept >= 300 and loaded.dropped == []
    report = build_report(loaded)
    assert report.warnings == []
    assert 0.35 <= report.chosen_longer_fraction <= 0.65
    assert 0.9 <= report.mean_length_ratio <= 1.1


def test_demo_sft_loads_as_prompt_completion():
    loaded = load_dataset_file(DEMO / "demo_sft.jsonl")
    assert loaded.format is DataFormat.PROMPT_COMPLETION
    assert loaded.rows_kept >= 150 and loaded.dropped == []


def test_demo_arithmetic_questions_are_distinct_and_answered():
    # A repeated question would sit in training and in the held-out split at once.
    loaded = load_dataset_file(DEMO / "demo_arithmetic.jsonl")
    assert loaded.rows_kept == 400 and loaded.duplicates == 0 and loaded.dropped == []
    rows = [json.loads(line) for line in (DEMO / "demo_arithmetic.jsonl").read_text("utf-8").splitlines()]
    assert len({r["prompt"] for r in rows}) == len(rows)
    for row in rows:
        a, b = (int(n) for n in row["prompt"].split("What is ")[1].rstrip("?\nAnswer:").split(" plus "))
        assert row["answer"] == str(a + b)


def test_demo_generator_reproduces_the_committed_files():
    spec = importlib.util.spec_from_file_location("make_demo", DEMO / "make_demo_preferences.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import random

    preferences, sft = module.build(random.Random(module.SEED))
    committed = [
        json.loads(line) for line in (DEMO / "demo_preferences.jsonl").read_text("utf-8").splitlines()
    ]
    assert preferences == committed
    assert len(sft) == module.SFT_ROWS


def test_length_balance_names_each_figure_and_cannot_contradict(tmp_path):
    # Chosen is shorter in most pairs, but one very uneven pair pulls the mean of the
    # per-pair ratios above 1: the sentence must not put that mean beside the share.
    rows = [{"prompt": f"p{i}", "chosen": "x" * 40, "rejected": "y" * 60} for i in range(5)]
    rows += [{"prompt": "q", "chosen": "x" * 400, "rejected": "y" * 4}]
    report = build_report(load_dataset_file(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert report.chosen_longer_fraction == pytest.approx(1 / 6)
    assert report.mean_length_ratio > 1.5  # the misleading figure, kept but never shown
    assert report.median_length_ratio == pytest.approx(10 / 15)
    text = format_report_text(report)
    assert "mean length ratio" not in text
    assert ("Chosen is longer than rejected in 17% of pairs, shorter in 83%; in the median pair chosen is "
            "0.67× as long as rejected; on average chosen has 25 approx. tokens and rejected 13 (1.97×).") in text


def test_a_repeated_row_names_the_row_it_repeats(tmp_path):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "d", "chosen": "e", "rejected": "f"},
            {"prompt": "a", "chosen": "b", "rejected": "c"}]
    report = build_report(load_dataset_file(write_jsonl(tmp_path / "p.jsonl", rows)))
    assert report.drop_reasons == {"repeated rows": 1}
    assert report.dropped_examples == [{"line": 3, "field": None,
                                        "reason": "repeats an earlier line (first seen at line 1)"}]
    assert "line 3: repeats an earlier line (first seen at line 1)" in format_report_text(report)


def test_prompts_only_measures_the_prompts_and_lists_the_kept_columns():
    loaded = load_dataset_file(FIXTURES / "prompts_only.jsonl")
    report = build_report(loaded)
    assert report.format_label == "Prompts only (to be answered and graded)"
    assert list(report.lengths) == ["prompt"] and report.lengths["prompt"].count == 3
    assert report.length_fit(64) is None and report.chosen_longer_fraction is None
    text = format_report_text(report)
    assert "95% of prompts fit in" in text and "leave room for the answers" in text
    assert "Kept as they are, for graders to read by name: solution, subset, level, tests, meta." in text
    assert "line 3 [problem]: is empty" in text


def test_the_report_and_preview_of_a_local_file_do_not_import_datasets(tmp_path):
    """`datasets` (with pandas) takes about a second to import; the window's data report and
    preview are built from the Arrow rows without it, and training still gets a Dataset."""
    import subprocess
    import sys

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "good", "rejected": "bad"}) + "\n"
                            for i in range(40)), encoding="utf-8")
    code = (
        "import sys\n"
        "from backend.data.loading import load_dataset_file, preview_rows\n"
        "from backend.data.report import build_report\n"
        f"loaded = load_dataset_file({str(data)!r})\n"
        "report = build_report(loaded)\n"
        "rows = preview_rows(loaded, 5)\n"
        "assert 'datasets' not in sys.modules, 'datasets was imported'\n"
        "assert report.rows_kept == 40 and len(rows) == 5 and rows[0]['chosen'] == 'good'\n"
        "ds = loaded.dataset\n"
        "assert type(ds).__name__ == 'Dataset' and len(ds) == 40 and ds[0]['prompt'] == 'q0'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
