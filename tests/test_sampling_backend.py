"""The engine that samples while the RL methods train: vLLM through TRL's own use_vllm where it
can run, the model's own generate elsewhere, and a clear refusal for an impossible choice."""

from __future__ import annotations

import dataclasses

import pytest

from backend.runs.config import ConfigError, default_config
from backend.training import sampling_backend
from backend.training.sampling_backend import choose, problem

SAMPLING_METHODS = ("grpo", "rloo", "online_dpo")


def test_auto_picks_vllm_only_where_it_can_run_and_says_why():
    assert choose("auto", "cuda", True, "4bit") == (True, choose("auto", "cuda", True, "none")[1])
    on_cpu = choose("auto", "cpu", True, "4bit")
    assert on_cpu[0] is False and "CUDA GPU" in on_cpu[1]
    missing = choose("auto", "cuda", False, "4bit")
    assert missing[0] is False and "pip install vllm" in missing[1]
    assert choose("auto", "cuda", True, "8bit")[0] is False
    assert choose("transformers", "cuda", True, "none")[0] is False
    assert choose("vllm", "cuda", True, "none")[0] is True


def test_an_impossible_vllm_choice_is_refused_naming_what_is_missing():
    assert "CUDA GPU" in problem("vllm", "cpu", True, "none")
    assert "pip install vllm" in problem("vllm", "cuda", False, "none")
    assert "8-bit" in problem("vllm", "cuda", True, "8bit")
    assert problem("vllm", "cuda", True, "4bit") == problem("auto", "cpu", False, "8bit") == ""


@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_every_sampling_method_offers_the_engine_and_trl_takes_its_keys(method, monkeypatch):
    """On a GPU with vllm installed the keys TRL reads for colocated vLLM are set, under the
    names the installed TRL's config has."""
    from backend.methods import get_method

    cfg = default_config(method)
    assert cfg.sampling_backend == "auto"
    monkeypatch.setattr(sampling_backend, "vllm_installed", lambda: True)
    keys = sampling_backend.trl_keys(cfg, {"use_cpu": False})
    assert keys == {"use_vllm": True, "vllm_mode": "colocate",
                    "vllm_gpu_memory_utilization": sampling_backend.COLOCATE_GPU_SHARE}
    config_class = type(get_method(method).build_args(cfg, _cpu_args(tmp="/tmp/unused")))
    names = {f.name for f in dataclasses.fields(config_class)}
    assert set(keys) <= names, set(keys) - names


def _cpu_args(tmp: str) -> dict:
    from backend.training.trainer_builders import Precision, _common_args

    return _common_args(default_config("grpo"), Precision("cpu", None, bf16=False, fp16=False), tmp, has_eval=False)


def test_on_this_cpu_trl_samples_with_generate_and_a_forced_vllm_is_refused(tmp_path, capsys):
    from backend.training.trainer_builders import Precision, build_trl_args

    cpu = Precision("cpu", None, bf16=False, fp16=False)
    args = build_trl_args(default_config("grpo"), cpu, str(tmp_path), has_eval=False)
    assert args.use_vllm is False
    assert "Sampling engine: the model's own generate: vLLM needs a CUDA GPU" in capsys.readouterr().out
    with pytest.raises(ConfigError) as refused:
        build_trl_args(default_config("rloo", sampling_backend="vllm"), cpu, str(tmp_path), has_eval=False)
    assert refused.value.problems[0][0] == "sampling_backend" and "CUDA GPU" in str(refused.value)
