"""Decoder-only converter and model: sequence layout, loss mask, prefix-LM attention."""
import pytest
import torch
from helpers import features

from seqlab.errors import DataError
from seqlab_plugins.architectures.attention import prefix_lm_mask
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig, DecoderOnlyConverter

PAD = 0


def test_converter_concatenates_and_labels_only_targets():
    f = features([[11, 12], [21]], [[13, 14, 15], [22, 23]])
    batch = DecoderOnlyConverter(PAD, 64, prefix_lm=True)(f)
    # row 0: sequence 11 12 13 14 15 -> inputs 11 12 13 14, predicting 12 13 14 15; loss only on 13 14 15
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14], [21, 22, 23, PAD]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 13, 14, 15], [22, 23, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["prefix_lengths"].tolist() == [2, 1] and batch["lengths"].tolist() == [4, 2]
    assert batch["num_tokens"] == 6


def test_packed_clm_needs_no_mask():
    f = features([[], []], [[1, 2, 3], [4, 5, 6]])
    batch = DecoderOnlyConverter(PAD, 64, prefix_lm=True)(f)
    assert "lengths" not in batch  # full-length causal: SDPA's is_causal path
    assert batch["labels"].tolist() == [[2, 3], [5, 6]]


def test_prefix_lm_off_makes_inputs_causal():
    batch = DecoderOnlyConverter(PAD, 64, prefix_lm=False)(features([[1, 2], [5]], [[3, 4], [6]]))
    assert batch["prefix_lengths"].tolist() == [0, 0]  # the mask is kept only for the padding of row 1
    full = DecoderOnlyConverter(PAD, 64, prefix_lm=False)(features([[1, 2]], [[3, 4]]))
    assert "lengths" not in full  # no padding, no prefix: plain causal


def test_sequence_longer_than_position_table_is_refused():
    with pytest.raises(DataError, match="exceeds architecture.max_positions=3"):
        DecoderOnlyConverter(PAD, 3, prefix_lm=True)(features([[]], [[1, 2, 3, 4, 5]]))


def test_prefix_lm_mask_is_bidirectional_in_prefix_causal_after_and_hides_padding():
    mask = prefix_lm_mask(torch.tensor([4]), torch.tensor([2]), T=5)[0, 0]
    expected = torch.tensor([
        [1, 1, 0, 0, 0],  # prefix query sees the whole prefix
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],  # target queries: causal
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],  # padding query: never attends the padding key
    ], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_prefix_tokens_do_not_see_targets_and_targets_do_not_see_the_future():
    torch.manual_seed(0)
    model = DecoderOnly(DecoderOnlyConfig(d_model=32, n_layers=2, n_heads=4), vocab_size=50)
    model.init_weights()
    ids = torch.randint(1, 50, (1, 6))
    mask = prefix_lm_mask(torch.tensor([6]), torch.tensor([3]), 6)
    base = model(ids, mask)
    changed = ids.clone()
    changed[0, 4] = (ids[0, 4] % 49) + 1  # a target token
    out = model(changed, mask)
    assert torch.allclose(base[0, :4], out[0, :4], atol=1e-6)  # nothing before position 4 sees it
    changed_prefix = ids.clone()
    changed_prefix[0, 2] = (ids[0, 2] % 49) + 1  # last prefix token
    out = model(changed_prefix, mask)
    assert not torch.allclose(base[0, 0], out[0, 0], atol=1e-6)  # earlier prefix positions see it


def test_loss_backward_and_tied_embeddings():
    model = DecoderOnly(DecoderOnlyConfig(d_model=32, n_layers=2, n_heads=4), vocab_size=50)
    model.init_weights()
    assert model.head.weight is model.decoder.embed.weight
    batch = DecoderOnlyConverter(PAD, 64, prefix_lm=True)(features([[5, 6], [7]], [[8, 9], [10, 11, 12]]))
    out = model.loss(batch)
    assert out.tokens.tolist() == [2, 3]
    (out.loss_sum.sum() / out.tokens.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("field, value, message", [
    ("n_heads", 3, "architecture.n_heads=3: must divide architecture.d_model=128"),
    ("dropout", 1.0, "architecture.dropout=1.0: must be in [0, 1)"),
    ("n_layers", 0, "architecture.n_layers=0: must be >= 1"),
])
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        DecoderOnlyConfig(**{field: value})
