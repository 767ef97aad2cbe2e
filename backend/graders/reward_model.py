"""A reward model (a reward-model run folder, or a model folder with a one-output
classification head) as a grader: it scores prompt plus completion.

The scorer comes from ``backend.rewards.scoring.load_reward_scorer``; it loads when the
grader is made, in the worker (torch is imported there only).
"""

from __future__ import annotations

from backend.graders.spec import GraderSetting as S
from backend.graders.spec import GraderSettingError, GraderSpec


def _factory(settings: dict):
    source = str(settings.get("source") or "").strip()
    if not source:
        raise GraderSettingError("reward_model", "source", "name a reward-model run folder or model folder "
                                                           "(the Reward model setting, or --reward-model)")
    from backend.rewards.scoring import load_reward_scorer

    scorer = load_reward_scorer(source, trust_remote_code=bool(settings.get("trust_remote_code")),
                                allow_pickle_weights=bool(settings.get("allow_pickle_weights")))
    batch = int(settings.get("batch_size") or 8)

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        return scorer.score(list(prompts or [""] * len(completions)), list(completions), batch_size=batch)

    grade.scorer = scorer
    return grade


REWARD_MODEL = GraderSpec(
    "reward_model", "Reward model", "A trained reward model scores each prompt and completion.",
    (S("source", "", "Reward-model run folder or model folder; empty: the Reward model setting."),
     S("batch_size", 8, "Completions scored per forward pass.")),
    _factory,
    made_in_worker=True,
)
