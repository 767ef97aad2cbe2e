"""Shared fixtures: a tiny random-weight model built on the spot and easy preference data.

No test downloads anything. Every test gets its own ALIGNSTUDIO_HOME, so runs and
settings never leak between tests or into the user's home.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def studio_home(tmp_path, monkeypatch):
    home = tmp_path / "studio-home"
    monkeypatch.setenv("ALIGNSTUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from backend.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


POLITE = [
    "Sure, happy to help with that question.",
    "Thank you for asking! Here is a clear answer.",
    "Please find a clear and helpful answer here.",
]
RUDE = [
    "No. Figure it out yourself. Whatever.",
    "Whatever. No. Do it yourself.",
    "No. Figure it out. Whatever, really.",
]


def write_easy_preferences(path: Path, n: int = 64) -> Path:
    """A preference set a tiny model learns in a few dozen steps: polite beats rude."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({
                "prompt": f"Question {i}: can you help me with task {i % 7}?",
                "chosen": " " + POLITE[i % len(POLITE)],
                "rejected": " " + RUDE[i % len(RUDE)],
            }) + "\n")
    return path


@pytest.fixture
def easy_preferences(tmp_path) -> Path:
    return write_easy_preferences(tmp_path / "easy_prefs.jsonl")


def tiny_run_config(method: str, model_dir: Path, data: Path, **overrides):
    """Settings that make a tiny-model run take seconds."""
    from backend.runs.config import default_config

    values = dict(
        model=str(model_dir),
        data_path=str(data),
        quantization="4bit",
        max_steps=6,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        gradient_checkpointing=False,
        learning_rate=5e-3,
        lora_r=8,
        lora_alpha=16,
        max_length=64,
        eval_fraction=0.0,
        save_steps=0,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
    )
    values.update(overrides)
    return default_config(method, **values)


@pytest.fixture(scope="session")
def trained_dpo_run(tmp_path_factory, tiny_model_dir) -> Path:
    """One tiny DPO run with 16 held-out pairs, trained once for every compare test.

    It lives in a home of its own, so the per-test homes never see it."""
    home = tmp_path_factory.mktemp("trained-dpo-home")
    return train_easy_dpo_in_own_home(home, tiny_model_dir, max_steps=20, eval_fraction=0.25)


def train_easy_dpo_in_own_home(home: Path, model_dir: Path, **overrides) -> Path:
    """Train a tiny DPO run on the easy pairs with ``home`` as ALIGNSTUDIO_HOME; its run folder."""
    return train_easy_run_in_own_home("dpo", home, model_dir, **overrides)


@pytest.fixture(scope="session")
def tiny_reward_model_run(tmp_path_factory, tiny_model_dir) -> Path:
    """One tiny reward model run (polite beats rude), trained once for every test that needs a
    reward model (graders, Best-of-N, reward evaluation, methods that require one). Six steps:
    enough for its scores to rank the easy pairs, so graders built on it give varying rewards."""
    home = tmp_path_factory.mktemp("reward-model-home")
    return train_easy_run_in_own_home("bradley_terry", home, tiny_model_dir, max_steps=6, logging_steps=1,
                                      learning_rate=5e-3, eval_fraction=0.25)


def train_easy_run_in_own_home(method: str, home: Path, model_dir: Path, **overrides) -> Path:
    """Train a tiny ``method`` run on the easy pairs with ``home`` as ALIGNSTUDIO_HOME; its run folder."""
    from backend.training.client import run_to_completion

    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNSTUDIO_HOME", str(home))
    try:
        data = write_easy_preferences(home / "easy_prefs.jsonl")
        cfg = tiny_run_config(method, model_dir, data, **overrides)
        run, events = run_to_completion(cfg, runs_root=home / "runs", timeout=300)
    finally:
        mp.undo()
    assert type(events[-1]).__name__ == "RunFinished", events[-1]
    return run.run_dir
