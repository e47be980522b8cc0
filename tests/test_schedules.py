"""The AGP cubic schedule and the iterative pipeline's targets."""
import pytest

from prunekit.sparsity.schedules import AGPSchedule, iterative_targets


def test_agp_formula_by_hand():
    s = AGPSchedule(initial=0.0, final=0.8, begin_step=100, end_step=500, frequency=100)
    assert s.n == 4 and s.last_update == 500
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n Δt))^3
    assert s.sparsity_at(100) == 0.0
    assert s.sparsity_at(200) == pytest.approx(0.8 - 0.8 * 0.75 ** 3)
    assert s.sparsity_at(300) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    assert s.sparsity_at(400) == pytest.approx(0.8 - 0.8 * 0.25 ** 3)
    assert s.sparsity_at(500) == 0.8
    assert s.sparsity_at(50) == 0.0 and s.sparsity_at(10_000) == 0.8
    assert [t for t, _ in s.updates()] == [100, 200, 300, 400, 500]


def test_agp_nonzero_initial_and_power():
    s = AGPSchedule(initial=0.2, final=0.9, begin_step=0, end_step=10, frequency=5, power=2)
    assert s.sparsity_at(0) == pytest.approx(0.2)
    assert s.sparsity_at(5) == pytest.approx(0.9 + (0.2 - 0.9) * 0.5 ** 2)
    assert s.sparsity_at(10) == pytest.approx(0.9)


def test_agp_lands_exactly_when_span_is_not_a_multiple_of_frequency():
    # TF-MOT would never reach s_f here (end - begin = 250 is not a multiple of 100)
    s = AGPSchedule(initial=0.0, final=0.9, begin_step=0, end_step=250, frequency=100)
    updates = s.updates()
    assert updates[-1] == (200, 0.9)
    assert all(s.is_update(t) == (t in (0, 100, 200)) for t in range(0, 400))


def test_agp_is_monotone():
    s = AGPSchedule(initial=0.0, final=0.95, begin_step=7, end_step=1000, frequency=13)
    values = [s.sparsity_at(t) for t in range(0, 1200)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] == 0.95


def test_agp_fails_fast_on_schedules_a_run_cannot_carry_out():
    assert "end_step" in AGPSchedule(0.0, 0.5, 0, 100, 10).problem(total_steps=100)
    assert "frequency" in AGPSchedule(0.0, 0.5, 0, 50, 100).problem(total_steps=200)
    assert AGPSchedule(0.0, 0.5, 0, 99, 10).problem(total_steps=100) is None


def test_iterative_targets():
    g = iterative_targets(0.9, 3, "geometric")
    assert g[-1] == pytest.approx(0.9)
    # geometric: every step keeps the same fraction of what remains
    kept = [1 - t for t in g]
    assert kept[1] / kept[0] == pytest.approx(kept[0])
    assert kept[2] / kept[1] == pytest.approx(kept[0])
    assert iterative_targets(0.6, 3, "linear") == pytest.approx([0.2, 0.4, 0.6])
