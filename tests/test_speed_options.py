"""The speed options the studio chooses from the data, the device and the memory estimate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from backend.runs.config import default_config
from backend.training.speed_options import SPEED_OPTIONS_FILE, choose, padding_share, planned_examples

CPU = {"kind": "cpu", "memory_mb": 16000, "bf16": False}
GPU = {"kind": "cuda", "memory_mb": 24000, "bf16": True}
DEMO = Path(__file__).resolve().parent.parent / "resources" / "demo"


@dataclasses.dataclass
class Estimate:
    total_mb: float
    usable_mb: float = 10_000.0

    @property
    def fits(self):
        return self.total_mb <= self.usable_mb


def estimator(per_example_mb: float = 100.0, checkpointing_saves: float = 0.5, fixed_mb: float = 1000.0,
              usable_mb: float = 10_000.0):
    """Memory grows with the batch and halves its activations with checkpointing."""
    def estimate(cfg):
        act = per_example_mb * cfg.per_device_train_batch_size
        if cfg.gradient_checkpointing:
            act *= checkpointing_saves
        return Estimate(fixed_mb + act, usable_mb)
    return estimate


def unknown(cfg):
    return type("E", (), {"fits": None, "total_mb": None, "usable_mb": None})()


VARIED = [6, 36] * 50  # lengths vary 6x
EVEN = [30, 31, 32] * 30


def by_setting(plan):
    return {c.setting: c for c in plan.choices}


def test_sft_defaults_on_a_roomy_cpu_turn_the_options_on_with_reasons():
    plan = choose(default_config("sft"), VARIED, CPU, estimate=estimator())
    chosen = by_setting(plan)
    assert chosen["gradient_checkpointing"].value is False
    assert "fits without it" in chosen["gradient_checkpointing"].reason
    # 4 x 4 becomes 16 x 1: the same examples per optimizer step
    assert plan.cfg.per_device_train_batch_size == 16 and plan.cfg.gradient_accumulation_steps == 1
    assert plan.cfg.eval_batch_size == 16  # not twice a batch that is already the largest that fits
    assert chosen["padding_free"].value is True and plan.cfg.padding_free is True
    assert chosen["padding_free"].line().startswith("Padding-free batches: on (lengths vary 6.0x")
    assert chosen["group_by_length"].value is False  # nothing left to group
    assert chosen["use_liger_kernel"].value is False and "CUDA" in chosen["use_liger_kernel"].reason
    assert chosen["score_trained_tokens_only"].value is True and plan.cfg.score_trained_tokens_only is True


def test_trained_tokens_only_is_left_to_trl_on_a_gpu_and_kept_when_set():
    gpu = by_setting(choose(default_config("dpo"), VARIED, GPU, estimate=estimator()))
    assert gpu["score_trained_tokens_only"].value is False and "Triton" in gpu["score_trained_tokens_only"].reason
    kept = choose(default_config("sft", score_trained_tokens_only=True), VARIED, GPU, estimate=estimator())
    assert "score_trained_tokens_only" not in by_setting(kept) and kept.cfg.score_trained_tokens_only is True


def test_trls_fused_head_scores_only_the_trained_positions_with_the_same_log_probs(tiny_model_dir, monkeypatch):
    """Through TRL's own fused LM head on the studio's model: once enabled, only the positions
    with a label reach the vocabulary projection, and their log-probs are those of the full pass."""
    import torch
    import trl.trainer.utils as trl_utils

    from backend.training import trained_token_scoring
    from backend.training.trainer_builders import build_model, choose_precision

    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # undone after the test
    model = build_model(str(tiny_model_dir), default_config("sft", quantization="none"), choose_precision()).eval()
    trl_utils.add_fused_lm_head(model)
    scored = []
    kernel = trl_utils._ChunkedLogProbFunction
    apply = kernel.apply
    monkeypatch.setattr(kernel, "apply",
                        lambda hidden, *rest: scored.append(hidden.shape[0]) or apply(hidden, *rest))
    ids = torch.arange(5, 5 + 2 * 12).view(2, 12)
    labels = ids.clone()
    labels[:, :8] = -100  # a prompt of 8 tokens: 4 answer tokens per row are trained
    with torch.no_grad():
        full = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        assert trained_token_scoring.set_enabled(True) == ""
        compact = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        assert trained_token_scoring.set_enabled(False) == ""
        model(input_ids=ids, labels=labels, fused_lm_head=True)
    assert scored == [2 * 11, 2 * 4, 2 * 11]  # shifted labels: 11 positions per row, 4 of them trained
    assert torch.allclose(full, compact, atol=1e-5) and float(compact[:, 7:].abs().min()) > 0


def test_checkpointing_stays_on_when_the_run_would_not_fit_without_it():
    tight = estimator(per_example_mb=1000.0, usable_mb=3500.0)  # 4 x 1000 without, 4 x 500 with
    plan = choose(default_config("sft"), VARIED, CPU, estimate=tight)
    chosen = by_setting(plan)
    assert chosen["gradient_checkpointing"].value is True
    assert "over the" in chosen["gradient_checkpointing"].reason
    # the batch grows only as far as the estimate allows: 8 x 2 needs 5000 MB, 4 x 4 stays
    assert "per_device_train_batch_size" not in chosen
    assert plan.cfg.per_device_train_batch_size == 4


def test_batch_grows_to_the_largest_divisor_that_fits():
    plan = choose(default_config("sft"), VARIED, CPU, estimate=estimator(per_example_mb=600.0, usable_mb=6000.0))
    assert (plan.cfg.per_device_train_batch_size, plan.cfg.gradient_accumulation_steps) == (8, 2)


def test_unknown_memory_keeps_checkpointing_and_the_batch():
    plan = choose(default_config("sft"), VARIED, CPU, estimate=unknown)
    assert plan.cfg.gradient_checkpointing is True
    assert "unknown" in by_setting(plan)["gradient_checkpointing"].reason
    assert plan.cfg.per_device_train_batch_size == 4


def test_settings_the_user_changed_are_kept():
    cfg = default_config("sft", gradient_checkpointing=False, per_device_train_batch_size=2,
                         gradient_accumulation_steps=8, padding_free=True)
    plan = choose(cfg, VARIED, CPU, estimate=estimator(per_example_mb=10_000.0, usable_mb=100.0))
    chosen = by_setting(plan)
    assert "gradient_checkpointing" not in chosen and "per_device_train_batch_size" not in chosen
    assert "padding_free" not in chosen
    assert (plan.cfg.gradient_checkpointing, plan.cfg.per_device_train_batch_size, plan.cfg.padding_free) == \
        (False, 2, True)


def test_as_set_changes_nothing():
    cfg = default_config("sft", speed_options="as set")
    plan = choose(cfg, VARIED, CPU, estimate=estimator())
    assert plan.choices == [] and plan.cfg is cfg


def test_even_lengths_and_long_examples_keep_padding():
    even = by_setting(choose(default_config("sft"), EVEN, CPU, estimate=estimator()))["padding_free"]
    assert even.value is False and "even" in even.reason
    long = by_setting(choose(default_config("sft", max_length=64), [10, 60] * 20, CPU,
                             estimate=estimator()))["padding_free"]
    assert long.value is False and "Max length" in long.reason


def test_without_flash_attention_a_long_flattened_batch_stays_padded_and_is_grouped():
    lengths = [100, 900] * 40
    plan = choose(default_config("sft", max_length=2048), lengths, CPU, estimate=estimator(), attention="sdpa")
    chosen = by_setting(plan)
    assert chosen["padding_free"].value is False and "flash" in chosen["padding_free"].reason
    assert chosen["group_by_length"].value is True and plan.cfg.group_by_length is True
    flash = choose(default_config("sft", max_length=2048), lengths, GPU, estimate=estimator(),
                   attention="flash_attention_2")
    assert flash.cfg.padding_free is True


def test_without_flash_attention_flattening_is_weighed_against_the_model_width():
    """Measured on the demo SFT data: flattened batches of 16 on a hidden-256 tiny model were slower
    than padded ones (attention across ~1200 tokens outweighs its thin layers); Gemma's wide layers
    and 262k-token head make the padding the larger cost."""
    from backend.training.memory_estimate import GEMMA3_270M, ModelShape

    tiny = ModelShape(hidden_size=256, num_layers=4, intermediate_size=512, vocab_size=300, num_heads=4,
                      num_kv_heads=4, head_dim=64, tie_word_embeddings=True)
    lengths = [60, 80, 70, 90, 50, 100, 74, 66] * 20
    thin = by_setting(choose(default_config("sft"), lengths, CPU, estimate=estimator(), shape=tiny))
    assert thin["padding_free"].value is False and "attends across" in thin["padding_free"].reason
    assert thin["group_by_length"].value is True  # the padding left is grouped away instead
    wide = by_setting(choose(default_config("sft"), lengths, CPU, estimate=estimator(), shape=GEMMA3_270M))
    assert wide["padding_free"].value is True


def test_length_grouping_lowers_the_padding_it_reports():
    assert padding_share(EVEN, 8) < 0.10
    random_share = padding_share(VARIED, 4)
    grouped_share = padding_share(VARIED, 4, grouped=True)
    assert random_share > 0.3 and grouped_share < 0.05


def test_dpo_precomputes_the_reference_when_pairs_are_seen_more_than_once_and_says_why():
    two_epochs = default_config("dpo", num_train_epochs=2.0)
    chosen = by_setting(choose(two_epochs, VARIED, CPU, estimate=estimator(), rows=100))
    assert chosen["precompute_ref_log_probs"].value is True and "2.0 times" in chosen["precompute_ref_log_probs"].reason
    few_steps = default_config("dpo", max_steps=3)  # 3 x 16 = 48 of 100 pairs
    assert planned_examples(few_steps, 100) == 48
    chosen = by_setting(choose(few_steps, VARIED, CPU, estimate=estimator(), rows=100))
    assert chosen["precompute_ref_log_probs"].value is False and "48 of the 100" in chosen["precompute_ref_log_probs"].reason
    assert "padding_free" not in chosen  # DPO's padding-free is switched off in TRL 1.16
    # A setting the user changed is theirs, even where the studio would choose otherwise.
    kept = by_setting(choose(default_config("dpo", num_train_epochs=2.0, precompute_ref_log_probs=True),
                             VARIED, CPU, estimate=estimator(), rows=100))
    assert "precompute_ref_log_probs" not in kept


def test_liger_on_cuda_only_when_installed():
    on = by_setting(choose(default_config("dpo"), VARIED, GPU, estimate=estimator(), liger_installed=True))
    assert on["use_liger_kernel"].value is True
    off = by_setting(choose(default_config("dpo"), VARIED, GPU, estimate=estimator(), liger_installed=False))
    assert off["use_liger_kernel"].value is False and "not installed" in off["use_liger_kernel"].reason


def test_trl_configs_receive_the_chosen_options(tmp_path):
    from backend.training.trainer_builders import Precision, build_trl_args

    cpu = Precision("cpu", None, bf16=False, fp16=False)
    cfg = default_config("sft", padding_free=True, gradient_checkpointing=False, group_by_length=False)
    args = build_trl_args(cfg, cpu, str(tmp_path), has_eval=False)
    assert args.padding_free is True and args.max_length is None and args.gradient_checkpointing is False
    dpo = default_config("dpo", group_by_length=True, precompute_ref_log_probs=True)
    args = build_trl_args(dpo, cpu, str(tmp_path), has_eval=False)
    assert args.train_sampling_strategy == "group_by_length" and args.precompute_ref_log_probs is True


def test_padding_free_batches_give_the_padded_logits_on_the_studio_model(tiny_model_dir):
    """sdpa has no varlen kernel: transformers masks the flattened sequences apart from the position
    ids, and only without a KV cache, which the studio's models are built without."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from backend.training.trainer_builders import build_model, choose_precision

    model = build_model(str(tiny_model_dir), default_config("sft", quantization="none"), choose_precision()).eval()
    rows = [{"input_ids": list(range(5, 5 + n))} for n in (6, 17, 11, 30)]
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(rows)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    with torch.no_grad():
        a = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], labels=padded["labels"])
        b = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], labels=flat["labels"])
    start = 0
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert torch.allclose(a.logits[i, :n], b.logits[0, start:start + n], atol=1e-4), f"sequence {i}"
        start += n
    assert abs(float(a.loss) - float(b.loss)) < 1e-4


def test_pair_batches_grouped_by_length_train_and_evaluate(tmp_path, tiny_model_dir, easy_preferences):
    """Pair rows have no input_ids for the length-grouped sampler; training and evaluation both
    sample them by the length column the builder adds."""
    from datasets import Dataset

    from backend.training.trainer_builders import (build_model, build_tokenizer, build_trainer, build_trl_args,
                                                   choose_precision)

    cfg = default_config("dpo", model=str(tiny_model_dir), quantization="none", group_by_length=True,
                         per_device_train_batch_size=4, gradient_accumulation_steps=1, max_length=64,
                         gradient_checkpointing=False, report_to="none", eval_steps=0)
    rows = [json.loads(line) for line in easy_preferences.read_text(encoding="utf-8").splitlines()]
    precision = choose_precision()
    tokenizer = build_tokenizer(str(tiny_model_dir), cfg)
    model = build_model(str(tiny_model_dir), cfg, precision)
    args = build_trl_args(cfg, precision, str(tmp_path / "out"), has_eval=True)
    trainer = build_trainer(cfg, model, tokenizer, args, Dataset.from_list(rows[:48]), Dataset.from_list(rows[48:]),
                            [])
    assert "length" in trainer.train_dataset.column_names and "length" in trainer.eval_dataset.column_names
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 8  # 4 chosen + 4 rejected
    assert trainer.evaluate()["eval_loss"] > 0


@pytest.mark.slow
def test_sft_run_with_chosen_options_trains_and_records_them(tmp_path, tiny_model_dir):
    """A real worker run on the tiny model: the options are chosen from the demo data, the
    run trains with them, and the run folder and log say what was chosen and why."""
    from backend.core.events import RunFinished, RunStarted, TrainLog
    from backend.training.client import run_to_completion

    cfg = default_config("sft", model=str(tiny_model_dir), data_path=str(DEMO / "demo_sft.jsonl"),
                         quantization="none", max_steps=3, learning_rate=5e-3, lora_r=8, lora_alpha=16,
                         max_length=128, eval_fraction=0.1, eval_steps=0, save_steps=0)
    run, events = run_to_completion(cfg, runs_root=tmp_path / "runs", timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    recorded = json.loads((run.run_dir / SPEED_OPTIONS_FILE).read_text(encoding="utf-8"))
    chosen = {c["setting"]: c for c in recorded["choices"]}
    assert recorded["mode"] == "auto"
    assert chosen["gradient_checkpointing"]["value"] is False
    assert (chosen["per_device_train_batch_size"]["value"], chosen["gradient_accumulation_steps"]["value"]) == (16, 1)
    # the tiny model's thin layers make attention across a flattened batch of 16 dearer than
    # the padding, so its padding is grouped away instead
    assert chosen["padding_free"]["value"] is False and "attends across" in chosen["padding_free"]["reason"]
    assert chosen["group_by_length"]["value"] is True
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.config["group_by_length"] is True and started.config["per_device_train_batch_size"] == 16
    losses = [e.metrics["loss"] for e in events if isinstance(e, TrainLog) and "loss" in e.metrics]
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)
    log = (run.run_dir / "worker.log").read_text(encoding="utf-8")
    assert "Speed: Group batches by length: on (padding falls from" in log
    assert chosen["score_trained_tokens_only"]["value"] is True
    assert "Speed: Score only trained tokens: on" in log and "not applied" not in log
    # the saved settings keep auto, so a rerun chooses again for its own data and device
    assert "speed_options: auto" in (run.run_dir / "config.yaml").read_text(encoding="utf-8")


def test_memory_is_estimated_for_the_longest_example_not_max_length():
    seen = []

    def recording(cfg):
        seen.append(cfg.max_length)
        return Estimate(1000.0)

    choose(default_config("sft", max_length=1024), [20, 40, 30], CPU, estimate=recording)
    assert seen and set(seen) == {40 + 16}
    seen.clear()
    choose(default_config("sft", max_length=1024), [20, 40, 30], CPU, estimate=recording, measured_all=False)
    assert set(seen) == {1024}  # a sample may miss longer rows


@pytest.mark.slow
def test_grpo_scores_only_the_sampled_completions(tmp_path, tiny_model_dir, monkeypatch):
    """The sampling methods carry the option on by default: in a real GRPO step on the tiny
    model, the vocabulary projection sees the completion tokens, not the prompts before them."""
    import trl.trainer.utils as trl_utils
    from datasets import Dataset

    from backend.training.trainer_builders import (build_model, build_tokenizer, build_trainer, build_trl_args,
                                                   choose_precision)

    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # the worker's patch, undone after
    cfg = default_config("grpo", model=str(tiny_model_dir), quantization="none", max_steps=1, report_to="none",
                         per_device_train_batch_size=4, num_generations=4, max_completion_length=6,
                         gradient_checkpointing=False, eval_steps=0, save_steps=0)
    assert cfg.score_trained_tokens_only is True
    prompt = "Question: please say something about the number seven, in as many words as you like?"
    precision = choose_precision()
    tokenizer = build_tokenizer(str(tiny_model_dir), cfg)
    model = build_model(str(tiny_model_dir), cfg, precision)
    args = build_trl_args(cfg, precision, str(tmp_path / "out"), has_eval=False)
    trainer = build_trainer(cfg, model, tokenizer, args, Dataset.from_list([{"prompt": prompt}] * 8), None, [])
    kernel = trl_utils._ChunkedLogProbFunction
    apply, scored = kernel.apply, []
    monkeypatch.setattr(kernel, "apply", lambda hidden, *rest: scored.append(hidden.shape[0]) or apply(hidden, *rest))
    trainer.train()
    prompt_tokens = len(tokenizer(prompt)["input_ids"])
    assert scored and max(scored) <= 4 * 6 < 4 * prompt_tokens, (scored, prompt_tokens)
