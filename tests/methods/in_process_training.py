"""Train a method a few steps in the test's own process, with the builders the worker uses.

Cheaper than a worker per case (torch, transformers and TRL are imported once), so a test can
train one step for each of many settings. Unquantized, for speed: the 4-bit path through the
worker is the conformance test's (tests/test_method_registry.py)."""

from __future__ import annotations

from pathlib import Path


def easy_pairs(n: int = 8):
    """Polite beats rude, as in tests/conftest.py, as an in-memory dataset."""
    from datasets import Dataset

    from tests.conftest import POLITE, RUDE

    return Dataset.from_list([{"prompt": f"Question {i}: can you help me with task {i % 7}?",
                               "chosen": " " + POLITE[i % len(POLITE)], "rejected": " " + RUDE[i % len(RUDE)]}
                              for i in range(n)])


def train_in_process(method: str, model_dir: Path, dataset, out_dir: Path, steps: int = 1, **settings):
    """The TRL trainer of ``method`` after ``steps`` steps (batch 2, a log line per step)."""
    import datasets
    import transformers
    from transformers.trainer_callback import PrinterCallback

    from backend.runs.config import check
    from backend.training.trainer_builders import build_model, build_tokenizer, build_trainer, build_trl_args, \
        choose_precision
    from tests.conftest import tiny_run_config

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    values = dict(quantization="none", max_steps=steps, per_device_train_batch_size=2, logging_steps=1,
                  report_to="none")
    values.update(settings)
    cfg = check(tiny_run_config(method, model_dir, Path("in-memory.jsonl"), **values))
    precision = choose_precision()
    tokenizer, model = build_tokenizer(str(model_dir), cfg), build_model(str(model_dir), cfg, precision)
    args = build_trl_args(cfg, precision, str(out_dir), has_eval=False)
    trainer = build_trainer(cfg, model, tokenizer, args, dataset, None, [])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer


def logged_steps(trainer) -> list[dict]:
    """The per-step log lines (the final summary line left out)."""
    return [h for h in trainer.state.log_history if "loss" in h]
