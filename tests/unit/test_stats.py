"""Bootstrap intervals: nominal coverage, exact degenerate cases, pairing, seed resampling and the verdicts."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.evaluation import stats as stats_module
from seqlab.evaluation.stats import (Interval, bootstrap, from_scalar_score, paired_bootstrap, paired_seed_interval,
                                     ratio_score, seed_interval, verdict)

PROPERTY = settings(max_examples=40, deadline=None)


def as_stats(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(S, n) values -> (S, n, 2) [value, weight] statistics for ratio_score (weight 1: a plain mean)."""
    values = np.asarray(values, dtype=float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    return np.stack([values, weights], axis=-1)


@pytest.mark.parametrize(("draw", "truth"), [
    (lambda rng: rng.normal(3.0, 2.0, size=100), 3.0),
    (lambda rng: 100.0 * (rng.random(100) < 0.7), 70.0),  # accuracy in percent, Bernoulli(0.7) items
], ids=["normal", "bernoulli"])
def test_percentile_interval_of_a_mean_has_nominal_coverage(draw, truth):
    replications = 1000
    covered = sum(bootstrap(as_stats(draw(np.random.default_rng(i))[None]), ratio_score, reps=500, seed=i)
                  .contains(truth) for i in range(replications))
    # 0.95 +- 0.03 is more than 4 binomial standard errors (0.007) of 1000 replications either side.
    assert 0.92 <= covered / replications <= 0.98


@PROPERTY
@given(seeds=st.integers(1, 4), n=st.integers(1, 30), data_seed=st.integers(0, 2**32 - 1))
def test_identical_model_and_baseline_give_exactly_zero(seeds, n, data_seed):
    rng = np.random.default_rng(data_seed)
    b = as_stats(rng.normal(size=(seeds, n)), rng.integers(1, 50, size=(seeds, n)))
    diff = paired_bootstrap(b.copy(), b, ratio_score, reps=200, seed=data_seed % 1000)
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert verdict(diff, higher_is_better=True) == "no significant difference (95%)"


@PROPERTY
@given(seeds=st.integers(1, 4), n=st.integers(1, 30), value=st.floats(-1e3, 1e3), data_seed=st.integers(0, 999))
def test_constant_data_and_single_items_give_zero_width(seeds, n, value, data_seed):
    constant = bootstrap(as_stats(np.full((seeds, n), value)), ratio_score, reps=200, seed=data_seed)
    assert constant.low == constant.high == constant.estimate == pytest.approx(value, rel=1e-12, abs=1e-12)
    one_item = bootstrap(as_stats(np.random.default_rng(data_seed).normal(size=(1, 1))), ratio_score, reps=200)
    assert one_item.half_width == 0.0 and not np.isnan(one_item.estimate)


def test_a_clear_shift_decides_the_verdict_both_ways():
    rng = np.random.default_rng(0)
    b = as_stats(rng.normal(size=(2, 200)))
    a = b + np.array([1.0, 0.0])  # +1 on every value, same weights
    up = paired_bootstrap(a, b, ratio_score)
    assert up.estimate == pytest.approx(1.0) and up.low > 0
    assert verdict(up, higher_is_better=True) == "model better"
    assert verdict(paired_bootstrap(b, a, ratio_score), higher_is_better=True) == "baseline better"
    assert verdict(up, higher_is_better=False) == "baseline better"  # e.g. a loss: higher is worse
    assert verdict(paired_bootstrap(b, a, ratio_score), higher_is_better=False) == "model better"


def test_no_difference_names_the_level():
    rng = np.random.default_rng(1)
    a, b = as_stats(rng.normal(size=(1, 100))), as_stats(rng.normal(size=(1, 100)))
    assert verdict(paired_bootstrap(a, b, ratio_score), True) == "no significant difference (95%)"
    assert verdict(paired_bootstrap(a, b, ratio_score, level=0.9), False) == "no significant difference (90%)"


def test_pairing_removes_item_difficulty_from_the_comparison():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0.0, 10.0, size=(1, 300))  # items vary far more than the models differ
    b = as_stats(difficulty)
    a = as_stats(difficulty + 0.5 + rng.normal(0.0, 0.1, size=difficulty.shape))
    model, baseline = bootstrap(a, ratio_score), bootstrap(b, ratio_score)
    assert model.low < baseline.high and baseline.low < model.high  # separately: indistinguishable
    diff = paired_bootstrap(a, b, ratio_score)
    assert diff.low > 0 and diff.contains(0.5)
    assert verdict(diff, higher_is_better=True) == "model better"


def test_seed_variation_widens_the_interval():
    rng = np.random.default_rng(3)
    one_seed = rng.normal(size=(1, 200))
    copies = bootstrap(as_stats(np.repeat(one_seed, 4, axis=0)), ratio_score)
    varied = bootstrap(as_stats(one_seed + np.array([[0.0], [0.5], [1.0], [1.5]])), ratio_score)
    assert copies == bootstrap(as_stats(one_seed), ratio_score)  # copies of a seed add no information
    assert varied.half_width > 1.5 * copies.half_width


@PROPERTY
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6)), min_size=1, max_size=50))
def test_ratio_score_is_total_value_over_total_weight(pairs):
    values, weights = np.array(pairs).T
    assert ratio_score(as_stats(values[None], weights[None]).sum(axis=1))[0] == pytest.approx(
        values.sum() / weights.sum(), rel=1e-9, abs=1e-9)


def test_scalar_score_agrees_with_the_vectorised_one():
    rng = np.random.default_rng(4)
    sums = np.stack([rng.normal(size=(7, 3)), rng.uniform(1, 5, size=(7, 3))], axis=-1)  # (R, S, 2)
    scalar = from_scalar_score(lambda row: row[0] / row[1])
    np.testing.assert_allclose(scalar(sums), ratio_score(sums), rtol=1e-12)
    data = as_stats(rng.normal(size=(2, 40)), rng.integers(1, 9, size=(2, 40)))
    assert bootstrap(data, scalar, reps=200, seed=5).to_dict() == pytest.approx(
        bootstrap(data, ratio_score, reps=200, seed=5).to_dict(), rel=1e-12)


def test_micro_average_weights_items_by_their_size():
    nats, nbytes = np.array([[10.0, 1.0]]), np.array([[10.0, 1.0]])  # a long item at 1 nat/byte, a short at 1
    assert bootstrap(as_stats(nats, nbytes), ratio_score).estimate == 1.0
    nats = np.array([[20.0, 1.0]])
    assert bootstrap(as_stats(nats, nbytes), ratio_score).estimate == pytest.approx(21.0 / 11.0)


def test_chunked_replicates_match_one_chunk(monkeypatch):
    data = as_stats(np.random.default_rng(6).normal(size=(3, 500)))
    whole = bootstrap(data, ratio_score)
    monkeypatch.setattr(stats_module, "_CHUNK_ELEMENTS", 1000)  # two replicates per chunk
    chunked = bootstrap(data, ratio_score)
    assert chunked.estimate == whole.estimate
    width = whole.high - whole.low
    assert abs(chunked.low - whole.low) < 0.1 * width and abs(chunked.high - whole.high) < 0.1 * width


def test_same_seed_same_interval():
    data = as_stats(np.random.default_rng(7).normal(size=(2, 50)))
    assert bootstrap(data, ratio_score, seed=3) == bootstrap(data, ratio_score, seed=3)
    assert bootstrap(data, ratio_score, seed=3) != bootstrap(data, ratio_score, seed=4)


def test_seed_intervals():
    assert seed_interval(np.array([2.5])) == Interval(2.5, 2.5, 2.5)
    assert seed_interval(np.array([1.0, 1.0, 1.0])) == Interval(1.0, 1.0, 1.0)
    losses = np.array([2.0, 2.2, 2.1, 2.4])
    spread = seed_interval(losses)
    assert spread.estimate == pytest.approx(2.175) and 2.0 <= spread.low < spread.estimate < spread.high <= 2.4
    baseline = losses + np.array([0.3, 0.1, 0.2, 0.25])
    diff = paired_seed_interval(losses, baseline)
    assert diff.to_dict() == pytest.approx(seed_interval(losses - baseline).to_dict(), rel=1e-12)
    assert verdict(diff, higher_is_better=False) == "model better"


def test_interval_helpers():
    interval = Interval(estimate=1.0, low=0.5, high=2.0)
    assert interval.half_width == 0.75 and interval.contains(0.5) and not interval.contains(2.1)
    assert interval.to_dict() == {"estimate": 1.0, "low": 0.5, "high": 2.0}


def test_bad_inputs_are_refused_with_the_shapes():
    good = as_stats(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"a.shape=\(2, 5, 2\), b.shape=\(2, 4, 2\)"):
        paired_bootstrap(good, good[:, :4], ratio_score)
    with pytest.raises(ValueError, match="no examples"):
        bootstrap(good[:, :0], ratio_score)
    nan = good.copy()
    nan[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bootstrap(nan, ratio_score)
    with pytest.raises(ValueError, match="must be"):
        bootstrap(good[0], ratio_score)
    with pytest.raises(ValueError, match="level=1.5"):
        bootstrap(good, ratio_score, level=1.5)
    with pytest.raises(ValueError, match=r"a.shape=\(3,\), b.shape=\(2,\)"):
        paired_seed_interval(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="values"):
        seed_interval(np.array([]))
