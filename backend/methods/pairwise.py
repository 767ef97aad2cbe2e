"""What the pairwise preference methods share: their plots and why they refuse data."""

from __future__ import annotations

from backend.methods.spec import DataNeed, Metric

PAIRWISE_METRICS = (
    Metric("rewards/margins", "margins", "Reward margin (chosen − rejected)", "margin", role="margin", order=20),
    Metric("rewards/chosen", "rewards", "Rewards: chosen vs rejected", "chosen", role="chosen", order=30),
    Metric("rewards/rejected", "rewards", "Rewards: chosen vs rejected", "rejected", role="rejected", order=30),
    Metric("rewards/accuracies", "accuracy", "Reward accuracy", "accuracy", role="accuracy", order=40),
    Metric("logps/chosen", "logps", "Log-probs: chosen vs rejected", "chosen", role="chosen", order=50),
    Metric("logps/rejected", "logps", "Log-probs: chosen vs rejected", "rejected", role="rejected", order=50),
    Metric("logits/chosen", "logits", "Mean logits: chosen vs rejected", "chosen", role="chosen", order=80),
    Metric("logits/rejected", "logits", "Mean logits: chosen vs rejected", "rejected", role="rejected", order=80),
)

PAIRWISE_SUMMARY = (("loss", "loss"), ("rewards/margins", "margin"), ("rewards/accuracies", "accuracy"))

PAIRS_ONLY = DataNeed(
    accepts=frozenset({"pairs"}),
    needs="pairs: a prompt with a chosen and a rejected answer",
    refusals={
        "unpaired": ("{name} needs pairs of a chosen and a rejected answer to the same prompt; this file has "
                     "single answers labelled good or bad ({format})."),
        "single": ("{name} needs pairs of a chosen and a rejected answer; this file has single answers "
                   "({format}). Use a supervised method, or provide a file with prompt, chosen and rejected "
                   "columns."),
        "prompts": ("{name} needs a chosen and a rejected answer for each prompt; this file has prompts only "
                    "({format}). Use a method that samples its own answers and grades them, or add chosen and "
                    "rejected columns."),
    },
)
