"""GROUPER and SimPER (kexa.train.preference) against hand computations; GROUPER = SimPER / 2 at G = 2."""

import math

import pytest
import torch

from kexa.train.preference import (group_advantages, grouper_advantages, grouper_loss, inverse_perplexity,
                                   simper_loss, zero_variance_mask)


def test_inverse_perplexity_and_simper_by_hand():
    logp = torch.tensor([[-1.0, -3.0, float("-inf")], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(inverse_perplexity(logp, mask), torch.tensor([math.exp(-2.0), math.exp(-0.5)]))
    chosen, rejected = logp[1:], logp[:1]
    loss = simper_loss(chosen, mask[1:], rejected, mask[:1])
    torch.testing.assert_close(loss, torch.tensor(-math.exp(-0.5) + math.exp(-2.0)))


def test_group_advantages_by_hand_and_bounds():
    scores = torch.tensor([[1.0, 2.0, 4.0], [3.0, 3.0, 3.0]])
    adv = group_advantages(scores)
    # z ∝ s - mean = (-4/3, -1/3, 5/3); divided by max |.| = 5/3 (std cancels up to ε)
    torch.testing.assert_close(adv[0], torch.tensor([-0.8, -0.2, 1.0]), atol=1e-5, rtol=0)
    assert adv[1].eq(0).all() and zero_variance_mask(scores).tolist() == [True, False]
    minmax = group_advantages(scores, scale="min-max")
    # min-max of z: 2·(s - 1)/3 - 1 = (-1, -1/3, 1)
    torch.testing.assert_close(minmax[0], torch.tensor([-1.0, -1 / 3, 1.0]), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    random = torch.rand(64, 8) * 10
    for scale in ("max-abs", "min-max"):
        a = group_advantages(random, scale=scale)
        assert a.abs().max() <= 1.0 + 1e-6
        torch.testing.assert_close(a.abs().amax(dim=1), torch.ones(64))  # the extreme response gets ±1
    assert grouper_advantages is group_advantages


def test_grouper_loss_by_hand():
    logp = torch.tensor([[-1.0, -1.0], [-2.0, -4.0], [-0.2, float("-inf")]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]])
    advantages = torch.tensor([0.5, -1.0, 1.0])
    expected = -(0.5 * math.exp(-1.0) - 1.0 * math.exp(-3.0) + 1.0 * math.exp(-0.2)) / 3
    torch.testing.assert_close(grouper_loss(logp, mask, advantages), torch.tensor(expected))


def test_grouper_equals_simper_over_two_at_g2_values_and_gradients():
    torch.manual_seed(0)
    pairs, T = 4, 7
    logp_a = (torch.randn(pairs, T) - 1).requires_grad_()
    logp_b = (torch.randn(pairs, T) - 1).requires_grad_()
    mask_a = (torch.rand(pairs, T) > 0.2).long()
    mask_b = (torch.rand(pairs, T) > 0.2).long()
    mask_a[:, 0] = mask_b[:, 0] = 1
    scores = torch.randn(pairs, 2)  # distinct scores in every group
    a_wins = scores[:, 0] > scores[:, 1]  # (pairs,)

    # GROUPER over G = 2 rows per group, one group at a time, averaged over groups
    adv = group_advantages(scores)  # (pairs, 2): (+1, -1) or (-1, +1)
    assert set(adv.flatten().round().tolist()) == {-1.0, 1.0}
    grouper = torch.stack([grouper_loss(torch.stack([logp_a[p], logp_b[p]]), torch.stack([mask_a[p], mask_b[p]]),
                                        adv[p]) for p in range(pairs)]).mean()
    g_grouper = torch.autograd.grad(grouper, [logp_a, logp_b])

    pick = lambda w, x, y: torch.where(w[:, None], x, y)  # noqa: E731
    simper = simper_loss(pick(a_wins, logp_a, logp_b), pick(a_wins, mask_a, mask_b),
                         pick(a_wins, logp_b, logp_a), pick(a_wins, mask_b, mask_a))
    g_simper = torch.autograd.grad(simper, [logp_a, logp_b])

    torch.testing.assert_close(grouper, simper / 2, rtol=1e-5, atol=1e-6)
    for g1, g2 in zip(g_grouper, g_simper):
        torch.testing.assert_close(g1, g2 / 2, rtol=1e-5, atol=1e-6)
        assert g1.abs().sum() > 0


def test_zero_variance_groups_contribute_nothing():
    logp = torch.randn(4, 3, requires_grad=True)
    mask = torch.ones(4, 3)
    adv = group_advantages(torch.tensor([[2.0, 2.0], [1.0, 0.0]])).flatten()  # first group skipped
    grouper_loss(logp, mask, adv).backward()
    assert logp.grad[:2].eq(0).all() and logp.grad[2:].ne(0).all()


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="scale must be"):
        group_advantages(torch.ones(2, 3), scale="softmax")
    with pytest.raises(ValueError, match="no response tokens"):
        inverse_perplexity(torch.zeros(2, 3), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="same number of pairs"):
        simper_loss(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(3, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.tensor([[1.0], [2.0]]))


def test_grouper_raises_the_inverse_perplexity_of_the_best_response():
    """Fixed G = 4 responses scored 0..3; GROUPER steps must make the best one the most likely."""
    torch.manual_seed(0)
    logits = torch.zeros(5, 6, requires_grad=True)  # (T, vocab) position-wise policy
    responses = torch.tensor([[0, 1, 2, 3, 4], [5, 5, 5, 5, 5], [1, 1, 2, 2, 3], [4, 3, 2, 1, 0]])  # (G, T)
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    adv = group_advantages(scores).flatten()
    opt = torch.optim.SGD([logits], lr=5.0)
    for _ in range(100):
        logp = logits.log_softmax(-1)[torch.arange(5), responses]  # (G, T)
        loss = grouper_loss(logp, torch.ones(4, 5), adv)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        e = inverse_perplexity(logits.log_softmax(-1)[torch.arange(5), responses], torch.ones(4, 5))
    assert int(e.argmax()) == 3 and e[3] > 0.9  # from 1/6 at the uniform start
