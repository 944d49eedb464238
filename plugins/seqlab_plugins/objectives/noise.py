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
    """Spans covering exactly `n_noise` of `length` positions per row, with Poisson(mean) lengths.

    Lengths are drawn until they cover n_noise tokens; the last one is cut to fit. Spans never touch: at least
    one clean token separates neighbours, so a measured span is one drawn span (adjacent spans would merge
    and bias the mean up). Without `allow_empty`, zero draws count as 1, so the mean is mean + P(0) (3.05 for
    mean 3); with it (BART), an empty span is an insertion point.
    """
    clean = length - n_noise
    # Enough draws for about 1.5x the expected number of spans; the rare row that needs more doubles the width.
    width = max(1, int(1.5 * n_noise / max(mean, 1.0)) + 8)
    while True:
        lengths = rng.poisson(mean, (batch, width))
        if not allow_empty:
            np.maximum(lengths, 1, out=lengths)
        cum = np.cumsum(lengths, axis=1)
        if (cum[:, -1] >= n_noise).all() or n_noise == 0:
            break
        width *= 2
    count = np.minimum((cum < n_noise).sum(axis=1) + 1, width) if n_noise else np.zeros(batch, dtype=np.int64)
    rows = np.arange(batch)
    lengths = np.where(np.arange(width)[None, :] < count[:, None], lengths, 0)
    if n_noise:
        before_last = np.where(count > 1, cum[rows, np.maximum(count - 2, 0)], 0)
        lengths[rows, count - 1] = n_noise - before_last
    # A span sits in one of the clean + 1 gaps around clean tokens, at most one span per gap. With
    # n_noise < length / 2 there are always enough gaps; beyond that the last spans are dropped, and callers
    # that allow such rates (BART) check the masked count.
    count = np.minimum(count, clean + 1)
    gaps = _distinct_sorted(rng, batch, clean + 1, count, width)  # (B, width) clean tokens before span k
    preceding = np.cumsum(lengths, axis=1) - lengths
    starts = np.where(np.arange(width)[None, :] < count[:, None], gaps + preceding, length)
    return Spans(starts, lengths, count)


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
