"""Packed CLM rows: every example keeps its own [CLM], split and EOS, and scores in a packed row exactly what it
scores alone, for both architectures and every positional scheme."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import perturbed

from seqlab.budget import example_costs
from seqlab.interfaces import Features, RowPlan, Rows
from seqlab.registry import ARCHITECTURES, OBJECTIVES, load_plugins
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig
from seqlab_plugins.objectives.clm import ClmConfig
from seqlab_plugins.objectives.mixture import MixtureConfig, MixtureChild

SEQ_LEN = 48


@pytest.fixture(autouse=True, scope="module")
def plugins():
    load_plugins()


def document_stream(tok, rng: np.random.Generator, batch: int, length: int, mean_doc: int = 9) -> Rows:
    """Full packed slices: random text documents of geometric lengths, each followed by [DOC]."""
    sep = tok.token_id("[DOC]")
    text = np.setdiff1d(np.arange(tok.vocab_size), tok.special_ids)
    tokens = rng.choice(text, size=(batch, length))
    tokens[rng.random((batch, length)) < 1 / mean_doc] = sep
    return Rows(tokens, np.full(batch, length), RowPlan.uniform(batch, length))


def packed_clm(tok, seq_len: int = SEQ_LEN):
    return OBJECTIVES.build(ClmConfig(name="clm", pack_documents=True), tokenizer=tok, seq_len=seq_len)


def examples(f: Features) -> list[tuple[list[int], list[int]]]:
    """Every (inputs, targets) example of packed Features, row by row, segment by segment."""
    out = []
    for b in range(len(f.input_lengths)):
        for k in range(1, int(f.input_segments[b].max()) + 1):
            out.append((f.inputs[b][f.input_segments[b] == k].tolist(), f.targets[b][f.target_segments[b] == k].tolist()))
    return out


def test_each_packed_example_keeps_its_mode_token_split_and_eos(tokenizer):
    rng = np.random.default_rng(0)
    objective = packed_clm(tokenizer)
    rows = document_stream(tokenizer, rng, 64, objective.read_length)
    f = objective(rows, np.random.default_rng(1))
    clm, eos, sep = tokenizer.token_id("[CLM]"), tokenizer.eos_id, tokenizer.token_id("[DOC]")
    assert f.inputs.shape[1] <= SEQ_LEN and f.targets.shape[1] <= SEQ_LEN
    pairs = examples(f)
    assert len(pairs) > 2 * len(rows.lengths)  # several examples per row
    fractions = []
    for inputs, targets in pairs:
        assert inputs[0] == clm and clm not in inputs[1:] and sep not in inputs + targets
        body = targets[:-1] if targets[-1] == eos else targets
        assert len(inputs) >= 2 and len(body) >= 1 and eos not in body
        if targets[-1] == eos:
            fractions.append((len(inputs) - 1) / (len(inputs) - 1 + len(body)))
    # Complete examples split in [0.2, 0.8] of their length (floor, at least one token each side).
    assert min(fractions) >= 0.2 - 1 / 3 and max(fractions) <= 0.8 + 1e-9
    # The examples are the rows' documents in stream order: prefix + continuation rebuild the stream text.
    for b in range(len(rows.lengths)):
        docs = [d for d in np.split(rows.tokens[b], np.flatnonzero(rows.tokens[b] == sep)) if len(d)]
        docs = [d[d != sep].tolist() for d in docs]
        docs = [d for d in docs if len(d) >= 2]
        row = [(i[1:] + (t[:-1] if t[-1] == eos else t)) for i, t in examples(_row(f, b))]
        for got, doc in zip(row, docs):
            assert got == doc[: len(got)]
    # Segments are contiguous and numbered 1..K in both rows, with the same K.
    assert (f.input_segments.max(axis=1) == f.target_segments.max(axis=1)).all()
    assert (np.diff(f.input_segments, axis=1)[f.input_segments[:, 1:] > 0] >= 0).all()


def _row(f: Features, b: int) -> Features:
    keep = slice(b, b + 1)
    return Features(f.inputs[keep], f.input_lengths[keep], f.targets[keep], f.target_lengths[keep],
                    f.objective[keep], f.input_segments[keep], f.target_segments[keep])


def test_packing_fills_rows_next_to_denoising_siblings(tokenizer):
    """In the AlexaTM mixture the packed CLM rows fill to the denoising rows' widths: almost no padding."""
    cfg = MixtureConfig(name="mixture", children=[
        MixtureChild({"name": "alexatm_denoising"}, 0.8), MixtureChild({"name": "clm", "pack_documents": True}, 0.2)])
    mixture = OBJECTIVES.build(cfg, tokenizer=tokenizer, seq_len=128)
    assert mixture.children[1].spec.input_width == mixture.widths[0] == 108
    rng = np.random.default_rng(0)
    plan = mixture.plan(256, rng)
    rows = document_stream(tokenizer, rng, 256, int(plan.length.max()))
    rows = Rows(np.where(np.arange(rows.tokens.shape[1])[None] < plan.length[:, None], rows.tokens, 0),
                plan.length.copy(), plan)
    f = mixture(rows, rng)
    assert f.packed and f.inputs.shape[1] == 108 and f.targets.shape[1] == 128
    real = f.input_lengths.sum() + f.target_lengths.sum()
    assert real / (f.inputs.size + f.targets.size) > 0.97


def _split(f: Features) -> Features:
    """The examples of packed Features, one per row, unpacked."""
    pairs = examples(f)
    width_in, width_out = max(len(i) for i, _ in pairs), max(len(t) for _, t in pairs)
    inputs = np.array([i + [0] * (width_in - len(i)) for i, _ in pairs])
    targets = np.array([t + [0] * (width_out - len(t)) for _, t in pairs])
    return Features(inputs, np.array([len(i) for i, _ in pairs]), targets, np.array([len(t) for _, t in pairs]),
                    np.zeros(len(pairs), dtype=np.int64))


ARCHS = {
    "seq2seq": Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=64,
                             max_positions=64),
    "t5": Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, max_positions=64,
                        norm="rmsnorm", mlp="geglu", positions="t5_relative_bias", bias=False,
                        share_embeddings=True),
    "prefix_lm": DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_layers=2, d_ff=64,
                                   max_positions=128),
    "llama_causal": DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_kv_heads=2, n_layers=2,
                                      max_positions=128, norm="rmsnorm", mlp="swiglu", positions="rope", bias=False,
                                      prefix_lm=False),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_packed_examples_score_what_they_score_alone(tokenizer, arch):
    cfg = ARCHS[arch]
    f = packed_clm(tokenizer)(document_stream(tokenizer, np.random.default_rng(2), 6, 2 * SEQ_LEN),
                              np.random.default_rng(3))
    torch.manual_seed(0)
    model = perturbed(ARCHITECTURES.build(cfg, vocab_size=tokenizer.vocab_size)).double()
    convert = type(model).feature_converter(cfg, pad_id=tokenizer.pad_id)
    with torch.no_grad():
        packed = model.target_logprobs(convert(f))  # (B, L): each row's examples' targets in order
        alone = model.target_logprobs(convert(_split(f)))  # (E, L)
        loss_packed, loss_alone = model.loss(convert(f)), model.loss(convert(_split(f)))
    lengths = [len(t) for _, t in examples(f)]
    per_row = [int(f.target_segments[b].max()) for b in range(len(f.input_lengths))]
    e = 0
    for b, count in enumerate(per_row):
        got = packed[b, : f.target_lengths[b]]
        want = torch.cat([alone[e + k, : lengths[e + k]] for k in range(count)])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        torch.testing.assert_close(loss_packed.loss_sum[b], loss_alone.loss_sum[e: e + count].sum(),
                                   rtol=1e-6, atol=0)
        e += count
    assert e == len(lengths)
    assert int(loss_packed.tokens.sum()) == int(loss_alone.tokens.sum()) == sum(lengths)
    # The positions a packed batch reports reading are what the FLOP accounting (and a token budget) counts.
    accounted = example_costs(cfg, tokenizer.vocab_size, f.input_lengths, f.target_lengths)[1]
    assert convert(f)["num_tokens"] == int(accounted.sum())
