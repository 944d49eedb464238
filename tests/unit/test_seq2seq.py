"""Seq2seq converter and model: layout, padding, causality, embedding tying, meta-device init, checkpointing."""
import numpy as np
import pytest
import torch
from helpers import features

from seqlab.errors import DataError
from seqlab.tokenizer import BOS_ID
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqConverter

PAD = 0
V = 50


def _model(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(**{"d_model": 32, "n_heads": 4, "max_positions": 16, **overrides}), vocab_size=V)
    model.init_weights()
    return model.eval()


def _batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = lambda n: rng.integers(4, V, n).tolist()
    return Seq2SeqConverter(PAD, 16)(features([ids(5), ids(3)], [ids(4), ids(6)]))


def test_converter_shifts_targets_behind_bos_and_labels_them():
    batch = Seq2SeqConverter(PAD, 8)(features([[11, 12, 13], [21]], [[31, 32], [41, 42, 43]]))
    assert batch["input_ids"].tolist() == [[11, 12, 13], [21, PAD, PAD]]
    assert batch["input_lengths"].tolist() == [3, 1]
    assert batch["decoder_input_ids"].tolist() == [[BOS_ID, 31, PAD], [BOS_ID, 41, 42]]
    assert batch["labels"].tolist() == [[31, 32, IGNORE_INDEX], [41, 42, 43]]
    assert batch["num_tokens"] == 9  # 3 + 1 input tokens, 2 + 3 target tokens


def test_converter_refuses_empty_inputs_and_too_long_sequences():
    with pytest.raises(DataError, match="at least one input token"):
        Seq2SeqConverter(PAD, 8)(features([[5], []], [[6], [7]]))
    with pytest.raises(DataError, match="a 4-token sequence exceeds architecture.max_positions=3"):
        Seq2SeqConverter(PAD, 3)(features([[1, 2, 3, 4]], [[5]]))
    with pytest.raises(DataError, match="a 5-token sequence exceeds architecture.max_positions=3"):
        Seq2SeqConverter(PAD, 3)(features([[1]], [[5, 6, 7, 8, 9]]))


def test_more_encoder_padding_changes_no_real_position():
    model, batch = _model(), _batch()
    wider = torch.cat([batch["input_ids"], torch.full((2, 4), PAD)], dim=1)  # (B, S + 4)
    with torch.no_grad():
        memory, _ = model.encode(batch["input_ids"], batch["input_lengths"])
        memory_wide, _ = model.encode(wider, batch["input_lengths"])
        logits = model(batch["input_ids"], batch["input_lengths"], batch["decoder_input_ids"])
        logits_wide = model(wider, batch["input_lengths"], batch["decoder_input_ids"])
    for row, length in enumerate(batch["input_lengths"].tolist()):
        torch.testing.assert_close(memory_wide[row, :length], memory[row, :length])
    torch.testing.assert_close(logits_wide, logits)


def test_decoder_is_causal():
    model, batch = _model(), _batch()
    changed = batch["decoder_input_ids"].clone()
    changed[:, 2] = changed[:, 2] % (V - 4) + 4  # another real token at position 2
    with torch.no_grad():
        base = model(batch["input_ids"], batch["input_lengths"], batch["decoder_input_ids"])
        out = model(batch["input_ids"], batch["input_lengths"], changed)
    torch.testing.assert_close(out[:, :2], base[:, :2])  # earlier positions never see it
    assert not torch.allclose(out[:, 2], base[:, 2])


def test_untied_embeddings_start_equal_and_tying_shares_one_tensor():
    untied = _model()
    tables = (untied.encoder.embed.weight, untied.decoder.embed.weight, untied.head.weight)
    assert len({id(t) for t in tables}) == 3  # separate parameters (the paper) ...
    assert all(torch.equal(t, tables[0]) for t in tables)  # ... initialised from the encoder's
    tied = _model(tie_embeddings=True)
    assert tied.decoder.embed.weight is tied.encoder.embed.weight and tied.head.weight is tied.encoder.embed.weight


def _meta_built(**overrides) -> Seq2Seq:
    with torch.device("meta"):
        model = Seq2Seq(Seq2SeqConfig(d_model=32, n_heads=4, max_positions=16, **overrides), vocab_size=V)
    model.to_empty(device="cpu")  # uninitialised memory: init_weights must set every tensor
    model.init_weights()
    return model.eval()


def test_meta_build_then_init_weights_gives_finite_outputs():
    model, batch = _meta_built(), _batch()
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["input_lengths"], batch["decoder_input_ids"])
    assert torch.isfinite(logits).all()
    assert torch.equal(model.head.weight, model.encoder.embed.weight)


def test_meta_build_keeps_tied_embeddings_tied():
    model = _meta_built(tie_embeddings=True)
    assert model.head.weight is model.encoder.embed.weight


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    plain, checkpointed = _model(), _model(activation_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    batch, results = _batch(), []
    for model in (plain, checkpointed):
        model.train()  # checkpointing is active only in training
        out = model.loss(batch)
        loss = out.loss_sum.sum() / out.tokens.sum()
        loss.backward()
        results.append((loss.detach(), {name: p.grad for name, p in model.named_parameters()}))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, msg=name)
