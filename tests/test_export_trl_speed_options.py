"""`alignstudio export RUN --as-command` on a run whose speed options were chosen by the
studio (``speed_options: auto``): the TRL file carries what the run trained with (from its
speed_options.json), says which keys the studio chose and why, and TRL's own parser reads
it; config.yaml for the studio's runner keeps auto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from backend.cli.main import main as cli_main
from backend.runs.folder import create_run_dir
from tests.conftest import tiny_run_config

# Left at their defaults, so the speed options may choose them.
AUTO = dict(per_device_train_batch_size=4, gradient_accumulation_steps=4, gradient_checkpointing=True)


def _export(run_dir: Path, *extra: str) -> Path:
    assert cli_main(["export", str(run_dir), "--as-command", "--cpu", *extra]) == 0
    return next((run_dir / "exports").glob("command-*"))


def _recorded_plan(method: str, model_dir: Path, data: Path, lengths: list[int]):
    """A run folder with the speed_options.json the worker records, from the studio's own rules
    on a CPU where everything fits."""
    from backend.training.speed_options import choose, record

    cfg = tiny_run_config(method, model_dir, data, **AUTO)
    run_dir = create_run_dir(cfg)
    fits = SimpleNamespace(fits=True, total_mb=900.0, usable_mb=8000.0)
    plan = choose(cfg, lengths, {"kind": "cpu"}, estimate=lambda _c: fits)
    record(run_dir, plan)
    return run_dir, plan


def test_sft_file_holds_the_values_the_run_trained_with_and_says_the_studio_chose_them(
        tiny_model_dir, easy_preferences, capsys):
    from trl.scripts.sft import make_parser

    lengths = [8, 40] * 10  # uneven: padding-free batches (short enough for sdpa)
    run_dir, plan = _recorded_plan("sft", tiny_model_dir, easy_preferences, lengths)
    chosen = {c.setting: c.value for c in plan.choices}
    assert chosen["per_device_train_batch_size"] == 16 and chosen["gradient_accumulation_steps"] == 1
    assert chosen["gradient_checkpointing"] is False and chosen["padding_free"] is True
    assert chosen["score_trained_tokens_only"] is True

    folder = _export(run_dir)
    text = (folder / "trl_sft.yaml").read_text()
    _script_args, args, _model_args, _data_args = make_parser().parse_args_and_config(
        args=["--config", str(folder / "trl_sft.yaml")])
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 1)
    assert args.gradient_checkpointing is False and args.padding_free is True
    assert args.max_length is None  # TRL refuses a max_length it cannot enforce on a flattened batch
    assert args.train_sampling_strategy == "random" and args.use_liger_kernel is False

    lines = dict(line.split(":", 1) for line in text.splitlines() if not line.startswith(("#", " ", "-")))
    assert "chosen by the studio: Batch size 16, 16 x 1 instead of 4 x 4" in lines["per_device_train_batch_size"]
    assert "chosen by the studio: Gradient checkpointing off, the run fits without it" in \
        lines["gradient_checkpointing"]
    assert "chosen by the studio: Padding-free batches on, lengths vary" in lines["padding_free"]
    assert "chosen by the studio" not in lines["learning_rate"]
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert "speed_options: auto chose them when it started" in header
    # What TRL has no key for is named, not dropped silently.
    assert "Also chosen by the studio for the run, not settings of this file:" in header
    assert "Score only trained tokens: on (prompts and padding skip" in header
    # The studio's runner chooses again on its own machine.
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["speed_options"] == "auto" and config["per_device_train_batch_size"] == 4
    assert "config.yaml keeps speed_options: auto" in capsys.readouterr().out


def test_dpo_length_grouping_the_trl_command_cannot_do_is_named_in_the_header(tiny_model_dir, easy_preferences):
    from trl.scripts.dpo import make_parser

    run_dir, plan = _recorded_plan("dpo", tiny_model_dir, easy_preferences, [8, 40] * 10)
    assert {c.setting: c.value for c in plan.choices}["group_by_length"] is True
    folder = _export(run_dir)
    text = (folder / "trl_dpo.yaml").read_text()
    _script_args, args, _model_args, _data_args = make_parser().parse_args_and_config(
        args=["--config", str(folder / "trl_dpo.yaml")])
    assert args.per_device_train_batch_size == 16 and args.train_sampling_strategy == "random"
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert "not settings of this file:" in header and "Group batches by length: on (padding falls" in header
    assert "train_sampling_strategy" not in text


def test_without_a_recorded_file_the_config_is_written_as_saved(tiny_model_dir, easy_preferences):
    run_dir = create_run_dir(tiny_run_config("sft", tiny_model_dir, easy_preferences, group_by_length=True))
    text = (_export(run_dir) / "trl_sft.yaml").read_text()
    assert "chosen by the studio" not in text and "Keys marked" not in text
    keys = yaml.safe_load(text)
    assert keys["per_device_train_batch_size"] == 4 and keys["train_sampling_strategy"] == "group_by_length"


def test_a_recorded_value_the_config_refuses_is_named(tiny_model_dir, easy_preferences, capsys):
    run_dir = create_run_dir(tiny_run_config("sft", tiny_model_dir, easy_preferences))
    (run_dir / "speed_options.json").write_text(json.dumps({"mode": "auto", "choices": [
        {"setting": "per_device_train_batch_size", "label": "Batch size", "value": -3, "reason": "edited"}]}))
    assert cli_main(["export", str(run_dir), "--as-command"]) == 2
    out = capsys.readouterr().out
    assert "speed_options.json" in out and "Batch size" in out, out
    assert not (run_dir / "exports").exists() or not list((run_dir / "exports").iterdir())


@pytest.mark.slow
def test_a_real_auto_run_exports_what_it_trained_with_and_trl_trains_it(tiny_model_dir, easy_preferences,
                                                                         studio_home):
    """The worker's own speed_options.json, then `trl sft --config` for two steps offline."""
    from backend.runs.config import load_yaml
    from backend.training.client import TrainingRun

    cfg = tiny_run_config("sft", tiny_model_dir, easy_preferences, max_steps=2, **AUTO)
    run = TrainingRun.start(cfg, str(studio_home / "runs"))
    try:
        for _event in run.events():
            pass
    finally:
        run.wait(timeout=60)
        run.close()
    recorded = json.loads((run.run_dir / "speed_options.json").read_text())
    chosen = {c["setting"]: c["value"] for c in recorded["choices"]}
    assert {"per_device_train_batch_size", "gradient_checkpointing"} <= set(chosen)
    assert load_yaml(run.run_dir / "config.yaml").speed_options == "auto"

    folder = _export(run.run_dir)
    keys = yaml.safe_load((folder / "trl_sft.yaml").read_text())
    for setting in ("per_device_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
                    "padding_free"):
        if setting in chosen:
            assert keys[setting] == chosen[setting], setting
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    done = subprocess.run([str(Path(sys.executable).with_name("trl")), "sft", "--config", "trl_sft.yaml"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "trl-output" / "adapter_model.safetensors").exists()
