"""The arithmetic of backend/methods/ppo_training/losses.py against values worked out by hand (each in a comment)."""

from __future__ import annotations

import math

import pytest
import torch

from backend.methods.ppo_training import losses
from backend.methods.ppo_training.rollout import response_mask


def close(tensor, expected, tol=1e-5):
    assert torch.allclose(torch.as_tensor(tensor, dtype=torch.float32),
                          torch.tensor(expected, dtype=torch.float32), atol=tol), (tensor, expected)


def test_gae_by_hand():
    # gamma 0.9, lambda 0.5; row 0 has three real tokens, V = 0.5 everywhere, reward 1 at the end:
    #   t=2: delta = 1 + 0.9*0 - 0.5 = 0.5                      A2 = 0.5
    #   t=1: delta = 0 + 0.9*0.5 - 0.5 = -0.05                  A1 = -0.05 + 0.45*0.5 = 0.175
    #   t=0: delta = -0.05                                      A0 = -0.05 + 0.45*0.175 = 0.02875
    #   returns = A + V = 0.52875, 0.675, 1.0
    # Row 1 has one real token (reward 2, V 1) then padding whose values (7) must not leak in:
    #   t=0: delta = 2 + 0.9*0 - 1 = 1 -> A0 = 1, return 2; padding 0.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [2.0, 5.0, 5.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    advantages, returns = losses.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    close(advantages, [[0.02875, 0.175, 0.5], [1.0, 0.0, 0.0]])
    close(returns, [[0.52875, 0.675, 1.0], [2.0, 0.0, 0.0]])


def test_gae_with_gamma_and_lambda_one_is_the_reward_to_go_minus_the_value():
    # gamma = lambda = 1: A_t = sum of rewards from t on - V_t (the telescoping sum).
    rewards = torch.tensor([[0.1, -0.2, 1.0]])
    values = torch.tensor([[0.3, 0.1, 0.4]])
    advantages, returns = losses.gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    close(advantages, [[0.9 - 0.3, 0.8 - 0.1, 1.0 - 0.4]])
    close(returns, [[0.9, 0.8, 1.0]])


def test_token_rewards_pay_the_score_on_the_last_real_token_and_the_kl_on_every_one():
    # kl_coef 0.5: row 0 = -0.5*[0.1, 0.2, 0.3] + score 1 on the last = [-0.05, -0.1, 0.85];
    # row 1 has one real token: -0.5*0.5 + 2 = 1.75, padding 0 (its KL of 9 ignored).
    scores = torch.tensor([1.0, 2.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    close(losses.token_rewards(scores, kl, 0.5, mask), [[-0.05, -0.1, 0.85], [1.75, 0.0, 0.0]])


def test_whitening_uses_only_the_real_tokens():
    # Real values 1, 2, 3: mean 2, unbiased variance (1 + 0 + 1) / 2 = 1 -> -1, 0, 1; padding 0.
    values = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    close(losses.masked_whiten(values, mask), [[-1.0, 0.0], [1.0, 0.0]], tol=1e-4)
    close(losses.masked_mean(values, mask), 2.0)
    close(losses.masked_var(values, mask), 1.0)
    # Without the shift the mean stays: -1 + 2, 0 + 2, 1 + 2.
    close(losses.masked_whiten(values, mask, shift_mean=False), [[1.0, 2.0], [3.0, 0.0]], tol=1e-4)


def test_kl_estimators():
    # p = 0.5, q = 0.25: k1 = log(p/q) = log 2 = 0.693147;
    # k3 = (q/p - 1) - log(q/p) = -0.5 + log 2 = 0.193147. Equal distributions: both 0.
    logp = torch.log(torch.tensor([0.5, 0.3]))
    ref = torch.log(torch.tensor([0.25, 0.3]))
    close(losses.kl_per_token(logp, ref, "k1"), [math.log(2), 0.0])
    close(losses.kl_per_token(logp, ref, "k3"), [math.log(2) - 0.5, 0.0])
    # k3 is never negative, k1 is where the sample was less likely under the policy.
    assert losses.kl_per_token(ref, logp, "k3")[0] > 0 > losses.kl_per_token(ref, logp, "k1")[0]
    with pytest.raises(ValueError, match="k1 or k3"):
        losses.kl_per_token(logp, ref, "k2")


def test_clipped_policy_loss_by_hand():
    # cliprange 0.2, ratios 1.5, 0.5, 0.5, advantages 1, 1, -1:
    #   token 0: -A*r = -1.5, -A*clip(r) = -1.2 -> max -1.2 (clipped)
    #   token 1: -0.5 vs -0.8 -> -0.5 (not clipped)
    #   token 2: A = -1: 0.5 vs 0.8 -> 0.8 (clipped)
    #   loss = (-1.2 - 0.5 + 0.8) / 3 = -0.3; clip fraction 2/3
    #   approx KL = 0.5 * mean(log(r)^2) = 0.5 * (0.164402 + 0.480453 + 0.480453) / 3 = 0.187551
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.5, 9.0]]))  # the fourth token is padding
    advantages = torch.tensor([[1.0, 1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, clipfrac, approxkl = losses.policy_loss(new, old, advantages, mask, cliprange=0.2)
    close(loss, -0.3)
    close(clipfrac, 2 / 3)
    close(approxkl, 0.187551)


def test_policy_loss_gradient_raises_the_probability_of_positive_advantages():
    new = torch.zeros(1, 2, requires_grad=True)
    loss, _clipfrac, _kl = losses.policy_loss(new, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]),
                                              torch.ones(1, 2), cliprange=0.2)
    loss.backward()
    # d loss / d logp = -A / n at ratio 1: descending it raises token 0 and lowers token 1.
    close(new.grad, [[-0.5, 0.5]])


def test_clipped_value_loss_by_hand():
    # cliprange_value 0.2, old values 0, returns 1:
    #   token 0: V = 0.5 -> clipped to 0.2: (0.5-1)^2 = 0.25, (0.2-1)^2 = 0.64 -> 0.64 (clipped)
    #   token 1: V = -0.1 is inside the range: 1.21 both ways -> 1.21
    #   loss = 0.5 * (0.64 + 1.21) / 2 = 0.4625; clip fraction 1/2
    values = torch.tensor([[0.5, -0.1, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, clipfrac = losses.value_loss(values, torch.zeros(1, 3), torch.ones(1, 3), mask, cliprange_value=0.2)
    close(loss, 0.4625)
    close(clipfrac, 0.5)


def test_entropy_of_a_uniform_distribution_is_log_of_its_size():
    close(losses.entropy_from_logits(torch.zeros(2, 4)), [math.log(4)] * 2)


def test_response_mask_keeps_up_to_and_including_the_first_stop_token():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    close(response_mask(ids, [2]), [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    close(response_mask(ids, [2, 6]), [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
