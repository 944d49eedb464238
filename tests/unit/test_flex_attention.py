"""architecture.attention=flex: the block masks give the same scores as SDPA under every mask the layouts build
(packed segments, prefix-LM, padding, cross-attention), SDPA on CPU, and the combinations flex cannot express
refused by name.

The models use FlexAttention on CUDA only (flex.py says why), so here the model path is forced on and the
compiled kernel replaced by FlexAttention's eager reference implementation: what is checked is the mask
conversion and the wiring through every layer; the GPU check (benchmarks/gpu) runs the compiled kernel.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import perturbed

from seqlab.errors import ConfigError
from seqlab.interfaces import Features, RowPlan, Rows
from seqlab.registry import ARCHITECTURES, OBJECTIVES, load_plugins
from seqlab_plugins.architectures import flex
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig
from seqlab_plugins.objectives.clm import ClmConfig
from torch.nn.attention.flex_attention import flex_attention

SEQ_LEN = 40
ARCHS = {
    "seq2seq": Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=64,
                             max_positions=64),
    "prefix_lm": DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_layers=2, d_ff=64,
                                   max_positions=128),
    "llama_causal": DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_kv_heads=2, n_layers=2,
                                      max_positions=128, norm="rmsnorm", mlp="swiglu", positions="rope", bias=False,
                                      prefix_lm=False),
}


@pytest.fixture(autouse=True, scope="module")
def plugins():
    load_plugins()


def features(tok, packed: bool) -> Features:
    """CLM features from random documents: several examples per row (packed) or one document per row, padded."""
    rng = np.random.default_rng(0)
    objective = OBJECTIVES.build(ClmConfig(name="clm", pack_documents=packed), tokenizer=tok, seq_len=SEQ_LEN)
    length = objective.read_length if packed else SEQ_LEN
    text = np.setdiff1d(np.arange(tok.vocab_size), tok.special_ids)
    tokens = rng.choice(text, size=(4, length))
    if packed:
        tokens[rng.random(tokens.shape) < 1 / 9] = tok.token_id("[DOC]")
    lengths = np.full(4, length) if packed else rng.integers(6, length, 4)  # unpacked: rows of unequal length
    tokens = np.where(np.arange(length)[None] < lengths[:, None], tokens, 0)
    return objective(Rows(tokens, lengths, RowPlan.uniform(4, length)), np.random.default_rng(1))


def pair(cfg):
    """The same weights behind SDPA and behind FlexAttention."""
    torch.manual_seed(0)
    sdpa = perturbed(ARCHITECTURES.build(cfg, vocab_size=4096))
    other = ARCHITECTURES.build(replace(cfg, attention="flex"), vocab_size=4096)
    other.load_state_dict(sdpa.state_dict())
    return sdpa, other


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_flex_scores_what_sdpa_scores(tokenizer, arch, packed, monkeypatch):
    cfg = ARCHS[arch]
    sdpa, other = pair(cfg)
    batch = type(sdpa).feature_converter(cfg, pad_id=tokenizer.pad_id)(features(tokenizer, packed))
    calls = []
    monkeypatch.setattr("seqlab_plugins.architectures.layers.flex_runs", lambda x: True)
    monkeypatch.setattr(flex, "_compiled", flex_attention)  # the eager reference, not inductor's CPU kernel
    monkeypatch.setattr("seqlab_plugins.architectures.attention.flex",
                        lambda *args, **kwargs: calls.append(1) or flex.flex(*args, **kwargs))
    with torch.no_grad():
        want, got = sdpa.target_logprobs(batch), other.target_logprobs(batch)
    layers = sum(len(stack.blocks) for stack in other.children() if hasattr(stack, "blocks"))
    assert len(calls) == layers + (ARCHS[arch].decoder_layers if arch == "seq2seq" else 0)  # + cross-attention
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # (B, Lt): padding columns included


def test_cpu_takes_sdpa(tokenizer, monkeypatch):
    """On CPU the flex model runs SDPA, and trains exactly like the SDPA model."""
    cfg = ARCHS["prefix_lm"]
    sdpa, other = pair(cfg)
    batch = type(sdpa).feature_converter(cfg, pad_id=tokenizer.pad_id)(features(tokenizer, True))
    monkeypatch.setattr("seqlab_plugins.architectures.attention.flex",
                        lambda *args, **kwargs: pytest.fail("FlexAttention called on CPU"))
    losses = []
    for model in (sdpa, other):
        out = model.loss(batch)
        (out.loss_sum.sum() / out.tokens.sum()).backward()
        losses.append((out.loss_sum.detach(), model.head.weight.grad))
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)


@pytest.mark.parametrize("overrides, message", [
    ({"attention": "triton"}, "architecture.attention='triton': must be one of sdpa, flex"),
    ({"attention": "flex", "positions": "t5_relative_bias"}, "flex takes masks, not score biases"),
    ({"attention": "flex", "dropout": 0.1}, r"flex has no attention dropout: needs architecture.dropout=0 \(got 0.1\)"),
])
def test_bad_attention_settings_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        replace(ARCHS["seq2seq"], **overrides)
