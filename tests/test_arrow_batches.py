"""The loader's rows become Arrow without pandas, exactly as ``RecordBatch.from_pylist`` makes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from backend.data.arrow_batches import record_batch

ROOT = Path(__file__).resolve().parent.parent
TEXT = pa.string()
MESSAGES = pa.list_(pa.struct([("role", TEXT), ("content", TEXT)]))


def _pairs(n: int) -> list[dict]:
    return [{"prompt": f"Question {i} — é ✓ 🙂\n\"quoted\"", "chosen": "good\x00" * (i % 3), "rejected": ""}
            for i in range(n)]


def _chats(n: int) -> list[dict]:
    return [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i} 🙂",
                                                                   "name": "ignored by both"}],
             "completion": [] if i % 4 == 0 else [{"role": "assistant", "content": "a" * i}],
             "label": i % 3 == 0}
            for i in range(n)]


CASES = {
    "text pairs": (_pairs(1000), pa.schema([("prompt", TEXT), ("chosen", TEXT), ("rejected", TEXT)])),
    "chat, unpaired with labels": (_chats(37), pa.schema([("prompt", MESSAGES), ("completion", MESSAGES),
                                                          ("label", pa.bool_())])),
    "messages": ([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 9,
                 pa.schema([("messages", MESSAGES)])),
    "prompts with numbers": ([{"prompt": "p", "answer": i, "score": i / 7, "ok": True} for i in range(-3, 20)],
                             pa.schema([("prompt", TEXT), ("answer", pa.int64()), ("score", pa.float64()),
                                        ("ok", pa.bool_())])),
    # What the fallback takes: nulls, a missing key, a list column, a float column holding an int.
    "nulls and odd values": ([{"prompt": "p", "chosen": None, "rejected": "r"}, {"prompt": "q", "rejected": "s"}],
                             pa.schema([("prompt", TEXT), ("chosen", TEXT), ("rejected", TEXT)])),
    "message without content": ([{"messages": [{"role": "user"}]}], pa.schema([("messages", MESSAGES)])),
    "list column": ([{"prompt": "p", "tags": ["a", "b"]}, {"prompt": "q", "tags": []}],
                    pa.schema([("prompt", TEXT), ("tags", pa.list_(TEXT))])),
    "int in a float column": ([{"prompt": "p", "score": 3}], pa.schema([("prompt", TEXT), ("score", pa.float64())])),
    "no rows": ([], pa.schema([("prompt", TEXT), ("label", pa.bool_())])),
}


def _in_a_fresh_interpreter(code: str) -> None:
    """Run ``code`` where nothing is imported yet; it prints "ok" when its checks pass."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("name", list(CASES))
def test_same_batch_as_from_pylist(name):
    rows, schema = CASES[name]
    batch = record_batch(rows, schema)
    batch.validate(full=True)
    assert batch.schema == schema
    assert batch.equals(pa.RecordBatch.from_pylist(rows, schema=schema))
    assert batch.to_pylist() == pa.RecordBatch.from_pylist(rows, schema=schema).to_pylist()


@pytest.mark.parametrize("rows, schema", [
    ([{"prompt": "a\ud800"}], pa.schema([("prompt", TEXT)])),  # a lone surrogate from a JSON escape
    ([{"prompt": 5}], pa.schema([("prompt", TEXT)])),
    ([{"n": 2**70}], pa.schema([("n", pa.int64())])),
    ([{"messages": "not a list"}], pa.schema([("messages", MESSAGES)])),
])
def test_bad_values_fail_as_from_pylist_fails(rows, schema):
    with pytest.raises(Exception) as expected:
        pa.RecordBatch.from_pylist(rows, schema=schema)
    with pytest.raises(type(expected.value)):
        record_batch(rows, schema)


def test_loading_and_reporting_the_demo_imports_neither_pandas_nor_datasets():
    """pyarrow imports pandas on its first conversion of Python values (0.1-0.7 s holding the GIL,
    between the window appearing and its report); `datasets` costs over a second more. The demo's
    load, report, preview and the first rows Compare offers use neither."""
    code = (
        "import sys\n"
        "from backend.cli.main import DEMO_DATA\n"
        "from backend.data.loading import head_rows, load_dataset_file, preview_rows\n"
        "from backend.data.report import build_report, format_report_text\n"
        "loaded = load_dataset_file(DEMO_DATA)\n"
        "text = format_report_text(build_report(loaded))\n"
        "rows, first = preview_rows(loaded, 50), head_rows(loaded, 40)\n"
        "assert loaded.rows_kept > 300 and len(rows) == 50 and len(first) == 40 and 'rows' in text\n"
        "heavy = [m for m in ('pandas', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert first == loaded.dataset.select(range(40)).to_list()  # what Compare read before\n"
        "print('ok')\n"
    )
    _in_a_fresh_interpreter(code)


def test_plain_columns_are_laid_out_without_pandas():
    """Text, chat messages, labels and numbers take the pandas-free path (the fallback would import it)."""
    code = (
        "import sys\n"
        "from tests.test_arrow_batches import CASES\n"
        "from backend.data.arrow_batches import record_batch\n"
        "for name in ('text pairs', 'chat, unpaired with labels', 'messages', 'prompts with numbers'):\n"
        "    record_batch(*CASES[name])\n"
        "    assert 'pandas' not in sys.modules, name\n"
        "record_batch(*CASES['list column'])\n"
        "assert 'pandas' in sys.modules  # the fallback: pyarrow's own conversion\n"
        "print('ok')\n"
    )
    _in_a_fresh_interpreter(code)
