"""CLM: AlexaTM style ([CLM] + a document's first 20-80% -> the rest) and packed next-token prediction."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seqlab.errors import ConfigError
from seqlab.interfaces import RowPlan, Rows
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConverter
from seqlab_plugins.objectives.clm import CausalLM, ClmConfig

PROPERTY = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer) -> Tokenizer:
    return Tokenizer(small_tokenizer)


def document_rows(tokenizer, rng, lengths: np.ndarray, seq_len: int) -> Rows:
    """Single-document rows of the given lengths, right-padded, as the sampler cuts them."""
    text_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), tokenizer.special_ids)
    tokens = np.where(np.arange(lengths.max())[None, :] < lengths[:, None],
                      rng.choice(text_ids, (len(lengths), lengths.max())), tokenizer.pad_id)
    return Rows(tokens, lengths, RowPlan.uniform(len(lengths), seq_len, document=True))


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), seq_len=st.integers(8, 300))
def test_prefix_then_continuation_reconstructs_the_document(tokenizer, seed, seq_len):
    rng = np.random.default_rng(seed)
    clm = CausalLM(ClmConfig(name="clm"), tokenizer=tokenizer, seq_len=seq_len)
    plan = clm.plan(8, rng)
    # One token of lookahead: a row longer than seq_len holds a document that goes on.
    assert plan.document.all() and (plan.length == seq_len + 1).all()
    lengths = np.append(rng.integers(1, seq_len + 2, 7), seq_len + 1)
    rows = document_rows(tokenizer, rng, lengths, seq_len + 1)
    f = clm(rows, rng)
    clm_id = tokenizer.token_id("[CLM]")
    assert (f.inputs[:, 0] == clm_id).all(), "[CLM] first in every input"
    for r in range(8):
        complete = lengths[r] <= seq_len
        prefix = f.inputs[r, 1 : f.input_lengths[r]]
        rest = f.targets[r, : f.target_lengths[r]]
        if complete:  # the continuation reaches the document's end: EOS says so
            assert rest[-1] == tokenizer.eos_id
            rest = rest[:-1]
        np.testing.assert_array_equal(np.concatenate([prefix, rest]), rows.tokens[r, : min(lengths[r], seq_len)])
        assert not np.isin(np.concatenate([prefix, rest]), tokenizer.special_ids).any()
        assert len(rest) >= 1 and (len(prefix) >= 1 or rows.lengths[r] == 1)
    assert f.input_lengths.max() <= seq_len and f.target_lengths.max() <= seq_len


def test_without_eos_a_complete_continuation_ends_at_the_document(tokenizer):
    clm = CausalLM(ClmConfig(name="clm", add_eos=False), tokenizer=tokenizer, seq_len=16)
    rows = document_rows(tokenizer, np.random.default_rng(3), np.array([10, 16]), 17)
    f = clm(rows, np.random.default_rng(4))
    assert (f.input_lengths - 1 + f.target_lengths == [10, 16]).all()
    assert not (f.targets == tokenizer.eos_id).any()


def test_split_points_are_uniform_between_20_and_80_percent(tokenizer):
    """100k documents of 1000 tokens: split fractions lie in [0.2, 0.8) and each tenth of that range holds
    10% +- 0.6% of them (more than 6 binomial standard deviations, sd = 0.095%)."""
    rng = np.random.default_rng(0)
    clm = CausalLM(ClmConfig(name="clm"), tokenizer=tokenizer, seq_len=1000)
    lengths = np.full(2000, 1000)
    rows = Rows(np.ones((2000, 1000), dtype=np.int64) * 100, lengths, RowPlan.uniform(2000, 1000, document=True))
    fractions = np.concatenate([(clm(rows, rng).input_lengths - 1) / 1000 for _ in range(50)])
    assert fractions.min() >= 0.2 and fractions.max() < 0.8
    shares = np.histogram(fractions, bins=10, range=(0.2, 0.8))[0] / len(fractions)
    assert np.abs(shares - 0.1).max() < 0.006, shares


def test_packed_mode_predicts_every_token_from_clm(tokenizer):
    clm = CausalLM(ClmConfig(name="clm", packed=True), tokenizer=tokenizer, seq_len=16)
    plan = clm.plan(3, np.random.default_rng(0))
    assert not plan.document.any()
    tokens = np.arange(48).reshape(3, 16) + 200
    f = clm(Rows(tokens, np.full(3, 16), plan), np.random.default_rng(0))
    assert f.inputs.tolist() == [[tokenizer.token_id("[CLM]")]] * 3
    np.testing.assert_array_equal(f.targets, tokens)
    batch = DecoderOnlyConverter(tokenizer.pad_id, 64, prefix_lm=True)(f)
    np.testing.assert_array_equal(batch["labels"].numpy(), tokens)  # every token is a target, even the first
    assert (batch["labels"] != IGNORE_INDEX).all()


def test_decoder_only_conversion_masks_the_prefix(tokenizer):
    rng = np.random.default_rng(4)
    clm = CausalLM(ClmConfig(name="clm"), tokenizer=tokenizer, seq_len=32)
    f = clm(document_rows(tokenizer, rng, np.array([10, 33, 5]), 33), rng)
    batch = DecoderOnlyConverter(tokenizer.pad_id, 4096, prefix_lm=True)(f)
    for r in range(3):
        labels = batch["labels"][r].numpy()
        assert (labels[: f.input_lengths[r] - 1] == IGNORE_INDEX).all(), "no loss on the prefix"
        np.testing.assert_array_equal(labels[labels != IGNORE_INDEX], f.targets[r, : f.target_lengths[r]])
    np.testing.assert_array_equal(batch["prefix_lengths"].numpy(), f.input_lengths)


def test_config_validation():
    with pytest.raises(ConfigError, match=r"objective.min_prefix=0.9: must be in \[0, objective.max_prefix=0.8\]"):
        ClmConfig(min_prefix=0.9)
