import pytest

from backend.run_config import (METHODS, ConfigError, check, default_config, from_dict, load_yaml,
                                replace_values, save_yaml, to_dict, user_fields, validate)


@pytest.mark.parametrize("method", METHODS)
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
