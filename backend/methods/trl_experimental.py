"""The one place that imports TRL's experimental trainers.

ORPO, CPO/SimPO (and PPO, online DPO) live under ``trl.experimental`` in TRL 1.x and may
move; when they do, only this file changes.
"""

from trl.experimental.cpo import CPOConfig, CPOTrainer  # noqa: F401
from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer  # noqa: F401
from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: F401

__all__ = ["CPOConfig", "CPOTrainer", "OnlineDPOConfig", "OnlineDPOTrainer", "ORPOConfig", "ORPOTrainer"]
