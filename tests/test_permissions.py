"""No file grants permission to run code; only the user does, on this machine (issue 12).

Real files throughout: a model folder whose own configuration code writes a
file when it runs, a pickle whose unpickling would run a command, a reward-code
file, received config files and run folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.runs.code_permissions import (LAUNCH_ENV, GrantStore, apply_launch_grants, config_launch_subjects,
                                      file_subject, launch_environment, model_subject, ungranted_subjects,
                                      with_stored_grants)
from backend.core.events import RunFailed, RunFinished, RunStarted
from backend.runs.config import default_config, load_yaml, save_yaml
from tests.conftest import tiny_run_config

ROOT = Path(__file__).resolve().parent.parent


def make_remote_code_model(tiny_model_dir: Path, folder: Path, marker: Path) -> Path:
    """The tiny Llama dressed as a model type only its own code defines; that code writes ``marker``."""
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="sneaky_llama", architectures=["SneakyForCausalLM"],
                  auto_map={"AutoConfig": "configuration_sneaky.SneakyConfig",
                            "AutoModelForCausalLM": "modeling_sneaky.SneakyForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_sneaky.py").write_text(
        "from pathlib import Path\n"
        "from transformers import LlamaConfig\n"
        f"Path({str(marker)!r}).write_text('the model code ran')\n"
        "class SneakyConfig(LlamaConfig):\n"
        "    model_type = 'sneaky_llama'\n")
    (folder / "modeling_sneaky.py").write_text(
        "from transformers import LlamaForCausalLM\n"
        "from .configuration_sneaky import SneakyConfig\n"
        "class SneakyForCausalLM(LlamaForCausalLM):\n"
        "    config_class = SneakyConfig\n")
    return folder


@pytest.fixture
def remote_code_model(tiny_model_dir, tmp_path):
    marker = tmp_path / "remote-code-ran"
    return make_remote_code_model(tiny_model_dir, tmp_path / "sneaky-model", marker), marker


def cli(*args, home: Path, timeout=240):
    env = dict(os.environ, ALIGNSTUDIO_HOME=str(home))
    env.pop(LAUNCH_ENV, None)
    return subprocess.run([sys.executable, "-m", "app.launcher", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def received_config(path: Path, model: Path, data: Path, **extra) -> Path:
    cfg = tiny_run_config("sft", model, data, quantization="none", max_steps=1)
    save_yaml(cfg, path)
    with path.open("a", encoding="utf-8") as fh:
        for key, value in extra.items():
            fh.write(f"{key}: {json.dumps(value)}\n")
    return path


# ------------------------------------------------------------- files grant nothing
def test_a_config_file_cannot_turn_permissions_on_or_choose_the_runs_folder(tmp_path):
    path = tmp_path / "received.yaml"
    save_yaml(default_config("dpo"), path)
    with path.open("a") as fh:
        fh.write("trust_remote_code: true\nallow_pickle_weights: true\noutput_dir: /etc\n")
    cfg = load_yaml(path)
    assert (cfg.trust_remote_code, cfg.allow_pickle_weights, cfg.output_dir) == (False, False, "")
    # and the studio never writes them for a later reader to trust
    save_yaml(default_config("dpo", trust_remote_code=True, output_dir=str(tmp_path)), tmp_path / "out.yaml")
    text = (tmp_path / "out.yaml").read_text()
    assert "trust_remote_code" not in text and "output_dir" not in text


def test_received_config_asking_for_remote_code_is_refused_before_the_code_runs(
        remote_code_model, easy_preferences, tmp_path, studio_home):
    model, marker = remote_code_model
    config = received_config(tmp_path / "received.yaml", model, easy_preferences, trust_remote_code=True)
    out = cli("train", "--config", str(config), home=studio_home)
    assert out.returncode == 2, out.stderr
    assert "received.yaml asks for trust_remote_code" in out.stderr
    assert "a file cannot grant permission" in out.stderr and "--trust-remote-code" in out.stderr
    assert "needs its own Python code" in out.stderr and "No run was started." in out.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_remote_code_runs_with_the_command_line_flag(remote_code_model, easy_preferences, tmp_path, studio_home):
    model, marker = remote_code_model
    config = received_config(tmp_path / "received.yaml", model, easy_preferences)
    out = cli("train", "--config", str(config), "--trust-remote-code", "--quiet", home=studio_home)
    assert out.returncode == 0, out.stderr
    assert marker.read_text() == "the model code ran"
    run_dir = Path(out.stdout.split("Adapter: ")[1].split()[0]).parent
    assert "trust_remote_code" not in (run_dir / "config.yaml").read_text()


def test_a_run_folder_that_says_trust_remote_code_runs_nothing(remote_code_model, easy_preferences, tmp_path):
    """A worker started on a copied run folder whose config.yaml asks for the permission."""
    from backend.runs.folder import create_run_dir
    from backend.training.client import TrainingRun

    model, marker = remote_code_model
    run_dir = create_run_dir(tiny_run_config("sft", model, easy_preferences, quantization="none"), tmp_path / "runs")
    with (run_dir / "config.yaml").open("a") as fh:
        fh.write("trust_remote_code: true\n")
    run = TrainingRun.resume(run_dir)  # no grant from the user
    events = list(run.events())
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_model", failed
    assert "needs its own Python code" in failed.message and "--trust-remote-code" in failed.message
    assert not any(isinstance(e, RunStarted) for e in events)
    assert not marker.exists()


def test_received_config_asking_for_pickle_weights_never_unpickles(tiny_model_dir, easy_preferences, tmp_path,
                                                                  studio_home):
    import torch

    folder = tmp_path / "booby-trapped"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model.embed_tokens.weight": Payload()}, folder / "pytorch_model.bin")
    config = received_config(tmp_path / "received.yaml", folder, easy_preferences, allow_pickle_weights=True)
    out = cli("train", "--config", str(config), home=studio_home)
    assert out.returncode == 2, out.stderr
    assert "asks for allow_pickle_weights" in out.stderr and "--allow-pickle-weights" in out.stderr
    assert "can run any program while it is being loaded" in out.stderr
    assert not marker.exists()


def test_resume_needs_the_grant_again(tmp_path, easy_preferences, tiny_model_dir):
    from backend.runs.preflight import resume_problems
    from backend.runs.folder import create_run_dir

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    cfg = tiny_run_config("sft", folder, easy_preferences, allow_pickle_weights=True)
    run_dir = create_run_dir(cfg, tmp_path / "runs")
    assert "stores its weights only as pickle" in dict(resume_problems(run_dir)).get("model", "")
    assert "model" not in dict(resume_problems(run_dir, permissions={"allow_pickle_weights": True}))


# ------------------------------------------------- grants bound to file hashes
def test_grant_is_bound_to_the_code_and_a_changed_file_asks_again(remote_code_model, tmp_path):
    model, _ = remote_code_model
    store = GrantStore(tmp_path / "grants.json")
    cfg = default_config("sft", model=str(model), trust_remote_code=True)
    [subject] = ungranted_subjects(cfg, store)
    assert subject.name == "sneaky-model" and any(f.endswith("configuration_sneaky.py") for f in subject.files)
    store.grant(subject)
    assert ungranted_subjects(cfg, store) == []
    assert with_stored_grants(default_config("sft", model=str(model)), store).trust_remote_code
    (model / "modeling_sneaky.py").write_text((model / "modeling_sneaky.py").read_text() + "# changed\n")
    assert len(ungranted_subjects(cfg, store)) == 1
    assert not with_stored_grants(default_config("sft", model=str(model)), store).trust_remote_code
    assert store.recorded(subject)["name"] == "sneaky-model"  # still listed, so it can be revoked
    assert store.revoke("trust_remote_code", subject.location) and store.grants() == []


def test_reward_code_file_grant_mechanism(tmp_path):
    grader = tmp_path / "grader.py"
    grader.write_text("def reward(completions, **kw):\n    return [len(c) / 100 for c in completions]\n")
    store = GrantStore(tmp_path / "grants.json")
    subject = file_subject(grader)
    assert subject.permission == "allow_reward_code" and not store.is_granted(subject)
    store.grant(subject)
    assert store.is_granted(file_subject(grader))
    grader.write_text(grader.read_text() + "import os; os.system('true')\n")
    assert not store.is_granted(file_subject(grader))
    with pytest.raises(FileNotFoundError, match="reward code file .*missing.py does not exist"):
        file_subject(tmp_path / "missing.py")


def test_launch_grant_reaches_the_worker_only_for_unchanged_files(remote_code_model, monkeypatch):
    model, _ = remote_code_model
    granted = default_config("sft", model=str(model), trust_remote_code=True)
    env = launch_environment({LAUNCH_ENV: "left over"}, config_launch_subjects(granted))
    monkeypatch.setenv(LAUNCH_ENV, env[LAUNCH_ENV])
    assert apply_launch_grants(default_config("sft", model=str(model))).trust_remote_code
    (model / "configuration_sneaky.py").write_text("import os\n")
    assert not apply_launch_grants(default_config("sft", model=str(model))).trust_remote_code
    assert LAUNCH_ENV not in launch_environment({LAUNCH_ENV: "left over"}, [])


def test_embedded_and_gguf_models_need_no_grant(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_subject("", "trust_remote_code") is None
    assert model_subject(str(gguf), "allow_pickle_weights") is None


# --------------------------------------------------------- output stays inside
def test_output_stays_under_the_runs_folder(tmp_path, easy_preferences, tiny_model_dir):
    from backend.runs.preflight import resume_problems
    from backend.runs.folder import create_run_dir

    runs = tmp_path / "runs"
    for name in ("..", "../../escape", "/etc/passwd", "./.."):
        run_dir = create_run_dir(tiny_run_config("sft", tiny_model_dir, easy_preferences, run_name=name), runs)
        assert run_dir.resolve().parent == runs.resolve(), name
    # A run folder from elsewhere whose checkpoints are a link out of it is not resumed.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run_dir / "checkpoints").symlink_to(outside, target_is_directory=True)
    problem = dict(resume_problems(run_dir)).get("output_dir", "")
    assert "links that point outside it" in problem and "checkpoints" in problem
