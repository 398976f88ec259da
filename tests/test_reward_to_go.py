"""Worked examples of the reward-to-go rules (docs data.md), every expected value by hand."""
from __future__ import annotations

import numpy as np
import pytest

from datasets.reward_to_go import reward_to_go, transform_rewards


def test_data_md_success_example():
    # r' = [-1, -1, 0]; G = [-1 + 0.99 * (-1), -1, 0].
    returns = reward_to_go(np.array([0.0, 0.0, 1.0]), np.array([0, 0, 1]), gamma=0.99, scale=1.0, bias=-1.0)
    np.testing.assert_allclose(returns, [-1.99, -1.0, 0.0], rtol=1e-6)
    assert returns.dtype == np.float32


def test_data_md_failure_example_is_failing_forever():
    # Never succeeded: every step gets r_neg / (1 - gamma) = -1 / 0.01, not the finite sum.
    returns = reward_to_go(np.zeros(3), np.zeros(3), gamma=0.99, scale=1.0, bias=-1.0)
    np.testing.assert_allclose(returns, [-100.0, -100.0, -100.0], rtol=1e-6)


def test_failure_ending_in_a_terminal_is_also_failing_forever():
    # The rule looks at the rewards only: a segment of nothing but r_neg never succeeded.
    returns = reward_to_go(np.zeros(2), np.array([0, 1]), gamma=0.5, scale=1.0, bias=-1.0)
    np.testing.assert_allclose(returns, [-2.0, -2.0])


def test_truncation_after_an_earlier_reward_sums_to_the_cut():
    # Time limit at step 3 (no terminal anywhere); a success reward at step 1 did not end it.
    # The segment is not all r_neg, so accumulate backwards with G after the cut = 0:
    # r' = [-1, 0, -1, -1]; G3 = -1; G2 = -1 + 0.5*(-1) = -1.5; G1 = 0 + 0.5*(-1.5) = -0.75;
    # G0 = -1 + 0.5*(-0.75) = -1.375.
    returns = reward_to_go(np.array([0.0, 1.0, 0.0, 0.0]), np.zeros(4), gamma=0.5, scale=1.0, bias=-1.0)
    np.testing.assert_allclose(returns, [-1.375, -0.75, -1.5, -1.0])


def test_success_reward_at_a_truncation_counts_like_a_terminal_one():
    # Truncated exactly when the reward arrived: the Monte-Carlo sum stops at the cut either way.
    returns = reward_to_go(np.array([0.0, 0.0, 1.0]), np.zeros(3), gamma=0.99, scale=1.0, bias=-1.0)
    np.testing.assert_allclose(returns, [-1.99, -1.0, 0.0], rtol=1e-6)


def test_truncated_failure_is_failing_forever():
    returns = reward_to_go(np.zeros(4), np.zeros(4), gamma=0.5, scale=1.0, bias=-1.0)
    np.testing.assert_allclose(returns, [-2.0] * 4)


def test_success_segment_then_failing_segment_ending_in_truncation():
    # Segment 1 = steps 0-1 (terminal at 1): r' = [-1, 0] -> G = [-1 + 0.5*0, 0] = [-1, 0].
    # Segment 2 = steps 2-4 (time limit): all r_neg -> -1 / (1 - 0.5) = -2 each.
    rewards = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    terminals = np.array([0, 1, 0, 0, 0])
    returns = reward_to_go(rewards, terminals, gamma=0.5, scale=1.0, bias=-1.0)
    np.testing.assert_allclose(returns, [-1.0, 0.0, -2.0, -2.0, -2.0])


def test_two_successful_segments_do_not_leak_into_each_other():
    # Each segment alone: r' = [-1, -1, 0] -> [-1.5, -1, 0] and r' = [-1, 0] -> [-1, 0].
    rewards = np.array([0.0, 0.0, 1.0, 0.0, 1.0])
    terminals = np.array([0, 0, 1, 0, 1])
    returns = reward_to_go(rewards, terminals, gamma=0.5, scale=1.0, bias=-1.0)
    np.testing.assert_allclose(returns, [-1.5, -1.0, 0.0, -1.0, 0.0])


def test_scale_and_bias_success():
    # scale 10, bias 5: r' = [5, 5, 15]; r_neg = 5 but the segment reached 15, so sum:
    # G2 = 15; G1 = 5 + 0.5*15 = 12.5; G0 = 5 + 0.5*12.5 = 11.25.
    returns = reward_to_go(np.array([0.0, 0.0, 1.0]), np.array([0, 0, 1]), gamma=0.5, scale=10.0, bias=5.0)
    np.testing.assert_allclose(returns, [11.25, 12.5, 15.0])


def test_scale_and_bias_failure():
    # r_neg = 10*0 + 5 = 5 -> 5 / (1 - 0.5) = 10 at every step.
    returns = reward_to_go(np.zeros(3), np.zeros(3), gamma=0.5, scale=10.0, bias=5.0)
    np.testing.assert_allclose(returns, [10.0, 10.0, 10.0])


def test_scale_without_bias():
    # scale 2, bias 0: r' = [0, 0, 2]; G = [0 + 0.5*(0 + 0.5*2), 0 + 0.5*2, 2] = [0.5, 1, 2].
    returns = reward_to_go(np.array([0.0, 0.0, 1.0]), np.array([0, 0, 1]), gamma=0.5, scale=2.0, bias=0.0)
    np.testing.assert_allclose(returns, [0.5, 1.0, 2.0])
    # Failure with bias 0: r_neg = 0, failing forever is worth 0.
    np.testing.assert_allclose(reward_to_go(np.zeros(2), np.zeros(2), gamma=0.5, scale=2.0), [0.0, 0.0])


def test_transform_rewards():
    transformed = transform_rewards(np.array([0.0, 1.0, 0.5]), scale=10.0, bias=-5.0)
    np.testing.assert_allclose(transformed, [-5.0, 5.0, 0.0])
    assert transformed.dtype == np.float32


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        reward_to_go(np.zeros(3), np.zeros(2), gamma=0.99)


def test_gamma_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="gamma"):
        reward_to_go(np.zeros(3), np.zeros(3), gamma=1.0)


def test_empty_trajectory():
    assert reward_to_go(np.zeros(0), np.zeros(0), gamma=0.99).shape == (0,)
