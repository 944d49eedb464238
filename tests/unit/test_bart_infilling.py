"""bart_infilling: exact masking, one [MASK] per span, invertibility, sentence permutation, lengths, determinism."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.errors import ConfigError
from seqlab.interfaces import Features, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConverter
from seqlab_plugins.objectives.bart_infilling import BartInfilling, BartInfillingConfig
from seqlab_plugins.objectives.noise import Spans, span_mask

SEEDS = st.integers(0, 2**32 - 1)
RATIOS = st.floats(0.05, 0.5)
LAMBDAS = st.floats(1.0, 8.0)
LENGTHS = st.integers(8, 300)
FAST = settings(max_examples=100, deadline=None)


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer: Path) -> Tokenizer:
    return Tokenizer(small_tokenizer)


@pytest.fixture(scope="module")
def stream(tokenizer: Tokenizer, embedded_corpus_dir: Path) -> np.ndarray:
    """The embedded corpus (12 languages) encoded and packed as the sampler packs it: documents then [DOC]."""
    doc = tokenizer.token_id("[DOC]")
    lines = [line for path in sorted(embedded_corpus_dir.rglob("*.txt"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return np.concatenate([np.append(np.asarray(ids, dtype=np.int64), doc) for ids in tokenizer.encode(lines)])


def objective(tokenizer: Tokenizer, seq_len: int, **fields) -> BartInfilling:
    return OBJECTIVES.build(BartInfillingConfig(name="bart_infilling", **fields), tokenizer=tokenizer, seq_len=seq_len)


def packed_rows(stream: np.ndarray, obj: BartInfilling, batch: int, seed: int) -> Rows:
    """Full packed rows of the objective's planned length, cut at random offsets of the stream."""
    plan = obj.plan(batch, np.random.default_rng(seed))
    length = int(plan.length[0])
    offsets = np.random.default_rng(seed).integers(0, len(stream) - length, size=batch)
    return Rows(stream[offsets[:, None] + np.arange(length)], plan.length.copy(), plan)


def reconstruct(inputs: np.ndarray, input_lengths: np.ndarray, spans: Spans, source: np.ndarray,
                mask_id: int) -> list[list[int]]:
    """Each row with its k-th [MASK] replaced by the tokens of its k-th span in `source`."""
    rows = []
    for b in range(len(inputs)):
        out, k = [], 0
        for token in inputs[b, : input_lengths[b]].tolist():
            if token == mask_id:
                start = int(spans.starts[b, k])
                out += source[b, start : start + int(spans.lengths[b, k])].tolist()
                k += 1
            else:
                out.append(token)
        assert k == spans.count[b], f"row {b}: {k} [MASK] tokens for {spans.count[b]} spans"
        rows.append(out)
    return rows


def sentences(row: np.ndarray, ends: np.ndarray) -> list[tuple[int, ...]]:
    """The row split after each sentence-closing token, sorted: a multiset of sentences."""
    cuts = np.flatnonzero(ends[row]) + 1
    return sorted(tuple(part.tolist()) for part in np.split(row, cuts) if len(part))


@FAST
@given(seed=SEEDS, seq_len=LENGTHS, ratio=RATIOS, lam=LAMBDAS, batch=st.integers(1, 16))
def test_exact_fraction_one_mask_per_span_and_masks_undo_to_the_original(tokenizer, stream, seed, seq_len, ratio,
                                                                          lam, batch):
    obj = objective(tokenizer, seq_len, mask_ratio=ratio, poisson_lambda=lam)
    tokens = packed_rows(stream, obj, batch, seed).tokens
    inputs, input_lengths, spans = obj.infill(tokens, np.random.default_rng(seed))
    n_noise = round(ratio * seq_len)
    assert (span_mask(spans, seq_len).sum(axis=1) == n_noise).all()
    assert ((inputs == obj.mask_id).sum(axis=1) == spans.count).all()
    assert (input_lengths == seq_len - n_noise + spans.count).all()
    assert reconstruct(inputs, input_lengths, spans, tokens, obj.mask_id) == tokens.tolist()


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_span_lengths_are_poisson_3_5_with_empty_spans(tokenizer, stream, seed):
    obj = objective(tokenizer, 1024)
    _, _, spans = obj.infill(packed_rows(stream, obj, 64, seed).tokens, np.random.default_rng(seed))
    used = np.arange(spans.lengths.shape[1])[None, :] < spans.count[:, None]
    lengths = spans.lengths[used]  # ~5,600 spans: the mean's standard error is about 0.025
    # Within 0.15 of 3.5: the span count is drawn so that the expected count per row is 307 / 3.5.
    assert abs(lengths.mean() - 3.5) < 0.15
    # Zero-length spans (pure insertions) occur at Poisson's P(0) = e^-3.5 = 3.0% (standard error 0.23%).
    assert abs((lengths == 0).mean() - math.exp(-3.5)) < 0.012


@FAST
@given(seed=SEEDS, seq_len=st.integers(64, 512), batch=st.integers(1, 8))
def test_permutation_keeps_the_sentences_and_the_target_is_the_original(tokenizer, stream, seed, seq_len, batch):
    obj = objective(tokenizer, seq_len, permute_sentences=True)
    rows = packed_rows(stream, obj, batch, seed)
    rng = np.random.default_rng(seed)
    permuted = obj.permute(rows.tokens, rng)
    assert (np.sort(permuted, axis=1) == np.sort(rows.tokens, axis=1)).all()
    # A row's unfinished last sentence, once moved, runs into the next one; with every sentence closed the
    # permuted row splits back into the same sentences.
    closed = rows.tokens.copy()
    closed[:, -1] = tokenizer.token_id("[DOC]")
    for b, row in enumerate(obj.permute(closed, np.random.default_rng(seed))):
        assert sentences(row, obj.sentence_end) == sentences(closed[b], obj.sentence_end)
    # __call__ is: permute, then infill the permuted rows, with the same generator; the target is the original.
    inputs, input_lengths, spans = obj.infill(permuted, rng)
    features = obj(rows, np.random.default_rng(seed))
    assert np.array_equal(features.inputs, inputs) and np.array_equal(features.input_lengths, input_lengths)
    assert np.array_equal(features.targets, rows.tokens) and (features.target_lengths == seq_len).all()
    assert reconstruct(inputs, input_lengths, spans, permuted, obj.mask_id) == permuted.tolist()


def test_permutation_moves_sentences(tokenizer, stream):
    obj = objective(tokenizer, 512, permute_sentences=True)
    tokens = packed_rows(stream, obj, 16, seed=0).tokens  # ~25 sentences a row: identity has odds ~1e-25
    assert (obj.permute(tokens, np.random.default_rng(0)) != tokens).any(axis=1).all()


def test_sentence_ends_are_final_punctuation_and_doc(tokenizer):
    obj = objective(tokenizer, 64)
    closing = {tokenizer._sp.id_to_piece(int(i)) for i in np.flatnonzero(obj.sentence_end)}
    assert {"[DOC]", "."} <= closing
    assert all(piece.endswith((".", "!", "?", "。", "！", "？", "।", "؟")) for piece in closing - {"[DOC]"})
    specials = set(tokenizer.special_ids.tolist()) - {tokenizer.token_id("[DOC]")}
    assert not specials & set(np.flatnonzero(obj.sentence_end).tolist())


@FAST
@given(seed=SEEDS, seq_len=LENGTHS, ratio=RATIOS, lam=LAMBDAS, permute=st.booleans())
def test_inputs_hold_no_special_token_but_mask_and_doc_and_fit_seq_len(tokenizer, stream, seed, seq_len, ratio,
                                                                      lam, permute):
    obj = objective(tokenizer, seq_len, mask_ratio=ratio, poisson_lambda=lam, permute_sentences=permute)
    f = obj(packed_rows(stream, obj, 8, seed), np.random.default_rng(seed))
    assert f.inputs.shape[1] <= seq_len and (f.input_lengths <= seq_len).all()
    assert f.targets.shape[1] <= seq_len and (f.target_lengths == seq_len).all()
    real = np.arange(f.inputs.shape[1])[None, :] < f.input_lengths[:, None]
    allowed = {tokenizer.token_id("[MASK]"), tokenizer.token_id("[DOC]")}
    forbidden = np.setdiff1d(tokenizer.special_ids, list(allowed))
    assert not np.isin(f.inputs[real], forbidden).any()
    assert (f.inputs[~real] == tokenizer.pad_id).all()


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, seq_len=st.integers(8, 64))
def test_many_empty_spans_are_capped_so_inputs_never_grow(tokenizer, stream, seed, seq_len):
    # lambda = 1: as many spans as masked tokens, 37% of them empty, so a span split in two at the row's cut
    # would break the cap: such rows are redrawn.
    obj = objective(tokenizer, seq_len, mask_ratio=0.5, poisson_lambda=1.0)
    inputs, input_lengths, spans = obj.infill(packed_rows(stream, obj, 32, seed).tokens, np.random.default_rng(seed))
    assert (spans.count <= round(0.5 * seq_len)).all() and (input_lengths <= seq_len).all()
    assert (span_mask(spans, seq_len).sum(axis=1) == round(0.5 * seq_len)).all()


@FAST
@given(seed=SEEDS, permute=st.booleans())
def test_same_seed_same_features(tokenizer, stream, seed, permute):
    obj = objective(tokenizer, 128, permute_sentences=permute)
    rows = packed_rows(stream, obj, 4, seed)
    first, again = obj(rows, np.random.default_rng(seed)), obj(rows, np.random.default_rng(seed))
    for name in ("inputs", "input_lengths", "targets", "target_lengths", "objective"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert not np.array_equal(obj(rows, np.random.default_rng(seed + 1)).inputs[:, : first.inputs.shape[1]],
                              first.inputs)


@FAST
@given(seed=SEEDS, seq_len=LENGTHS, permute=st.booleans())
def test_decoder_only_puts_loss_only_on_targets(tokenizer, stream, seed, seq_len, permute):
    obj = objective(tokenizer, seq_len, permute_sentences=permute)
    rows = packed_rows(stream, obj, 4, seed)
    rows.plan.task[:] = 3  # Features.objective is the plan's task
    f: Features = obj(rows, np.random.default_rng(seed))
    assert (f.objective == 3).all()
    batch = DecoderOnlyConverter(pad_id=0, max_positions=4096, prefix_lm=True)(f)
    labels, ids = batch["labels"].numpy(), batch["input_ids"].numpy()
    for b, (li, lt) in enumerate(zip(f.input_lengths, f.target_lengths)):
        expected = np.full(labels.shape[1], IGNORE_INDEX)
        expected[li - 1 : li - 1 + lt] = f.targets[b, :lt]  # position t predicts token t + 1
        assert np.array_equal(labels[b], expected)
        assert np.array_equal(ids[b, :li], f.inputs[b, :li])
    assert batch["prefix_lengths"].tolist() == f.input_lengths.tolist()


def test_plan_asks_for_full_packed_rows(tokenizer):
    plan = objective(tokenizer, 256).plan(5, np.random.default_rng(0))
    assert plan.length.tolist() == [256] * 5 and not plan.document.any() and not plan.task.any()


@pytest.mark.parametrize("field, value", [("mask_ratio", 0.0), ("mask_ratio", 0.6), ("poisson_lambda", 0.5)])
def test_config_out_of_range_names_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"objective\.{field}={value}"):
        BartInfillingConfig(name="bart_infilling", **{field: value})
