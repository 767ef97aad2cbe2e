"""Permission to run code that came with a model or a file: only the user grants it.

Three permissions, each about code that would run on this computer:

* ``trust_remote_code``: a model folder's own Python files (``configuration_*.py``,
  ``modeling_*.py``) run as the model loads;
* ``allow_pickle_weights``: pickle weight files (``pytorch_model.bin``) can run
  code while they are unpickled;
* ``allow_reward_code``: a Python file of reward functions runs in the trainer
  (the file kind "reward code"; the mechanism is general, the feature comes later).

No file grants them. Run folders, config files, datasets and model folders
travel between people and machines, so ``strip_file_only_settings`` drops these
keys whenever a config is read from a file (``run_config.from_dict``), whatever
it says. The user grants them on this machine: on the command line with an
explicit flag for that one command, or in the window's confirmation, which is
remembered in the studio's own grants file (``home_dir()/grants.json``) bound to
a SHA-256 of the code or weight files, so a changed file asks again.

How a grant reaches a worker process: through the environment of that one
launch (``ALIGNSTUDIO_GRANTS``), set by the process the user commanded, never
through the run folder. Chosen over "the worker reads the grants file" because
(1) a command-line grant is for one command and is not stored; (2) a run folder
copied from elsewhere cannot set the environment of a process the studio
starts; (3) each entry carries the digest the user agreed to, and the worker
hashes the files again just before it loads them, so files swapped between the
confirmation and the load are refused rather than run. Launchers always replace
the variable, so a value left in a shell never leaks into a run it was not for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from backend.core.atomic_files import write_json_atomic

LAUNCH_ENV = "ALIGNSTUDIO_GRANTS"
MODEL_PERMISSIONS = ("trust_remote_code", "allow_pickle_weights")
REWARD_CODE = "allow_reward_code"
PERMISSIONS = MODEL_PERMISSIONS + (REWARD_CODE,)

# What each permission lets the code do, in the words the confirmation and messages use.
WHAT_IT_ALLOWS = {
    "trust_remote_code": "run the model's own Python files as it loads, with your permissions: they can read, "
                         "change or delete your files and use the network",
    "allow_pickle_weights": "unpickle the model's weight files; pickle can run any program while it loads "
                            "(they are read with torch.load(weights_only=True), which blocks most of it but is "
                            "not a guarantee)",
    REWARD_CODE: "run the Python file's reward functions during training, with your permissions: they can read, "
                 "change or delete your files and use the network",
}
TITLES = {"trust_remote_code": "Run this model's own code?",
          "allow_pickle_weights": "Load this model's pickle weights?",
          REWARD_CODE: "Run this reward-code file?"}
CLI_FLAGS = {"trust_remote_code": "--trust-remote-code", "allow_pickle_weights": "--allow-pickle-weights",
             REWARD_CODE: "--allow-reward-code"}

# Settings a file that travels must not set: permissions, and where the studio writes.
FILE_CANNOT_SET = PERMISSIONS + ("output_dir",)


def strip_file_only_settings(data: dict) -> tuple[dict, list[str]]:
    """``data`` without the settings no file may set, and the ones it tried to set."""
    asked = [k for k in FILE_CANNOT_SET if data.get(k) not in (None, False, "", "false", "False", 0)]
    return {k: v for k, v in data.items() if k not in FILE_CANNOT_SET}, asked


def file_asked_message(path, asked: list[str]) -> str:
    """What to tell a user whose received config asked for permissions it cannot grant."""
    parts = []
    perms = [k for k in asked if k in PERMISSIONS]
    if perms:
        flags = " ".join(CLI_FLAGS[k] for k in perms)
        parts.append(f"{path} asks for {', '.join(perms)}; a file cannot grant permission to run code, so this "
                     f"was ignored. If you trust the model, grant it yourself: on the command line with {flags}, "
                     "in the window by confirming when Train asks.")
    if "output_dir" in asked:
        parts.append(f"{path} names a runs folder (output_dir); a file cannot choose where the studio writes, so "
                     "the run goes to your runs folder (choose another with --runs-dir or in the window).")
    return " ".join(parts)


# ------------------------------------------------------------------ subjects
@dataclass(frozen=True)
class CodeSubject:
    """The code or weight files one permission is about, and their digest."""

    permission: str
    location: str  # the model folder, hub id or the file's full path
    name: str  # as shown to the user
    files: tuple[str, ...]  # full paths of what was hashed
    digest: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.permission, self.location)

    def describe(self) -> str:
        return WHAT_IT_ALLOWS[self.permission]


_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered by path, size and modification time (weights are large)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]


def files_digest(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        rel = os.path.relpath(path, root)
        h.update(rel.encode() + b"\0" + file_sha256(path).encode() + b"\n")
    return h.hexdigest()


def _code_files(folder: Path) -> list[Path]:
    # config.json names the code through auto_map, so a changed mapping asks again too.
    found = [p for p in folder.rglob("*.py") if p.is_file()]
    return found + ([folder / "config.json"] if (folder / "config.json").is_file() else [])


def model_subject(model: str, permission: str) -> CodeSubject | None:
    """What granting ``permission`` for ``model`` would cover; None when the model carries
    nothing it applies to (the embedded model, a .gguf file, a model that cannot be found)."""
    from backend.models.source import ModelSourceError, _folder_to_inspect, pickle_weight_files, resolve_model_source

    try:
        source = resolve_model_source(model)
    except ModelSourceError:
        return None
    if source.kind in ("embedded", "gguf"):
        return None
    folder = _folder_to_inspect(source)
    if folder is None:  # a hub id not in the cache: nothing on disk yet to hash
        return CodeSubject(permission, source.location, source.label, (), "")
    files = _code_files(folder) if permission == "trust_remote_code" else pickle_weight_files(folder)
    return CodeSubject(permission, source.location, source.label, tuple(str(p) for p in sorted(files)),
                       files_digest(files, folder))


def file_subject(path: str | Path, permission: str = REWARD_CODE) -> CodeSubject:
    """A single file of code (reward functions); FileNotFoundError names it when it is not there."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"The {permission_kind(permission)} file {path} does not exist.")
    path = path.resolve()
    return CodeSubject(permission, str(path), path.name, (str(path),), files_digest([path], path.parent))


def permission_kind(permission: str) -> str:
    return {"trust_remote_code": "model code", "allow_pickle_weights": "pickle weights",
            REWARD_CODE: "reward code"}[permission]


def where_the_code_lives(subject: CodeSubject, limit: int = 8) -> list[str]:
    shown = list(subject.files[:limit])
    if len(subject.files) > limit:
        shown.append(f"… and {len(subject.files) - limit} more")
    return shown or [subject.location]


# ------------------------------------------------------------------ the store
def grants_path() -> Path:
    from backend.core.paths import home_dir

    return home_dir() / "grants.json"


class GrantStore:
    """The user's remembered grants, in the studio's own folder (never in a run folder)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else grants_path()

    def grants(self) -> list[dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [g for g in data if isinstance(g, dict) and g.get("permission") in PERMISSIONS] \
            if isinstance(data, list) else []

    def is_granted(self, subject: CodeSubject | None) -> bool:
        return subject is not None and any(
            g.get("permission") == subject.permission and g.get("location") == subject.location
            and g.get("digest") == subject.digest for g in self.grants())

    def recorded(self, subject: CodeSubject) -> dict | None:
        """The grant for the same model or file, even if its files changed since."""
        return next((g for g in self.grants() if (g.get("permission"), g.get("location")) == subject.key), None)

    def grant(self, subject: CodeSubject) -> None:
        kept = [g for g in self.grants() if (g.get("permission"), g.get("location")) != subject.key]
        kept.append({"permission": subject.permission, "location": subject.location, "name": subject.name,
                     "digest": subject.digest, "files": len(subject.files),
                     "granted": time.strftime("%Y-%m-%d %H:%M")})
        self._write(kept)

    def revoke(self, permission: str, location: str) -> bool:
        grants = self.grants()
        kept = [g for g in grants if (g.get("permission"), g.get("location")) != (permission, location)]
        self._write(kept)
        return len(kept) != len(grants)

    def _write(self, grants: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, grants, indent=1)


def with_stored_grants(cfg, store: GrantStore):
    """``cfg`` with each model permission the user already granted for its model (same files) turned on."""
    granted = {g["permission"] for g in store.grants()}  # hash nothing on a keystroke unless a grant could match
    values = {p: True for p in MODEL_PERMISSIONS
              if p in granted and not getattr(cfg, p) and store.is_granted(model_subject(cfg.model, p))}
    return dataclasses.replace(cfg, **values) if values else cfg


def ungranted_subjects(cfg, store: GrantStore) -> list[CodeSubject]:
    """The permissions ``cfg`` turns on for its model that the user has not confirmed for these files."""
    subjects = [model_subject(cfg.model, p) for p in MODEL_PERMISSIONS if getattr(cfg, p)]
    if getattr(cfg, REWARD_CODE, False) and getattr(cfg, "reward_file", ""):
        try:  # a reward file allowed before is asked for again once its bytes changed
            subjects.append(file_subject(cfg.reward_file))
        except (FileNotFoundError, OSError):
            pass  # the config check names the missing file
    return [s for s in subjects if s is not None and not store.is_granted(s)]


# ------------------------------------------------------------- one launch
def config_launch_subjects(cfg) -> list[CodeSubject]:
    """What ``cfg``'s permission settings (set by the user in this process) grant its model."""
    subjects = [model_subject(cfg.model, p) for p in MODEL_PERMISSIONS if getattr(cfg, p, False)]
    if getattr(cfg, REWARD_CODE, False) and getattr(cfg, "reward_file", ""):
        subjects.append(file_subject(cfg.reward_file))  # hashed now: the worker runs these bytes or none
    return [s for s in subjects if s is not None]


def launch_environment(env: dict, subjects: list[CodeSubject]) -> dict:
    """``env`` for a worker that may use exactly ``subjects`` (whatever the parent's environment said)."""
    env = dict(env)
    env.pop(LAUNCH_ENV, None)
    if subjects:
        env[LAUNCH_ENV] = json.dumps([{"permission": s.permission, "location": s.location, "digest": s.digest}
                                      for s in subjects])
    return env


def stored_launch_subjects(store: GrantStore | None = None) -> list[CodeSubject]:
    """Every grant the user confirmed in the window, for a worker that may load any of those models."""
    return [CodeSubject(g["permission"], str(g.get("location", "")), str(g.get("name", "")), (),
                        str(g.get("digest", ""))) for g in (store or GrantStore()).grants()]


def granted_in_launch(subject: CodeSubject | None) -> bool:
    if subject is None:
        return False
    try:
        entries = json.loads(os.environ.get(LAUNCH_ENV) or "[]")
    except ValueError:
        return False
    return any(isinstance(e, dict) and e.get("permission") == subject.permission
               and e.get("location") == subject.location and e.get("digest") == subject.digest
               for e in entries) if isinstance(entries, list) else False


def launch_model_permissions(model: str) -> dict[str, bool]:
    """In a worker: the model permissions this launch granted for ``model``, its files re-hashed now."""
    return {p: granted_in_launch(model_subject(model, p)) for p in MODEL_PERMISSIONS}


def apply_launch_grants(cfg):
    """In a worker: ``cfg`` with exactly the permissions its launcher granted (none from the run folder)."""
    return dataclasses.replace(cfg, **launch_model_permissions(cfg.model))
