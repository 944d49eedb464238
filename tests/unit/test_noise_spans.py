"""poisson_spans: exact coverage, non-touching ascending spans, the mean span as measured, flat deletion rates."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seqlab_plugins.objectives.noise import Spans, poisson_spans, span_mask


def used(spans: Spans) -> np.ndarray:
    """(B, S) bool: the columns that hold a span."""
    return np.arange(spans.starts.shape[1])[None, :] < spans.count[:, None]


def runs(mask: np.ndarray) -> np.ndarray:
    """(B,) runs of masked positions per row: what a reader of the row measures as spans."""
    return (mask & ~np.pad(mask, ((0, 0), (1, 0)))[:, :-1]).sum(axis=1)


def deletion_rate(spans: Spans, length: int) -> np.ndarray:
    """(length,) fraction of rows masking each position, from the span edges (no (B, length) mask)."""
    real = used(spans)
    edges = (np.bincount(spans.starts[real], minlength=length + 1)
             - np.bincount((spans.starts + spans.lengths)[real], minlength=length + 1))
    return np.cumsum(edges)[:length] / len(spans.count)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 300), density=st.floats(0.0, 0.5),
       mean=st.floats(1.0, 10.0), allow_empty=st.booleans(), batch=st.integers(1, 16))
def test_exact_coverage_and_spans_that_never_touch(seed, length, density, mean, allow_empty, batch):
    n_noise = min(round(density * length), length - 1)
    spans = poisson_spans(np.random.default_rng(seed), batch, length, n_noise, mean, allow_empty)
    real = used(spans)
    assert (spans.lengths[~real] == 0).all() and (spans.starts[~real] == length).all()  # padding
    assert (spans.count >= min(n_noise, 1)).all() and spans.count.max(initial=0) == spans.starts.shape[1]
    assert (np.where(real, spans.lengths, 0).sum(axis=1) == n_noise).all()
    mask = span_mask(spans, length)
    assert (mask.sum(axis=1) == n_noise).all()  # exactly n_noise positions, every row
    ends = spans.starts + spans.lengths
    assert (spans.starts >= 0).all() and (ends[real] <= length).all()
    # Ascending, and one clean token at least between neighbours (empty spans included).
    assert (spans.starts[:, 1:] >= ends[:, :-1] + 1)[real[:, 1:]].all()
    if not allow_empty:
        assert (spans.lengths[real] >= 1).all()
        assert (runs(mask) == spans.count).all()  # the measured spans are the spans
    again = poisson_spans(np.random.default_rng(seed), batch, length, n_noise, mean, allow_empty)
    assert all(np.array_equal(a, b) for a, b in zip((spans.starts, spans.lengths, spans.count),
                                                    (again.starts, again.lengths, again.count)))


@pytest.mark.parametrize("length, density, mean, rows", [(127, 0.15, 3.0, 20000), (512, 0.3, 8.0, 10000)])
def test_realised_mean_span_is_the_mean(length, density, mean, rows):
    """Masked positions per measured run, pooled over rows: within 2% (the drawn-then-cut layout gave 2.83 for
    mean 3 at 127 positions). The count's standard error here is under 0.1%."""
    n_noise = round(density * length)
    mask = span_mask(poisson_spans(np.random.default_rng(0), rows, length, n_noise, mean), length)
    realised = mask.sum() / runs(mask).sum()
    assert abs(realised / mean - 1) < 0.02, realised


def test_span_lengths_with_empty_spans_average_the_mean():
    """BART's layout: the mean over all spans, empty ones included, is lambda, and empty ones are about
    Poisson's P(0) = e^-3.5 = 3.0% (standard errors about 0.01 and 0.1%)."""
    spans = poisson_spans(np.random.default_rng(1), 2000, 1024, 307, 3.5, allow_empty=True)
    lengths = spans.lengths[used(spans)]
    assert abs(lengths.mean() / 3.5 - 1) < 0.02, lengths.mean()
    assert abs((lengths == 0).mean() - np.exp(-3.5)) < 0.006


@pytest.mark.parametrize("length, density, mean, allow_empty, rows", [
    (127, 0.15, 3.0, False, 40000),  # the rate's standard error per position is 0.18 points
    (127, 0.3, 3.5, True, 40000),  # 0.23 points
    (512, 0.3, 8.0, False, 100000),  # 0.14 points
])
def test_every_position_is_masked_at_the_noise_density(length, density, mean, allow_empty, rows):
    """The first and the last token too (spans laid out between the row's edges masked them ~6% for 15%)."""
    n_noise = round(density * length)
    rng = np.random.default_rng(2)
    chunk = 20000  # bounds the (rows, clean) random keys of the gap draw
    rate = np.mean([deletion_rate(poisson_spans(rng, chunk, length, n_noise, mean, allow_empty), length)
                    for _ in range(rows // chunk)], axis=0)
    expected = n_noise / length
    assert abs(rate[0] - expected) < 0.02 and abs(rate[-1] - expected) < 0.02, (rate[0], rate[-1])
    assert rate.max() - rate.min() < 0.02, (rate.argmin(), rate.min(), rate.argmax(), rate.max())


def test_rows_may_mask_nothing_but_never_everything():
    spans = poisson_spans(np.random.default_rng(3), 4, 10, 0, 3.0)
    assert spans.starts.shape == (4, 0) and (spans.count == 0).all()
    with pytest.raises(ValueError, match="n_noise=10"):
        poisson_spans(np.random.default_rng(3), 4, 10, 10, 3.0)
