"""AlexaTM denoising: 15% of tokens deleted in Poisson(3) spans, nothing inserted, full text as the target."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seqlab.errors import ConfigError
from seqlab.interfaces import RowPlan, Rows
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConverter
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.objectives.alexatm_denoising import AlexaTMDenoising, AlexaTMDenoisingConfig

PROPERTY = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer) -> Tokenizer:
    return Tokenizer(small_tokenizer)


def text_rows(tokenizer: Tokenizer, rng: np.random.Generator, batch: int, length: int) -> Rows:
    """Packed rows of ordinary text ids (never a special token), as the sampler cuts them."""
    text_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), tokenizer.special_ids)
    return Rows(rng.choice(text_ids, (batch, length)), np.full(batch, length), RowPlan.uniform(batch, length))


def objective(tokenizer, seq_len, **cfg) -> AlexaTMDenoising:
    return AlexaTMDenoising(AlexaTMDenoisingConfig(name="alexatm_denoising", **cfg), tokenizer=tokenizer,
                            seq_len=seq_len)


def deleted_spans(features) -> tuple[np.ndarray, list[int]]:
    """Which positions each input row dropped, by aligning it with its intact target (less its final EOS);
    exact when a row's ids are distinct, and a valid deletion set of the right size otherwise."""
    masks, spans = [], []
    for inputs, n, target in zip(features.inputs, features.input_lengths, features.targets[:, :-1]):
        keep = np.zeros(len(target), dtype=bool)
        j = 0
        for i, token in enumerate(target):  # inputs must be a subsequence of the target
            if j < n and inputs[j] == token:
                keep[i], j = True, j + 1
        assert j == n, "the inputs are not a subsequence of the target"
        masks.append(~keep)
        edges = np.diff(np.concatenate([[0], (~keep).astype(int), [0]]))
        spans += list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    return np.array(masks), spans


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), seq_len=st.integers(16, 200))
def test_inputs_are_the_text_minus_deleted_spans_and_targets_the_whole_text(tokenizer, seed, seq_len):
    rng = np.random.default_rng(seed)
    obj = objective(tokenizer, seq_len)
    assert (obj.plan(6, rng).length == seq_len - 1).all()  # room for the final EOS
    rows = text_rows(tokenizer, rng, 6, seq_len - 1)
    f = obj(rows, rng)
    np.testing.assert_array_equal(f.targets[:, :-1], rows.tokens)  # the full original sequence, then EOS
    assert (f.targets[:, -1] == tokenizer.eos_id).all() and (f.target_lengths == seq_len).all()
    assert (f.input_lengths == seq_len - 1 - obj.n_noise).all()  # exactly round(0.15 L) deleted, per row
    assert f.inputs.shape[1] <= seq_len and f.targets.shape[1] <= seq_len
    assert not np.isin(f.inputs, tokenizer.special_ids).any(), "no mask or other special token is inserted"
    deleted, _ = deleted_spans(f)
    assert (deleted.sum(axis=1) == obj.n_noise).all()


def test_drop_rate_and_mean_span_over_a_large_sample(tokenizer):
    """Over 512 rows of 1024 tokens: 15% +- 1% dropped, mean measured span 3 +- 2% (spans never touch, so the
    measured spans are the drawn ones; ~26,000 of them: the mean's standard error is well under 1%)."""
    rng = np.random.default_rng(0)
    obj = objective(tokenizer, 1025)
    # Distinct ids per row make the alignment unambiguous: the measured spans are exactly the deleted ones.
    tokens = np.tile(np.arange(1024) + 1000, (512, 1))
    f = obj(Rows(tokens, np.full(512, 1024), RowPlan.uniform(512, 1024)), rng)
    rate = 1 - f.input_lengths.sum() / (f.target_lengths - 1).sum()
    assert abs(rate - 0.15) < 0.01
    _, spans = deleted_spans(f)
    assert abs(np.mean(spans) - 3.0) < 0.06, np.mean(spans)


def test_every_position_is_deleted_at_the_noise_density_at_seq_len_128(tokenizer):
    """40,000 rows of 127 tokens (19 deleted): each position, the first and last included, is deleted at
    19 / 127 = 15.0% +- 2 points (standard error 0.18 points), and the measured spans average 3 +- 2%."""
    obj, rows = objective(tokenizer, 128), 40000
    expected = obj.n_noise / 127
    tokens = np.tile(np.arange(127) + 1000, (rows, 1))  # distinct ids: the kept ids name the kept positions
    f = obj(Rows(tokens, np.full(rows, 127), RowPlan.uniform(rows, 127)), np.random.default_rng(0))
    deleted = np.ones((rows, 127), dtype=bool)
    deleted[np.arange(rows)[:, None], f.inputs - 1000] = False  # equal input lengths: no padding in inputs
    rate = deleted.mean(axis=0)
    assert abs(rate[0] - expected) < 0.02 and abs(rate[-1] - expected) < 0.02, (rate[0], rate[-1])
    assert rate.max() - rate.min() < 0.02
    starts = deleted & ~np.pad(deleted, ((0, 0), (1, 0)))[:, :-1]  # first position of each deleted run
    assert abs(deleted.sum() / starts.sum() / 3.0 - 1) < 0.02, deleted.sum() / starts.sum()


def test_without_eos_the_target_is_the_row_itself(tokenizer):
    obj = objective(tokenizer, 32, add_eos=False)
    rows = text_rows(tokenizer, np.random.default_rng(4), 3, 32)
    assert (obj.plan(3, np.random.default_rng(0)).length == 32).all()
    f = obj(rows, np.random.default_rng(5))
    np.testing.assert_array_equal(f.targets, rows.tokens)
    assert (f.input_lengths == 32 - obj.n_noise).all()


def test_same_rng_same_features_and_other_seed_differs(tokenizer):
    rows = text_rows(tokenizer, np.random.default_rng(1), 4, 63)
    obj = objective(tokenizer, 64)
    a, b = obj(rows, np.random.default_rng(7)), obj(rows, np.random.default_rng(7))
    c = obj(rows, np.random.default_rng(8))
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)


def test_decoder_only_conversion_puts_loss_only_on_the_target(tokenizer):
    rows = text_rows(tokenizer, np.random.default_rng(2), 3, 39)
    f = objective(tokenizer, 40)(rows, np.random.default_rng(3))
    batch = DecoderOnlyConverter(tokenizer.pad_id, 4096, prefix_lm=True)(f)
    for r in range(3):
        labels = batch["labels"][r]
        np.testing.assert_array_equal(labels[labels != IGNORE_INDEX].numpy(), f.targets[r, : f.target_lengths[r]])
        assert int(batch["prefix_lengths"][r]) == f.input_lengths[r]


@pytest.mark.parametrize("field, value", [("noise_density", 0.0), ("noise_density", 0.6), ("mean_span_length", 0.5)])
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=f"objective.{field}={value}"):
        AlexaTMDenoisingConfig(**{field: value})
