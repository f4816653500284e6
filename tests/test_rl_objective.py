"""AGAPO pieces (kexa.train.rl) against hand computations."""

import math

import pytest
import torch

from kexa.train.rl import (EPS, agapo_loss, agapo_stats, group_advantages, leave_one_out, token_logprobs,
                           zero_variance_mask)


def test_zero_variance_mask_and_leave_one_out_by_hand():
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1]])
    assert zero_variance_mask(rewards).tolist() == [True, False, True, False]
    loo = leave_one_out(rewards)
    # r_i - mean of the other three: row 0: 1 - 1/3, 0 - 2/3; row 2: 1 - 2/3, 0 - 1
    torch.testing.assert_close(loo[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    torch.testing.assert_close(loo[2], torch.tensor([1 / 3, 1 / 3, -1, 1 / 3]))


def test_group_advantages_by_hand_with_filtered_rows():
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1]])
    adv = group_advantages(rewards)
    # kept LOO values: ±2/3 (x4), 1/3 (x3), -1: mean 0, population variance (16/9 + 3/9 + 1) / 8 = 7/18
    std = math.sqrt(7 / 18)
    torch.testing.assert_close(adv[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]) / (std + EPS))
    torch.testing.assert_close(adv[2], torch.tensor([1 / 3, 1 / 3, -1, 1 / 3]) / (std + EPS))
    assert adv[1].eq(0).all() and adv[3].eq(0).all()
    # the sample-std option divides by sqrt(8/7 * 7/18) = sqrt(4/9)
    torch.testing.assert_close(group_advantages(rewards, unbiased=True)[0],
                               torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]) / (2 / 3 + EPS))


def test_group_advantages_g2_and_all_equal():
    adv = group_advantages(torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    torch.testing.assert_close(adv, torch.tensor([[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]]) / (1 + EPS))
    same = torch.full((3, 4), 0.7)
    assert zero_variance_mask(same).tolist() == [False] * 3 and group_advantages(same).eq(0).all()


def test_filtered_prompts_do_not_change_the_kept_advantages():
    base = torch.tensor([[1.0, 0.0, 0.2], [0.3, 0.9, 0.9]])
    with_filtered = torch.cat([base, torch.ones(2, 3), torch.zeros(1, 3)])
    torch.testing.assert_close(group_advantages(with_filtered)[:2], group_advantages(base))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.tensor([[1.0], [0.0]]))
    with pytest.raises(ValueError, match="prompts, G"):
        zero_variance_mask(torch.ones(4))
    with pytest.raises(ValueError, match="advantages must be"):
        agapo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="C must be > 0"):
        agapo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3), clip=0)


def _example():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.0, float("-inf")]], requires_grad=True)
    ratios = torch.tensor([[1.0, 3.0, 0.5], [2.5, 1.0, 1.0]])
    rollout_logp = logp.detach() - ratios.log()  # so π_θ/μ = ratios
    rollout_logp[1, 2] = float("-inf")  # padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages = torch.tensor([1.5, -1.0])
    return logp, rollout_logp, advantages, mask


def test_agapo_loss_token_level_by_hand_with_truncation():
    logp, rollout_logp, advantages, mask = _example()
    loss = agapo_loss(logp, rollout_logp, advantages, mask, clip=2.0)
    # weights min(ratio, 2) = [[1, 2, 0.5], [2, 1, -]]; N = 5 response tokens
    # L = -(1·1.5·-1 + 2·1.5·-2 + 0.5·1.5·-3 + 2·-1·-0.5 + 1·-1·-1) / 5 = 7.75 / 5
    torch.testing.assert_close(loss, torch.tensor(1.55))
    loss.backward()
    # d L / d logp = -min(ρ, C)·A / N, zero on padding: the IS weight carries no gradient
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.3, -0.6, -0.15], [0.4, 0.2, 0.0]]))


def test_agapo_loss_sequence_level_by_hand():
    logp, rollout_logp, advantages, mask = _example()
    # Π ρ: row 0 = 1·3·0.5 = 1.5, row 1 = 2.5 -> truncated to 2
    # L = -(1.5·1.5·(-6) + 2·(-1)·(-1.5)) / 5 = 10.5 / 5
    torch.testing.assert_close(agapo_loss(logp, rollout_logp, advantages, mask, clip=2.0, level="sequence"),
                               torch.tensor(2.1))


def test_agapo_gradient_equals_formula_on_random_rows():
    torch.manual_seed(0)
    rows, T, C = 6, 9, 1.5
    logp = (torch.randn(rows, T) - 2).requires_grad_()
    rollout_logp = logp.detach() + 0.5 * torch.randn(rows, T)
    mask = (torch.rand(rows, T) > 0.3).float()
    advantages = torch.randn(rows)
    agapo_loss(logp, rollout_logp, advantages, mask, clip=C).backward()
    weights = (logp.detach() - rollout_logp).exp().clamp(max=C)
    expected = -weights * advantages[:, None] * mask / mask.sum()
    torch.testing.assert_close(logp.grad, expected)
    assert (weights > C - 1e-6).any() and (weights < C).any()  # both truncated and untruncated tokens occur


def test_on_policy_reduces_to_reinforce_with_token_normalisation():
    torch.manual_seed(1)
    logp = torch.randn(3, 5) - 1
    mask = torch.ones(3, 5)
    advantages = torch.tensor([1.0, -0.5, 0.25])
    loss = agapo_loss(logp, logp.clone(), advantages, mask, clip=2.0)
    torch.testing.assert_close(loss, -(advantages[:, None] * logp).sum() / 15)


def test_agapo_stats():
    logp, rollout_logp, advantages, mask = _example()
    stats = agapo_stats(logp, rollout_logp, advantages, mask, clip=2.0)
    assert stats["is_weight_mean"] == pytest.approx((1 + 2 + 0.5 + 2 + 1) / 5)
    assert stats["is_truncated_frac"] == pytest.approx(2 / 5)
    assert stats["adv_abs_mean"] == pytest.approx(1.25)
    assert stats["log_ratio_mean"] == pytest.approx(math.log(3 * 0.5 * 2.5) / 5)


def test_agapo_learns_a_bandit_off_policy():
    """A 3-token-response policy over 4 symbols; reward = fraction of tokens equal to symbol 2. Several optimiser
    steps per rollout batch (off-policy, IS-weighted) must raise the reward from 0.25 towards 1."""
    torch.manual_seed(0)
    logits = torch.zeros(3, 4, requires_grad=True)  # (T, vocab): position-wise policy
    opt = torch.optim.SGD([logits], lr=2.0)
    P, G, T = 4, 8, 3
    for _ in range(30):
        with torch.no_grad():
            probs = logits.softmax(-1)  # (T, 4)
            tokens = torch.multinomial(probs.repeat(P * G, 1), 1).view(P * G, T)  # (rows, T)
            rollout_logp = probs.log()[torch.arange(T), tokens]  # (rows, T)
            rewards = (tokens == 2).float().mean(1).view(P, G)
        adv = group_advantages(rewards).flatten()
        for _ in range(2):  # the second step is off-policy: π_θ has moved away from μ
            logp = logits.log_softmax(-1)[torch.arange(T), tokens]
            loss = agapo_loss(logp, rollout_logp, adv, torch.ones(P * G, T), clip=2.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert logits.softmax(-1)[:, 2].min() > 0.9


def test_token_logprobs_equal_log_softmax_gather_with_gradients():
    torch.manual_seed(2)
    logits = torch.randn(3, 5, 11, dtype=torch.bfloat16).float().requires_grad_()
    targets = torch.randint(0, 11, (3, 5))
    fast = token_logprobs(logits, targets)
    naive = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(fast, naive)
    g_fast, = torch.autograd.grad(fast.sum(), logits)
    g_naive, = torch.autograd.grad(naive.sum(), logits)
    torch.testing.assert_close(g_fast, g_naive)
    assert token_logprobs(logits.bfloat16(), targets).dtype == torch.float32
    with pytest.raises(ValueError, match="do not match"):
        token_logprobs(logits, targets[:, :4])
