"""The generation protocol, load-spec resolution and exports: fast, no model, no torch."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from backend.models.adapter_loading import AdapterLoadError, resolve_load_spec
from backend.compare.export import export_compare, read_jsonl_export, summary_path_for
from backend.compare.scoring import CompareRow, ResponseScore, summarize
from backend.generation.protocol import (BatchRowReady, BatchSummaryReady, GenerateRequest, ModelReady,
                                         ProtocolError, ResponsesScored, SamplingSettings, TokenStreamed,
                                         event_from_json, request_from_dict, request_from_json)

ROOT = Path(__file__).resolve().parent.parent


def test_gui_facing_compare_modules_import_without_torch():
    code = (
        "import sys\n"
        "import backend.generation.client, backend.generation.protocol, backend.compare.scoring\n"
        "import backend.compare.export, backend.models.adapter_loading, backend.data.prompt_rendering\n"
        "bad = [m for m in ('torch', 'transformers', 'trl', 'peft', 'PySide6') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_requests_round_trip_and_bad_ones_are_refused():
    req = GenerateRequest(id="g1", prompt=[{"role": "user", "content": "hi"}], side="both",
                          sampling={"greedy": True, "max_new_tokens": 8})
    again = request_from_json(req.to_json())
    assert again == req
    with pytest.raises(ProtocolError, match="unknown op"):
        request_from_dict({"op": "dance"})
    with pytest.raises(ProtocolError, match="side"):
        request_from_dict({"op": "generate", "id": "x", "prompt": "p", "side": "left"})
    with pytest.raises(ProtocolError, match="unknown field"):
        request_from_dict({"op": "generate", "id": "x", "promt": "p"})
    with pytest.raises(ProtocolError, match="not valid JSON"):
        request_from_json("{nope")


def test_sampling_settings_validate_and_carry_form_metadata():
    s = SamplingSettings.from_dict({"temperature": "0.5", "top_k": 10, "seed": 3})
    assert s.temperature == 0.5 and s.top_k == 10 and s.seed == 3 and s.max_new_tokens == 128
    assert SamplingSettings.from_dict(None) == SamplingSettings()
    with pytest.raises(ProtocolError, match="Top-p"):
        SamplingSettings.from_dict({"top_p": 1.5})
    with pytest.raises(ProtocolError, match="unknown sampling"):
        SamplingSettings.from_dict({"temprature": 1.0})
    assert SamplingSettings.from_dict({"max_new_tokens": 5, "min_new_tokens": 50}).min_new_tokens == 5
    import dataclasses

    meta = {f.name: f.metadata for f in dataclasses.fields(SamplingSettings)}
    assert meta["temperature"]["label"] == "Temperature" and meta["top_p"]["max"] == 1.0


def test_events_round_trip_with_nested_rows_and_nan():
    row = CompareRow(index=2, prompt="p <b>", prompt_source=[{"role": "user", "content": "p <b>"}],
                     base_answer="a", aligned_answer="b", base_tokens=3, aligned_tokens=4, base_finish="stop",
                     aligned_finish="length", chosen_logp_base=math.nan, rejected_logp_base=-1.0)
    ev = event_from_json(BatchRowReady(request_id="b1", row=row, total=9).to_json())
    assert isinstance(ev, BatchRowReady) and ev.total == 9
    assert ev.row.prompt_source == row.prompt_source and math.isnan(ev.row.chosen_logp_base)
    assert ev.row.base_prefers_chosen is None

    summary = summarize([row], beta=0.2, source="rows")
    ev = event_from_json(BatchSummaryReady(request_id="b1", summary=summary, headline="h").to_json())
    assert ev.summary.beta == 0.2 and ev.summary.n_rows == 1

    scored = ResponsesScored(request_id="s", beta=0.1,
                             results=[ResponseScore.from_sums(0, "base", 2, -1.0, -0.5, 0.1)])
    ev = event_from_json(scored.to_json())
    assert ev.by_label()["base"].implicit_reward == pytest.approx(0.05)
    tok = event_from_json(TokenStreamed(request_id="g", side="aligned", text="é", index=4).to_json())
    assert tok.text == "é" and tok.side == "aligned"
    ready = event_from_json(ModelReady(request_id="l", adapter="/a", beta=0.3).to_json())
    assert ready.has_adapter and ready.beta == 0.3


def _fake_run(tmp_path: Path, with_adapter=True, **cfg_values) -> Path:
    from backend.runs.config import default_config, save_yaml

    run = tmp_path / "run"
    run.mkdir()
    save_yaml(default_config("dpo", model="some/model", quantization="8bit", beta=0.25, **cfg_values),
              run / "config.yaml")
    if with_adapter:
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    return run


def test_load_spec_from_run_adapter_and_checkpoint(tmp_path):
    run = _fake_run(tmp_path)
    spec = resolve_load_spec(run_dir=run)
    assert spec.model == "some/model" and spec.quantization == "8bit" and spec.beta == 0.25
    assert spec.method == "dpo" and spec.adapter_dir.endswith("adapter") and spec.run_dir == str(run.resolve())
    assert resolve_load_spec(run_dir=run, quantization="none", beta=0.5).beta == 0.5

    ckpt = run / "checkpoints" / "checkpoint-10"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "ignored"}))
    spec = resolve_load_spec(adapter_dir=ckpt)
    assert spec.run_dir == str(run.resolve()) and spec.model == "some/model" and spec.beta == 0.25

    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "org/base"}))
    spec = resolve_load_spec(adapter_dir=loose)
    assert spec.model == "org/base" and spec.run_dir == "" and spec.beta == 0.1 and spec.quantization == "4bit"
    assert spec.base_key == resolve_load_spec(adapter_dir=loose, model="org/base").base_key

    base_only = resolve_load_spec(model="org/base")
    assert base_only.adapter_dir == ""

    # A damaged config is named with its file, not left to PEFT's bare KeyError: 'peft_type'.
    (loose / "adapter_config.json").write_text('{"base_model_name_or_path": "org/base"}')
    with pytest.raises(AdapterLoadError, match=r"loose/adapter_config.json names no peft_type"):
        resolve_load_spec(adapter_dir=loose)
    (loose / "adapter_config.json").write_text('{"peft_type": "LO')
    with pytest.raises(AdapterLoadError, match=r"loose/adapter_config.json is not valid JSON"):
        resolve_load_spec(adapter_dir=loose)


def test_load_spec_errors_say_what_to_do(tmp_path):
    run = _fake_run(tmp_path, with_adapter=False)
    with pytest.raises(AdapterLoadError, match="no saved adapter"):
        resolve_load_spec(run_dir=run)
    with pytest.raises(AdapterLoadError, match="not a run folder"):
        resolve_load_spec(run_dir=tmp_path)
    with pytest.raises(AdapterLoadError, match="not a LoRA adapter"):
        resolve_load_spec(adapter_dir=tmp_path)
    with pytest.raises(AdapterLoadError, match="Quantization"):
        resolve_load_spec(model="m", quantization="3bit")
    with pytest.raises(AdapterLoadError, match="Pick a run"):
        resolve_load_spec()


def _rows():
    tricky = "<script>alert('x')</script> & \"quotes\", commas\nand lines"
    rows = []
    for i in range(3):
        row = CompareRow(index=i, prompt=f"{tricky} #{i}", base_answer=f"base {i}, <i>", aligned_answer=f"aligned {i}",
                         base_tokens=4 + i, aligned_tokens=6 + i, base_finish="stop", aligned_finish="stop",
                         chosen="good & kind", rejected="rude <no>")
        row.set_pair_scores(ResponseScore.from_sums(0, "chosen", 4, -10.0, -6.0, 0.1),
                            ResponseScore.from_sums(1, "rejected", 4, -9.0, -12.0, 0.1))
        row.set_answer_scores(ResponseScore.from_sums(0, "base", 4, -5.0, -5.5, 0.1),
                              ResponseScore.from_sums(1, "aligned", 6, -8.0, -6.0, 0.1))
        rows.append(row)
    return rows, tricky


def test_exports_hold_the_rows_and_escape_text(tmp_path):
    rows, tricky = _rows()
    summary = summarize(rows, beta=0.1, source="heldout", model_label="tiny", run_dir=str(tmp_path / "my-run"))

    written = export_compare(tmp_path / "out" / "table.csv", rows, summary)
    assert written == [tmp_path / "out" / "table.csv", summary_path_for(tmp_path / "out" / "table.csv")]
    with open(written[0], newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3 and table[1]["prompt"] == f"{tricky} #1"
    assert table[2]["aligned_answer"] == "aligned 2" and table[0]["reward_prefers_chosen"] == "True"
    assert float(table[0]["chosen_reward"]) == pytest.approx(0.4)
    with open(written[1], newline="", encoding="utf-8") as fh:
        pairs = dict(csv.reader(fh))
    assert float(pairs["aligned_accuracy"]) == 1.0 and float(pairs["base_accuracy"]) == 0.0
    assert "held-out pairs" in pairs["headline"]

    (jsonl,) = export_compare(tmp_path / "out" / "table.jsonl", rows, summary)
    lines = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [line["type"] for line in lines] == ["summary", "row", "row", "row"]
    back_summary, back_rows = read_jsonl_export(jsonl)
    assert back_summary == summary and [r.prompt for r in back_rows] == [r.prompt for r in rows]

    (page,) = export_compare(tmp_path / "out" / "table.html", rows, summary)
    text = page.read_text(encoding="utf-8")
    assert tricky not in text and "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in text
    assert "rude &lt;no&gt;" in text and "base 0, &lt;i&gt;" in text
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert text.count("<tr>") == 4 and "my-run" in text and "100%" in text

    with pytest.raises(ValueError, match="Export as"):
        export_compare(tmp_path / "out" / "table.xlsx", rows, summary)
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == []
