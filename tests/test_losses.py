"""Each loss function against a direct computation on small tensors."""
from __future__ import annotations

import math

import pytest
import torch

from calql_vision import losses


def test_td_target_bootstraps_unless_terminal():
    rewards = torch.tensor([-1.0, 0.0, -1.0])
    terminals = torch.tensor([0.0, 1.0, 0.0])
    next_value = torch.tensor([-10.0, -50.0, 3.0])
    expected = torch.tensor([-1.0 + 0.9 * -10.0, 0.0, -1.0 + 0.9 * 3.0])
    torch.testing.assert_close(losses.td_target(rewards, terminals, next_value, 0.9), expected)


def test_ensemble_min_over_all_heads_and_over_a_random_subset():
    q = torch.tensor([[3.0, -1.0], [1.0, 5.0], [2.0, 0.0], [4.0, 2.0]])  # (H=4, B=2)
    torch.testing.assert_close(losses.ensemble_min(q), torch.tensor([1.0, -1.0]))
    # A subset as large as the ensemble is the whole ensemble and draws nothing from the RNG.
    state = torch.get_rng_state()
    torch.testing.assert_close(losses.ensemble_min(q, subset=4), torch.tensor([1.0, -1.0]))
    assert torch.equal(state, torch.get_rng_state())
    # A random pair: the result is the min over the pair that randperm would choose.
    torch.manual_seed(3)
    chosen = torch.randperm(4)[:2]
    torch.manual_seed(3)
    torch.testing.assert_close(losses.ensemble_min(q, subset=2), q[chosen].min(0).values)
    # Over many draws every head is used (a subset, not a fixed pair).
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        seen.add(tuple(losses.ensemble_min(q, subset=1).tolist()))
    assert seen == {tuple(row.tolist()) for row in q}


def test_sac_actor_and_temperature_losses():
    log_prob = torch.tensor([-2.0, 1.0])
    q = torch.tensor([5.0, -3.0])
    alpha = torch.tensor(0.5)
    assert losses.sac_actor_loss(log_prob, q, alpha).item() == pytest.approx(((0.5 * -2 - 5) + (0.5 * 1 + 3)) / 2)
    log_alpha = torch.tensor(0.3, requires_grad=True)
    loss = losses.temperature_loss(log_alpha, log_prob, target_entropy=-7.0)
    assert loss.item() == pytest.approx(-(0.3 * (-2 - 7) + 0.3 * (1 - 7)) / 2)
    loss.backward()
    # d/dlog_alpha = -mean(log pi + target) > 0 here: entropy above the target, so descent lowers alpha.
    assert log_alpha.grad.item() == pytest.approx(-((-2 - 7) + (1 - 7)) / 2)


def test_conservative_gap_by_hand_with_and_without_the_bound():
    q_data = torch.tensor([[-5.0], [-4.0]])  # (H=2, B=1)
    q_random = torch.tensor([[[-30.0]], [[-20.0]]])  # (2, 1, N=1)
    q_current = torch.tensor([[[-50.0]], [[-3.0]]])
    q_next = torch.tensor([[[-40.0]], [[-2.0]]])
    log_current, log_next = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    g = torch.tensor([-10.0])
    a = 2
    for calibrated in (False, True):
        gap, stats = losses.conservative_gap(q_data, q_random, q_current, q_next, log_current, log_next, g, a, calibrated)
        for head in range(2):
            cur, nxt = q_current[head, 0, 0].item(), q_next[head, 0, 0].item()
            if calibrated:
                cur, nxt = max(cur, -10.0), max(nxt, -10.0)
            terms = [q_random[head, 0, 0].item() - a * math.log(0.5), nxt - 2.0, cur - 1.0]
            expected = math.log(sum(math.exp(t) for t in terms)) - q_data[head, 0].item()
            assert gap[head].item() == pytest.approx(expected, rel=1e-6)
        assert stats["bound_rate"].item() == pytest.approx(0.5)  # head 0's two samples are below G


def test_expectile_loss_weights_the_two_signs():
    diff = torch.tensor([2.0, -1.0, 0.5, -3.0])
    expected = (0.9 * 4 + 0.1 * 1 + 0.9 * 0.25 + 0.1 * 9) / 4
    assert losses.expectile_loss(diff, 0.9).item() == pytest.approx(expected)
    assert losses.expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (diff**2).mean().item())


def test_advantage_weights_are_clipped_and_detached():
    advantage = torch.tensor([-1.0, 0.0, 0.3, 2.0], requires_grad=True)
    weights = losses.advantage_weights(advantage, temperature=3.0, max_weight=100.0)
    expected = [math.exp(-3.0), 1.0, math.exp(0.9), 100.0]  # exp(6) = 403 is clipped
    torch.testing.assert_close(weights, torch.tensor(expected))
    assert not weights.requires_grad


def test_soft_lower_clip_passes_high_values_and_floors_low_ones():
    floor = torch.tensor([-5.0, -5.0, -5.0])
    x = torch.tensor([20.0, -5.0, -60.0])
    clipped = losses.soft_lower_clip(x, floor)
    expected = [math.log1p(math.exp(25.0)) - 5.0, math.log(2.0) - 5.0, math.log1p(math.exp(-55.0)) - 5.0]
    torch.testing.assert_close(clipped, torch.tensor(expected))
    assert clipped[0].item() == pytest.approx(20.0, abs=1e-6) and clipped[2].item() == pytest.approx(-5.0, abs=1e-6)


def test_ml_normalised_actor_loss():
    log_prob_new = torch.tensor([-1.0, -2.0])
    q_new = torch.tensor([-10.0, -30.0], requires_grad=True)
    log_prob_data = torch.tensor([0.5, 1.5])
    loss, lam = losses.ml_normalised_actor_loss(log_prob_new, q_new, torch.tensor(0.2), log_prob_data, scale=30.0)
    lam_expected = 30.0 / 20.0
    sac = ((0.2 * -1 + 10) + (0.2 * -2 + 30)) / 2
    assert lam.item() == pytest.approx(lam_expected)
    assert loss.item() == pytest.approx(lam_expected * sac - 1.0)
    loss.backward()
    # lambda is a constant: d loss / d q = -lambda / B per element.
    torch.testing.assert_close(q_new.grad, torch.tensor([-0.75, -0.75]))
