"""Where the base model comes from, and whether it is safe and possible to load,
checked before anything heavy is loaded.

A user types a model as a hub id, a folder or a .gguf file, or leaves it empty
for the embedded Gemma. Resolving it up front lets a typo fail in milliseconds
with a clear message instead of half a minute into a run. Everything here reads
files and the Hugging Face cache only: no torch, no transformers import, no
network, so the window can call it on every keystroke.

Two questions, two functions:

* ``resolve_model_source``: where is the model, and is it there at all
  (a path that exists, a folder with config.json and weights, a hub id that
  can be had offline)?
* ``refuse_unsafe_model``: would loading it run code nobody reviewed? Pickle
  weights and repositories that ship their own Python code are refused unless
  the matching setting (``allow_pickle_weights``, ``trust_remote_code``) is on.

``model_source_for_config`` does both for a run config.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from backend.models.embedded_model import EMBEDDED_LABEL, EMBEDDED_MODEL_ID


class ModelSourceError(ValueError):
    """The model named by the user cannot be used. The message says why and what to do.

    ``setting`` names the run setting that would change the outcome: ``model``
    for most problems, ``allow_pickle_weights`` or ``trust_remote_code`` when
    turning that setting on is the way to load the model anyway."""

    def __init__(self, message: str, setting: str = "model"):
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class ModelSource:
    kind: str  # embedded | folder | gguf | hub
    location: str  # folder path, .gguf path, or hub id
    label: str
    # For a hub id found in the Hugging Face cache: the cached snapshot folder.
    cached_folder: str = ""

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"


# Files transformers reads weights from. Only these pickle names are ever loaded by
# ``from_pretrained``; other .pt/.pth files are original (non Hugging Face) checkpoints.
SAFETENSORS_PATTERNS = ("*.safetensors",)
LOADABLE_PICKLE_PATTERNS = ("pytorch_model*.bin",)
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# Pickle files a Trainer checkpoint keeps next to its weights; they hold no weights.
_NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"}
# Any one of these lets AutoTokenizer build a tokenizer (fast, sentencepiece, BPE, WordPiece, Mistral).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "spiece.model", "tekken.json")

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
_OFFLINE_HELP = ("Download it once while connected (any Hugging Face tool fills the same cache), pick a "
                 "local model folder or .gguf file instead, or leave the model empty to use the embedded "
                 "Gemma 3 270M, which works offline.")


def resolve_model_source(model: str | None) -> ModelSource:
    """Where the model is. Raises ModelSourceError when it is not there."""
    text = (model or "").strip()
    if text in ("", EMBEDDED_MODEL_ID, "embedded"):
        return ModelSource("embedded", EMBEDDED_MODEL_ID, EMBEDDED_LABEL)
    path = Path(text).expanduser()
    if path.is_dir():
        _require_model_folder(path, str(path))
        return ModelSource("folder", str(path.resolve()), path.name)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(path.resolve()), path.name)
        raise ModelSourceError(
            f"{path} is a file but not a .gguf model. Pick a .gguf file or a model folder."
        )
    looks_like_path = text.startswith(("/", "./", "../", "~")) or text.endswith(".gguf") or "\\" in text
    if looks_like_path or text.count("/") > 1:
        raise ModelSourceError(
            f"The model path {text} does not exist. Check the spelling or pick the folder with the "
            "Folder… button; leave the model empty to use the embedded Gemma 3 270M."
        )
    return _resolve_hub_id(text)


def refuse_unsafe_model(source: ModelSource, *, trust_remote_code: bool = False,
                        allow_pickle_weights: bool = False) -> None:
    """Raise ModelSourceError if loading ``source`` would run unreviewed code, or if
    transformers could not load it at all, unless the user allowed it."""
    folder = _folder_to_inspect(source)
    if folder is None:
        return  # the embedded model and .gguf files carry neither pickle nor code
    where = source.location if source.kind == "folder" else f"'{source.location}' (Hugging Face cache)"
    _check_weight_format(folder, where, allow_pickle_weights)
    config = _read_config(folder, where)
    if config is not None:
        _check_model_code(config, where, trust_remote_code)


def resolve_checked_model(model: str | None, *, trust_remote_code: bool = False,
                          allow_pickle_weights: bool = False) -> ModelSource:
    source = resolve_model_source(model)
    refuse_unsafe_model(source, trust_remote_code=trust_remote_code, allow_pickle_weights=allow_pickle_weights)
    return source


def model_source_for_config(cfg) -> ModelSource:
    """The model a run config names, checked against its loading permissions."""
    return resolve_checked_model(cfg.model, trust_remote_code=bool(getattr(cfg, "trust_remote_code", False)),
                                 allow_pickle_weights=bool(getattr(cfg, "allow_pickle_weights", False)))


# ----------------------------------------------------------------- folders
def _matching(folder: Path, patterns) -> list[Path]:
    found = {p for pattern in patterns for p in folder.glob(pattern) if p.is_file() or p.is_symlink()}
    return sorted(found)


def safetensors_files(folder: Path) -> list[Path]:
    return _matching(folder, SAFETENSORS_PATTERNS)


def pickle_weight_files(folder: Path) -> list[Path]:
    return [p for p in _matching(folder, PICKLE_PATTERNS) if p.name not in _NOT_WEIGHTS]


def _require_model_folder(path: Path, shown: str) -> None:
    if not (path / "config.json").exists():
        if (path / "adapter_config.json").exists():
            base = _adapter_base(path)
            named = f" It was trained on {base}; pick that model" if base else " Pick the model it was trained on"
            raise ModelSourceError(
                f"The folder {shown} holds a LoRA adapter, not a base model.{named} here, and open the adapter "
                "in the Compare tab."
            )
        raise ModelSourceError(
            f"The folder {shown} has no config.json, so it is not a Hugging Face model folder. "
            "Pick the folder that holds config.json and the weights."
        )
    if not safetensors_files(path) and not pickle_weight_files(path):
        raise ModelSourceError(
            f"The folder {shown} has a config.json but no weights (*.safetensors or pytorch_model.bin). "
            "Copy the weight files into it, or pick the folder that has them."
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        # Copying only config and weights is a common slip; without this check it
        # surfaces as a tokenizer error after torch and transformers have loaded.
        raise ModelSourceError(
            f"The folder {shown} has the model's weights but no tokenizer (tokenizer.json, tokenizer.model or "
            "vocab.json), so text cannot be turned into tokens for it. Copy the tokenizer files from where "
            "the model came from into the folder."
        )


def _adapter_base(folder: Path) -> str:
    try:
        data = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(data.get("base_model_name_or_path") or "") if isinstance(data, dict) else ""


def _folder_to_inspect(source: ModelSource) -> Path | None:
    if source.kind == "folder":
        return Path(source.location)
    if source.kind == "hub" and source.cached_folder:
        return Path(source.cached_folder)
    return None


def _check_weight_format(folder: Path, where: str, allow_pickle_weights: bool) -> None:
    if safetensors_files(folder):
        return  # transformers prefers safetensors whenever they are there
    pickles = pickle_weight_files(folder)
    if not pickles:
        return  # a hub snapshot whose weights are not downloaded yet: nothing to judge
    names = ", ".join(p.name for p in pickles[:3]) + (" …" if len(pickles) > 3 else "")
    if not allow_pickle_weights:
        raise ModelSourceError(
            f"The model in {where} stores its weights only as pickle files ({names}), not as safetensors. "
            "Pickle is a Python format that can run any program while it is being loaded, so a file from "
            "an untrusted source can take over your computer; safetensors files hold only numbers. "
            "Ask the author for a safetensors version or convert the files to safetensors. If you trust "
            "where they come from, turn on 'Allow pickle weights' under More model options "
            "(CLI: --allow-pickle-weights; the window asks you to confirm): they are then read with "
            "torch.load(weights_only=True), "
            "which blocks most code but is not a guarantee.",
            setting="allow_pickle_weights",
        )
    if not _matching(folder, LOADABLE_PICKLE_PATTERNS):
        raise ModelSourceError(
            f"The model in {where} has pickle files ({names}) but none named pytorch_model.bin, the only "
            "pickle weights transformers loads. They look like an original (non Hugging Face) checkpoint: "
            "convert it to the Hugging Face format first."
        )


def _read_config(folder: Path, where: str) -> dict | None:
    path = folder / "config.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"The config.json of the model in {where} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ModelSourceError(f"The config.json of the model in {where} is not a JSON object.")
    return data


def _check_model_code(config: dict, where: str, trust_remote_code: bool) -> None:
    """Refuse a model whose architecture only its own repository's Python code defines.

    A config.json with ``auto_map`` points at code files in the repository. When
    its ``model_type`` is one transformers ships, transformers loads its built-in
    implementation and ignores that code unless remote code is trusted (Phi-3 and
    Qwen repositories are like this), so only an unknown ``model_type`` needs it."""
    if trust_remote_code:
        return
    model_type = str(config.get("model_type") or "")
    auto_map = config.get("auto_map") if isinstance(config.get("auto_map"), dict) else {}
    known = known_model_types()
    if known is not None and model_type in known:
        return
    if auto_map:
        files = sorted({str(v).split(".", 1)[0] + ".py" for v in _flatten(auto_map.values()) if "." in str(v)})
        kind = f"model type '{model_type}'" if model_type else "a model type"
        raise ModelSourceError(
            f"The model in {where} needs its own Python code: its config.json names {kind} that "
            f"transformers {_transformers_version()} does not include, and points to code files in the "
            f"model's repository ({', '.join(files) or 'auto_map'}). That code would run on your computer, "
            "with your permissions, as the model loads, which is why it is refused by default. Read the "
            "code or make sure you trust its author, then turn on 'Trust remote code' under More model "
            "options (CLI: --trust-remote-code; the window asks you to confirm).",
            setting="trust_remote_code",
        )
    if known is not None:
        shown = f"model type '{model_type}'" if model_type else "no model_type"
        raise ModelSourceError(
            f"The model in {where} has {shown} in its config.json, which transformers "
            f"{_transformers_version()} does not know, and it brings no code of its own. Update transformers "
            "(pip install -U transformers) or pick another model."
        )


def _flatten(values) -> list:
    out = []
    for value in values:
        out.extend(value if isinstance(value, (list, tuple)) else [value])
    return [v for v in out if v]


@functools.lru_cache(maxsize=1)
def known_model_types() -> frozenset[str] | None:
    """The model types the installed transformers implements, read from its generated
    table without importing transformers (that import pulls in torch). None when
    the table cannot be found: then only ``auto_map`` decides."""
    try:
        spec = importlib.util.find_spec("transformers")
        roots = list(spec.submodule_search_locations or []) if spec else []
        table = next((Path(r) / "models" / "auto" / "auto_mappings.py" for r in roots
                      if (Path(r) / "models" / "auto" / "auto_mappings.py").exists()), None)
        if table is None:
            return None
        loader_spec = importlib.util.spec_from_file_location("_alignstudio_transformers_auto_mappings", table)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)  # a generated file of plain dicts; it imports only collections
        return frozenset(module.CONFIG_MAPPING_NAMES)
    except Exception:  # noqa: BLE001 - a changed layout must not break model checks
        return None


def _transformers_version() -> str:
    try:
        from importlib.metadata import version

        return version("transformers")
    except Exception:  # noqa: BLE001
        return "(installed version)"


# -------------------------------------------------------------------- hub ids
def _resolve_hub_id(text: str) -> ModelSource:
    if len(text) > 96 or not _REPO_ID.match(text) or "--" in text or ".." in text or text.endswith(".git"):
        raise ModelSourceError(
            f"'{text}' is not a file or folder on this computer, nor a valid Hugging Face model id "
            "(organisation/model-name, e.g. Qwen/Qwen2.5-0.5B-Instruct)."
        )
    snapshot = cached_snapshot(text)
    if hub_offline():
        if snapshot is None:
            raise ModelSourceError(
                f"'{text}' was read as a Hugging Face model id, but this computer is set to work offline "
                f"(HF_HUB_OFFLINE) and the model is not in the Hugging Face cache ({hub_cache_dir()}). "
                + _OFFLINE_HELP
            )
        if not safetensors_files(snapshot) and not pickle_weight_files(snapshot):
            raise ModelSourceError(
                f"Only the configuration of '{text}' is in the Hugging Face cache, not its weights, and this "
                "computer is set to work offline (HF_HUB_OFFLINE). " + _OFFLINE_HELP
            )
    return ModelSource("hub", text, text, str(snapshot) if snapshot else "")


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (its main revision), if its config.json is cached."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an odd id or cache layout means "not cached"
        return None
    if isinstance(cached, str) and os.path.exists(cached):
        return Path(cached).parent
    return None


def hub_offline() -> bool:
    """Set the way huggingface_hub reads it, but at call time (its constant is fixed at import)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


# --------------------------------------------------------------- local copies
def gguf_cache_folder(gguf_path: str | Path) -> Path:
    """A converted copy of a user's .gguf file, keyed by its path, size and date."""
    from backend.core.paths import cache_dir

    p = Path(gguf_path).resolve()
    st = p.stat()
    key = hashlib.sha256(f"{p}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{p.stem}-{key}"


def local_model_folder(source: ModelSource, log=print) -> str:
    """A path or hub id that ``from_pretrained`` can load quickly (converting GGUF once)."""
    if source.kind == "embedded":
        from backend.models.embedded_model import ensure_embedded_model

        return str(ensure_embedded_model(log=log))
    if source.kind == "gguf":
        from backend.export.gguf_conversion import convert_gguf_to_folder

        target = gguf_cache_folder(source.location)
        return str(convert_gguf_to_folder(source.location, target, log=log))
    return source.location
