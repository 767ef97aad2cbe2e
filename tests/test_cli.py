"""The headless CLI, run as a user would run it: a subprocess with arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo" / "demo_preferences.jsonl"


def cli(*args, env_home: Path, timeout=300):
    import os

    env = dict(os.environ, ALIGNSTUDIO_HOME=str(env_home))
    return subprocess.run([sys.executable, "-m", "app.launcher", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_train_prints_progress_and_saves_adapter(tiny_model_dir, easy_preferences, studio_home):
    out = cli("train", "--method", "orpo", "--data", str(easy_preferences), "--model", str(tiny_model_dir),
              "--steps", "3", "--batch-size", "4", "--max-length", "64", "--lr", "1e-3",
              "--set", "gradient_accumulation_steps=1", "--set", "gradient_checkpointing=false",
              "--set", "eval_fraction=0", "--set", "save_steps=0", env_home=studio_home)
    assert out.returncode == 0, out.stderr
    assert "3/3" in out.stdout and "log_odds_ratio=" in out.stdout
    assert "Finished at step 3/3" in out.stdout
    adapter = Path(out.stdout.split("Adapter: ")[1].split()[0])
    assert (adapter / "adapter_config.json").exists()
    # The saved config reproduces the run.
    from backend.runs.config import load_yaml

    cfg = load_yaml(adapter.parent / "config.yaml")
    assert cfg.method == "orpo" and cfg.max_steps == 3 and cfg.learning_rate == 1e-3

    listing = cli("runs", env_home=studio_home)
    assert "ORPO" in listing.stdout and "completed" in listing.stdout


def test_bad_setting_exits_nonzero_naming_the_field(studio_home):
    out = cli("train", "--data", str(DEMO), "--set", "beta=-1", env_home=studio_home, timeout=60)
    assert out.returncode == 2
    assert "beta" in out.stderr and "between" in out.stderr
    out = cli("train", "--data", str(DEMO), "--set", "no_such_thing=1", env_home=studio_home, timeout=60)
    assert out.returncode == 2 and "no_such_thing" in out.stderr


def test_train_with_unusable_data_fails_with_message(tmp_path, studio_home, tiny_model_dir):
    bad = tmp_path / "empty.jsonl"
    bad.write_text("")
    out = cli("train", "--data", str(bad), "--model", str(tiny_model_dir), "--steps", "1",
              env_home=studio_home, timeout=120)
    assert out.returncode == 1
    assert "bad_data" in out.stderr and "empty.jsonl" in out.stderr


def test_data_inspect_reports_format_and_lengths(studio_home):
    out = cli("data", "inspect", str(DEMO), "--json", env_home=studio_home, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["format"] == "preference" and report["rows_kept"] == 400
    assert "dpo" in report["supported_methods"]
    text = cli("data", "inspect", str(DEMO), env_home=studio_home, timeout=120)
    assert text.returncode == 0 and "400" in text.stdout


def test_data_inspect_on_missing_file_is_an_error(tmp_path, studio_home):
    out = cli("data", "inspect", str(tmp_path / "nope.jsonl"), env_home=studio_home, timeout=60)
    assert out.returncode == 1 and "nope.jsonl" in out.stderr


def test_headless_commands_never_import_qt():
    code = ("import sys; from app.launcher import main; main(['settings', 'dpo']);"
            "assert 'PySide6' not in sys.modules and 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "beta = 0.1" in out.stdout


def _no_run_folder_anywhere(*roots: Path) -> bool:
    return all(not root.exists() or not any(root.rglob("config.yaml")) for root in roots)


def test_every_problem_is_printed_with_its_label_before_anything_starts(tmp_path, studio_home):
    """Contradictory and out-of-range settings, a pickle-only model, an unusable runs folder
    and prompts longer than Max length: all reported at once, exit 2, no traceback, no run folder."""
    with (tmp_path / "long.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(30):
            fh.write(json.dumps({"prompt": f"Case {i}: " + "A long description of the problem. " * 16,
                                 "chosen": " Yes.", "rejected": " No."}) + "\n")
    config = tmp_path / "from_another_tool.yaml"
    config.write_text("method: dpo\ndata_path: long.jsonl\nload_in_4bit: true\nload_in_8bit: true\n"
                      "beta: 0\nlerning_rate: 1.0e-5\nmax_length: 64\n")
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "pytorch_model.bin").write_bytes(b"\0")
    (model / "tokenizer.json").write_text("{}")
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    out = cli("train", "--config", str(config), "--model", str(model), "--runs-dir", str(blocker / "runs"),
              env_home=studio_home, timeout=120)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 6, out.stderr
    text = out.stderr
    assert "both true" in text and "[load_in_4bit, load_in_8bit]" in text
    assert "Beta must be above 0" in text and "[beta]" in text
    assert "did you mean 'learning_rate'" in text
    assert "Model: The model in" in text and "pickle" in text and "--allow-pickle-weights" in text
    assert "Runs folder: The runs folder" in text and "is a file, not a folder" in text
    assert "Max length (tokens) is 64" in text and "long.jsonl" in text and "[max_length]" in text
    assert "No run was started." in text and "Traceback" not in text
    assert out.stdout == ""
    assert _no_run_folder_anywhere(studio_home, tmp_path)


def test_uncached_hub_id_offline_is_refused_before_a_run_folder_exists(tmp_path, studio_home):
    out = cli("train", "--data", str(DEMO), "--model", "someone/not-downloaded", "--runs-dir",
              str(tmp_path / "runs"), env_home=studio_home, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "someone/not-downloaded" in out.stderr and "offline" in out.stderr and "[model]" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() and _no_run_folder_anywhere(studio_home)


def test_methods_lists_every_registered_method_with_its_group_and_data(studio_home):
    from backend.methods import all_methods

    out = cli("methods", env_home=studio_home, timeout=60)
    assert out.returncode == 0, out.stderr
    for spec in all_methods():
        assert f"{spec.group}:" in out.stdout and spec.title in out.stdout and spec.data.needs in out.stdout
    train_help = cli("train", "--help", env_home=studio_home, timeout=60).stdout
    assert "{" + ",".join(s.key for s in all_methods()) + "}" in train_help


def test_the_command_line_prints_the_notes_the_window_shows(capsys):
    """The diagnostics live in the engine: a headless run gets the same notes, each once."""
    from backend.cli.main import _print_notes
    from backend.runs.diagnostics import TrainingDiagnostics

    diagnostics = TrainingDiagnostics(100, "dpo")
    for step, loss in ((1, 0.7), (2, float("nan")), (3, float("nan"))):
        _print_notes(diagnostics, step, {"loss": loss}, evaluation=False)
    err = capsys.readouterr().err
    assert err.count("error @ step 2") == 1 and "step 3" not in err
    assert "learning rate" in err.lower()


def test_ctrl_c_asks_a_job_to_stop_and_a_second_one_ends_it(capsys):
    import os
    import signal

    from backend.cli.interrupts import install_two_stage_stop

    class Job:
        calls: list[str] = []

        def request_stop(self):
            self.calls.append("stop")

        def kill(self):
            self.calls.append("kill")

    job = Job()
    previous = install_two_stage_stop(job, "Stopping the job (Ctrl-C again to end it)...")
    try:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert job.calls == ["stop", "kill"]
    assert "Stopping the job" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is previous
