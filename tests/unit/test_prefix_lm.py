"""Prefix LM: the split is uniform over [1, L-1], inputs + targets give back the row, lengths fit seq_len."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import packed_rows
from hypothesis import given, settings, strategies as st

from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConverter
from seqlab_plugins.objectives.prefix_lm import PrefixLM, PrefixLMConfig

PROPERTY = settings(max_examples=200, deadline=None)


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer) -> Tokenizer:
    return Tokenizer(small_tokenizer)


def build(tok: Tokenizer, seq_len: int, mode_token: str | None = None) -> PrefixLM:
    return PrefixLM(PrefixLMConfig(name="prefix_lm", mode_token=mode_token), tokenizer=tok, seq_len=seq_len)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), seq_len=st.sampled_from([2, 3, 8, 64, 257]),
       mode_token=st.sampled_from([None, "[S2S]"]))
def test_inputs_then_targets_are_the_row(tokenizer, seed, seq_len, mode_token):
    obj = build(tokenizer, seq_len, mode_token)
    rng = np.random.default_rng(seed)
    plan = obj.plan(6, rng)
    assert (plan.length == seq_len).all() and not plan.document.any()
    rows = packed_rows(tokenizer, rng, 6, seq_len)
    f = obj(rows, rng)
    mode = int(mode_token is not None)
    split = f.input_lengths - mode
    assert ((split >= 1) & (split <= seq_len - 1)).all() and (f.target_lengths == seq_len - split).all()
    assert f.inputs.shape[1] == f.input_lengths.max() <= seq_len
    assert f.targets.shape[1] == f.target_lengths.max() <= seq_len - 1
    assert (f.objective == rows.plan.task).all()
    if mode:
        assert (f.inputs[:, 0] == tokenizer.token_id(mode_token)).all()
    for b in range(6):
        li, lt = f.input_lengths[b], f.target_lengths[b]
        assert f.inputs[b, mode:li].tolist() + f.targets[b, :lt].tolist() == rows.tokens[b].tolist()
        assert (f.inputs[b, li:] == tokenizer.pad_id).all() and (f.targets[b, lt:] == tokenizer.pad_id).all()


def test_split_points_are_uniform(tokenizer):
    obj = build(tokenizer, 16)
    rng = np.random.default_rng(0)
    f = obj(packed_rows(tokenizer, rng, 30000, 16), rng)
    counts = np.bincount(f.input_lengths, minlength=16)[1:]  # split points 1..15
    assert counts.sum() == 30000  # no split outside [1, 15]
    expected = 30000 / 15
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 36.12  # chi-square, 14 degrees of freedom: a uniform split fails this with p = 0.001


def test_same_seed_same_features(tokenizer):
    obj = build(tokenizer, 64, "[S2S]")
    rows = packed_rows(tokenizer, np.random.default_rng(1), 16, 64)
    a, b = obj(rows, np.random.default_rng(5)), obj(rows, np.random.default_rng(5))
    for field in ("inputs", "input_lengths", "targets", "target_lengths", "objective"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.input_lengths, obj(rows, np.random.default_rng(6)).input_lengths)


@pytest.mark.parametrize("mode_token", [None, "[S2S]"])
def test_decoder_only_loss_is_on_the_targets_only(tokenizer, mode_token):
    obj = build(tokenizer, 64, mode_token)
    rng = np.random.default_rng(2)
    f = obj(packed_rows(tokenizer, rng, 32, 64), rng)
    labels = DecoderOnlyConverter(pad_id=0, max_positions=4096, prefix_lm=True)(f)["labels"].numpy()
    assert ((labels != IGNORE_INDEX).sum(axis=1) == f.target_lengths).all()
    # Targets are right-padded: the kept labels, row by row, are exactly the non-pad target tokens.
    np.testing.assert_array_equal(labels[labels != IGNORE_INDEX], f.targets[f.targets != tokenizer.pad_id])
