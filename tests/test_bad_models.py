"""Bad models are refused with a message a user can act on, before any training starts.

The checks read files and the Hugging Face cache only; a few cases go through the
real worker process to show the refusal arrives as a ``bad_model`` failure before
anything trains."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.core.events import RunFailed, RunFinished, RunStarted
from backend.models.source import (ModelSourceError, model_source_for_config, refuse_unsafe_model,
                                  resolve_checked_model, resolve_model_source)
from backend.runs.config import default_config
from tests.conftest import tiny_run_config

ROOT = Path(__file__).resolve().parent.parent


def _folder(path: Path, config: dict | None = None, files: tuple[str, ...] = (), tokenizer: bool = True) -> Path:
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    for name in files:
        (path / name).write_bytes(b"\0" * 8)
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


def _refusal(model, **permissions) -> ModelSourceError:
    with pytest.raises(ModelSourceError) as info:
        resolve_checked_model(str(model), **permissions)
    return info.value


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of the test's own; huggingface_hub reads the constant at call time."""
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def cache_repo(cache: Path, repo_id: str, source: Path, files: list[str] | None = None) -> Path:
    """Lay ``source``'s files out as huggingface_hub would after a download of ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    for item in source.iterdir():
        if files is None or item.name in files:
            shutil.copy2(item, snapshot / item.name)
    return snapshot


# ------------------------------------------------------------------ folders
def test_missing_path_says_it_does_not_exist(tmp_path):
    err = _refusal(tmp_path / "no-such-model")
    assert str(tmp_path / "no-such-model") in str(err) and "does not exist" in str(err)
    assert "embedded" in str(err)  # the way out that always works
    assert err.setting == "model"


def test_folder_without_config_json_is_not_a_model_folder(tmp_path):
    err = _refusal(_folder(tmp_path / "weights-only", files=("model.safetensors",)))
    assert "has no config.json" in str(err) and "Pick the folder that holds config.json" in str(err)


def test_adapter_folder_is_recognised_and_its_base_named(tmp_path):
    folder = _folder(tmp_path / "adapter", files=("adapter_model.safetensors",))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "Qwen/Qwen2.5-0.5B"}))
    err = _refusal(folder)
    assert "LoRA adapter, not a base model" in str(err) and "Qwen/Qwen2.5-0.5B" in str(err)
    assert "Compare tab" in str(err)


def test_config_without_weights_says_no_weights(tmp_path):
    # A Trainer's training_args.bin is a pickle file, but not weights.
    err = _refusal(_folder(tmp_path / "empty", {"model_type": "llama"}, ("training_args.bin",)))
    assert "has a config.json but no weights" in str(err) and "Copy the weight files" in str(err)


def test_weights_without_a_tokenizer_are_refused(tmp_path):
    folder = _folder(tmp_path / "no-tokenizer", {"model_type": "llama"}, ("model.safetensors",), tokenizer=False)
    err = _refusal(folder)
    assert "no tokenizer" in str(err) and "tokenizer.json" in str(err) and "Copy the tokenizer files" in str(err)


def test_unreadable_config_json_is_reported(tmp_path):
    folder = _folder(tmp_path / "broken", files=("model.safetensors",))
    (folder / "config.json").write_text("{not json")
    err = _refusal(folder)
    assert "config.json" in str(err) and "cannot be read" in str(err)


# ------------------------------------------------------------------- pickle
def test_pickle_only_weights_are_refused_with_the_reason(tmp_path):
    folder = _folder(tmp_path / "pickled", {"model_type": "llama"}, ("pytorch_model.bin", "training_args.bin"))
    err = _refusal(folder)
    text = str(err)
    assert err.setting == "allow_pickle_weights"
    assert "pytorch_model.bin" in text and "training_args.bin" not in text
    assert "can run any program while it is being loaded" in text
    assert "safetensors" in text and "Allow pickle weights" in text and "--allow-pickle-weights" in text
    assert "weights_only=True" in text
    assert resolve_checked_model(str(folder), allow_pickle_weights=True).kind == "folder"


def test_safetensors_beside_pickle_files_are_fine(tmp_path):
    folder = _folder(tmp_path / "both", {"model_type": "llama"}, ("model.safetensors", "pytorch_model.bin"))
    assert resolve_checked_model(str(folder)).location == str(folder.resolve())


def test_pickle_files_transformers_cannot_load_are_named_even_when_allowed(tmp_path):
    folder = _folder(tmp_path / "original", {"model_type": "llama"}, ("consolidated.00.pth",))
    assert _refusal(folder).setting == "allow_pickle_weights"
    err = _refusal(folder, allow_pickle_weights=True)
    assert "consolidated.00.pth" in str(err) and "pytorch_model.bin" in str(err) and "convert" in str(err)


# -------------------------------------------------------------- remote code
def test_model_type_only_its_repository_defines_needs_trust_remote_code(tmp_path):
    config = {"model_type": "my_arch", "auto_map": {"AutoConfig": "configuration_mine.MyConfig",
                                                    "AutoModelForCausalLM": "modeling_mine.MyModel"}}
    folder = _folder(tmp_path / "custom", config, ("model.safetensors",))
    err = _refusal(folder)
    text = str(err)
    assert err.setting == "trust_remote_code"
    assert "needs its own Python code" in text and "'my_arch'" in text
    assert "configuration_mine.py" in text and "modeling_mine.py" in text
    assert "with your permissions" in text and "Trust remote code" in text and "--trust-remote-code" in text
    assert resolve_checked_model(str(folder), trust_remote_code=True).kind == "folder"


def test_auto_map_on_a_model_type_transformers_ships_is_loaded_without_remote_code(tmp_path):
    # Phi-3 repositories look like this: transformers uses its own Phi3 code unless remote code is trusted.
    config = {"model_type": "phi3", "auto_map": {"AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"}}
    folder = _folder(tmp_path / "phi", config, ("model.safetensors",))
    assert resolve_checked_model(str(folder)).kind == "folder"


def test_unknown_model_type_without_code_asks_for_a_newer_transformers(tmp_path):
    folder = _folder(tmp_path / "future", {"model_type": "llama99"}, ("model.safetensors",))
    err = _refusal(folder)
    assert "'llama99'" in str(err) and "does not know" in str(err) and "pip install -U transformers" in str(err)
    assert err.setting == "model"  # trusting remote code would not help: there is no code


def test_checks_import_neither_torch_nor_transformers(tmp_path):
    folder = _folder(tmp_path / "custom", {"model_type": "my_arch", "auto_map": {"AutoModel": "m.M"}},
                     ("model.safetensors",))
    code = ("import sys\n"
            "from backend.models.source import ModelSourceError, resolve_checked_model\n"
            f"try:\n    resolve_checked_model({str(folder)!r})\nexcept ModelSourceError as e:\n    print('REFUSED')\n"
            "print([m for m in ('torch', 'transformers') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["REFUSED", "[]"]


# ------------------------------------------------------------------ hub ids
def test_uncached_hub_id_offline_is_refused_with_what_to_do(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _refusal("someone/some-model")
    text = str(err)
    assert "'someone/some-model'" in text and "offline" in text and "not in the Hugging Face cache" in text
    assert str(hub_cache) in text and "embedded" in text and "local model folder" in text


def test_cached_hub_id_works_offline_and_its_files_are_checked(hub_cache, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = cache_repo(hub_cache, "tiny/llama", tiny_model_dir)
    source = resolve_checked_model("tiny/llama")
    assert source.kind == "hub" and source.location == "tiny/llama"
    assert Path(source.cached_folder) == snapshot

    (snapshot / "model.safetensors").unlink()
    (snapshot / "pytorch_model.bin").write_bytes(b"\0")
    assert _refusal("tiny/llama").setting == "allow_pickle_weights"


def test_hub_id_with_only_its_config_cached_is_refused_offline(hub_cache, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_repo(hub_cache, "tiny/partial", tiny_model_dir, files=["config.json"])
    err = _refusal("tiny/partial")
    assert "Only the configuration" in str(err) and "not its weights" in str(err)


def test_malformed_hub_id_is_neither_a_path_nor_an_id():
    err = _refusal("my model")
    assert "not a file or folder" in str(err) and "valid Hugging Face model id" in str(err)


def test_embedded_and_gguf_sources_need_no_permission(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    for model in ("", str(gguf)):
        refuse_unsafe_model(resolve_model_source(model))  # raises nothing


def test_config_permissions_reach_the_check(tmp_path):
    folder = _folder(tmp_path / "pickled", {"model_type": "llama"}, ("pytorch_model.bin",))
    with pytest.raises(ModelSourceError):
        model_source_for_config(default_config("sft", model=str(folder)))
    assert model_source_for_config(default_config("sft", model=str(folder), allow_pickle_weights=True))


# -------------------------------------------------------- loading for real
@pytest.fixture(scope="module")
def pickled_tiny_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its weights saved by torch.save instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("pickled") / "tiny-pickled"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_allowed_pickle_weights_load_the_same_tensors(pickled_tiny_model, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    from backend.training.trainer_builders import build_model, choose_precision

    refused = default_config("sft", quantization="none")
    with pytest.raises(ModelSourceError):
        build_model(str(pickled_tiny_model), refused, choose_precision())
    allowed = default_config("sft", quantization="none", allow_pickle_weights=True)
    model = build_model(str(pickled_tiny_model), allowed, choose_precision())
    expected = load_file(str(tiny_model_dir / "model.safetensors"))
    loaded = model.state_dict()
    assert set(expected) <= set(loaded)
    assert all(torch.equal(loaded[name].float(), tensor.float()) for name, tensor in expected.items())


def test_pickle_that_carries_code_is_refused_even_when_allowed(tiny_model_dir, tmp_path):
    import torch

    from backend.training.trainer_builders import build_model, choose_precision

    folder = tmp_path / "booby-trapped"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model.embed_tokens.weight": Payload()}, folder / "pytorch_model.bin")
    cfg = default_config("sft", quantization="none", allow_pickle_weights=True)
    with pytest.raises(ModelSourceError) as info:
        build_model(str(folder), cfg, choose_precision())
    assert "hold more than tensors" in str(info.value) and "posix.system" in str(info.value)
    assert not marker.exists()


# ------------------------------------------------- through the real worker
def _run(cfg, timeout=180):
    from backend.training.client import run_to_completion

    started = time.time()
    run, events = run_to_completion(cfg, timeout=timeout)
    return run, events, time.time() - started


def test_worker_refuses_an_uncached_hub_id_offline_before_importing_torch(easy_preferences, hub_cache):
    cfg = tiny_run_config("sft", Path("."), easy_preferences, model="someone/not-downloaded")
    run, events, seconds = _run(cfg)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_model", failed
    assert "offline" in failed.message and "not in the Hugging Face cache" in failed.message
    assert not any(isinstance(e, RunStarted) for e in events)
    # Refused by the file check that runs before the worker imports torch, not by transformers.
    assert "source.py" in failed.traceback and "transformers" not in failed.traceback
    assert seconds < 30


@pytest.mark.slow
def test_worker_refuses_pickle_weights_with_the_reason(pickled_tiny_model, easy_preferences):
    cfg = tiny_run_config("sft", pickled_tiny_model, easy_preferences, quantization="none")
    run, events, seconds = _run(cfg)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_model", failed
    assert "pickle" in failed.message and "Allow pickle weights" in failed.message
    assert not any(isinstance(e, RunStarted) for e in events)
    assert seconds < 60


@pytest.mark.slow
def test_worker_trains_on_pickle_weights_when_allowed(pickled_tiny_model, easy_preferences):
    cfg = tiny_run_config("sft", pickled_tiny_model, easy_preferences, quantization="none", max_steps=1,
                          allow_pickle_weights=True)
    run, events, _ = _run(cfg)
    assert isinstance(events[-1], RunFinished), events[-1]
    assert events[-1].step == 1
    assert (run.run_dir / "adapter" / "adapter_config.json").exists()
