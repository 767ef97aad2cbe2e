import pytest

from backend.methods import method_keys
from backend.runs.config import (ConfigError, apply_values, check, default_config, describe_problems,
                                field_label, from_dict, load_yaml, replace_values, save_yaml, to_dict, user_fields,
                                validate)


@pytest.mark.parametrize("method", method_keys())
def test_every_field_has_help_and_default_validates(method):
    cfg = default_config(method)
    assert validate(cfg) == []
    for f in user_fields(cfg):
        assert f.metadata.get("help"), f"{method}.{f.name} has no help text"


def test_preference_methods_default_to_far_lower_learning_rate_than_sft():
    sft = default_config("sft").learning_rate
    assert default_config("dpo").learning_rate * 10 <= sft
    assert default_config("orpo").learning_rate * 10 <= sft


def test_yaml_round_trip_reproduces_config(tmp_path):
    cfg = default_config("dpo", beta=0.25, loss_type="ipo", max_steps=7, column_map={"prompt": "question"})
    path = save_yaml(cfg, tmp_path / "config.yaml")
    again = load_yaml(path)
    assert again == cfg
    assert type(again).__name__ == "DPORunConfig"


def test_out_of_range_value_names_field_and_range():
    cfg = default_config("dpo", beta=-1.0)
    problems = dict(validate(cfg))
    assert "beta" in problems
    assert "between" in problems["beta"]
    with pytest.raises(ConfigError) as info:
        check(cfg)
    assert "beta" in str(info.value)


def test_bad_choice_and_bad_type_are_refused_with_field_name():
    assert "quantization" in dict(validate(default_config("sft", quantization="3bit")))
    with pytest.raises(ConfigError) as info:
        replace_values(default_config("sft"), {"max_steps": "many"})
    assert info.value.problems[0][0] == "max_steps"
    with pytest.raises(ConfigError) as info:
        replace_values(default_config("sft"), {"beta": 0.1})  # SFT has no beta
    assert info.value.problems[0][0] == "beta"


def test_string_overrides_are_coerced():
    cfg = replace_values(default_config("dpo"), {"beta": "0.3", "gradient_checkpointing": "false", "lora_r": "8"})
    assert cfg.beta == 0.3 and cfg.gradient_checkpointing is False and cfg.lora_r == 8


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ConfigError) as info:
        from_dict({"method": "ppo2"})
    assert "unknown method" in str(info.value)


def test_robust_loss_needs_label_smoothing():
    assert "label_smoothing" in dict(validate(default_config("dpo", loss_type="robust")))
    assert validate(default_config("dpo", loss_type="robust", label_smoothing=0.1)) == []


def test_to_dict_has_method():
    assert to_dict(default_config("orpo"))["method"] == "orpo"


# --- refusals that name the field ------------------------------------------------------------

@pytest.mark.parametrize("method,label", [("dpo", "Beta"), ("orpo", "Beta (lambda)")])
@pytest.mark.parametrize("beta", [0.0, -0.5])
def test_beta_of_zero_or_below_names_beta(method, label, beta):
    problems = dict(validate(default_config(method, beta=beta)))
    assert problems["beta"].startswith(f"{label} must be above 0")
    assert f"got {beta:g}" in problems["beta"]


def test_allow_pickle_weights_is_an_advanced_model_setting_off_by_default():
    field = {f.name: f for f in user_fields(default_config("sft"))}["allow_pickle_weights"]
    assert field.default is False
    assert field.metadata["group"] == "Model" and field.metadata["advanced"] is True
    assert field.metadata["label"] == "Allow pickle weights" and "pickle" in field.metadata["help"]


def test_other_tools_load_in_4bit_and_8bit_keys_are_read_as_quantization(tmp_path):
    path = tmp_path / "trl.yaml"
    path.write_text("method: sft\nload_in_8bit: true\n")
    assert load_yaml(path).quantization == "8bit"
    path.write_text("method: sft\nload_in_4bit: 'yes'\nload_in_8bit: false\n")
    assert load_yaml(path).quantization == "4bit"
    path.write_text("method: sft\nload_in_4bit: false\n")
    assert load_yaml(path).quantization == "none"
    cfg = replace_values(default_config("dpo"), {"load_in_8bit": "true"})  # the CLI's --set
    assert cfg.quantization == "8bit"


def test_4bit_and_8bit_together_are_refused_naming_both(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("method: dpo\nload_in_4bit: true\nload_in_8bit: true\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert [name for name, _ in info.value.problems] == ["load_in_4bit", "load_in_8bit"]
    assert "both true" in info.value.problems[0][1]


def test_alias_contradicting_quantization_or_not_a_boolean_is_refused():
    with pytest.raises(ConfigError) as info:
        replace_values(default_config("sft"), {"quantization": "none", "load_in_4bit": True})
    assert info.value.problems[0][0] == "quantization" and "'4bit'" in info.value.problems[0][1]
    with pytest.raises(ConfigError) as info:
        replace_values(default_config("sft"), {"load_in_4bit": "maybe"})
    assert info.value.problems == [("load_in_4bit", "load_in_4bit must be true or false; got 'maybe'")]


def test_unknown_keys_stay_errors_with_a_suggestion():
    with pytest.raises(ConfigError) as info:
        replace_values(default_config("dpo"), {"lerning_rate": 1e-5})
    name, message = info.value.problems[0]
    assert name == "lerning_rate" and "did you mean 'learning_rate'" in message
    assert "alignstudio settings dpo" in message
    with pytest.raises(ConfigError) as info:
        replace_values(default_config("sft"), {"extra_losses": "sft:1"})  # a key only one method has
    assert "setting of DPO only" in info.value.problems[0][1]


def test_apply_values_reports_every_problem_and_keeps_the_good_values():
    cfg, problems = apply_values(default_config("dpo"), {
        "lora_r": 8, "max_steps": "many", "nonsense": 1, "load_in_4bit": True, "load_in_8bit": True})
    assert cfg.lora_r == 8
    assert [name for name, _ in problems] == ["load_in_4bit", "load_in_8bit", "max_steps", "nonsense"]


def test_settings_trl_would_refuse_only_after_loading_the_model_are_refused_up_front():
    assert "label_smoothing" in dict(validate(default_config("dpo", loss_type="exo_pair")))
    assert validate(default_config("dpo", loss_type="exo_pair", label_smoothing=1e-3)) == []
    assert "lm_head" in dict(validate(default_config("dpo", lora_target_modules="q_proj,lm_head")))[
        "lora_target_modules"]
    assert validate(default_config("sft", lora_target_modules="q_proj, v_proj,lm_head")) == []
    message = dict(validate(default_config("sft", lora_target_modules="q_proj;v_proj")))["lora_target_modules"]
    assert "'q_proj;v_proj' is not a module name" in message


def test_problems_are_described_by_label_and_key():
    lines = describe_problems([("beta", "Beta must be above 0"), ("max_steps", "expected int, got 'x'"),
                               ("load_in_4bit", "both true"), ("load_in_8bit", "both true")])
    assert lines == ["Beta must be above 0 [beta]", "Max steps: expected int, got 'x' [max_steps]",
                     "both true [load_in_4bit, load_in_8bit]"]
    assert describe_problems([("beta", "Beta must be above 0")], keys=False) == ["Beta must be above 0"]
    assert field_label("output_dir") == "Runs folder" and field_label("not_a_setting") == "not_a_setting"
