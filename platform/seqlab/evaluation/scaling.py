"""Scaling-law fits L(C) = E + A * C^(-alpha) of loss against training compute, and the compute multiplier:
how much more (or less) compute the baseline needs to reach the loss the model reaches at a given budget.

Fits are batched: a bootstrap replicate is a weighted fit whose weights are the multinomial counts of its
resample, so every replicate of a bootstrap is fitted in the same array operations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

Point = tuple[Hashable, float, float]  # (key identifying the run, compute C, loss L)

_ALPHA_RANGE = (1e-3, 3.0)
_GRID_SIZE = 200
_GOLDEN_STEPS = 60  # shrinks the bracket of two grid steps by 0.618^60 ~ 3e-13
_CHUNK_ELEMENTS = 1 << 21  # bounds the (rows, grid, points) arrays of one batch of fits
_MIN_DISTINCT_RESAMPLES = 20  # different usable resamples needed for low and high
_LOG_INF = 1e300  # stands in for log(inf) so that quantiles interpolate instead of producing inf - inf


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = E + A * C^(-alpha)."""

    E: float
    A: float
    alpha: float

    def __call__(self, C: np.ndarray | float) -> np.ndarray | float:
        C = np.asarray(C, dtype=float)
        out = self.E + self.A * np.power(C, -self.alpha)
        return float(out) if out.ndim == 0 else out

    def inverse(self, L: np.ndarray | float) -> np.ndarray | float:
        """The compute at which the curve reaches loss L; inf where L <= E (the curve never gets there)."""
        L = np.asarray(L, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            C = np.where(L > self.E, np.power(self.A / (L - self.E), 1 / self.alpha), np.inf)
        return float(C) if C.ndim == 0 else C

    def to_dict(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "alpha": self.alpha}


def _solve_linear(f: np.ndarray, L: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of L ~ E + A' f with E >= 0 and A' >= 0, for features f (..., m), losses L (m,)
    and weights w broadcastable to f. Returns E, A' and the residual sum of squares, each (...).

    The problem is a convex quadratic on the quadrant: its solution is the unconstrained one when that is
    feasible, otherwise the better of the two edge optima (each a one-parameter fit clipped at 0)."""
    sw = w.sum(axis=-1)
    mean_f = (w * f).sum(axis=-1) / sw
    mean_L = (w * L).sum(axis=-1) / sw
    df, dL = f - mean_f[..., None], L - mean_L[..., None]
    var_f = (w * df * df).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(var_f > 0, (w * df * dL).sum(axis=-1) / var_f, 0.0)
        A_edge = np.maximum(0.0, (w * f * L).sum(axis=-1) / (w * f * f).sum(axis=-1))  # E = 0
    intercept = mean_L - slope * mean_f
    E_edge = np.broadcast_to(np.maximum(0.0, mean_L), slope.shape)  # A' = 0
    zero = np.zeros(slope.shape)

    def rss(E: np.ndarray, A: np.ndarray) -> np.ndarray:
        return (w * (L - E[..., None] - A[..., None] * f) ** 2).sum(axis=-1)

    feasible = (slope >= 0) & (intercept >= 0)
    candidates = np.stack([np.where(feasible, rss(intercept, slope), np.inf),
                           rss(zero, A_edge), rss(E_edge, zero)])  # (3, ...)
    best = candidates.argmin(axis=0)
    E = np.choose(best, [intercept, zero, E_edge])
    A = np.choose(best, [slope, A_edge, zero])
    return E, A, np.take_along_axis(candidates, best[None], axis=0)[0]


def _fit_rows(log_x: np.ndarray, L: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fits of L ~ E + A' x^(-alpha) for each row of weights w (B, m), with log_x (m,) the centred log compute.
    Returns E, A', alpha, each (B,)."""
    log_grid = np.linspace(math.log(_ALPHA_RANGE[0]), math.log(_ALPHA_RANGE[1]), _GRID_SIZE)  # (G,)
    f_grid = np.exp(-np.exp(log_grid)[:, None] * log_x)  # (G, m)
    _, _, grid_rss = _solve_linear(f_grid, L, w[:, None, :])  # (B, G)
    at = grid_rss.argmin(axis=1)  # (B,)
    lo = log_grid[np.maximum(at - 1, 0)]
    hi = log_grid[np.minimum(at + 1, _GRID_SIZE - 1)]

    def rss_at(log_alpha: np.ndarray) -> np.ndarray:
        return _solve_linear(np.exp(-np.exp(log_alpha)[:, None] * log_x), L, w)[2]

    # Golden-section search on log alpha within the grid bracket, one bracket per row.
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    rss_c, rss_d = rss_at(c), rss_at(d)
    for _ in range(_GOLDEN_STEPS):
        left = rss_c < rss_d  # the minimum lies in [lo, d]
        hi, lo = np.where(left, d, hi), np.where(left, lo, c)
        new = np.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
        rss_new = rss_at(new)
        c, d, rss_c, rss_d = (np.where(left, new, d), np.where(left, c, new),
                              np.where(left, rss_new, rss_d), np.where(left, rss_c, rss_new))
    refined = (lo + hi) / 2
    log_alpha = np.where(rss_at(refined) <= grid_rss[np.arange(len(at)), at], refined, log_grid[at])
    alpha = np.clip(np.exp(log_alpha), *_ALPHA_RANGE)  # exp(log(3)) may round above 3
    E, A, _ = _solve_linear(np.exp(-alpha[:, None] * log_x), L, w)
    return E, A, alpha


def _fit_weighted(C: np.ndarray, L: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E, A, alpha (B,) of the fits weighted by each row of w (B, m), in chunks of rows."""
    log_C = np.log(C)
    log_C0 = log_C.mean()  # C0, the geometric mean, keeps x = C / C0 near 1 so x^(-alpha) cannot overflow
    rows = max(1, _CHUNK_ELEMENTS // (_GRID_SIZE * len(C)))
    parts = [_fit_rows(log_C - log_C0, L, w[i:i + rows]) for i in range(0, len(w), rows)]
    E, A_scaled, alpha = (np.concatenate(p) for p in zip(*parts))
    with np.errstate(over="ignore"):
        return E, A_scaled * np.exp(alpha * log_C0), alpha


def _check_curve(C: np.ndarray, L: np.ndarray, name: str = "C") -> tuple[np.ndarray, np.ndarray]:
    C, L = np.asarray(C, dtype=float), np.asarray(L, dtype=float)
    if C.ndim != 1 or C.shape != L.shape:
        raise ValueError(f"{name}.shape={C.shape}, L.shape={L.shape}: must be matching (points,) vectors")
    if not (np.isfinite(C).all() and np.isfinite(L).all()) or (C <= 0).any():
        raise ValueError(f"{name}={C.tolist()}, L={L.tolist()}: C must be positive, both finite")
    if len(np.unique(C)) < 3:
        raise ValueError(f"{name}={C.tolist()}: a power-law fit needs at least 3 distinct compute values")
    return C, L


def fit_power_law(C: np.ndarray, L: np.ndarray) -> PowerLaw:
    """Least-squares fit of L = E + A * C^(-alpha) to compute C (m,) and losses L (m,).

    The residuals are taken in L, not log L: the noise of a measured loss (finite validation set, seed) is
    additive and of similar size at every budget, and only in L is the model linear in (E, A) for fixed
    alpha (log(E + A C^-alpha) is not), which the closed-form inner solve relies on. E >= 0 and A >= 0 are imposed because a negative irreducible
    loss or a loss that rises with compute is not a scaling law; unconstrained, small or noisy sweeps trade
    a large negative E against a large alpha. For fixed alpha the model is linear in (E, A), solved in closed
    form (variable projection); alpha is chosen on a log grid over [1e-3, 3] and refined by golden-section
    search. At least 3 distinct values of C are needed."""
    C, L = _check_curve(C, L)
    E, A, alpha = _fit_weighted(C, L, np.ones((1, len(C))))
    return PowerLaw(E=float(E[0]), A=float(A[0]), alpha=float(alpha[0]))


def _usable(C: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B,) whether each resample (counts (B, m)) holds at least 3 distinct compute values."""
    _, group = np.unique(C, return_inverse=True)
    present = np.zeros((len(counts), group.max() + 1))  # (B, distinct C)
    np.add.at(present.T, group, counts.T)
    return (present > 0).sum(axis=1) >= 3


def _unpack(points: Sequence[Point], name: str) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    if any(len(p) != 3 for p in points):
        raise ValueError(f"{name}: every point must be (key, C, L)")
    keys = [p[0] for p in points]
    if len(set(keys)) != len(keys):
        repeated = [key for i, key in enumerate(keys) if key in keys[:i]]
        raise ValueError(f"{name}: keys must be unique, repeated: {repeated}")
    C, L = _check_curve(np.array([p[1] for p in points], dtype=float),
                        np.array([p[2] for p in points], dtype=float), name=f"{name} C")
    return keys, C, L


def _check_reps(reps: int) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps={reps!r}: must be a positive integer")


def bootstrap_fits(points: Sequence[Point], reps: int = 1000, seed: int = 0) -> list[PowerLaw]:
    """Fits to `reps` resamples with replacement of `points` (key, C, L), e.g. for a band around a curve;
    resamples with fewer than 3 distinct C values are skipped, so fewer than `reps` fits may come back."""
    _check_reps(reps)
    _, C, L = _unpack(points, "points")
    counts = np.random.default_rng(seed).multinomial(len(C), np.full(len(C), 1 / len(C)), size=reps)  # (R, m)
    counts = counts[_usable(C, counts)].astype(float)
    if len(counts) == 0:
        return []
    return [PowerLaw(float(e), float(a), float(al)) for e, a, al in zip(*_fit_weighted(C, L, counts))]


def _log_multiplier(model: tuple, baseline: tuple, budget: float) -> np.ndarray:
    """log(baseline compute for the model's loss at `budget` / budget) for arrays of fits (E, A, alpha);
    +inf where that loss is at or below the baseline's floor E."""
    E_m, A_m, alpha_m = model
    E_b, A_b, alpha_b = baseline
    target = E_m + A_m * budget ** -alpha_m
    with np.errstate(divide="ignore", invalid="ignore"):
        log_needed = (np.log(A_b) - np.log(target - E_b)) / alpha_b
    return np.where(target > E_b, log_needed - math.log(budget), np.inf)


def compute_multiplier(model_points: Sequence[Point], baseline_points: Sequence[Point], reps: int = 1000,
                       level: float = 0.95, seed: int = 0) -> dict:
    """How much compute the baseline needs to reach the loss the model's fit reaches at the budget C*.

    Points are (key, C, L); a key names a pair of runs (e.g. (size index, seed)) and both lists must hold the
    same keys. C* is the largest model budget not above the baseline's largest budget (the smallest model
    budget when there is none): the model's loss there is interpolated, and the baseline was trained at least
    that far. multiplier = baseline_fit.inverse(model_fit(C*)) / C* (> 1: the model is more compute-
    efficient); inf when the model's loss is at or below the baseline's floor E. `extrapolated`: the needed
    compute lies outside the baseline's trained range (or is infinite).

    The interval resamples keys with replacement, the same draw for both architectures, refits both and takes
    the percentile interval of log(multiplier), infinite replicates counting as +inf (so `high` may be inf).
    Resamples with fewer than 3 distinct C values per architecture are skipped (`replicates` counts the
    others); when fewer than 20 different resamples are usable, low and high are None (e.g. one seed of
    exactly 3 sizes: every usable resample is the data itself, which says nothing about uncertainty).
    """
    _check_reps(reps)
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: must be in (0, 1)")
    model_keys, C_m, L_m = _unpack(model_points, "model_points")
    baseline_keys, C_b, L_b = _unpack(baseline_points, "baseline_points")
    if set(model_keys) != set(baseline_keys):
        raise ValueError(f"model_points and baseline_points must share keys: missing from baseline_points: "
                         f"{[k for k in model_keys if k not in set(baseline_keys)]}, missing from model_points: "
                         f"{[k for k in baseline_keys if k not in set(model_keys)]}")
    position = {key: i for i, key in enumerate(baseline_keys)}
    order = np.array([position[key] for key in model_keys])
    C_b, L_b = C_b[order], L_b[order]  # aligned with the model's keys

    below = C_m[C_m <= C_b.max()]
    budget = float(below.max() if len(below) else C_m.min())
    ones = np.ones((1, len(C_m)))
    model_fit, baseline_fit = _fit_weighted(C_m, L_m, ones), _fit_weighted(C_b, L_b, ones)
    log_mult = float(_log_multiplier(model_fit, baseline_fit, budget)[0])
    with np.errstate(over="ignore"):
        multiplier = float(np.exp(log_mult))
    needed = budget * multiplier

    counts = np.random.default_rng(seed).multinomial(len(C_m), np.full(len(C_m), 1 / len(C_m)), size=reps)
    counts = counts[_usable(C_m, counts) & _usable(C_b, counts)].astype(float)  # (R usable, keys)
    low = high = None
    infinite = 0.0
    if len(counts):
        replicates = _log_multiplier(_fit_weighted(C_m, L_m, counts), _fit_weighted(C_b, L_b, counts), budget)
        infinite = float(np.mean(replicates == np.inf))
        # Repeated resamples are repeated fits: what an interval needs is enough different ones.
        if len(np.unique(counts, axis=0)) >= _MIN_DISTINCT_RESAMPLES:
            tail = (1 - level) / 2
            bounds = np.quantile(np.clip(replicates, -_LOG_INF, _LOG_INF), [tail, 1 - tail])
            with np.errstate(over="ignore"):
                low, high = (float(v) for v in np.exp(bounds))

    def as_dict(fit: tuple) -> dict[str, float]:
        return {name: float(v[0]) for name, v in zip(("E", "A", "alpha"), fit)}

    return {"budget": budget, "model_loss": float(PowerLaw(**as_dict(model_fit))(budget)),
            "baseline_compute": needed, "multiplier": multiplier,
            "low": low, "high": high, "extrapolated": not C_b.min() <= needed <= C_b.max(),
            "replicates": int(len(counts)), "infinite_fraction": infinite,
            "model_fit": as_dict(model_fit), "baseline_fit": as_dict(baseline_fit)}
