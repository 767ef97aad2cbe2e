"""Where the base model comes from, checked before anything heavy is loaded.

A user types a model as a hub id, a folder or a .gguf file, or leaves it empty
for the embedded Gemma. Resolving it up front lets a typo fail in milliseconds
with a clear message instead of half a minute into a run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from backend.embedded_model import EMBEDDED_LABEL, EMBEDDED_MODEL_ID


class ModelSourceError(ValueError):
    """The model named by the user cannot be used. The message says why and what to do."""


@dataclass(frozen=True)
class ModelSource:
    kind: str  # embedded | folder | gguf | hub
    location: str  # folder path, .gguf path, or hub id
    label: str

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"


_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def resolve_model_source(model: str | None) -> ModelSource:
    text = (model or "").strip()
    if text in ("", EMBEDDED_MODEL_ID, "embedded"):
        return ModelSource("embedded", EMBEDDED_MODEL_ID, EMBEDDED_LABEL)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelSourceError(
                f"The folder {path} has no config.json, so it is not a Hugging Face model folder. "
                "Pick the folder that holds config.json and the weights."
            )
        if not any(any(path.glob(p)) for p in _WEIGHT_PATTERNS):
            raise ModelSourceError(
                f"The folder {path} has a config.json but no weights (*.safetensors or *.bin)."
            )
        return ModelSource("folder", str(path.resolve()), path.name)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(path.resolve()), path.name)
        raise ModelSourceError(
            f"{path} is a file but not a .gguf model. Pick a .gguf file or a model folder."
        )
    looks_like_path = text.startswith(("/", "./", "../", "~")) or text.endswith(".gguf") or "\\" in text
    if looks_like_path or text.count("/") > 1:
        raise ModelSourceError(f"The model path {text} does not exist.")
    return ModelSource("hub", text, text)


def gguf_cache_folder(gguf_path: str | Path) -> Path:
    """A converted copy of a user's .gguf file, keyed by its path, size and date."""
    from backend.paths import cache_dir

    p = Path(gguf_path).resolve()
    st = p.stat()
    key = hashlib.sha256(f"{p}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{p.stem}-{key}"


def local_model_folder(source: ModelSource, log=print) -> str:
    """A path or hub id that ``from_pretrained`` can load quickly (converting GGUF once)."""
    if source.kind == "embedded":
        from backend.embedded_model import ensure_embedded_model

        return str(ensure_embedded_model(log=log))
    if source.kind == "gguf":
        from backend.gguf_conversion import convert_gguf_to_folder

        target = gguf_cache_folder(source.location)
        return str(convert_gguf_to_folder(source.location, target, log=log))
    return source.location


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
