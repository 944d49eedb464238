"""Bootstrap confidence intervals for evaluation metrics, and paired model-vs-baseline comparisons.

A metric is given as per-example sufficient statistics `stats` of shape (S, n, k): S training seeds, the same
n test items for every seed, k statistics per item. A score function maps statistics summed over items to the
metric: `score(sums)` takes (..., k) and returns (...), vectorised over the leading dimensions. Corpus-level
metrics (micro averages, chrF from summed character n-gram counts) are then exact functions of the sums, so a
resample only has to change how often each item is counted.

The bootstrap is hierarchical: a replicate draws n items with replacement and, when S > 1, S seeds with
replacement; the same item draw serves every drawn seed, and the replicate's value is the mean over the drawn
seeds of each seed's score. Draws are held as count matrices, so sums are one contraction of counts with
`stats` and no (reps, S, n, k) gather is ever built. Intervals are percentile intervals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Score = Callable[[np.ndarray], np.ndarray]

# Replicates are processed in chunks so that the count matrix (r, n) and the sums (r, S, k) stay below
# this many elements each (32 MiB of float64).
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval at `level`."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def ratio_score(sums: np.ndarray) -> np.ndarray:
    """Columns [value, weight] -> sum(value) / sum(weight): a mean with weight 1 (accuracy: value = 100 *
    correct), a micro average such as nats per byte with weight = UTF-8 bytes."""
    sums = np.asarray(sums, dtype=float)
    if sums.shape[-1] != 2:
        raise ValueError(f"sums.shape={sums.shape}: ratio_score needs 2 statistics per item, [value, weight]")
    return sums[..., 0] / sums[..., 1]


def from_scalar_score(fn: Callable[[np.ndarray], float]) -> Score:
    """A vectorised score from `fn`, a function of one (k,) vector of sums (e.g. chrF from summed sentence
    statistics). It calls `fn` once per replicate and seed, so it is much slower than a score written with
    array operations; use it when the metric only exists as a scalar function."""

    def score(sums: np.ndarray) -> np.ndarray:
        sums = np.asarray(sums, dtype=float)
        rows = sums.reshape(-1, sums.shape[-1])  # (R, k)
        return np.array([fn(row) for row in rows], dtype=float).reshape(sums.shape[:-1])

    return score


def _check_stats(stats: np.ndarray, name: str) -> np.ndarray:
    stats = np.asarray(stats, dtype=float)
    if stats.ndim != 3:
        raise ValueError(f"{name}.shape={stats.shape}: must be (seeds, examples, statistics)")
    if stats.shape[0] == 0:
        raise ValueError(f"{name}.shape={stats.shape}: needs at least one seed")
    if stats.shape[1] == 0:
        raise ValueError(f"{name}.shape={stats.shape}: no examples to bootstrap over")
    if stats.shape[2] == 0:
        raise ValueError(f"{name}.shape={stats.shape}: needs at least one statistic per example")
    if not np.isfinite(stats).all():
        raise ValueError(f"{name} contains NaN or inf (at index {tuple(np.argwhere(~np.isfinite(stats))[0])})")
    return stats


def _check_options(reps: int, level: float) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps={reps!r}: must be a positive integer")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: must be in (0, 1)")


def _counts(rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
    """(rows, size) multinomial counts: how often each of `size` items is drawn in `size` draws with
    replacement, one independent resample per row."""
    draws = rng.integers(0, size, size=(rows, size))  # (rows, size)
    flat = draws + size * np.arange(rows)[:, None]  # row offsets: one bincount counts every row
    return np.bincount(flat.ravel(), minlength=rows * size).reshape(rows, size).astype(float)


def _collapse_seeds(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Identical seeds make seed resampling a no-op; keeping one of them keeps the replicates exactly equal to
    the estimate instead of differing from it by rounding in the weighted mean."""
    if all(np.array_equal(x, np.broadcast_to(x[:1], x.shape)) for x in arrays):
        return [x[:1] for x in arrays]
    return list(arrays)


def _estimate(x: np.ndarray, score: Score) -> float:
    return float(np.mean(score(x.sum(axis=1))))  # (S, k) -> (S,) -> mean over seeds


def _replicates(arrays: Sequence[np.ndarray], score: Score, reps: int, seed: int) -> list[np.ndarray]:
    """(reps,) replicate values for each array, all under the same item and seed draws."""
    n_seeds, n, k = arrays[0].shape
    rng = np.random.default_rng(seed)
    seed_weights = _counts(rng, reps, n_seeds) / n_seeds  # (R, S); all ones when S == 1
    # Identical items make item resampling a no-op, and skipping it keeps constant data at zero width exactly.
    same_items = all(np.array_equal(x, np.broadcast_to(x[:, :1], x.shape)) for x in arrays)
    totals = [x.sum(axis=1) for x in arrays]  # (S, k) each
    chunk = max(1, _CHUNK_ELEMENTS // max(n, n_seeds * k))
    out = [np.empty(reps) for _ in arrays]
    for start in range(0, reps, chunk):
        stop = min(reps, start + chunk)
        counts = None if same_items else _counts(rng, stop - start, n)  # (r, n)
        for x, total, values in zip(arrays, totals, out):
            if counts is None:
                sums = np.broadcast_to(total, (stop - start, n_seeds, k))  # (r, S, k)
            else:
                sums = np.einsum("rn,snk->rsk", counts, x, optimize=True)  # (r, S, k)
            values[start:stop] = np.einsum("rs,rs->r", seed_weights[start:stop], score(sums))
    return out


def _interval(estimate: float, values: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(estimate=estimate, low=float(low), high=float(high), level=level)


def bootstrap(stats: np.ndarray, score: Score, reps: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile interval of the metric `score` on `stats` (S, n, k), resampling items and seeds.

    The estimate is the mean over seeds of the score on all items. One item, or all items and seeds equal,
    give a zero-width interval."""
    _check_options(reps, level)
    (stats,) = _collapse_seeds([_check_stats(stats, "stats")])
    (values,) = _replicates([stats], score, reps, seed)
    return _interval(_estimate(stats, score), values, level)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, score: Score, reps: int = 2000, level: float = 0.95,
                     seed: int = 0) -> Interval:
    """Percentile interval of score(a) - score(b), for a model `a` and a baseline `b` evaluated on the same
    items. Seed s of `a` is paired with seed s of `b` (trained on the same data stream), and each replicate
    applies the same item and seed draws to both, so variation shared by the two cancels."""
    _check_options(reps, level)
    a, b = _check_stats(a, "a"), _check_stats(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a.shape={a.shape}, b.shape={b.shape}: paired statistics must have the same shape")
    a, b = _collapse_seeds([a, b])
    values_a, values_b = _replicates([a, b], score, reps, seed)
    return _interval(_estimate(a, score) - _estimate(b, score), values_a - values_b, level)


def verdict(diff: Interval, higher_is_better: bool) -> str:
    """What an interval of model - baseline says: a side wins only when the whole interval is on its side
    of 0."""
    model_side = diff.low > 0 if higher_is_better else diff.high < 0
    baseline_side = diff.high < 0 if higher_is_better else diff.low > 0
    if model_side:
        return "model better"
    if baseline_side:
        return "baseline better"
    return f"no significant difference ({diff.level:.0%})"


def _check_seed_values(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name}.shape={values.shape}: must be a non-empty (seeds,) vector")
    if not np.isfinite(values).all():
        raise ValueError(f"{name}={values.tolist()}: contains NaN or inf")
    return values


def _first(sums: np.ndarray) -> np.ndarray:
    return sums[..., 0]


def seed_interval(values: np.ndarray, reps: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile interval of the mean over seeds of a per-seed quantity `values` (S,), such as a final
    validation loss; one seed gives a zero-width interval at its value."""
    values = _check_seed_values(values, "values")
    return bootstrap(values[:, None, None], _first, reps=reps, level=level, seed=seed)  # one item per seed


def paired_seed_interval(a: np.ndarray, b: np.ndarray, reps: int = 2000, level: float = 0.95,
                         seed: int = 0) -> Interval:
    """Percentile interval of mean(a - b) over paired seeds, for per-seed quantities a (S,) and b (S,)."""
    a, b = _check_seed_values(a, "a"), _check_seed_values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a.shape={a.shape}, b.shape={b.shape}: paired seeds must have the same shape")
    return paired_bootstrap(a[:, None, None], b[:, None, None], _first, reps=reps, level=level, seed=seed)
