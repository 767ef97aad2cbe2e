"""What is checked before a run starts: the runs folder, the disk, the model's
reachability and the data against Max length. Disk space and the network are
injected, so no test fills a disk or opens a connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.runs.preflight import (GiB, MiB, adapter_bytes, check_before_training, disk_needs, max_length_problems,
                               measure_dataset, run_preflight, runs_folder_problem)
from backend.runs.config import ConfigError, default_config
from tests.conftest import tiny_run_config

ROOT = Path(__file__).resolve().parent.parent
PLENTY = lambda folder: 1000 * GiB  # noqa: E731


def write_long_prompts(path: Path, n: int = 40, repeats: int = 14) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            prompt = f"Case {i}: " + "Please read this long description carefully. " * repeats
            fh.write(json.dumps({"prompt": prompt, "chosen": " Yes, gladly.", "rejected": " No."}) + "\n")
    return path


# ---------------------------------------------------------------- runs folder
@pytest.fixture
def locked_folder(tmp_path):
    """A folder nobody may write into: chmod 0o500, or for root (who ignores modes) the
    immutable attribute, where the filesystem and the container allow setting it."""
    folder = tmp_path / "locked"
    folder.mkdir()
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("running as root, and the immutable attribute cannot be set here")
    else:
        folder.chmod(0o500)
    try:
        yield folder
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o700)


def test_read_only_runs_folder_is_refused_naming_it(locked_folder, easy_preferences):
    cfg = default_config("dpo", data_path=str(easy_preferences), output_dir=str(locked_folder / "runs"))
    problems = dict(run_preflight(cfg, free_space=PLENTY, measure_data=False))
    assert str(locked_folder) in problems["output_dir"] and "cannot be written" in problems["output_dir"]
    assert "--runs-dir" in problems["output_dir"] and "Runs folder" in problems["output_dir"]
    cfg = default_config("dpo", data_path=str(easy_preferences), output_dir=str(locked_folder))
    assert "cannot be written" in dict(run_preflight(cfg, free_space=PLENTY, measure_data=False))["output_dir"]


def test_runs_folder_below_a_file_is_refused(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    message = runs_folder_problem(blocker / "runs")
    assert message and str(blocker) in message and "is a file, not a folder" in message


def test_writable_runs_folder_passes_and_is_left_as_it_was(tmp_path):
    assert runs_folder_problem(tmp_path / "new" / "runs") is None
    assert not (tmp_path / "new").exists()  # checked, not created
    assert runs_folder_problem(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


# ------------------------------------------------------------------------ disk
def test_full_disk_is_refused_with_free_and_needed_space(tmp_path, easy_preferences):
    cfg = default_config("dpo", data_path=str(easy_preferences), output_dir=str(tmp_path / "runs"))
    problems = dict(run_preflight(cfg, free_space=lambda folder: 20 * MiB, measure_data=False))
    message = problems["output_dir"]
    assert message.startswith("Not enough free disk space")
    assert "20 MB free" in message and "needed" in message and str(tmp_path / "runs") in message
    assert "checkpoints" in message and "choose a Runs folder on another disk" in message
    assert run_preflight(cfg, free_space=PLENTY, measure_data=False) == []


def test_needed_space_follows_rank_checkpoints_and_model_size(tiny_model_dir, easy_preferences, tmp_path):
    base = tiny_run_config("dpo", tiny_model_dir, easy_preferences, save_steps=10, max_steps=1000)

    def needed(**changes):
        from backend.runs.config import replace_values

        return sum(n.bytes for n in disk_needs(replace_values(base, changes), tmp_path))

    assert needed(lora_r=16) > needed(lora_r=8)
    assert needed(save_total_limit=5) > needed(save_total_limit=1)
    assert needed(save_steps=0) < needed(save_steps=10)
    # The tiny Llama (hidden 64, 2 layers, 4 heads of 16, 2 KV heads, MLP 128) at rank 8 on all
    # linear layers: per layer 8 x [(64+64) q + (64+32) k + (64+32) v + (64+64) o + 3 x (64+128) mlp].
    from backend.training.memory_estimate import model_shape

    per_layer = 8 * (128 + 96 + 96 + 128 + 3 * 192)
    assert adapter_bytes(base, model_shape(str(tiny_model_dir))) == 2 * per_layer * 4


def test_first_use_of_a_gguf_counts_its_conversion_in_the_cache(tmp_path, monkeypatch, easy_preferences):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(cache))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"\0" * (3 * MiB))  # no readable header: sized from the file
    cfg = default_config("sft", model=str(gguf), data_path=str(easy_preferences), output_dir=str(tmp_path / "runs"))
    conversion = [n for n in disk_needs(cfg, tmp_path / "runs") if n.setting == "model"]
    assert len(conversion) == 1
    assert conversion[0].folder == cache / "models" and conversion[0].bytes == 12 * MiB
    assert "model.gguf converted to safetensors" in conversion[0].what


def test_unconverted_embedded_model_needs_room_for_its_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(tmp_path / "empty-cache"))
    needs = disk_needs(default_config("dpo"), tmp_path / "runs")
    conversion = next(n for n in needs if n.setting == "model")
    assert 0.6 * GiB < conversion.bytes < 1.2 * GiB  # 253 MB GGUF + ~540 MB bf16 folder


# --------------------------------------------------------------------- network
def test_unreachable_hub_for_an_uncached_id_is_refused(tmp_path, monkeypatch, easy_preferences):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = default_config("dpo", model="someone/some-model", data_path=str(easy_preferences),
                         output_dir=str(tmp_path / "runs"))
    probes = []

    def unreachable():
        probes.append(1)
        return "Network is unreachable"

    problems = dict(run_preflight(cfg, free_space=PLENTY, reach_hub=unreachable, measure_data=False))
    assert probes == [1]
    assert "cannot be reached (Network is unreachable)" in problems["model"]
    assert "someone/some-model" in problems["model"] and "embedded" in problems["model"]
    assert run_preflight(cfg, free_space=PLENTY, reach_hub=lambda: None, measure_data=False) == []


def test_local_models_never_probe_the_network(tiny_model_dir, easy_preferences, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, output_dir=str(tmp_path / "runs"))

    def must_not_run():
        raise AssertionError("probed the network for a local model")

    assert run_preflight(cfg, free_space=PLENTY, reach_hub=must_not_run, measure_data=False) == []


# ------------------------------------------------------------------------ data
def test_prompts_longer_than_max_length_are_refused_naming_max_length(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(tmp_path / "empty-cache"))  # no embedded tokenizer on disk
    data = write_long_prompts(tmp_path / "long.jsonl")
    cfg = default_config("dpo", data_path=str(data), max_length=64)
    report = measure_dataset(cfg)
    problems = dict(max_length_problems(cfg, report))
    message = problems["max_length"]
    assert message.startswith("Max length (tokens) is 64") and "long.jsonl" in message
    assert "(estimated)" in message  # counted as characters / 4
    assert f"about {report.suggested_max_length}" in message and "95% of the examples fit" in message
    fixed = default_config("dpo", data_path=str(data), max_length=report.suggested_max_length)
    assert max_length_problems(fixed, report) == []


def test_prompt_lengths_are_counted_with_the_models_tokenizer(tiny_model_dir, tmp_path):
    data = write_long_prompts(tmp_path / "long.jsonl", repeats=3)
    cfg = tiny_run_config("dpo", tiny_model_dir, data, max_length=32)
    report = measure_dataset(cfg)
    assert report.length_unit == "tokens"
    message = dict(max_length_problems(cfg, report))["max_length"]
    assert "(estimated)" not in message and f"{report.lengths['prompt'].median:g} tokens" in message


def test_short_prompts_and_unreadable_data_pass_the_length_check(tmp_path, easy_preferences):
    assert max_length_problems(default_config("dpo", data_path=str(easy_preferences), max_length=64),
                               measure_dataset(default_config("dpo", data_path=str(easy_preferences)))) == []
    broken = tmp_path / "broken.jsonl"
    broken.write_text("")
    # Unusable data is the worker's to report (bad_data, with its hint); the check stays quiet.
    assert measure_dataset(default_config("dpo", data_path=str(broken))) is None
    assert max_length_problems(default_config("dpo"), None) == []


# ----------------------------------------------------------------------- whole
def test_check_before_training_lists_settings_and_world_together(tmp_path):
    data = write_long_prompts(tmp_path / "long.jsonl")
    cfg = default_config("dpo", data_path=str(data), max_length=64, beta=0.0,
                         model=str(tmp_path / "missing-model"), output_dir=str(tmp_path / "runs"))
    with pytest.raises(ConfigError) as info:
        check_before_training(cfg, free_space=PLENTY)
    assert {name for name, _ in info.value.problems} == {"beta"}  # settings first: nothing else is looked at
    from backend.runs.config import replace_values

    with pytest.raises(ConfigError) as info:
        check_before_training(replace_values(cfg, {"beta": 0.1}), free_space=PLENTY)
    assert {name for name, _ in info.value.problems} == {"model", "max_length"}


def test_preflight_imports_neither_torch_nor_transformers(tmp_path, easy_preferences):
    code = ("import sys\n"
            "from backend.runs.preflight import run_preflight\n"
            "from backend.runs.config import default_config\n"
            f"cfg = default_config('dpo', data_path={str(easy_preferences)!r}, output_dir={str(tmp_path)!r})\n"
            "print(run_preflight(cfg, free_space=lambda f: 10**12))\n"
            "print([m for m in ('torch', 'transformers', 'trl') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]


# --------------------------------------------------------------------- resume
def fake_crashed_run(runs_root: Path, cfg) -> Path:
    """A run folder as a crash leaves it: settings, a few logged steps, a checkpoint."""
    from backend.core.events import RunFailed, RunStarted, TrainLog
    from backend.runs.folder import append_event, create_run_dir

    run_dir = create_run_dir(cfg, runs_root)
    append_event(run_dir, RunStarted(run_dir=str(run_dir), method=cfg.method, config={}, device={}, total_params=1,
                                     trainable_params=1, total_steps=10, train_rows=8, eval_rows=0))
    for step in (1, 2, 3):
        append_event(run_dir, TrainLog(step=step, epoch=0.1 * step, metrics={"loss": 1.0 / step}, total_steps=10))
    append_event(run_dir, RunFailed(kind="killed", message="The training worker was killed (SIGKILL)."))
    checkpoint = run_dir / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    return run_dir


def test_resume_is_refused_when_the_dataset_moved_or_the_disk_is_full(tmp_path, tiny_model_dir, easy_preferences):
    from backend.runs.preflight import resume_problems

    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences)
    run_dir = fake_crashed_run(tmp_path / "runs", cfg)
    assert resume_problems(run_dir, free_space=PLENTY) == []

    full = resume_problems(run_dir, free_space=lambda folder: 10 * MiB)
    assert [name for name, _ in full] and "Not enough free disk space" in full[0][1]

    easy_preferences.rename(easy_preferences.with_name("moved.jsonl"))
    moved = resume_problems(run_dir, free_space=PLENTY)
    assert moved == [("data_path", moved[0][1])] and "no longer there" in moved[0][1]

    assert "not a run folder" in resume_problems(tmp_path, free_space=PLENTY)[0][1]


def test_cli_resume_of_a_run_whose_data_moved_exits_2_and_starts_nothing(tmp_path, tiny_model_dir, easy_preferences,
                                                                         capsys):
    from backend.cli.main import main
    from backend.runs.folder import read_events

    run_dir = fake_crashed_run(tmp_path / "runs", tiny_run_config("dpo", tiny_model_dir, easy_preferences))
    easy_preferences.unlink()
    before = len(read_events(run_dir))
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "no longer there" in err and "No run was started" in err and "Traceback" not in err
    assert len(read_events(run_dir)) == before and not (run_dir / "worker.pid").exists()
