"""A corpus of broken datasets: every one gets a clear outcome, never a crash.

Each entry is a realistic mistake and what must come of it: either the file
is refused with a DatasetError whose text names the file (and the line and
field where there is one), says what is wrong and what to do; or the usable
rows load and every row left out is named by line, field and reason.

Small text files are committed in tests/fixtures/malformed. Binary files,
big ones and files that change while they are read are made here, in
tmp_path, so the repository holds no large or binary fixtures.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.cli import main as cli
from backend.data import readers as dataset_readers
from backend.data.formats import DatasetError
from backend.data.loading import load_dataset_file

MALFORMED = Path(__file__).parent / "fixtures" / "malformed"


@dataclass(frozen=True)
class Refused:
    """DatasetError; its text contains every phrase in ``says`` (what is wrong, what to do)."""

    says: tuple[str, ...]
    line: int | None = None
    field: str | None = None


@dataclass(frozen=True)
class Loads:
    """``kept`` rows load; ``dropped`` lists each row left out as (line, field, reason code);
    the reasons and notes together contain every phrase in ``says``."""

    kept: int
    dropped: tuple[tuple[int, str | None, str], ...] = ()
    says: tuple[str, ...] = ()


CORPUS = {
    # --- JSON Lines
    "invalid_json_lines.jsonl": Loads(
        4, ((3, None, "invalid_json"), (5, None, "invalid_json")), ("expected a comma at column 29",)
    ),
    "truncated_last_line.jsonl": Loads(3, ((4, None, "invalid_json"),), ("is cut off", "copied completely")),
    "utf8_bom.jsonl": Loads(3),
    "windows1252.jsonl": Refused(("not UTF-8", "0xe9", "Windows-1252", "save it as UTF-8"), line=2),
    "utf16_bom.jsonl": Refused(("saved as UTF-16", "Save it as UTF-8")),
    "lines_are_arrays.jsonl": Refused(
        ("None of the 3 rows", "line 1: is a list [...], not an object", 'such as {"prompt"')
    ),
    "several_objects_per_line.jsonl": Loads(2, ((2, None, "invalid_json"),), ("more than one JSON object",)),
    "mixed_json_and_csv_lines.jsonl": Loads(
        3, ((3, None, "invalid_json"), (4, None, "invalid_json")), ("it starts with a string",)
    ),
    "prose.jsonl": Refused(("None of the 3 rows", "not valid JSON: expected a value", "one complete JSON object")),
    "damaged_zeros.jsonl": Loads(200, ((201, None, "invalid_json"),), ("binary zeros", "damaged")),
    "deeply_nested.jsonl": Loads(2, ((2, None, "invalid_json"),), ("nested too deeply",)),
    "one_huge_line.jsonl": Loads(4, ((3, None, "too_long"),), ("is 50.0 MB long",)),
    "no_line_breaks.jsonl": Refused(("The only row could not be used", "line 1", "line breaks were lost")),
    # --- JSON documents
    "really_jsonl.json": Loads(3, says=("read as JSON Lines",)),
    "trailing_comma.json": Refused(("comma after the last item", "Remove that comma"), line=3),
    "array_missing_comma.json": Refused(("not valid JSON", "expected a comma", "JSON Lines"), line=4),
    "truncated_array.json": Refused(("no closing quote", "add the missing quote"), line=3),
    "single_object.json": Refused(("no list of rows", "Put the rows in a list")),
    "sharegpt_unknown_from.json": Loads(
        2, ((2, "conversations", "bad_messages"), (4, "conversations", "bad_messages")), ("'storyteller'", "'ai'")
    ),
    # --- values and columns
    "nested_objects.jsonl": Loads(2, ((2, "chosen", "not_text"), (4, "prompt", "not_text")), ("is an object",)),
    "list_as_text.jsonl": Loads(2, ((2, "chosen", "not_text"),), ("is a list",)),
    "number_null_bool.jsonl": Loads(
        2,
        ((2, "prompt", "not_text"), (3, "chosen", "missing"), (4, "rejected", "not_text"), (5, "chosen", "missing")),
        ("is a number (42)", "is empty (null)", "is true/false", "is empty (NaN)"),
    ),
    "empty_prompt.jsonl": Loads(2, ((2, "prompt", "empty"),)),
    "whitespace_answers.jsonl": Loads(2, ((2, "chosen", "empty"), (3, "rejected", "empty"))),
    "chosen_equals_rejected.jsonl": Refused(
        ("None of the 3 rows", "chosen identical to rejected: 3", "line 1, 'rejected'", "differs from the rejected")
    ),
    "missing_rejected_everywhere.jsonl": Refused(
        ("needs a column 'rejected'", "Columns found: prompt, chosen", "map it by hand"), field="rejected"
    ),
    "misnamed_columns.jsonl": Loads(
        2, says=("Column 'Prompt ' is used as 'prompt'", "Column 'chosen_response' is used as 'chosen'")
    ),
    "unknown_column_names.jsonl": Refused(
        ("could not tell", "instruction_text, answer_a, answer_b", "map the columns by hand")
    ),
    "mixed_preference_and_sft.jsonl": Loads(
        2, ((2, "chosen", "missing"), (4, "chosen", "missing")), ("this row has prompt, completion",)
    ),
    "messages_bad_roles.jsonl": Loads(
        2,
        ((2, "messages", "bad_messages"), (3, "messages", "bad_messages"), (4, "messages", "bad_messages")),
        ("unknown speaker 'narrator'", "no 'role'", "no text"),
    ),
    "messages_no_assistant.jsonl": Loads(
        1, ((1, "messages", "bad_messages"), (3, "messages", "bad_messages")), ("no assistant reply",)
    ),
    "kto_bad_labels.jsonl": Loads(3, ((2, "label", "bad_label"), (4, "label", "bad_label")), ("'maybe'",)),
    # --- CSV
    "unclosed_quote.csv": Loads(4, ((4, "prompt", "bad_csv_row"),), ("not closed on this line",)),
    "unclosed_quote_at_end.csv": Loads(2, ((4, "completion", "bad_csv_row"),), ("not closed on this line",)),
    "ragged_rows.csv": Loads(
        2, ((3, None, "bad_csv_row"), (4, "rejected", "bad_csv_row")), ("has 5 values", "needs quotes")
    ),
    "header_only.csv": Refused(("header (prompt, completion) but no rows",), line=1),
    "duplicate_header.csv": Refused(("appears twice", "its own name"), line=1, field="prompt"),
    "tab_separated.csv": Loads(2, says=("separated by tabs",)),
    "excel_semicolon.csv": Loads(3, says=("separated by semicolons",)),
    "latin1.csv": Refused(("not UTF-8", "0xbf", "save it as UTF-8"), line=3),
    "utf16_no_bom.csv": Refused(("saved as UTF-16", "Save it as UTF-8")),
    # --- not a dataset at all
    "empty.jsonl": Refused(("empty (0 bytes)",)),
    "whitespace_only.jsonl": Refused(("only spaces and blank lines",)),
    "html_error_page.jsonl": Refused(("web page (HTML)", "Download the raw file")),
    "git_lfs_pointer.jsonl": Refused(("Git LFS pointer", "git lfs pull")),
    "notes.txt": Refused(("cannot read '.txt'", "Supported are")),
    "picture.jsonl": Refused(("PNG image", "binary data")),
    "archive.jsonl": Refused(("ZIP archive (it holds data.jsonl)", "Unpack it")),
    "workbook.xlsx": Refused(("spreadsheet workbook", "CSV UTF-8")),
    "rows.jsonl.gz": Loads(3),  # unpacked on the fly, as `datasets` reads it
    "wrong_schema.parquet": Refused(("None of the 3 rows", "row 1, 'chosen'", "is an object")),
    "truncated.parquet": Refused(("could not be read as Parquet", "damaged or incomplete")),
    "lfs_pointer.parquet": Refused(("Git LFS pointer",)),
    # --- folders and the file system
    "folder_without_data": Refused(("holds no dataset",)),
    "folder_with_several_files": Loads(2, says=("Loaded 2 files as the train split (part-a.jsonl, part-b.jsonl)",)),
    "symlink_loop.jsonl": Refused(("loop of links", "Point the link at the real file")),
    "dangling_link.jsonl": Refused(("which does not exist", "Load the real file")),
    "unreadable.jsonl": Refused(("not allowed to read", "permissions")),
    "disk_error.jsonl": Refused(("Reading the file failed", "Input/output error", "copy it"), line=3),
    "appended_while_read.jsonl": Refused(("changed while it was being read", "Wait until")),
    "truncated_while_read.jsonl": Refused(("changed while it was being read", "Wait until")),
}


# ------------------------------------------------------------ generated files


def _pairs(n: int, start: int = 0) -> list[str]:
    return [
        json.dumps({"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}."})
        for i in range(start, start + n)
    ]


def _lines(rows: list[str]) -> bytes:
    return "".join(r + "\n" for r in rows).encode()


def _picture(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00")


def _archive(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.jsonl", _lines(_pairs(3)))


def _workbook(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")


def _damaged_zeros(path: Path) -> None:
    # A crash while writing leaves the end of a file full of zero bytes.
    path.write_bytes(_lines(_pairs(200)) + b"\x00" * 4096)


def _deeply_nested(path: Path) -> None:
    path.write_bytes(_lines([_pairs(1)[0], "[" * 100_000 + "]" * 100_000, _pairs(1, 1)[0]]))


def _one_huge_line(path: Path) -> None:
    with path.open("wb") as fh:
        fh.write(_lines(_pairs(2)))
        fh.write(b'{"prompt": "Summarise this.", "chosen": "')
        fh.write(b"x" * (50 * 2**20))
        fh.write(b'", "rejected": "No."}\n')
        fh.write(_lines(_pairs(2, 2)))


def _no_line_breaks(path: Path) -> None:
    # Line breaks lost in a copy: 20 MB of objects one after another.
    row = _pairs(1)[0].encode()
    path.write_bytes(row * (20 * 2**20 // len(row) + 1))


def _wrong_schema_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "prompt": ["A?", "B?", "C?"],
        "chosen": [{"text": "Yes.", "score": 1}, {"text": "Sure.", "score": 2}, {"text": "Ok.", "score": 3}],
        "rejected": [1, 2, 3],
    })
    pq.write_table(table, path)


def _truncated_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["A?"] * 100, "completion": ["Yes."] * 100}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _unreadable(path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file, whatever its permissions")
    path.write_bytes(_lines(_pairs(2)))
    path.chmod(0)


class _FailingDisk(io.BufferedReader):
    """A file whose reads fail with an I/O error past its second line, like a
    USB stick pulled out during the read."""

    fail_at = 0

    def readline(self, size=-1):
        if self.tell() >= self.fail_at:
            raise OSError(errno.EIO, "Input/output error")
        return super().readline(size)


def _disk_error(path: Path, monkeypatch) -> None:
    path.write_bytes(_lines(_pairs(5)))
    _FailingDisk.fail_at = len(_lines(_pairs(2)))
    monkeypatch.setattr(dataset_readers, "open", lambda p, mode: _FailingDisk(io.FileIO(p, "rb")), raising=False)


def _changing(change):
    """A file that ``change`` alters once the load has read its first row (the
    loader reports progress before handing on the first row)."""

    def build(path: Path) -> dict:
        path.write_bytes(_lines(_pairs(20)))
        changed = []

        def progress(done, total):
            if not changed:
                changed.append(True)
                change(path)

        return {"progress": progress}

    return build


def _append(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(_lines(_pairs(5, 100)))


def _truncate(path: Path) -> None:
    os.truncate(path, 100)


GENERATED = {
    "utf16_bom.jsonl": lambda p: p.write_bytes("\n".join(_pairs(2)).encode("utf-16")),
    "utf16_no_bom.csv": lambda p: p.write_bytes("prompt,completion\nHi?,Hello.\n".encode("utf-16-le")),
    "damaged_zeros.jsonl": _damaged_zeros,
    "deeply_nested.jsonl": _deeply_nested,
    "one_huge_line.jsonl": _one_huge_line,
    "no_line_breaks.jsonl": _no_line_breaks,
    "picture.jsonl": _picture,
    "archive.jsonl": _archive,
    "workbook.xlsx": _workbook,
    "rows.jsonl.gz": lambda p: p.write_bytes(gzip.compress(_lines(_pairs(3)))),
    "wrong_schema.parquet": _wrong_schema_parquet,
    "truncated.parquet": _truncated_parquet,
    "lfs_pointer.parquet": lambda p: p.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 52428800\n"
    ),
    "symlink_loop.jsonl": lambda p: p.symlink_to(p.name),
    "dangling_link.jsonl": lambda p: p.symlink_to(p.parent / "moved_away.jsonl"),
    "unreadable.jsonl": _unreadable,
    "disk_error.jsonl": _disk_error,
    "appended_while_read.jsonl": _changing(_append),
    "truncated_while_read.jsonl": _changing(_truncate),
}


@pytest.fixture
def corpus_file(tmp_path, monkeypatch):
    """(path, extra load_dataset_file arguments) for a corpus entry."""

    def make(name: str) -> tuple[Path, dict]:
        build = GENERATED.get(name)
        if build is None:
            return MALFORMED / name, {}
        path = tmp_path / name
        extra = build(path, monkeypatch) if build is _disk_error else build(path)
        return path, extra if isinstance(extra, dict) else {}

    return make


def test_the_corpus_is_complete():
    committed = {p.name for p in MALFORMED.iterdir()}
    assert committed | set(GENERATED) == set(CORPUS)
    assert not committed & set(GENERATED)
    assert len(CORPUS) >= 30


# ---------------------------------------------------------------- the outcomes


@pytest.mark.parametrize("name", list(CORPUS))
def test_every_broken_file_gets_a_clear_outcome(name, corpus_file):
    expected = CORPUS[name]
    path, extra = corpus_file(name)
    if isinstance(expected, Refused):
        with pytest.raises(DatasetError) as caught:  # anything else escaping fails the test
            load_dataset_file(path, **extra)
        _assert_refusal(caught.value, path, expected)
        return
    loaded = load_dataset_file(path, **extra)
    assert loaded.rows_kept == len(loaded.dataset) == expected.kept
    assert [(d.line, d.field, d.code) for d in loaded.dropped] == list(expected.dropped)
    assert loaded.rows_total == expected.kept + len(expected.dropped)
    assert all(d.reason for d in loaded.dropped)
    told = " ".join([d.reason for d in loaded.dropped] + loaded.notes)
    for phrase in expected.says:
        assert phrase in told


def _assert_refusal(error: DatasetError, path: Path, expected: Refused) -> None:
    text = str(error)
    assert type(error) is DatasetError
    assert text.startswith(path.name), text
    assert (error.line, error.field) == (expected.line, expected.field), text
    if expected.line is not None:
        assert f"line {expected.line}" in text
    if expected.field is not None:
        assert f"field '{expected.field}'" in text
    for phrase in expected.says:
        assert phrase in text
    assert "Traceback" not in text and "Error:" not in text


# ------------------------------------------------------------------- the CLI


def _cli_cases():
    return [name for name, expected in CORPUS.items()
            if not name.endswith("_while_read.jsonl")]  # these need a change in the middle of a read


@pytest.mark.parametrize("name", _cli_cases())
def test_cli_inspect_prints_the_message_or_the_dropped_rows(name, corpus_file, capsys):
    expected = CORPUS[name]
    path, _ = corpus_file(name)
    code = cli.main(["data", "inspect", str(path), "--tokenizer", ""])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if isinstance(expected, Refused):
        assert code != 0
        assert err.startswith(f"error: {path.name}")
        for phrase in expected.says:
            assert phrase in err
        assert out == ""
        return
    assert code == 0 and err == ""
    assert f"{expected.kept} kept, {len(expected.dropped)} dropped" in out
    for line, field, _code in expected.dropped:
        assert f"line {line}" in out or f"row {line}" in out
        if field:
            assert f"[{field}]" in out
