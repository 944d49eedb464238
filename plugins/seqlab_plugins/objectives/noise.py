"""Vectorised noising primitives shared by the objectives. Every function works on a whole batch at once.

Conventions: token arrays are (B, L) int64; a "span" is a run of consecutive positions; padded columns of
span arrays have length 0. Randomness comes only from the `rng` passed in, so a batch is a pure function of
(seed, step, rank) and a resumed stream reproduces it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Spans:
    starts: np.ndarray  # (B, S) int64 position of each span's first token, ascending within a row
    lengths: np.ndarray  # (B, S) int64; 0 in padded columns (and for empty spans when allowed)
    count: np.ndarray  # (B,) int64 spans per row; columns >= count are padding


def _distinct_sorted(rng: np.random.Generator, batch: int, n_choices: int, k: np.ndarray, width: int) -> np.ndarray:
    """(B, width): per row, k[row] distinct values drawn uniformly from [0, n_choices), ascending, then padded
    with n_choices. The values with the k smallest of n_choices random keys are a uniform random subset;
    argpartition finds the `width` smallest in linear time, so only those are ever sorted."""
    keys = rng.random((batch, n_choices))
    if width < n_choices:
        picked = np.argpartition(keys, width - 1, axis=1)[:, :width]  # the width smallest keys, unordered
        picked = np.take_along_axis(picked, np.argsort(np.take_along_axis(keys, picked, axis=1), axis=1), axis=1)
    else:  # fewer choices than columns: the extra columns are padding anyway
        picked = np.pad(np.argsort(keys, axis=1), ((0, 0), (0, width - n_choices)), constant_values=n_choices)
    # `picked` is in increasing key order, so each row's first k[row] values are its uniform subset.
    picked = np.where(np.arange(width)[None, :] < k[:, None], picked, n_choices)
    return np.sort(picked, axis=1)


def poisson_spans(rng: np.random.Generator, batch: int, length: int, n_noise: int, mean: float,
                  allow_empty: bool = False) -> Spans:
    """Spans covering exactly `n_noise` of `length` positions per row (0 <= n_noise < length), of mean `mean`.

    Lengths: k Poisson draws conditioned on summing to n_noise are Multinomial(n_noise; k equal cells), i.e.
    n_noise tokens dropped uniformly into k spans (Poisson(n_noise / k) as k grows). Without `allow_empty`
    each span gets one token first and the other n_noise - k are dropped (1 + Poisson(mean - 1)); with it
    (BART) an empty span is an insertion point. The sum is exact by construction, so no span is cut to fit
    and the spans are exchangeable: drawing until n_noise is covered and cutting the last draw shortens the
    mean (2.83 for mean 3 at 127 positions), and counting zero draws as 1 lengthens it (3.05).

    Layout: each span takes its own gap between two clean tokens on a circle of `length` positions, so spans
    never touch (a measured run is one span), and the circle is cut at a uniform random point into the row.
    Every position, the edges included, is then masked with probability n_noise / length (spans laid out
    between the row's edges reach its first or last token only by starting or ending exactly there: ~6% for
    15%). A span across the cut becomes two, one at each end of the row, as in a row cut from running text;
    an empty span at the cut is an insertion before the row's first token.

    Count: the cut falls between two tokens of a span with probability (n_noise - k) / length, so k is drawn
    (stochastically rounded) with E[k] = n_noise (length - mean) / (mean (length - 1)), which makes the row's
    expected span count n_noise / mean (exact without empty spans; BART's ~3% empty ones add ~0.003 spans per
    1024-token row). k is at least 1, at most n_noise and at most the clean tokens (one gap each).
    """
    if not 0 <= n_noise < length:
        raise ValueError(f"n_noise={n_noise} must be in [0, length={length})")
    clean = length - n_noise
    target = n_noise * (length - mean) / (mean * max(length - 1, 1))
    k = np.floor(target) + (rng.random(batch) < target % 1)  # (B,) spans on the circle
    k = np.clip(k, min(n_noise, 1), min(n_noise, clean)).astype(np.int64)
    width = int(k.max(initial=0)) + 1  # one more column for the second half of a span across the cut
    col, rows = np.arange(width)[None, :], np.arange(batch)

    # The span each masked token falls into: (B, n_noise); without empty spans token i < k founds span i.
    token = np.arange(n_noise)[None, :]
    cell = rng.integers(0, np.maximum(k, 1)[:, None], (batch, n_noise))
    if not allow_empty:
        cell = np.where(token < k[:, None], token, cell)
    lengths = np.bincount((rows[:, None] * width + cell).ravel(), minlength=batch * width).reshape(batch, width)

    # On the circle, position 0 is a clean token and gap g follows clean token g; span j sits in gap gaps[j].
    gaps = _distinct_sorted(rng, batch, clean, k, width)  # (B, width)
    starts = gaps + 1 + np.cumsum(lengths, axis=1) - lengths  # (B, width) ascending; a span ends by `length`
    cut = rng.integers(0, length, batch)  # (B,) circle position of the row's first token
    before = ((col < k[:, None]) & (starts < cut[:, None])).sum(axis=1)  # (B,) spans before the cut go last
    last = np.maximum(before - 1, 0)  # (B,) the only span the cut can fall inside
    s_cut, e_cut = starts[rows, last], starts[rows, last] + lengths[rows, last]  # (B,)
    split = (before > 0) & (e_cut > cut)
    count = k + split
    # Row order: the spans from the cut on, then those before it; a split span is first (its tail, at 0) and
    # last (its head, at the row's end), so its column is read twice.
    order = (col + (before - split)[:, None]) % np.maximum(k, 1)[:, None]  # (B, width)
    starts, lengths = np.take_along_axis(starts, order, axis=1), np.take_along_axis(lengths, order, axis=1)
    starts = starts - cut[:, None] + length * (starts < cut[:, None])
    halves = np.flatnonzero(split)
    lengths[halves, 0], starts[halves, 0] = e_cut[halves] - cut[halves], 0
    lengths[halves, k[halves]] = cut[halves] - s_cut[halves]
    real = col < count[:, None]
    width = int(count.max(initial=0))
    return Spans(np.where(real, starts, length)[:, :width], np.where(real, lengths, 0)[:, :width], count)


def span_mask(spans: Spans, length: int) -> np.ndarray:
    """(B, length) bool, True inside a span; built from +1/-1 edges and one cumulative sum.

    Spans never touch, so no two edges share a position except padding's, which sits at `length` and is cut
    off: plain assignment suffices (np.add.at, which would handle collisions, is an order of magnitude slower).
    """
    batch = spans.starts.shape[0]
    edges = np.zeros((batch, length + 1), dtype=np.int8)
    rows = np.arange(batch)[:, None]
    edges[rows, np.minimum(spans.starts, length)] = 1
    edges[rows, np.minimum(spans.starts + spans.lengths, length)] -= 1  # an empty span's edges cancel out
    return np.cumsum(edges[:, :length], axis=1, dtype=np.int8) > 0


def random_segmentation(rng: np.random.Generator, batch: int, n_items: int, n_segments: int) -> np.ndarray:
    """(B, n_segments) positive lengths summing to n_items, uniform over such compositions (T5's layout)."""
    if n_segments == 1:
        return np.full((batch, 1), n_items, dtype=np.int64)
    cuts = _distinct_sorted(rng, batch, n_items - 1, np.full(batch, n_segments - 1), n_segments - 1) + 1
    bounds = np.concatenate([np.zeros((batch, 1), np.int64), cuts, np.full((batch, 1), n_items)], axis=1)
    return np.diff(bounds, axis=1)


def compact(tokens: np.ndarray, keep: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's kept tokens to the front, in order: ((B, max kept) right-padded, (B,) lengths)."""
    lengths = keep.sum(axis=1)
    if len(lengths) and (lengths == lengths[0]).all():  # equal counts (fixed-rate deletion): no padding at all
        return tokens[keep].reshape(len(lengths), int(lengths[0])), lengths
    out = np.full((tokens.shape[0], int(lengths.max(initial=0))), pad_id, dtype=np.int64)
    rows, cols = np.nonzero(keep)
    out[rows, np.cumsum(keep, axis=1)[rows, cols] - 1] = tokens[rows, cols]
    return out, lengths


def prepend(token_id: int, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put one token (a mode token such as [CLM]) before every row."""
    first = np.full((ids.shape[0], 1), token_id, dtype=np.int64)
    return np.concatenate([first, ids], axis=1), lengths + 1


def append_at_lengths(token_id: int, ids: np.ndarray, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Write one token (EOS) right after each row's last real token."""
    out = np.concatenate([ids, np.full((ids.shape[0], 1), pad_id, dtype=np.int64)], axis=1)
    out[np.arange(ids.shape[0]), lengths] = token_id
    return out, lengths + 1


def append_where(token_id: int, ids: np.ndarray, lengths: np.ndarray, where: np.ndarray,
                 pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Write one token (EOS) right after the last real token of the rows that `where` (B,) selects."""
    grown = lengths + where  # (B,)
    out = np.full((len(lengths), max(ids.shape[1], int(grown.max(initial=0)))), pad_id, dtype=np.int64)
    out[:, : ids.shape[1]] = ids
    rows = np.flatnonzero(where)
    out[rows, lengths[rows]] = token_id
    return out, grown
