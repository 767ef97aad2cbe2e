"""DPO's own checks: every loss TRL's DPOTrainer has (kept equal to TRL's own list), the
weighted extra losses, the settings refused before a model is loaded, its TRL config, and
one training step per loss on the tiny model, all in this process."""

from __future__ import annotations

import ast
import math
import re
from functools import lru_cache
from pathlib import Path

import pytest

from backend.training.memory_estimate import GEMMA3_270M, estimate_memory
from backend.methods.dpo import DPO_LOSS_TYPES, F_DIVERGENCE_LOSSES, parse_extra_losses
from backend.runs.config import default_config, describe_problems, validate
from tests.methods.in_process_training import easy_pairs, logged_steps, train_in_process

# The settings each loss needs before TRL accepts it (the rest train on the defaults).
NEEDS = {"robust": {"label_smoothing": 0.1}, "exo_pair": {"label_smoothing": 1e-3}}


def _trl_file(relative: str) -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("trl").origin).parent / relative


def _losses_in_dpo_trainer() -> set[str]:
    """The loss names DPOTrainer._compute_loss branches on, read from TRL's source."""
    tree = ast.parse(_trl_file("trainer/dpo_trainer.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "_compute_loss":
            for cmp in ast.walk(node):
                if (isinstance(cmp, ast.Compare) and isinstance(cmp.left, ast.Name) and cmp.left.id == "loss_type"
                        and isinstance(cmp.comparators[0], ast.Constant)):
                    names.add(cmp.comparators[0].value)
    return names


def test_the_studio_offers_exactly_the_losses_of_the_installed_trl():
    from trl import DPOConfig

    in_trainer = _losses_in_dpo_trainer()
    assert len(in_trainer) >= 15, in_trainer  # the source still has the shape this reads
    assert set(DPO_LOSS_TYPES) == in_trainer, "TRL's DPOTrainer has other losses than the studio's list"
    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    assert set(re.findall(r"`'(\w+)'`", help_text)) == set(DPO_LOSS_TYPES)
    assert len(DPO_LOSS_TYPES) == len(set(DPO_LOSS_TYPES))


def test_losses_that_need_label_smoothing_say_so():
    for loss in ("robust", "exo_pair"):
        problems = dict(validate(default_config("dpo", loss_type=loss)))
        assert "label smoothing above 0" in problems["label_smoothing"], loss
        assert validate(default_config("dpo", loss_type=loss, **NEEDS[loss])) == []
    # also when the loss is an extra one
    problems = dict(validate(default_config("dpo", extra_losses="exo_pair:0.5")))
    assert "exo_pair loss needs a label smoothing above 0" in problems["label_smoothing"]


def test_extra_losses_are_read_with_weights_and_bad_entries_named():
    assert parse_extra_losses("sft:0.5, bco_pair:0.2") == ([("sft", 0.5), ("bco_pair", 0.2)], [])
    assert parse_extra_losses(" SFT ; hinge=2 ,, ") == ([("sft", 1.0), ("hinge", 2.0)], [])
    assert parse_extra_losses("") == ([], [])
    problems = dict(validate(default_config("dpo", extra_losses="sftt:0.5, bco_pair:x, ipo:-1, hinge, hinge:2")))
    message = problems["extra_losses"]
    assert "'sftt:0.5': there is no loss 'sftt' (did you mean sft?); " in message
    assert "'bco_pair:x': the weight 'x' is not a number" in message
    assert "'ipo:-1': the weight must be a number above 0" in message
    assert "'hinge:2': hinge is listed twice" in message
    assert describe_problems([("extra_losses", message)])[0].startswith("Extra losses: 'sftt:0.5'")
    assert "there is no loss 'bco' (did you mean bco_pair?)" in dict(validate(
        default_config("dpo", extra_losses="bco:0.2")))["extra_losses"]
    unknown = dict(validate(default_config("dpo", extra_losses="kto:1")))["extra_losses"]
    assert unknown == "'kto:1': there is no loss 'kto'; the losses are " + ", ".join(DPO_LOSS_TYPES)
    problems = dict(validate(default_config("dpo", loss_type="sigmoid", extra_losses="sigmoid:0.5")))
    assert "sigmoid is already the main loss" in problems["extra_losses"]
    assert validate(default_config("dpo", extra_losses="bco_pair:0.2, sft:1", loss_weight=0.8)) == []


def test_settings_trl_would_reject_after_loading_are_refused_first():
    def problems(**values):
        return dict(validate(default_config("dpo", **values)))

    aot = problems(loss_type="aot", per_device_train_batch_size=1)
    assert "batch size of 1 it is plain sigmoid DPO" in aot["per_device_train_batch_size"]
    assert "Weight pairs (WPO) does not work with the aot_unpaired loss" in problems(
        loss_type="aot_unpaired", use_weighting=True)["use_weighting"]
    # TRL 1.16 fails at the first step on this one (an in-place weight on the sft loss's broadcast view)
    assert "does not work with the sft loss" in problems(loss_type="ipo", extra_losses="sft",
                                                          use_weighting=True)["use_weighting"]
    assert "does not work with the hinge loss" in problems(loss_type="hinge", use_weighting=True)["use_weighting"]
    assert "use one of the two" in problems(loss_type="apo_zero", extra_losses="apo_down")["extra_losses"]
    diverged = problems(f_divergence_type="js_divergence", extra_losses="bco_pair:0.2")
    assert "does not work with the bco_pair loss" in diverged["f_divergence_type"]
    assert validate(default_config("dpo", f_divergence_type="js_divergence", extra_losses="sft")) == []
    assert "must be between 0 and 1" in problems(ld_alpha=1.5)["ld_alpha"]
    assert "above 0" in problems(loss_weight=0.0)["loss_weight"]


def test_lm_head_adapter_is_refused_once():
    problems = validate(default_config("dpo", lora_target_modules="q_proj,lm_head"))
    assert problems == [("lora_target_modules", "LoRA target modules: DPO cannot train an adapter on lm_head; "
                                                "remove it from the list")]
    assert validate(default_config("sft", lora_target_modules="q_proj,lm_head")) == []


def test_precomputing_the_reference_drops_its_memory_part():
    device = {"kind": "cuda", "memory_mb": 80_000, "bf16": True}
    live = estimate_memory(default_config("dpo", max_length=2048), device, GEMMA3_270M)
    pre = estimate_memory(default_config("dpo", max_length=2048, precompute_ref_log_probs=True), device,
                          GEMMA3_270M)
    assert live.parts.get("reference", 0) > 0 and "reference" not in pre.parts


def _trl_args(tmp_path, **values):
    from backend.training.trainer_builders import Precision, build_trl_args

    cfg = default_config("dpo", **values)
    assert validate(cfg) == []
    return build_trl_args(cfg, Precision("cpu", None, bf16=False, fp16=False), str(tmp_path), has_eval=False)


@pytest.mark.slow
@pytest.mark.parametrize("loss", DPO_LOSS_TYPES)
def test_each_loss_builds_its_trl_config(loss, tmp_path):
    args = _trl_args(tmp_path, beta=0.3, loss_type=loss, **NEEDS.get(loss, {}))
    assert type(args).__name__ == "DPOConfig"
    assert args.beta == 0.3 and list(args.loss_type) == [loss] and args.loss_weights is None
    assert args.label_smoothing == NEEDS.get(loss, {}).get("label_smoothing", 0.0)


@pytest.mark.slow
def test_combined_losses_and_their_settings_reach_trl(tmp_path):
    args = _trl_args(tmp_path, loss_type="sigmoid", loss_weight=0.8, extra_losses="bco_pair:0.2, sft")
    assert list(args.loss_type) == ["sigmoid", "bco_pair", "sft"] and args.loss_weights == [0.8, 0.2, 1.0]
    args = _trl_args(tmp_path, loss_type="discopop", discopop_tau=0.1, use_weighting=True, ld_alpha=0.5,
                     f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3)
    assert (args.discopop_tau, args.use_weighting, args.ld_alpha) == (0.1, True, 0.5)
    assert (args.f_divergence_type, args.f_alpha_divergence_coef) == ("alpha_divergence", 0.3)
    args = _trl_args(tmp_path)  # the defaults leave TRL's own defaults alone
    assert (args.ld_alpha, args.f_divergence_type, args.use_weighting) == (None, "reverse_kl", False)


@pytest.mark.slow
def test_trl_dpo_command_line_reads_the_combined_losses(tmp_path):
    """What `alignstudio export --as-command` writes for `trl dpo`: TRL's own parser takes the lists."""
    import yaml
    from trl.scripts.dpo import make_parser

    from backend.methods.dpo import trl_cli_keys

    cfg = default_config("dpo", loss_weight=0.8, extra_losses="bco_pair:0.2, sft", ld_alpha=0.5)
    path = tmp_path / "trl_dpo.yaml"
    path.write_text(yaml.safe_dump(dict(trl_cli_keys(cfg), output_dir=str(tmp_path), use_cpu=True, bf16=False,
                                        model_name_or_path="m", dataset_name="d")), encoding="utf-8")
    training_args = make_parser().parse_args_and_config(args=["--config", str(path)])[1]
    assert training_args.loss_type == ["sigmoid", "bco_pair", "sft"] and training_args.loss_weights == [0.8, 0.2, 1.0]
    assert training_args.ld_alpha == 0.5


# ------------------------------------------------------------- training, in this process
# One process for every loss (tests/methods/in_process_training.py): one step each.
_STATE: dict = {}


@pytest.fixture(scope="module")
def one_step_setup(tiny_model_dir, tmp_path_factory):
    _STATE.update(model_dir=tiny_model_dir, data=easy_pairs(), out=tmp_path_factory.mktemp("dpo-losses"))
    yield
    _first_step.cache_clear()
    _STATE.clear()


@lru_cache(maxsize=None)
def _first_step(settings: tuple) -> tuple[float, float, object]:
    """(loss, grad norm, trainer) of one step with ``settings``; a step taken once per settings."""
    out = _STATE["out"] / str(abs(hash(settings)))
    trainer = train_in_process("dpo", _STATE["model_dir"], _STATE["data"], out, **dict(settings))
    logged = logged_steps(trainer)[0]
    return logged["loss"], logged["grad_norm"], trainer


@pytest.mark.slow
@pytest.mark.parametrize("loss", DPO_LOSS_TYPES)
def test_every_loss_trains_a_step(loss, one_step_setup):
    value, grad_norm, trainer = _first_step(tuple(dict(loss_type=loss, **NEEDS.get(loss, {})).items()))
    assert trainer.loss_types == [loss]
    assert math.isfinite(value) and math.isfinite(grad_norm) and grad_norm > 0, (loss, value, grad_norm)


@pytest.mark.slow
def test_combined_losses_train_as_the_weighted_sum_of_their_parts(one_step_setup):
    # MPO: sigmoid 0.8, bco_pair 0.2, sft 1. The first step starts from the reference
    # (LoRA B is zero) on the same seeded batch, so each part's first loss is known.
    parts = {loss: _first_step((("loss_type", loss),))[0] for loss in ("sigmoid", "bco_pair", "sft")}
    mpo, grad_norm, trainer = _first_step((("loss_type", "sigmoid"), ("loss_weight", 0.8),
                                           ("extra_losses", "bco_pair:0.2, sft:1")))
    assert trainer.loss_types == ["sigmoid", "bco_pair", "sft"] and trainer.loss_weights == [0.8, 0.2, 1.0]
    expected = 0.8 * parts["sigmoid"] + 0.2 * parts["bco_pair"] + parts["sft"]
    assert mpo == pytest.approx(expected, rel=1e-3) and grad_norm > 0
    # The settings some losses read train too: WPO, LD-DPO, an f-divergence, DiscoPOP's tau.
    value, grad_norm, _trainer = _first_step((("loss_type", "discopop"), ("discopop_tau", 0.1), ("use_weighting", True),
                                              ("ld_alpha", 0.5), ("f_divergence_type", "js_divergence"),
                                              ("extra_losses", "ipo:0.5")))
    assert math.isfinite(value) and grad_norm > 0
    assert set(F_DIVERGENCE_LOSSES) <= set(DPO_LOSS_TYPES)


def test_the_form_says_what_each_loss_is_for_and_shows_an_example_of_extra_losses(qtbot):
    from backend.methods.dpo import DPO_LOSS_NOTES, DPORunConfig
    from backend.runs.config import to_dict, user_fields
    from widgets.config_form import ConfigForm

    form = ConfigForm()
    qtbot.addWidget(form)
    cfg = DPORunConfig()
    form.build(user_fields(cfg), to_dict(cfg))
    combo = form.editor("loss_type")
    assert [combo.itemData(i) for i in range(combo.count())] == list(DPO_LOSS_TYPES)
    assert combo.itemText(combo.findData("apo_down")) == "apo_down: " + DPO_LOSS_NOTES["apo_down"]
    assert "bco_pair:0.2, sft:1" in form.editor("extra_losses").placeholderText()
    form.set_values({"loss_type": "ipo", "extra_losses": "sft:0.5", "loss_weight": 0.8})
    assert {k: form.values()[k] for k in ("loss_type", "extra_losses", "loss_weight")} == {
        "loss_type": "ipo", "extra_losses": "sft:0.5", "loss_weight": 0.8}


@pytest.mark.slow
def test_precomputed_reference_trains_like_the_on_the_fly_one_in_4bit(tiny_model_dir, tmp_path):
    # The precompute runs the model in eval mode before the first step. On CPUs with AVX512-BF16,
    # bitsandbytes then repacked the 4-bit weights for inference, and no gradient passed back
    # through them for the rest of the run (backend/training/cpu_4bit_gradients.py): the first
    # step's gradient norm fell from 0.57 to 0.31 and 20 steps ended at eval loss 0.17, not 0.04.
    # Length-grouped batches, whose order the precompute had changed (StudioDPOTrainer).
    import torch

    data = easy_pairs(16)
    trainers = {pre: train_in_process("dpo", tiny_model_dir, data, tmp_path / f"pre-{pre}", steps=4,
                                      quantization="4bit", learning_rate=5e-3, group_by_length=True,
                                      precompute_ref_log_probs=pre)
                for pre in (False, True)}
    live, stored = trainers[False], trainers[True]
    steps = {pre: logged_steps(trainer) for pre, trainer in trainers.items()}
    assert len(steps[False]) == len(steps[True]) == 4
    for on_the_fly, precomputed in zip(steps[False], steps[True]):
        assert precomputed["loss"] == pytest.approx(on_the_fly["loss"], rel=1e-3, abs=1e-4)
        assert precomputed["grad_norm"] == pytest.approx(on_the_fly["grad_norm"], rel=1e-3)
    assert steps[True][-1]["loss"] < steps[True][0]["loss"]  # and it learns
    # The stored reference of a row is the one the on-the-fly path computes for it.
    rows = stored.train_dataset.select(range(4))
    assert stored.precompute_ref_logps and not live.precompute_ref_logps
    batch = live.data_collator([{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in rows])
    with torch.no_grad():
        chosen, rejected = live.compute_ref_log_probs(live.model, batch)
    assert chosen.tolist() == pytest.approx(rows["ref_chosen_logps"], abs=1e-3)
    assert rejected.tolist() == pytest.approx(rows["ref_rejected_logps"], abs=1e-3)
