"""What to load for a compare session, and loading it: one base model plus a LoRA adapter.

``resolve_load_spec`` is cheap and torch-free: the window calls it when a user
picks a run or an adapter folder, so a folder without an adapter fails at
once with a sentence, not half a minute into a model load. ``load_model``
does the heavy part inside the generation worker, with the same builders the
training worker used, so the base weights are quantised exactly as they were
during training (a 4-bit run is compared on its 4-bit base).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backend.compare.scoring import DEFAULT_BETA
from backend.runs.folder import ADAPTER_DIR, CONFIG_FILE, EVAL_SPLIT_FILE

QUANTIZATIONS = ("4bit", "8bit", "none")


class AdapterLoadError(ValueError):
    """The run, adapter or model cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class LoadSpec:
    model: str  # as resolve_model_source reads it: "" (embedded), a folder, a .gguf file or a hub id
    adapter_dir: str  # "" for the base model alone
    run_dir: str  # "" when the adapter does not come from a run folder
    method: str  # a registry key (backend.methods); "" when unknown
    beta: float
    quantization: str
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    # Whether β·(log p aligned − log p base) means something for this adapter: its method's spec says.
    implicit_reward: bool = True

    @property
    def base_key(self) -> tuple:
        """Two specs with the same key share base weights: only the adapter differs."""
        return (self.model, self.quantization, self.trust_remote_code, self.allow_pickle_weights)

    @property
    def heldout_path(self) -> str:
        return str(Path(self.run_dir) / EVAL_SPLIT_FILE) if self.run_dir else ""


def _find_run_dir(adapter_dir: Path) -> Path | None:
    # A run's final adapter is run/adapter; a checkpoint is run/checkpoints/checkpoint-N.
    for candidate in (adapter_dir.parent, adapter_dir.parent.parent):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    return None


def _adapter_base_model(adapter_dir: Path) -> str:
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(config.get("base_model_name_or_path") or "")


def adapter_config_problem(adapter_dir: Path) -> str:
    """Why ``adapter_dir/adapter_config.json`` cannot describe an adapter, or "" when it can.
    PEFT itself would fail later with a bare ``KeyError: 'peft_type'`` or a JSON error."""
    path = adapter_dir / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    except ValueError as exc:
        return f"{path} is not valid JSON ({exc})"
    if not isinstance(config, dict) or not config.get("peft_type"):
        return (f"{path} names no peft_type, so it does not describe a PEFT adapter (a damaged or "
                "hand-made file?)")
    return ""


def _check_adapter_folder(adapter_dir: Path) -> None:
    if not adapter_dir.is_dir():
        raise AdapterLoadError(f"The adapter folder {adapter_dir} does not exist.")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise AdapterLoadError(
            f"{adapter_dir} holds no adapter_config.json, so it is not a LoRA adapter folder. "
            "Pick a run folder, its adapter/ folder or one of its checkpoints."
        )
    problem = adapter_config_problem(adapter_dir)
    if problem:
        raise AdapterLoadError(problem + ".")


def _refuse_reward_model(adapter_dir: Path) -> None:
    """A score head gives one number per answer and writes nothing: there is no answer to compare."""
    from backend.rewards.scoring import is_reward_model

    if is_reward_model(adapter_dir):
        raise AdapterLoadError(
            f"{adapter_dir.parent.name if adapter_dir.name == ADAPTER_DIR else adapter_dir.name} is a reward model: "
            "it scores answers rather than writing them, so it cannot be loaded here. Evaluate it with "
            "Run > Evaluate rewards… (or `alignstudio eval rewards`), or use it as the reward model that scores "
            "answers.")


def resolve_load_spec(run_dir: str | Path | None = None, adapter_dir: str | Path | None = None,
                      model: str | None = None, quantization: str | None = None,
                      beta: float | None = None) -> LoadSpec:
    """Decide what a load means, from a run folder, an adapter folder, or a model alone.

    A run folder supplies the base model, quantization and beta from its
    config.yaml; permission to run the model's code never comes from it. An
    adapter folder inside a run (its adapter/ or a checkpoint) uses that run's settings; any other adapter takes its base model
    from ``model`` or adapter_config.json, and the default quantization of a new
    run. Explicit arguments override what the run says.
    """
    from backend.runs.config import BaseRunConfig, ConfigError, default_config, load_yaml

    if quantization is not None and quantization not in QUANTIZATIONS:
        raise AdapterLoadError(f"Quantization must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}.")
    cfg = None
    run = Path(run_dir).expanduser() if run_dir else None
    adapter = Path(adapter_dir).expanduser() if adapter_dir else None
    if run is not None:
        if not (run / CONFIG_FILE).is_file():
            raise AdapterLoadError(f"{run} is not a run folder (it has no {CONFIG_FILE}).")
        if adapter is None:
            adapter = run / ADAPTER_DIR
            if not (adapter / "adapter_config.json").is_file():
                raise AdapterLoadError(
                    f"The run {run.name} has no saved adapter yet. Wait for it to finish, or pick one of its "
                    "checkpoints."
                )
    elif adapter is not None:
        run = _find_run_dir(adapter)
    if adapter is not None:
        _check_adapter_folder(adapter)
        _refuse_reward_model(adapter)
    if run is not None:
        try:
            cfg = load_yaml(run / CONFIG_FILE)
        except ConfigError as exc:
            raise AdapterLoadError(f"The run's {CONFIG_FILE} cannot be read: {exc}") from None

    if cfg is not None:
        base_model = model if model is not None else cfg.model
        method = cfg.method
        run_beta = getattr(cfg, "beta", DEFAULT_BETA)
        quant = quantization or cfg.quantization
    else:
        base_model = model if model is not None else (_adapter_base_model(adapter) if adapter is not None else "")
        method, run_beta = "", DEFAULT_BETA
        quant = quantization or BaseRunConfig().quantization
    # Never from the run folder: only what the process that started this one was granted
    # (the window's confirmed grants), with the model's files hashed again now.
    from backend.runs.code_permissions import launch_model_permissions

    granted = launch_model_permissions(base_model or "")
    trust, allow_pickle = granted["trust_remote_code"], granted["allow_pickle_weights"]
    if adapter is None and model is None:
        raise AdapterLoadError("Pick a run, an adapter folder or a model to load.")
    return LoadSpec(
        model=base_model or "",
        adapter_dir=str(adapter.resolve()) if adapter is not None else "",
        run_dir=str(run.resolve()) if run is not None else "",
        method=method,
        beta=float(beta if beta is not None else run_beta),
        quantization=quant,
        trust_remote_code=trust,
        allow_pickle_weights=allow_pickle,
        implicit_reward=_has_implicit_reward(method),
    )


def _has_implicit_reward(method: str) -> bool:
    """An adapter of unknown origin may be a preference run's: its reward is shown. A run
    says its method, and the method's spec says whether the log-ratio is a reward of it."""
    from backend.methods import find_method

    if not method:
        return True
    spec = find_method(method)
    return bool(spec and spec.implicit_reward)


@dataclass
class LoadedModel:
    """What the generation worker holds: one copy of the base weights, wrapped by PEFT
    when an adapter is loaded (``with model.disable_adapter():`` is the base model)."""

    model: Any
    tokenizer: Any
    precision: Any  # trainer_builders.Precision
    spec: LoadSpec
    model_path: str
    model_label: str
    chat_template_added: bool
    adapter_name: str = ""
    adapters_loaded: int = 0

    @property
    def has_adapter(self) -> bool:
        return bool(self.adapter_name)


ADAPTER_NAME_PREFIX = "aligned"


def load_model(spec: LoadSpec, log: Callable[[str], None] = print,
               on_phase: Callable[[str, str], None] | None = None) -> LoadedModel:
    """Load the base model as the run trained it, then its adapter."""
    from backend.models.chat_templates import GEMMA_TEMPLATE, PLAIN_TEMPLATE
    from backend.models.source import local_model_folder, resolve_model_source
    from backend.methods import DEFAULT_METHOD
    from backend.runs.config import default_config

    on_phase = on_phase or (lambda phase, message: None)
    source = resolve_model_source(spec.model)
    on_phase("loading_model", f"Loading {source.label}")
    model_path = local_model_folder(source, log=log)

    import transformers

    transformers.utils.logging.disable_progress_bar()
    from backend.training.trainer_builders import build_model, build_tokenizer, choose_precision

    cfg = default_config(spec.method or DEFAULT_METHOD, quantization=spec.quantization,
                         trust_remote_code=spec.trust_remote_code, allow_pickle_weights=spec.allow_pickle_weights)
    precision = choose_precision()
    started = time.time()
    tokenizer = build_tokenizer(model_path, cfg)
    # A base model gets one of AlignStudio's default templates from build_tokenizer;
    # its prompts are then plain text unless the run's data said otherwise.
    template_added = getattr(tokenizer, "chat_template", None) in (GEMMA_TEMPLATE, PLAIN_TEMPLATE)
    model = build_model(model_path, cfg, precision)
    model.config.use_cache = True  # build_model turns it off for training; decoding wants it
    model.eval()
    log(f"Base model loaded from {model_path} in {time.time() - started:.1f} s ({precision.label}, "
        f"{spec.quantization}).")
    loaded = LoadedModel(model=model, tokenizer=tokenizer, precision=precision, spec=spec, model_path=model_path,
                         model_label=source.label, chat_template_added=template_added)
    if spec.adapter_dir:
        swap_adapter(loaded, spec, log=log, on_phase=on_phase)
    return loaded


def swap_adapter(loaded: LoadedModel, spec: LoadSpec, log: Callable[[str], None] = print,
                 on_phase: Callable[[str, str], None] | None = None) -> LoadedModel:
    """Put ``spec``'s adapter on the loaded base model (or take the adapter off when
    it names none), keeping the base weights in memory."""
    if on_phase and spec.adapter_dir:
        on_phase("loading_adapter", f"Loading the adapter {Path(spec.adapter_dir).name}")
    started = time.time()
    model = loaded.model
    old_name = loaded.adapter_name
    if not spec.adapter_dir:
        if old_name:
            model = model.unload()  # drops the LoRA layers; the base weights stay as they were
        loaded.model, loaded.adapter_name = model, ""
        loaded.spec = spec
        return loaded
    loaded.adapters_loaded += 1
    name = f"{ADAPTER_NAME_PREFIX}{loaded.adapters_loaded}"
    if old_name:
        model.load_adapter(spec.adapter_dir, adapter_name=name, is_trainable=False)
        model.set_adapter(name)
        model.delete_adapter(old_name)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter_dir, adapter_name=name, is_trainable=False)
    model.eval()
    loaded.model, loaded.adapter_name, loaded.spec = model, name, spec
    log(f"Adapter {spec.adapter_dir} loaded in {time.time() - started:.1f} s.")
    return loaded
