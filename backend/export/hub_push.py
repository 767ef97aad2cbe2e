"""Upload an export to the Hugging Face Hub, refused up front when it cannot work.

Offline (``HF_HUB_OFFLINE``), not logged in, or a malformed repo id: each is
one clear sentence before any file is read, never a network timeout later.
"""

from __future__ import annotations

import re
from pathlib import Path

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class HubPushError(ValueError):
    """The export cannot be pushed; the message says why and what to do."""


def check_can_push(repo_id: str) -> str:
    """The token to push with. Raises HubPushError when pushing cannot work now."""
    from backend.models.source import hub_offline

    if not _REPO_ID.match(repo_id or ""):
        raise HubPushError(f"{repo_id!r} is not a Hugging Face repo id; write it as user-or-org/name.")
    if hub_offline():
        raise HubPushError(
            f"Cannot push to {repo_id}: the studio is offline (HF_HUB_OFFLINE is set). Export without pushing, "
            "then upload the folder with `hf upload` once you are online.")
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubPushError(f"Cannot push to {repo_id}: you are not logged in to the Hugging Face Hub. "
                           "Run `hf auth login` (or set HF_TOKEN), then export again.")
    return token


def push_to_hub(path: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload a folder (or one file) to ``repo_id``; returns the repo's URL."""
    from huggingface_hub import HfApi

    token = check_can_push(repo_id)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    path = Path(path)
    if path.is_dir():
        api.upload_folder(folder_path=str(path), repo_id=repo_id, commit_message="Upload from AlignStudio")
    else:
        api.upload_file(path_or_fileobj=str(path), path_in_repo=path.name, repo_id=repo_id,
                        commit_message="Upload from AlignStudio")
    return str(url)
