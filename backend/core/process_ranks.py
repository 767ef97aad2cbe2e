"""Which of several training processes this one is, when a launcher started several.

``accelerate launch`` and ``torchrun`` set RANK, LOCAL_RANK and WORLD_SIZE before
Python starts, so the worker knows its place before it imports torch. Rank 0
alone speaks for the run (events, ``metrics.jsonl``, the adapter, the pid file);
the others train in lockstep and stay quiet. Torch-free at import.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from backend.core.atomic_files import write_json_atomic

RANKS_FILE = "ranks.json"


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    return rank() == 0


def distributed_ready() -> bool:
    """True once the launcher's process group exists (the Trainer creates it)."""
    if world_size() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if distributed_ready():
        import torch.distributed as dist

        dist.barrier()


def any_rank_true(flag: bool, device) -> bool:
    """Whether ``flag`` holds on any rank. A stop request reaches rank 0 only (it
    owns stdin); every rank must stop at the same step, or the others would wait
    forever in the next gradient all-reduce."""
    if not distributed_ready():
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def trainable_fingerprint(model) -> str:
    """sha256 over the trainable parameters, by name: equal on every rank when DDP kept them in step."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def record_rank_agreement(model, run_dir: Path) -> dict | None:
    """Every rank's fingerprint, gathered on rank 0 and written to ``ranks.json``.
    Returns the record on rank 0 (None elsewhere, and with one process)."""
    if not distributed_ready():
        return None
    import torch.distributed as dist

    mine = {"rank": rank(), "fingerprint": trainable_fingerprint(model)}
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    if not is_main_process():
        return None
    record = {"world_size": len(gathered), "ranks": gathered,
              "identical": len({g["fingerprint"] for g in gathered}) == 1}
    write_json_atomic(run_dir / RANKS_FILE, record, indent=1)
    return record
