"""Run configuration: the shared base of every method's config, and how configs are read and checked.

The config dataclasses (``BaseRunConfig`` here, one subclass per method in
``backend/methods``) are the single source of truth for every setting: the CLI
reads overrides into them, the window generates its settings form from their
field metadata (label, help, range, choices, basic/advanced), and every run
saves one as ``config.yaml`` so that the file alone reproduces the run.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backend.core.atomic_files import write_text_atomic  # noqa: F401 - re-exported: older callers import it here


def setting(
    default: Any,
    help: str,
    *,
    label: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[Any, ...] | None = None,
    advanced: bool = False,
    group: str = "Training",
    choice_notes: dict[Any, str] | None = None,
    placeholder: str = "",
) -> Any:
    """A dataclass field with the metadata the form builder and validator need.
    ``choice_notes`` (choice -> a few words) are shown beside the choices in the form;
    ``placeholder`` is the grey example an empty text field shows."""
    meta = {
        "help": help,
        "label": label,
        "min": minimum,
        "max": maximum,
        "choices": choices,
        "advanced": advanced,
        "group": group,
        "choice_notes": choice_notes,
        "placeholder": placeholder,
    }
    return field(default=default, metadata=meta)


@dataclass
class BaseRunConfig:
    """Settings shared by every method."""

    method: str = field(default="", metadata={"help": "Training method", "internal": True})

    # --- Model -------------------------------------------------------------
    model: str = setting(
        "",
        "Base model: a Hugging Face model id, a local folder, or a .gguf file. "
        "Empty uses the embedded Gemma 3 270M, which works offline.",
        label="Model",
        group="Model",
    )
    trust_remote_code: bool = setting(
        False,
        "Allow the model repository to run its own Python code. Only enable for models you trust.",
        label="Trust remote code",
        group="Model",
        advanced=True,
    )
    allow_pickle_weights: bool = setting(
        False,
        "Load weights stored as pickle files (pytorch_model.bin) when a model has no safetensors. "
        "Pickle can run code while loading; files are read with torch.load(weights_only=True), which blocks "
        "most of it. Only enable for models from a source you trust.",
        label="Allow pickle weights",
        group="Model",
        advanced=True,
    )
    quantization: str = setting(
        "4bit",
        "How the frozen base weights are stored: 4-bit NF4 (QLoRA, least memory), 8-bit, "
        "or none (full precision, most memory, fastest on CPU).",
        label="Quantization",
        choices=("4bit", "8bit", "none"),
        group="Model",
    )

    # --- Data --------------------------------------------------------------
    data_path: str = setting("", "Dataset file or folder.", label="Dataset", group="Data")
    data_format: str = setting(
        "",
        "Dataset format. Empty detects it from the columns.",
        label="Format",
        group="Data",
        advanced=True,
    )
    column_map: dict = setting(
        None,
        "Manual column mapping, canonical field -> column in the file (e.g. prompt: question).",
        label="Column mapping",
        group="Data",
        advanced=True,
    )
    data_subset: str = setting(
        "", "Subset (configuration) of a Hugging Face dataset id. Empty: its default.",
        label="Hub subset", group="Data", advanced=True,
    )
    data_split: str = setting(
        "", "Split to train on, of a dataset folder or a Hugging Face dataset. Empty: train.",
        label="Split", group="Data", advanced=True,
    )
    data_revision: str = setting(
        "", "Commit or branch of a Hugging Face dataset. Empty: the latest (the cached one offline).",
        label="Hub revision", group="Data", advanced=True,
    )
    eval_split: str = setting(
        "",
        "Split held out for evaluation and the Compare tab. Empty: the dataset's test (or validation) split "
        "when it has one, otherwise Held-out fraction of the training rows; none: always the fraction.",
        label="Held-out split", group="Data", advanced=True,
    )
    data_mix: dict = setting(
        None,
        "Further datasets mixed into the run, each with the share of the training rows it gives, e.g. "
        "{extra.jsonl: 0.3, owner/name: 0.2}; the Dataset above gives the rest. Their formats must agree.",
        label="Mix in", group="Data", advanced=True,
    )
    eval_fraction: float = setting(
        0.05,
        "Fraction of the rows held out for evaluation and for the Compare tab. 0 disables evaluation.",
        label="Held-out fraction",
        minimum=0.0,
        maximum=0.5,
        group="Data",
    )
    eval_max_rows: int = setting(
        200,
        "Evaluate on at most this many of the held-out rows (0: all of them). Every held-out row stays out "
        "of training and in the Compare tab; a large held-out set would otherwise make each evaluation "
        "take longer than the training around it.",
        label="Evaluation rows (max)",
        minimum=0,
        maximum=10_000_000,
        group="Data",
        advanced=True,
    )
    eval_batch_size: int = setting(
        0,
        "Examples per forward pass during evaluation. 0 uses twice the training batch size: evaluation "
        "keeps no activations for a backward pass, so a larger batch fits in the same memory and runs faster.",
        label="Evaluation batch size",
        minimum=0,
        maximum=4096,
        group="Data",
        advanced=True,
    )
    max_length: int = setting(
        512,
        "Longest prompt + response in tokens; longer examples are truncated. "
        "Memory grows with it; keep it as short as your data allows.",
        label="Max length (tokens)",
        minimum=16,
        maximum=131072,
        group="Data",
    )
    long_prompts: str = setting(
        "truncate_left",
        "Examples whose prompt leaves too little room for the answer within Max length. truncate_left: "
        "cut the start of the prompt so the answer keeps at least half of Max length (all of it when "
        "shorter); drop: leave out every example that would lose part of its answer, and report them; "
        "refuse: do not start, and say the Max length at which every example fits.",
        label="Long prompts",
        choices=("truncate_left", "drop", "refuse"),
        group="Data",
        advanced=True,
    )

    # --- LoRA --------------------------------------------------------------
    lora_r: int = setting(
        16,
        "LoRA rank: size of the trainable update. 8-64 is typical; higher learns more and uses more memory.",
        label="LoRA rank",
        minimum=1,
        maximum=1024,
        group="LoRA",
    )
    lora_alpha: int = setting(
        32,
        "LoRA scaling; the update is scaled by alpha / rank. Usually twice the rank.",
        label="LoRA alpha",
        minimum=1,
        maximum=4096,
        group="LoRA",
    )
    lora_dropout: float = setting(
        0.05, "Dropout on the LoRA path, against overfitting small datasets.",
        label="LoRA dropout", minimum=0.0, maximum=0.9, group="LoRA", advanced=True,
    )
    lora_target_modules: str = setting(
        "all-linear",
        "Which layers get adapters: 'all-linear', or comma-separated module names such as 'q_proj,v_proj'.",
        label="LoRA target modules",
        group="LoRA",
        advanced=True,
    )

    # --- Optimisation ------------------------------------------------------
    learning_rate: float = setting(
        2e-4, "Peak learning rate.", label="Learning rate", minimum=1e-9, maximum=1e-1
    )
    num_train_epochs: float = setting(
        1.0, "Passes over the training data (ignored when Max steps is set).",
        label="Epochs", minimum=0.01, maximum=100.0,
    )
    max_steps: int = setting(
        0, "Stop after this many optimizer steps. 0 trains for the number of epochs.",
        label="Max steps", minimum=0, maximum=10_000_000,
    )
    per_device_train_batch_size: int = setting(
        4, "Examples per forward pass. Lower it first when memory runs out.",
        label="Batch size", minimum=1, maximum=4096,
    )
    gradient_accumulation_steps: int = setting(
        4, "Forward passes per optimizer step. Effective batch = batch size x this; "
        "raise it to keep the effective batch when you lower the batch size.",
        label="Gradient accumulation", minimum=1, maximum=4096,
    )
    warmup_ratio: float = setting(
        0.1, "Fraction of the steps over which the learning rate ramps up from zero.",
        label="Warm-up fraction", minimum=0.0, maximum=0.9, advanced=True,
    )
    lr_scheduler_type: str = setting(
        "cosine", "How the learning rate decays after warm-up.",
        label="LR schedule", choices=("cosine", "linear", "constant", "constant_with_warmup"), advanced=True,
    )
    weight_decay: float = setting(
        0.0, "Weight decay on the LoRA weights.", label="Weight decay", minimum=0.0, maximum=1.0, advanced=True
    )
    max_grad_norm: float = setting(
        1.0, "Gradients are clipped to this norm; guards against loss spikes.",
        label="Max gradient norm", minimum=0.0, maximum=1000.0, advanced=True,
    )
    seed: int = setting(42, "Random seed for data order and initialisation.", label="Seed",
                        minimum=0, maximum=2**31 - 1, advanced=True)
    gradient_checkpointing: bool = setting(
        True, "Recompute activations in the backward pass: much less memory, about 30% slower.",
        label="Gradient checkpointing", advanced=True,
    )

    # --- Cadence and output -----------------------------------------------
    logging_steps: int = setting(
        1, "Log metrics every N optimizer steps.", label="Log every", minimum=1, maximum=100000,
        group="Output", advanced=True,
    )
    eval_steps: int = setting(
        50, "Evaluate on the held-out rows every N steps (0: only at the end).", label="Evaluate every",
        minimum=0, maximum=1000000, group="Output", advanced=True,
    )
    save_steps: int = setting(
        100, "Save a resumable checkpoint every N steps (0: only the final adapter).", label="Checkpoint every",
        minimum=0, maximum=1000000, group="Output", advanced=True,
    )
    save_total_limit: int = setting(
        2, "Keep at most this many checkpoints (older ones are deleted).", label="Checkpoints kept",
        minimum=1, maximum=1000, group="Output", advanced=True,
    )
    output_dir: str = setting(
        "", "Folder that holds the run folders. Empty uses ~/AlignStudio/runs.",
        label="Runs folder", group="Output", advanced=True,
    )
    run_name: str = setting("", "Name of the run folder. Empty names it from the time and method.",
                            label="Run name", group="Output", advanced=True)
    report_to: str = setting(
        "", "Trackers that also receive every metric, through TRL's own reporting: tensorboard, wandb, "
        "trackio, mlflow (several separated by commas). Empty: TensorBoard, in the run folder, when it is "
        "installed; none: only metrics.jsonl.",
        label="Trackers", group="Output", advanced=True,
    )


class ConfigError(ValueError):
    """A configuration problem. ``problems`` lists (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{name}: {msg}" for name, msg in problems))


def config_classes() -> dict[str, type[BaseRunConfig]]:
    """Each registered method's config class, by key. The registry is imported here, not at
    the top: the method modules build their configs on this module's base."""
    from backend.methods import all_methods

    return {spec.key: spec.config for spec in all_methods()}


def config_class(method: str) -> type[BaseRunConfig]:
    from backend.methods import find_method

    spec = find_method(method)  # a key or one of its aliases
    key = spec.key if spec else (method or "").lower()
    classes = config_classes()
    if key not in classes:
        raise ConfigError([("method", f"unknown method {method!r}; choose one of {', '.join(classes)}")])
    return classes[key]


def default_config(method: str, **values: Any) -> BaseRunConfig:
    cfg = config_class(method)()
    return replace_values(cfg, values)


def user_fields(cls_or_cfg) -> list[dataclasses.Field]:
    """The fields a user can set, in declaration order (``method`` is implied by the class)."""
    return [f for f in dataclasses.fields(cls_or_cfg) if not f.metadata.get("internal")]


def _field_type(f: dataclasses.Field) -> type:
    # Annotations are strings (``from __future__ import annotations``); the default tells the type.
    if str(f.type).startswith("list"):
        return list
    if f.default is None or f.default is dataclasses.MISSING:
        return dict if "dict" in str(f.type) else str
    return type(f.default)


def parse_bool(value: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case) or a bool; ValueError otherwise."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if isinstance(value, (bool, int)):
        return bool(value)
    raise ValueError(value)


def coerce_value(f: dataclasses.Field, value: Any) -> Any:
    """Turn a CLI/GUI/YAML value into the field's type, or raise ConfigError naming the field."""
    kind = _field_type(f)
    if value is None:
        return None if kind is dict else [] if kind is list else f.default
    try:
        if kind is bool:
            return parse_bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is dict:
            if isinstance(value, str):
                parsed = yaml.safe_load(value) if value.strip() else None
                if parsed is not None and not isinstance(parsed, dict):
                    raise ValueError
                return parsed
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        if kind is list:
            # A list of mappings (e.g. graders), given as YAML text by --set or the form.
            parsed = (yaml.safe_load(value) if value.strip() else []) if isinstance(value, str) else value
            if isinstance(parsed, dict):
                parsed = [parsed]
            if not isinstance(parsed, (list, tuple)):
                raise ValueError
            return list(parsed)
        return str(value)
    except (TypeError, ValueError, yaml.YAMLError):
        raise ConfigError([(f.name, f"expected {kind.__name__}, got {value!r}")]) from None


def replace_values(cfg: BaseRunConfig, values: dict[str, Any]) -> BaseRunConfig:
    """Return a copy of ``cfg`` with ``values`` applied (types coerced, unknown keys refused)."""
    values = apply_quantization_aliases(values)
    by_name = {f.name: f for f in user_fields(cfg)}
    unknown = [k for k in values if k not in by_name and k != "method"]
    if unknown:
        raise ConfigError([(k, unknown_setting_message(k, cfg)) for k in unknown])
    changes = {k: coerce_value(by_name[k], v) for k, v in values.items() if k != "method"}
    return dataclasses.replace(cfg, **changes)


def apply_values(cfg: BaseRunConfig, values: dict[str, Any]) -> tuple[BaseRunConfig, list[tuple[str, str]]]:
    """Like ``replace_values``, but apply every value that can be applied and return
    the problems with the others, so a user sees every mistake in one go."""
    problems: list[tuple[str, str]] = []
    try:
        values = apply_quantization_aliases(values)
    except ConfigError as exc:
        problems += exc.problems
        values = {k: v for k, v in values.items() if k not in QUANTIZATION_ALIASES}
    for name, value in values.items():
        try:
            cfg = replace_values(cfg, {name: value})
        except ConfigError as exc:
            problems += exc.problems
    return cfg, problems


def unknown_setting_message(name: str, cfg: BaseRunConfig) -> str:
    """Why ``name`` is refused: another method's setting, a likely typo, or simply unknown.

    Unknown keys stay errors rather than being ignored: a misspelt ``lerning_rate``
    silently dropped would train with the default and nobody would notice."""
    from backend.methods import method_label

    method = method_label(cfg.method)
    owners = [method_label(m) for m, cls in config_classes().items() if name in {f.name for f in user_fields(cls)}]
    if owners:
        return f"'{name}' is a setting of {'/'.join(owners)} only; {method} has no such setting"
    names = [f.name for f in user_fields(cfg)] + list(QUANTIZATION_ALIASES)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return (f"unknown setting '{name}' for {method}{hint} "
            f"(`alignstudio settings {cfg.method}` lists every setting)")


# YAML from other tools (TRL's ModelConfig, Axolotl) names the quantization with two
# booleans; they are read as the one ``quantization`` choice the studio uses.
QUANTIZATION_ALIASES = {"load_in_4bit": "4bit", "load_in_8bit": "8bit"}


def apply_quantization_aliases(values: dict[str, Any]) -> dict[str, Any]:
    """Map ``load_in_4bit`` / ``load_in_8bit`` onto ``quantization``; refuse contradictions."""
    given = {k: values[k] for k in QUANTIZATION_ALIASES if k in values}
    if not given:
        return values
    rest = {k: v for k, v in values.items() if k not in QUANTIZATION_ALIASES}
    flags, problems = {}, []
    for key, raw in given.items():
        try:
            flags[key] = parse_bool(raw)
        except ValueError:
            problems.append((key, f"{key} must be true or false; got {raw!r}"))
    if problems:
        raise ConfigError(problems)
    on = [k for k, v in flags.items() if v]
    if len(on) > 1:
        message = ("load_in_4bit and load_in_8bit are both true, but the base weights are stored one way "
                   "only. Keep one of them (4-bit needs the least memory), or write quantization: 4bit, "
                   "8bit or none instead.")
        raise ConfigError([("load_in_4bit", message), ("load_in_8bit", message)])
    implied = QUANTIZATION_ALIASES[on[0]] if on else "none"
    stated = rest.get("quantization")
    if stated is not None and str(stated) != implied:
        said = ", ".join(f"{k}: {str(v).lower()}" for k, v in flags.items())
        raise ConfigError([("quantization", f"Quantization is {stated!r} but {said} asks for {implied!r}; "
                                            "keep only one of the two ways of saying it")])
    rest["quantization"] = implied
    return rest


def validate(cfg: BaseRunConfig) -> list[tuple[str, str]]:
    """Every problem with ``cfg`` as (field, message); empty when the config can run."""
    problems: list[tuple[str, str]] = []
    for f in user_fields(cfg):
        value = getattr(cfg, f.name)
        meta = f.metadata
        label = meta.get("label") or f.name
        if meta.get("choices") and value not in meta["choices"]:
            problems.append((f.name, f"{label} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta.get("min"), meta.get("max")
            if value != value:  # NaN
                problems.append((f.name, f"{label} must be a number"))
            elif lo is not None and lo > 0 and value <= 0:
                problems.append((f.name, f"{label} must be above 0 (between {lo:g} and {hi:g}); got {value:g}"))
            elif lo is not None and value < lo or hi is not None and value > hi:
                problems.append((f.name, f"{label} must be between {lo:g} and {hi:g}; got {value:g}"))
    problems += _target_module_problems(cfg)
    if cfg.max_steps == 0 and cfg.num_train_epochs <= 0:
        problems.append(("num_train_epochs", "set either Epochs above 0 or Max steps"))
    from backend.methods import find_method
    from backend.training.tracking import tracker_problems

    problems += tracker_problems(cfg.report_to)
    spec = find_method(cfg.method)
    if spec is not None and spec.validate is not None:
        # A target list already refused as malformed is not judged again by the method.
        refused = {name for name, _ in problems}
        problems += [p for p in spec.validate(cfg) if p[0] != "lora_target_modules" or p[0] not in refused]
    return problems


_MODULE_NAME = re.compile(r"^[A-Za-z_][\w.]*$")


def _target_module_problems(cfg: BaseRunConfig) -> list[tuple[str, str]]:
    text = cfg.lora_target_modules.strip()
    if text == "":
        return [("lora_target_modules", "LoRA target modules must not be empty (use 'all-linear')")]
    if text == "all-linear":
        return []
    names = [t.strip() for t in text.split(",")]
    bad = [n for n in names if not _MODULE_NAME.match(n)]
    if bad:
        return [("lora_target_modules", f"LoRA target modules: {', '.join(repr(b) for b in bad)} is not a module "
                                        "name; write 'all-linear' or names separated by commas, "
                                        "e.g. q_proj,v_proj")]
    return []


def field_label(name: str) -> str:
    """The label the window shows for setting ``name`` (the name itself for non-settings)."""
    for cls in config_classes().values():
        for f in user_fields(cls):
            if f.name == name and f.metadata.get("label"):
                return f.metadata["label"]
    return name


def describe_problems(problems: list[tuple[str, str]], keys: bool = True) -> list[str]:
    """Each problem as a sentence naming the setting by its label (the window's name
    for it) and, with ``keys``, by the key a config file or ``--set`` uses. A message
    shared by several settings (a contradiction) is said once, naming them all."""
    grouped: dict[str, list[str]] = {}
    for name, message in problems:
        grouped.setdefault(message, []).append(name)
    lines = []
    for message, names in grouped.items():
        label = field_label(names[0])
        text = message if len(names) > 1 or message.startswith(label) else f"{label}: {message}"
        key_list = ", ".join(names)
        if keys and not (len(names) == 1 and label == names[0]):
            text += f" [{key_list}]"
        lines.append(text)
    return lines


def check(cfg: BaseRunConfig) -> BaseRunConfig:
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def to_dict(cfg: BaseRunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> BaseRunConfig:
    if not isinstance(data, dict):
        raise ConfigError([("config", "expected a mapping of setting names to values")])
    from backend.runs.code_permissions import strip_file_only_settings

    # Configs come from files that travel: what they say about permissions and the
    # runs folder is dropped here, once, for every reader (see backend.runs.code_permissions).
    data, _asked = strip_file_only_settings(data)
    cls = config_class(str(data.get("method", "")))
    return replace_values(cls(), {k: v for k, v in data.items() if k != "method"})


def save_yaml(cfg: BaseRunConfig, path: str | Path) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# AlignStudio run configuration; `alignstudio train --config` on this file repeats the run\n"
    # Permissions and the runs folder are the user's, on this machine: never written for a reader to trust.
    from backend.runs.code_permissions import FILE_CANNOT_SET

    kept = {k: v for k, v in to_dict(cfg).items() if k not in FILE_CANNOT_SET}
    text += yaml.safe_dump(kept, sort_keys=False, allow_unicode=True)
    write_text_atomic(path, text)
    return path


def load_yaml(path: str | Path) -> BaseRunConfig:
    return from_dict(read_yaml_mapping(path))


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML file, not yet checked; ConfigError if it is no such file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([("config", f"{path} does not exist")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("config", f"{path} cannot be read: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("config", f"{path} is not valid YAML: {exc}")]) from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError([("config", f"{path} must hold setting: value lines, not a {type(data).__name__}")])
    return data


