"""Loading, format recognition and normalisation of dataset files.

Fixtures live in tests/fixtures/datasets (one small file per format and some
broken ones); binary variants (Parquet, saved Arrow folders, bad encodings)
are written to tmp_path from those.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from backend.data.formats import DataFormat, DatasetError, data_kind, supported_methods
from backend.data.loading import (CONVERSIONS, dataset_for_method, load_dataset_file, preview_rows,
                                     unsupported_reason)

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
REPO = Path(__file__).resolve().parents[1]


def fixture(name: str) -> Path:
    return FIXTURES / name


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "name, fmt, columns, kept",
    [
        ("preference.jsonl", DataFormat.PREFERENCE, ["prompt", "chosen", "rejected"], 4),
        (
            "preference_conversational.jsonl",
            DataFormat.PREFERENCE_CONVERSATIONAL,
            ["prompt", "chosen", "rejected"],
            3,
        ),
        (
            "preference_full_conversations.jsonl",
            DataFormat.PREFERENCE_CONVERSATIONAL,
            ["prompt", "chosen", "rejected"],
            3,
        ),
        ("hh_transcripts.jsonl", DataFormat.PREFERENCE_IMPLICIT_PROMPT, ["prompt", "chosen", "rejected"], 3),
        ("implicit_plain.jsonl", DataFormat.PREFERENCE_IMPLICIT_PROMPT, ["prompt", "chosen", "rejected"], 2),
        ("sharegpt.json", DataFormat.SHAREGPT, ["messages"], 2),
        ("sharegpt_preference.json", DataFormat.SHAREGPT_PREFERENCE, ["prompt", "chosen", "rejected"], 2),
        ("alpaca.json", DataFormat.ALPACA, ["prompt", "completion"], 4),
        ("prompt_completion.csv", DataFormat.PROMPT_COMPLETION, ["prompt", "completion"], 3),
        ("messages.jsonl", DataFormat.MESSAGES, ["messages"], 2),
        ("text.jsonl", DataFormat.TEXT, ["text"], 2),
        ("unpaired.jsonl", DataFormat.UNPAIRED_PREFERENCE, ["prompt", "completion", "label"], 3),
    ],
)
def test_each_format_is_recognised_and_normalised(name, fmt, columns, kept):
    loaded = load_dataset_file(fixture(name))
    assert loaded.format is fmt
    assert loaded.dataset.column_names == columns
    assert loaded.rows_kept == len(loaded.dataset) == kept
    assert loaded.supported_methods == supported_methods(fmt)


def test_standard_preference_keeps_strings():
    loaded = load_dataset_file(fixture("preference.jsonl"))
    assert loaded.dataset[2] == {
        "prompt": "What is the capital of France?",
        "chosen": "The capital of France is Paris.",
        "rejected": "The capital of France is Lyon.",
    }
    assert not loaded.conversational
    assert loaded.column_mapping == {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    assert loaded.dropped == [] and loaded.rows_total == 4


def test_conversational_preference_takes_string_prompts_as_user_turns():
    ds = load_dataset_file(fixture("preference_conversational.jsonl")).dataset
    assert ds[0]["prompt"] == [{"role": "system", "content": "Be brief."}, user("Name a primary colour.")]
    assert ds[0]["chosen"] == [assistant("Red.")]
    assert ds[2]["prompt"] == [user("Say hello in French.")]
    assert ds[2]["rejected"] == [assistant("Hola.")]


def test_full_conversations_have_their_shared_beginning_split_off_as_prompt():
    ds = load_dataset_file(fixture("preference_full_conversations.jsonl")).dataset
    assert ds[0] == {
        "prompt": [user("What is 3 + 3?")],
        "chosen": [assistant("6")],
        "rejected": [assistant("7")],
    }
    assert ds[2]["prompt"] == [user("Hi"), assistant("Hello!"), user("Capital of Italy?")]
    assert ds[2]["chosen"] == [assistant("Rome.")]


def test_hh_transcripts_become_messages_with_the_final_replies_as_answers():
    loaded = load_dataset_file(fixture("hh_transcripts.jsonl"))
    ds = loaded.dataset
    assert loaded.conversational
    assert ds[0] == {
        "prompt": [user("What do bees make?")],
        "chosen": [assistant("Bees make honey.")],
        "rejected": [assistant("Bees make milk.")],
    }
    assert ds[1]["prompt"] == [
        user("Hi there"),
        assistant("Hello! How can I help?"),
        user("What is ice made of?"),
    ]
    assert ds[1]["chosen"] == [assistant("Frozen water.")] and ds[1]["rejected"] == [assistant("Sand.")]
    # no leading blank lines before "Human:" in the third row
    assert ds[2]["prompt"] == [user("Is the sun a star?")]


def test_implicit_prompt_without_markers_splits_at_a_word_boundary():
    ds = load_dataset_file(fixture("implicit_plain.jsonl")).dataset
    assert ds[0]["prompt"] == "Q: What is the boiling point of water at sea level? A: "
    assert (ds[0]["chosen"], ds[0]["rejected"]) == ("100 degrees Celsius.", "50 degrees Celsius.")
    assert ds[1] == {"prompt": "Translate 'cat' to German: ", "chosen": "Katze", "rejected": "Hund"}


def test_sharegpt_turns_become_role_content_and_unknown_speakers_are_dropped():
    loaded = load_dataset_file(fixture("sharegpt.json"))
    assert loaded.dataset[0]["messages"] == [
        {"role": "system", "content": "You are helpful."},
        user("Name a fruit."),
        assistant("An apple."),
    ]
    assert loaded.position_unit == "row"
    [dropped] = loaded.dropped
    assert (dropped.line, dropped.field) == (3, "conversations")
    assert "narrator" in dropped.reason


def test_sharegpt_preference_becomes_conversational_pairs():
    ds = load_dataset_file(fixture("sharegpt_preference.json")).dataset
    assert ds[1] == {
        "prompt": [{"role": "system", "content": "Answer in one word."}, user("Colour of grass?")],
        "chosen": [assistant("Green.")],
        "rejected": [assistant("Blue.")],
    }


def test_alpaca_joins_instruction_and_input():
    loaded = load_dataset_file(fixture("alpaca.json"))
    assert [r["prompt"] for r in loaded.dataset] == [
        "Give a synonym for happy.",
        "Translate to Spanish.\n\nGood morning",
        "Add the numbers.\n\n3 and 4",
        "Summarise in one word.",
    ]
    assert loaded.dataset[1]["completion"] == "Buenos días."
    assert any('"data"' in note for note in loaded.notes)


def test_csv_keeps_quoted_newlines_and_words_pandas_would_null():
    loaded = load_dataset_file(fixture("prompt_completion.csv"))
    ds = loaded.dataset
    assert ds[0]["completion"].count("\n") == 2
    assert ds[1] == {"prompt": "What is NA?", "completion": "NA"}
    assert ds[2]["completion"] == "1, 2, 3"
    [dropped] = loaded.dropped
    # header is line 1, the haiku spans lines 2-4
    assert (dropped.line, dropped.field, dropped.code) == (6, "completion", "empty")


def test_column_aliases_are_case_insensitive_and_reported():
    loaded = load_dataset_file(fixture("question_answer_aliases.csv"))
    assert loaded.format is DataFormat.PROMPT_COMPLETION
    assert loaded.column_mapping == {"prompt": "Question", "completion": "Answer"}
    assert loaded.source_columns == ["ID", "Question", "Answer"]
    assert "Column 'Question' is used as 'prompt'." in loaded.notes
    assert any("ID" in note and "Ignored" in note for note in loaded.notes)

    loaded = load_dataset_file(fixture("preference_aliases.jsonl"))
    assert loaded.format is DataFormat.PREFERENCE
    assert loaded.column_mapping == {
        "prompt": "Query",
        "chosen": "Chosen_Response",
        "rejected": "Rejected Response",
    }
    assert loaded.dataset[0]["rejected"] == "No, fire is cold."


# ----------------------------------------------------------------- overrides


def test_column_map_assigns_columns_by_hand():
    path = fixture("custom_columns.jsonl")
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path)  # "good"/"bad" are aliases, but the prompt column "ask" is not
    assert "ask" in str(err.value)

    loaded = load_dataset_file(path, column_map={"prompt": "ask"})
    assert loaded.format is DataFormat.PREFERENCE
    assert loaded.column_mapping == {"prompt": "ask", "chosen": "good", "rejected": "bad"}
    assert loaded.dataset[0] == {
        "prompt": "Is snow cold?",
        "chosen": "Yes, snow is cold.",
        "rejected": "No, snow is warm.",
    }


def test_forced_format_overrides_recognition():
    loaded = load_dataset_file(fixture("preference.jsonl"), format=DataFormat.PREFERENCE_IMPLICIT_PROMPT)
    assert loaded.format is DataFormat.PREFERENCE_IMPLICIT_PROMPT
    assert loaded.dataset[0] == {"prompt": "It is ", "chosen": "blue.", "rejected": "green."}

    loaded = load_dataset_file(
        fixture("question_answer_aliases.csv"), format="text", column_map={"text": "Answer"}
    )
    assert loaded.format is DataFormat.TEXT and list(loaded.dataset["text"]) == [
        "William Shakespeare.",
        "Water.",
    ]


def test_forced_format_names_the_field_it_cannot_find():
    with pytest.raises(DatasetError) as err:
        load_dataset_file(fixture("text.jsonl"), format=DataFormat.PREFERENCE)
    assert err.value.field == "prompt"
    assert "'prompt'" in str(err.value) and "'chosen'" in str(err.value)
    assert err.value.columns == ["text"]


def test_bad_column_map_is_explained():
    with pytest.raises(DatasetError, match="'nope'.*not in this file"):
        load_dataset_file(fixture("preference.jsonl"), column_map={"prompt": "nope"})
    with pytest.raises(DatasetError, match="'answerz' is not a field"):
        load_dataset_file(fixture("preference.jsonl"), column_map={"answerz": "prompt"})
    with pytest.raises(DatasetError, match="Unknown format"):
        load_dataset_file(fixture("preference.jsonl"), format="dpo-ish")


# ------------------------------------------------------- file type variants

PAIRS = [
    {"prompt": "One?", "chosen": "Yes, one.", "rejected": "No."},
    {"prompt": "Two?", "chosen": "Yes, two.", "rejected": "No."},
    {"prompt": "Three?", "chosen": "Yes, three.", "rejected": "No."},
]


def assert_pairs(loaded, kind):
    assert loaded.format is DataFormat.PREFERENCE
    assert loaded.source_kind == kind
    assert loaded.dataset.to_list() == PAIRS


def test_json_list_object_with_splits_and_columnar_json(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(PAIRS))
    assert_pairs(load_dataset_file(tmp_path / "list.json"), "JSON")

    (tmp_path / "splits.json").write_text(json.dumps({"train": PAIRS, "test": PAIRS[:1]}))
    loaded = load_dataset_file(tmp_path / "splits.json")
    assert_pairs(loaded, "JSON")
    assert any("train split" in note for note in loaded.notes)

    columnar = {k: [row[k] for row in PAIRS] for k in PAIRS[0]}
    (tmp_path / "columns.json").write_text(json.dumps(columnar))
    assert_pairs(load_dataset_file(tmp_path / "columns.json"), "JSON")


def test_json_lines_named_json_is_read_line_by_line(tmp_path):
    path = write_jsonl(tmp_path / "actually_lines.json", PAIRS)
    loaded = load_dataset_file(path)
    assert_pairs(loaded, "JSON Lines")
    assert "one JSON object per line" in loaded.notes[0]


def test_csv_parquet_and_saved_folders(tmp_path):
    Dataset.from_list(PAIRS).to_csv(str(tmp_path / "pairs.csv"), index=False)
    assert_pairs(load_dataset_file(tmp_path / "pairs.csv"), "CSV")

    Dataset.from_list(PAIRS).to_parquet(str(tmp_path / "pairs.parquet"))
    assert_pairs(load_dataset_file(tmp_path / "pairs.parquet"), "Parquet")

    Dataset.from_list(PAIRS).save_to_disk(str(tmp_path / "saved"))
    loaded = load_dataset_file(tmp_path / "saved")
    assert_pairs(loaded, "saved dataset (Arrow)")
    assert loaded.position_unit == "row"

    DatasetDict({"train": Dataset.from_list(PAIRS), "test": Dataset.from_list(PAIRS[:1])}).save_to_disk(
        str(tmp_path / "saved_dict")
    )
    loaded = load_dataset_file(tmp_path / "saved_dict")
    assert_pairs(loaded, "saved dataset (Arrow)")
    assert any("train split was used" in note for note in loaded.notes)


def test_conversational_parquet_keeps_messages(tmp_path):
    rows = load_dataset_file(fixture("preference_conversational.jsonl")).dataset
    rows.to_parquet(str(tmp_path / "conv.parquet"))
    loaded = load_dataset_file(tmp_path / "conv.parquet")
    assert loaded.format is DataFormat.PREFERENCE_CONVERSATIONAL
    assert loaded.dataset.to_list() == rows.to_list()


def test_folder_with_a_single_data_file_loads_it(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", PAIRS)
    (tmp_path / "README.md").write_text("about the data")
    loaded = load_dataset_file(tmp_path)
    assert_pairs(loaded, "JSON Lines")
    assert "train.jsonl" in loaded.notes[0]


# ------------------------------------------------------------- bad input


def test_invalid_json_line_mid_file_drops_only_that_line():
    loaded = load_dataset_file(fixture("broken_lines.jsonl"))
    assert [r["prompt"] for r in loaded.dataset] == ["Row on line 1?", "Row on line 2?", "Row on line 6?"]
    assert loaded.rows_total == 5  # the blank line 4 is not a row
    assert [(d.line, d.code) for d in loaded.dropped] == [(3, "invalid_json"), (5, "not_object")]
    assert "not valid JSON" in loaded.dropped[0].reason


def test_null_numbers_objects_and_blank_text_are_dropped_with_line_and_field():
    loaded = load_dataset_file(fixture("bad_values.jsonl"))
    assert loaded.rows_kept == 2
    got = [(d.line, d.field, d.code) for d in loaded.dropped]
    assert got == [
        (2, "chosen", "missing"),
        (3, "rejected", "not_text"),
        (4, "prompt", "empty"),
        (5, "chosen", "not_text"),
        (6, "rejected", "missing"),
    ]
    assert "number (42)" in loaded.dropped[1].reason


def test_identical_pairs_and_duplicates_are_removed_and_counted():
    loaded = load_dataset_file(fixture("identical_and_duplicates.jsonl"))
    assert [r["prompt"] for r in loaded.dataset] == ["A?", "C?"]
    assert loaded.identical_pairs == 2  # "Left " vs "Left" differ only in whitespace
    assert loaded.duplicates == 2
    assert [(d.line, d.code) for d in loaded.dropped] == [
        (2, "identical_pair"),
        (3, "duplicate"),
        (5, "duplicate"),
        (6, "identical_pair"),
    ]
    assert loaded.dropped[1].reason == "repeats an earlier line (first seen at line 1)"
    assert loaded.rows_dropped == 4


def test_bom_and_windows_line_endings():
    loaded = load_dataset_file(fixture("bom.jsonl"))
    assert loaded.dataset.column_names == ["prompt", "chosen", "rejected"]
    assert loaded.dataset[1]["rejected"] == "Broken."


def test_bom_in_csv_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,completion\nHi?,Hello.\n")
    loaded = load_dataset_file(path)
    assert loaded.format is DataFormat.PROMPT_COMPLETION
    assert loaded.column_mapping == {"prompt": "prompt", "completion": "completion"}


def test_missing_column_names_the_field():
    with pytest.raises(DatasetError) as err:
        load_dataset_file(fixture("missing_rejected.jsonl"))
    assert err.value.field == "rejected"
    assert "'rejected'" in str(err.value)
    assert str(err.value).startswith("missing_rejected.jsonl")


def test_unknown_columns_are_listed():
    with pytest.raises(DatasetError, match="could not tell.*foo, bar"):
        load_dataset_file(fixture("unknown_columns.jsonl"))


def test_every_row_dropped_summarises_the_reasons(tmp_path):
    path = write_jsonl(tmp_path / "all_bad.jsonl", [{"prompt": "x", "chosen": None, "rejected": "y"}] * 3)
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path)
    assert "None of the 3 rows" in str(err.value)
    assert "missing or empty value: 3" in str(err.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"[]", "no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary"),
        ("\ufeff{}".encode("utf-16"), "UTF-16"),
    ],
)
def test_unusable_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset_file(path)
    assert "data.jsonl" in str(err.value)
    assert "Traceback" not in str(err.value)


def test_empty_fixture_file():
    with pytest.raises(DatasetError, match="empty"):
        load_dataset_file(fixture("empty.jsonl"))


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        json.dumps(PAIRS[0]).encode()
        + b"\n"
        + '{"prompt": "Café?", "chosen": "Oui.", "rejected": "Non."}\n'.encode("latin-1")
    )
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path)
    assert err.value.line == 2
    assert "not UTF-8" in str(err.value) and "0xe9" in str(err.value)


def test_broken_json_document_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(
        '[\n  {"prompt": "a", "chosen": "b", "rejected": "c"},\n  {"prompt": "a" "chosen": "b"}\n]\n'
    )
    with pytest.raises(DatasetError, match="not valid JSON") as err:
        load_dataset_file(path)
    assert err.value.line == 3


def test_missing_path_empty_folder_and_unknown_suffix(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset_file(tmp_path / "nothing.jsonl")
    with pytest.raises(DatasetError, match="holds no dataset"):
        load_dataset_file(tmp_path)
    (tmp_path / "notes.txt").write_text("just some words")
    with pytest.raises(DatasetError, match="cannot read '.txt'"):
        load_dataset_file(tmp_path / "notes.txt")


def test_corrupt_parquet_is_a_dataset_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet PAR1")
    with pytest.raises(DatasetError, match="could not be read as Parquet"):
        load_dataset_file(path)


# -------------------------------------------------------- per-method shapes


def test_dataset_for_method_gives_trl_columns():
    pairs = load_dataset_file(fixture("preference.jsonl"))
    for method in ("dpo", "orpo"):
        assert dataset_for_method(pairs, method).column_names == ["prompt", "chosen", "rejected"]

    sft = dataset_for_method(pairs, "sft")
    assert sft.column_names == ["prompt", "completion"]
    assert list(sft["completion"]) == list(pairs.dataset["chosen"])

    # Unpaired: every pair gives a good and a bad answer, alternating, and neighbouring rows
    # never share a prompt (a neighbour's answer is the mismatched one a KL estimate needs).
    unpaired = CONVERSIONS["unpair"](pairs.dataset.select_columns(["prompt", "chosen", "rejected"]))
    assert unpaired.column_names == ["prompt", "completion", "label"]
    assert len(unpaired) == 2 * len(pairs.dataset)
    assert unpaired[:2] == {
        "prompt": [pairs.dataset[0]["prompt"], pairs.dataset[2]["prompt"]],
        "completion": ["It is blue.", "The capital of France is Lyon."],
        "label": [True, False],
    }
    rows = unpaired.to_list()
    assert sorted((r["prompt"], r["completion"], r["label"]) for r in rows) == sorted(
        [(p["prompt"], p["chosen"], True) for p in pairs.dataset] + [(p["prompt"], p["rejected"], False)
                                                                     for p in pairs.dataset])
    assert all(a["prompt"] != b["prompt"] for a, b in zip(rows, rows[1:]))


def test_dataset_for_method_on_conversational_and_sft_formats():
    conv = load_dataset_file(fixture("preference_conversational.jsonl"))
    sft = dataset_for_method(conv, "sft")
    assert sft[1] == {"prompt": [user("What is 2 + 2?")], "completion": [assistant("4")]}
    unpaired = CONVERSIONS["unpair"](conv.dataset)
    assert unpaired[3] == {"prompt": conv.dataset[0]["prompt"], "completion": [assistant("Purple.")], "label": False}
    assert all(a["prompt"] != b["prompt"] for a, b in zip(unpaired, list(unpaired)[1:]))

    assert dataset_for_method(load_dataset_file(fixture("sharegpt.json")), "sft").column_names == ["messages"]
    assert dataset_for_method(load_dataset_file(fixture("text.jsonl")), "sft").column_names == ["text"]
    assert dataset_for_method(load_dataset_file(fixture("alpaca.json")), "SFT").column_names == [
        "prompt",
        "completion",
    ]
    assert list(load_dataset_file(fixture("unpaired.jsonl")).dataset["label"]) == [True, False, True]


def test_unsupported_method_is_explained():
    alpaca = load_dataset_file(fixture("alpaca.json"))
    with pytest.raises(DatasetError) as err:
        dataset_for_method(alpaca, "dpo")
    assert "DPO needs pairs of a chosen and a rejected answer" in str(err.value)
    assert "Alpaca" in str(err.value)
    assert unsupported_reason("dpo", DataFormat.UNPAIRED_PREFERENCE).startswith("DPO needs pairs")
    with pytest.raises(DatasetError, match="labelled good or bad"):
        dataset_for_method(load_dataset_file(fixture("unpaired.jsonl")), "orpo")
    with pytest.raises(DatasetError, match="not a training method"):
        dataset_for_method(alpaca, "no-such-method")


def test_supported_methods():
    # Only methods the studio can train: the report never promises one it cannot. Other methods
    # join the registry over time, so the check is on the ones whose data needs are known here.
    from backend.methods import method_keys

    for fmt in DataFormat:
        assert set(supported_methods(fmt)) <= set(method_keys())
    assert {"sft", "dpo", "orpo"} <= set(supported_methods(DataFormat.PREFERENCE))
    # Thumbs up/down data: SFT keeps the good answers; the pairwise methods cannot use it.
    assert "sft" in supported_methods(DataFormat.UNPAIRED_PREFERENCE)
    assert not {"dpo", "orpo"} & set(supported_methods(DataFormat.UNPAIRED_PREFERENCE))
    assert not {"sft", "dpo", "orpo"} & set(supported_methods(DataFormat.PROMPT_ONLY))
    for fmt in (
        DataFormat.TEXT,
        DataFormat.MESSAGES,
        DataFormat.ALPACA,
        DataFormat.SHAREGPT,
        DataFormat.PROMPT_COMPLETION,
    ):
        assert "sft" in supported_methods(fmt) and "dpo" not in supported_methods(fmt)
    assert all(fmt.label and fmt.label[0].isupper() for fmt in DataFormat)


# ------------------------------------------------------------------ preview


def test_preview_rows_flattens_messages():
    rows = preview_rows(load_dataset_file(fixture("hh_transcripts.jsonl")), n=2)
    assert len(rows) == 2
    assert rows[1] == {
        "prompt": "user: Hi there\nassistant: Hello! How can I help?\nuser: What is ice made of?",
        "chosen": "assistant: Frozen water.",
        "rejected": "assistant: Sand.",
    }
    text = preview_rows(load_dataset_file(fixture("text.jsonl")))
    assert list(text[0]) == ["text"] and len(text) == 2
    assert preview_rows(load_dataset_file(fixture("unpaired.jsonl")))[1]["label"] == "bad"


def test_error_text_leads_with_file_line_and_field():
    err = DatasetError("is empty", path="/data/pairs.jsonl", line=7, field="chosen")
    assert str(err) == "pairs.jsonl, line 7, field 'chosen': is empty"
    assert (err.path, err.line, err.field, err.message) == ("/data/pairs.jsonl", 7, "chosen", "is empty")


def test_backend_stays_free_of_torch_and_qt():
    code = (
        "import sys, backend.data.loading, backend.data.report\n"
        # the GUI imports these at start-up; `datasets` alone costs over a second
        "assert 'datasets' not in sys.modules\n"
        "loaded = backend.data.loading.load_dataset_file('tests/fixtures/datasets/preference.jsonl')\n"
        "backend.data.report.build_report(loaded)\n"
        "bad = [m for m in ('torch', 'transformers', 'PySide6') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------- prompts only


def test_prompts_only_keeps_every_other_column_for_graders():
    loaded = load_dataset_file(fixture("prompts_only.jsonl"))
    assert loaded.format is DataFormat.PROMPT_ONLY and not loaded.conversational
    assert loaded.format.label == "Prompts only (to be answered and graded)"
    assert loaded.column_mapping == {"prompt": "problem"}
    assert loaded.dataset.column_names == ["prompt", "solution", "subset", "level", "tests", "meta"]
    rows = loaded.dataset.to_list()
    # A bare number among text answers is the same answer; a column missing from a row is None.
    assert rows[0] == {"prompt": "What is 7 * 6?", "solution": "42", "subset": "arithmetic", "level": "1",
                       "tests": ["42"], "meta": None}
    assert rows[1]["solution"] == "7" and rows[1]["tests"] == ["7", "seven"]
    assert rows[2]["level"] == "hard" and json.loads(rows[2]["meta"]) == {"source": "quiz"}
    # The blank prompt is left out with its line and field named.
    assert [(d.line, d.field, d.code) for d in loaded.dropped] == [(3, "problem", "empty")]
    assert any("Kept as they are, for graders" in n and "solution" in n for n in loaded.notes)
    assert not any(n.startswith("Ignored columns") for n in loaded.notes)


def test_prompts_only_as_chat_messages_and_string_prompts_become_user_turns():
    loaded = load_dataset_file(fixture("prompts_chat.jsonl"))
    assert loaded.format is DataFormat.PROMPT_ONLY and loaded.conversational
    assert loaded.dataset[0]["prompt"] == [{"role": "system", "content": "Answer with a number."},
                                           user("How many legs has a cat?")]
    assert loaded.dataset[2] == {"prompt": [user("How many sides has a triangle?")], "reference": "3"}
    assert [(d.line, d.field, d.reason) for d in loaded.dropped] == [(4, "prompt", "is an empty list of messages")]


@pytest.mark.parametrize("prompt_column", ["prompt", "question", "instruction", "problem", "query"])
def test_prompts_only_is_recognised_under_each_prompt_name(tmp_path, prompt_column):
    path = write_jsonl(tmp_path / "p.jsonl", [{prompt_column: "Why is the sky blue?", "id": 7}])
    loaded = load_dataset_file(path)
    assert loaded.format is DataFormat.PROMPT_ONLY
    assert loaded.dataset.to_list() == [{"prompt": "Why is the sky blue?", "id": 7}]


def test_prompts_only_is_not_guessed_when_an_answer_is_there(tmp_path):
    # An answer column makes demonstrations; a lone chosen column is a broken pair.
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "2+2?", "answer": "4"}])
    assert load_dataset_file(qa).format is DataFormat.PROMPT_COMPLETION
    half = write_jsonl(tmp_path / "half.jsonl", [{"prompt": "2+2?", "chosen": "4"}])
    with pytest.raises(DatasetError, match="'rejected'"):
        load_dataset_file(half)
    # Chosen by hand, the answer is kept as a column of its own for a grader to compare with.
    forced = load_dataset_file(qa, format="prompt_only")
    assert forced.dataset.to_list() == [{"prompt": "2+2?", "answer": "4"}]
    assert forced.supported_methods == supported_methods(DataFormat.PROMPT_ONLY)


def test_prompts_only_empty_everywhere_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "blank.jsonl", [{"prompt": ""}, {"prompt": None}, {"prompt": 5}])
    with pytest.raises(DatasetError) as err:
        load_dataset_file(path, format="prompt_only")
    text = str(err.value)
    assert text.startswith("blank.jsonl: None of the 3 rows could be used")
    assert "line 1, 'prompt': is empty" in text and "Prompts only" in text


def test_a_kept_value_unlike_its_column_drops_only_that_row(tmp_path):
    # The column's type comes from the first rows (those the format is recognised from).
    rows = [{"prompt": f"Q{i}", "points": i} for i in range(60)] + [{"prompt": "Q60", "points": "many"}]
    loaded = load_dataset_file(write_jsonl(tmp_path / "p.jsonl", rows))
    assert list(loaded.dataset["points"]) == list(range(60))
    (drop,) = loaded.dropped
    assert (drop.line, drop.field, drop.code) == (61, "points", "mixed_types")
    assert drop.reason == "is text ('many'), but the earlier rows of this column hold whole numbers"


def test_prompts_from_pairs_keeps_each_prompt_once_with_its_pair():
    pairs = load_dataset_file(fixture("preference.jsonl")).dataset
    doubled = CONVERSIONS["prompts_from_pairs"](
        __import__("datasets").concatenate_datasets([pairs, pairs]))
    assert doubled.column_names == ["prompt", "chosen", "rejected"]
    assert doubled.to_list() == pairs.to_list()
    conv = load_dataset_file(fixture("preference_conversational.jsonl")).dataset
    prompts = CONVERSIONS["prompts_from_pairs"](conv)
    assert prompts[0]["prompt"] == [{"role": "system", "content": "Be brief."}, user("Name a primary colour.")]
    assert data_kind(DataFormat.PROMPT_ONLY) == "prompts"


def test_prompts_only_preview_and_methods():
    loaded = load_dataset_file(fixture("prompts_only.jsonl"))
    assert preview_rows(loaded)[1]["tests"] == "7\nseven"
    for method in ("sft", "dpo", "orpo"):
        assert method not in loaded.supported_methods
        with pytest.raises(DatasetError, match="prompts only"):
            dataset_for_method(loaded, method)


# ------------------------------------------------------ unpaired, every shape


@pytest.mark.parametrize("good, bad", [
    (True, False), (1, 0), (1, -1), ("good", "bad"), ("thumbs up", "thumbs down"), ("Thumbs_Up", "thumbs-down"),
    ("\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}", "\N{THUMBS DOWN SIGN}"), ("true", "false"),
    ("desirable", "undesirable"), ("positive", "negative"), ("1", "0"), ("yes", "no"),
])
def test_every_way_of_writing_good_and_bad_is_read(tmp_path, good, bad):
    rows = [{"prompt": "2+2?", "completion": "4", "label": good}, {"prompt": "2+2?", "completion": "5", "label": bad}]
    loaded = load_dataset_file(write_jsonl(tmp_path / "u.jsonl", rows))
    assert loaded.format is DataFormat.UNPAIRED_PREFERENCE
    assert list(loaded.dataset["label"]) == [True, False]


def test_a_conversation_with_a_label_judges_its_last_reply_and_is_not_a_demonstration(tmp_path):
    rows = [
        {"messages": [user("Hi"), assistant("Hello!")], "label": True},
        {"messages": [{"role": "system", "content": "Be kind."}, user("2+2?"), assistant("4"), user("And 3+3?"),
                      assistant("7")], "label": "thumbs down"},
        {"messages": [user("Hi"), assistant("Yo"), user("thanks")], "label": 1},
        {"messages": [assistant("Unprompted.")], "label": 0},
    ]
    loaded = load_dataset_file(write_jsonl(tmp_path / "rated_chats.jsonl", rows))
    assert loaded.format is DataFormat.UNPAIRED_PREFERENCE and loaded.conversational
    assert loaded.column_mapping == {"messages": "messages", "label": "label"}
    assert loaded.dataset[1] == {
        "prompt": [{"role": "system", "content": "Be kind."}, user("2+2?"), assistant("4"), user("And 3+3?")],
        "completion": [assistant("7")], "label": False}
    assert [(d.line, d.field) for d in loaded.dropped] == [(3, "messages"), (4, "messages")]
    assert "goes on after the last assistant reply" in loaded.dropped[0].reason
    assert "no user turn before" in loaded.dropped[1].reason
    # Without the label the same conversations are demonstrations.
    plain = write_jsonl(tmp_path / "chats.jsonl", [{"messages": r["messages"]} for r in rows[:2]])
    assert load_dataset_file(plain).format is DataFormat.MESSAGES


def test_sharegpt_conversations_with_a_kto_tag(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Name a fruit"}, {"from": "gpt", "value": "Apple"}],
             "kto_tag": True},
            {"conversations": [{"from": "human", "value": "Name a fruit"}, {"from": "gpt", "value": "Carrot"}],
             "kto_tag": False}]
    path = tmp_path / "sharegpt_kto.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    loaded = load_dataset_file(path)
    assert loaded.format is DataFormat.UNPAIRED_PREFERENCE
    assert loaded.column_mapping == {"messages": "conversations", "label": "kto_tag"}
    assert loaded.dataset[1] == {"prompt": [user("Name a fruit")], "completion": [assistant("Carrot")],
                                 "label": False}
    assert any("ShareGPT" in n for n in loaded.notes)


def test_message_list_prompt_and_completion_with_a_label(tmp_path):
    rows = [{"prompt": [user("Hi")], "completion": [assistant("Hello!")], "label": "good"},
            {"prompt": "Hi", "completion": "Go away.", "label": "bad"}]
    loaded = load_dataset_file(write_jsonl(tmp_path / "u.jsonl", rows))
    assert loaded.format is DataFormat.UNPAIRED_PREFERENCE and loaded.conversational
    assert loaded.dataset[1] == {"prompt": [user("Hi")], "completion": [assistant("Go away.")], "label": False}


def test_picking_unpaired_by_hand_works_for_each_shape(tmp_path):
    chats = write_jsonl(tmp_path / "chats.jsonl", [
        {"dialog": [user("Hi"), assistant("Hello!")], "verdict": "thumbs up", "q": "unused"},
        {"dialog": [user("Hi"), assistant("Go away.")], "verdict": "thumbs down", "q": "unused"}])
    loaded = load_dataset_file(chats, format="unpaired_preference", column_map={"label": "verdict"})
    assert loaded.column_mapping == {"messages": "dialog", "label": "verdict"}
    assert list(loaded.dataset["label"]) == [True, False]
    # A conversation mapped by hand wins over a prompt column found by its name.
    loaded = load_dataset_file(chats, format="unpaired_preference",
                               column_map={"label": "verdict", "messages": "dialog", "prompt": "q"})
    assert loaded.dataset[0]["prompt"] == [user("Hi")]

    flat = write_jsonl(tmp_path / "flat.jsonl", [{"ask": "2+2?", "said": "4", "ok": True},
                                                 {"ask": "2+2?", "said": "5", "ok": False}])
    loaded = load_dataset_file(flat, format="unpaired_preference",
                               column_map={"prompt": "ask", "completion": "said", "label": "ok"})
    assert loaded.dataset.to_list()[1] == {"prompt": "2+2?", "completion": "5", "label": False}
    with pytest.raises(DatasetError) as err:
        load_dataset_file(flat, format="unpaired_preference", column_map={"label": "ok", "prompt": "ask"})
    assert "'completion'" in str(err.value) and "whole conversation" in str(err.value)


def test_data_inspect_names_the_unpaired_shapes_and_their_methods(tmp_path):
    rows = [{"messages": [user(f"Q{i}?"), assistant("Sure." if i % 2 else "No.")], "label": bool(i % 2)}
            for i in range(6)]
    path = write_jsonl(tmp_path / "rated.jsonl", rows)
    out = subprocess.run([sys.executable, "-m", "app.launcher", "data", "inspect", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Format    Unpaired preference (answers labelled good/bad)" in out.stdout
    assert "Use for   KTO, SFT" in out.stdout and "3 answers labelled good, 3 bad." in out.stdout
    assert "SFT trains on the answers labelled good only" in out.stdout
