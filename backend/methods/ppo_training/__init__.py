"""PPO for language models, written here (TRL 1.16 has none; see backend/methods' module for it):
``losses`` (GAE, whitening, KL estimators, clipped losses), ``rollout`` (sampling and
reading log-probs and values on one base with policy and value adapters) and
``trainer`` (the loop inside a transformers Trainer)."""
