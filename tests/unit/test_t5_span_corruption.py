"""T5 span corruption: T5's length arithmetic, exact reconstruction, T5's noise layout and its statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import packed_rows
from hypothesis import assume, given, settings, strategies as st

from seqlab.errors import ConfigError
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConverter
from seqlab_plugins.objectives.t5_span_corruption import (
    T5SpanCorruption, T5SpanCorruptionConfig, noise_counts, span_corruption_lengths,
)

PROPERTY = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer) -> Tokenizer:
    return Tokenizer(small_tokenizer)  # 2000 pieces, 16 sentinels


def build(tok: Tokenizer, seq_len: int, **fields) -> T5SpanCorruption:
    return T5SpanCorruption(T5SpanCorruptionConfig(name="t5_span_corruption", **fields), tokenizer=tok,
                            seq_len=seq_len)


def t5_random_spans_helper(inputs_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """T5's `random_spans_helper` (t5/data/preprocessors.py), line for line, one sentinel per span."""
    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise_tokens = int(round(tokens_length * noise_density))
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
        return num_nonnoise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    inputs_length, targets_length = lengths(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def reconstruct(inputs: np.ndarray, targets: np.ndarray, sentinels: set[int]) -> list[int]:
    """Put each target span back in place of its sentinel in the inputs (both without EOS or mode token)."""
    spans: dict[int, list[int]] = {}
    for token in targets.tolist():
        if token in sentinels:
            current = spans.setdefault(token, [])
        else:
            current.append(token)
    return [t for token in inputs.tolist() for t in (spans[token] if token in sentinels else [token])]


def test_published_t5_lengths():
    # T5's default: 512 input tokens come from 568 raw tokens (85 noise in 28 spans), with 114 target tokens.
    assert span_corruption_lengths(512, 0.15, 3.0) == (568, 114) == t5_random_spans_helper(512, 0.15, 3.0)


@pytest.mark.parametrize("seq_len, density, mean", [
    (512, 0.15, 3.0), (512, 0.15, 8.0), (512, 0.25, 3.0), (626, 0.15, 3.0), (1024, 0.15, 3.0),
    (2048, 0.15, 3.0), (128, 0.3, 2.0), (114, 0.15, 3.0), (64, 0.15, 3.0),
])
def test_lengths_equal_t5_helper(seq_len, density, mean):
    assert span_corruption_lengths(seq_len, density, mean) == t5_random_spans_helper(seq_len, density, mean)


@pytest.mark.parametrize("seq_len, mean", [(512, 3.0), (2048, 8.0), (32, 8.0)])
def test_density_half_keeps_t5_raw_length_with_exact_targets(seq_len, mean):
    raw, target = span_corruption_lengths(seq_len, 0.5, mean)
    t5_raw, t5_target = t5_random_spans_helper(seq_len, 0.5, mean)
    n_noise, n_spans = noise_counts(raw, 0.5, mean)
    assert raw == t5_raw and target == n_noise + n_spans + 1 <= min(t5_target, seq_len)


def test_t5_helper_overflows_where_spans_round_to_zero():
    # 64 tokens, spans of mean 64: T5's helper counts round(11 / 64) = 0 spans, its mask uses 1 -> 65 inputs.
    t5_raw, _ = t5_random_spans_helper(64, 0.15, 64.0)
    n_noise, n_spans = noise_counts(t5_raw, 0.15, 64.0)
    assert t5_raw - n_noise + n_spans + 1 == 65
    raw, _ = span_corruption_lengths(64, 0.15, 64.0)
    n_noise, n_spans = noise_counts(raw, 0.15, 64.0)
    assert raw == t5_raw - 1 and raw - n_noise + n_spans + 1 == 64


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), seq_len=st.sampled_from([12, 24, 48, 64]),
       density=st.sampled_from([0.1, 0.15, 0.3, 0.5]), mean=st.sampled_from([1.0, 2.0, 3.0, 8.0]),
       mode_token=st.sampled_from([None, "[NLU]"]), add_eos=st.booleans())
def test_features_reconstruct_the_row_exactly(tokenizer, seed, seq_len, density, mean, mode_token, add_eos):
    extra = int(add_eos) + int(mode_token is not None)
    raw, _ = span_corruption_lengths(seq_len, density, mean, input_extra=extra, target_extra=int(add_eos))
    n_noise, n_spans = noise_counts(raw, density, mean)
    assume(n_spans <= min(len(tokenizer.sentinel_ids), raw - n_noise))  # else refused: tested below
    obj = build(tokenizer, seq_len, noise_density=density, mean_noise_span_length=mean, mode_token=mode_token,
                add_eos=add_eos)
    rng = np.random.default_rng(seed)
    plan = obj.plan(8, rng)
    assert (plan.length == obj.raw_length).all() and not plan.document.any()
    rows = packed_rows(tokenizer, rng, 8, obj.raw_length)
    f = obj(rows, rng)
    # Every row has the same lengths. Below density 0.5 the inputs are the longer side and use the budget
    # exactly; at 0.5 the targets may be the side that binds, leaving the inputs one short.
    assert (f.input_lengths == f.inputs.shape[1]).all() and f.inputs.shape[1] <= seq_len
    assert f.inputs.shape[1] == seq_len or density == 0.5
    assert (f.target_lengths == obj.target_length).all() and f.targets.shape[1] == obj.target_length <= seq_len
    assert (f.objective == rows.plan.task).all()
    inputs, targets = f.inputs, f.targets
    if mode_token is not None:
        assert (inputs[:, 0] == tokenizer.token_id(mode_token)).all()
        inputs = inputs[:, 1:]
    if add_eos:
        assert (inputs[:, -1] == tokenizer.eos_id).all() and (targets[:, -1] == tokenizer.eos_id).all()
        inputs, targets = inputs[:, :-1], targets[:, :-1]
    sentinels = tokenizer.sentinel_ids[: obj.n_spans]
    allowed = set(sentinels.tolist()) | {tokenizer.token_id("[DOC]")}
    for b in range(8):
        assert reconstruct(inputs[b], targets[b], set(sentinels.tolist())) == rows.tokens[b].tolist()
        # Sentinels in increasing order, one per span, in both; no other special token in the text.
        assert (inputs[b][np.isin(inputs[b], sentinels)] == sentinels).all()
        assert (targets[b][np.isin(targets[b], sentinels)] == sentinels).all() and targets[b][0] == sentinels[0]
        for part in (inputs[b], targets[b]):
            assert set(part[np.isin(part, tokenizer.special_ids)].tolist()) <= allowed


def composition_pmf(n_items: int, n_segments: int) -> np.ndarray:
    """P(first part = k), k = 0..n_items, for a uniform composition of n_items into n_segments positive parts."""
    pmf = np.zeros(n_items + 1)
    for k in range(1, n_items - n_segments + 2):  # the other parts need at least one item each
        pmf[k] = math.comb(n_items - k - 1, n_segments - 2) / math.comb(n_items - 1, n_segments - 1)
    return pmf


def test_noise_fraction_span_lengths_and_layout_statistics(tokenizer):
    obj = build(tokenizer, 128)  # raw 141 tokens: 21 noise tokens in 7 spans
    n_noise, n_spans, raw = obj.n_noise, obj.n_spans, obj.raw_length
    rng = np.random.default_rng(0)
    rows = packed_rows(tokenizer, rng, 4000, raw)
    f = obj(rows, rng)
    targets, inputs = f.targets[:, :-1], f.inputs[:, :-1]
    is_sentinel = np.isin(targets, tokenizer.sentinel_ids)
    # Every row carries exactly round(raw * 0.15) noise tokens: the fraction is within rounding of 0.15.
    noise_per_row = (~is_sentinel).sum(axis=1)
    assert (noise_per_row == n_noise).all() and abs(n_noise / raw - 0.15) <= 0.5 / raw
    # S = round(N / 3) spans, so the mean span length N / S is within rounding of 3 (|N/S - 3| <= 3 / (2S)).
    assert (is_sentinel.sum(axis=1) == n_spans).all() and abs(n_noise / n_spans - 3.0) <= 3.0 / (2 * n_spans)
    # T5's layout: a row starts with kept text and ends with noise, so the first input token is text and the
    # last token before EOS is a sentinel.
    assert not np.isin(inputs[:, 0], tokenizer.sentinel_ids).any()
    assert (inputs[:, -1] == tokenizer.sentinel_ids[n_spans - 1]).all()
    # First noise span and first kept segment of each row (independent across rows) follow the marginal of a
    # uniform composition; each probability within 5 standard errors (+1/N for empty bins).
    first_noise = np.argmax(targets == tokenizer.sentinel_ids[1], axis=1) - 1
    first_kept = np.argmax(inputs == tokenizer.sentinel_ids[0], axis=1)
    for sample, items in ((first_noise, n_noise), (first_kept, raw - n_noise)):
        pmf = composition_pmf(items, n_spans)
        empirical = np.bincount(sample, minlength=items + 1) / len(sample)
        tolerance = 5 * np.sqrt(pmf * (1 - pmf) / len(sample)) + 1 / len(sample)
        assert (np.abs(empirical - pmf) <= tolerance).all()
        assert abs(sample.mean() - items / n_spans) < 0.1 * items / n_spans


def test_same_seed_same_features(tokenizer):
    obj = build(tokenizer, 64)
    rows = packed_rows(tokenizer, np.random.default_rng(1), 16, obj.raw_length)
    a, b = obj(rows, np.random.default_rng(7)), obj(rows, np.random.default_rng(7))
    for field in ("inputs", "input_lengths", "targets", "target_lengths", "objective"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.inputs, obj(rows, np.random.default_rng(8)).inputs)


def test_decoder_only_loss_is_on_the_targets_only(tokenizer):
    obj = build(tokenizer, 64, mode_token="[NLU]")
    rng = np.random.default_rng(2)
    f = obj(packed_rows(tokenizer, rng, 16, obj.raw_length), rng)
    labels = DecoderOnlyConverter(pad_id=0, max_positions=4096, prefix_lm=True)(f)["labels"].numpy()
    assert ((labels != IGNORE_INDEX).sum(axis=1) == f.target_lengths).all()
    np.testing.assert_array_equal(labels[labels != IGNORE_INDEX].reshape(f.targets.shape), f.targets)


def test_too_few_sentinels_is_a_clear_error(tokenizer):
    with pytest.raises(ConfigError, match=r"28 noise spans .* need 28 sentinels, but tokenizer .* has 16"):
        build(tokenizer, 512)


@pytest.mark.parametrize("fields, match", [
    ({"noise_density": 0.0}, "objective.noise_density=0.0"),
    ({"noise_density": 1.0}, "objective.noise_density=1.0"),
    ({"mean_noise_span_length": 0.5}, "objective.mean_noise_span_length=0.5"),
])
def test_config_out_of_range(fields, match):
    with pytest.raises(ConfigError, match=match):
        T5SpanCorruptionConfig(**fields)


def test_density_leaving_too_few_kept_tokens_is_refused(tokenizer):
    with pytest.raises(ConfigError, match="objective.noise_density=0.9.*kept tokens"):
        build(tokenizer, 64, noise_density=0.9, mean_noise_span_length=1.0)
