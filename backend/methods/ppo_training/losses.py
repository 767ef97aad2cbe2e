"""The arithmetic of proximal policy optimisation on token sequences, as plain tensor functions.

Shapes: ``(batch, completion tokens)`` throughout; ``mask`` is 1 on a completion's own
tokens (up to and including its end-of-sequence token) and 0 on the padding after it.
Padding is always on the right of a completion, so "the last real token" of row i is
``mask[i].sum() - 1``. The conventions follow the PPO-for-language-models recipe
(Ziegler et al. 2019; Huang et al. 2024, "The N+ implementation details of RLHF
with PPO"): the reward model's score is paid on the last real token, every token pays
the KL penalty against the reference, advantages come from GAE and are whitened over
the real tokens of the batch, and both losses are clipped.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        # Bessel's correction, as numpy's var(ddof=1) over the real tokens.
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Zero mean (unless ``shift_mean`` is off) and unit variance over the real tokens;
    padding comes out as 0 so it never looks like an advantage."""
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """An estimate of KL(policy || reference) from each sampled token's log-probabilities.

    k1 = log p - log q: unbiased, can be negative on a single token.
    k3 = (q/p - 1) - log(q/p): unbiased and never negative, lower variance (Schulman 2020).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"KL estimator must be k1 or k3, not {estimator!r}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (0 for a row with none)."""
    return (mask.sum(1).long() - 1).clamp(min=0)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards: every real token pays ``kl_coef * kl``; the last one also earns the score."""
    rewards = -kl_coef * kl * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation: (advantages, returns), both 0 on padding.

    delta_t = r_t + gamma * V_{t+1} - V_t, with V after a completion's last token = 0;
    A_t = delta_t + gamma * lam * A_{t+1}; returns = A + V (the value function's target).
    """
    values = values * mask
    rewards = rewards * mask
    length = rewards.shape[1]
    running = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        # Padding positions carry no advantage forward into the real tokens before them.
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float):
    """The clipped surrogate: (loss, clip fraction, approximate KL old -> new).

    loss = mean over real tokens of max(-A * r, -A * clip(r, 1 - eps, 1 + eps)), r = exp(new - old).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approxkl = 0.5 * masked_mean(log_ratio ** 2, mask)
    return loss, clipfrac, approxkl


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float):
    """The clipped value loss: (loss, clip fraction).

    loss = 0.5 * mean over real tokens of max((V - R)^2, (V_clipped - R)^2), with
    V_clipped = V_old + clip(V - V_old, -eps_v, eps_v).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution (nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
