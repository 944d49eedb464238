"""`bart_infilling`: BART's text infilling (Lewis et al. 2019), optionally with sentence permutation.

inputs:  a b [MASK] e [MASK] f g [MASK]      (one [MASK] per span; the 2nd span is empty: a pure insertion)
targets: a b c d e f g h                     (the original row)

Spans with Poisson(3.5) lengths cover exactly round(mask_ratio * L) tokens; zero-length spans are allowed and
insert a [MASK] without deleting anything, so the model must also learn how many tokens a [MASK] stands for,
including none. With permutation the inputs are built from the row with its sentences shuffled, while the
target stays in the original order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqlab.config import ObjectiveConfig
from seqlab.errors import require
from seqlab.interfaces import Features, RowPlan, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.objectives.noise import Spans, poisson_spans, span_mask

# A piece ending in one of these ends a sentence: Latin, CJK full-width, Devanagari danda, Arabic question mark.
SENTENCE_FINAL = (".", "!", "?", "。", "！", "？", "।", "؟")


@dataclass
class BartInfillingConfig(ObjectiveConfig):
    mask_ratio: float = 0.3  # fraction of each row's tokens inside masked spans
    poisson_lambda: float = 3.5  # Poisson mean of the span lengths; a zero-length span inserts a [MASK]
    permute_sentences: bool = False  # shuffle each row's sentences before masking (BART's best combination)

    def __post_init__(self) -> None:
        # mask_ratio <= 0.5 and lambda >= 1 keep at most one [MASK] per masked token cheap to enforce (see
        # BartInfilling.spans): few spans are empty, and a row is redrawn only in the rare corner it names.
        require(0.0 < self.mask_ratio <= 0.5, "objective.mask_ratio", self.mask_ratio, "must be in (0, 0.5]")
        require(self.poisson_lambda >= 1.0, "objective.poisson_lambda", self.poisson_lambda, "must be >= 1")


def sentence_end_table(tokenizer: Tokenizer) -> np.ndarray:
    """(V,) bool: True for ids that close a sentence: pieces ending in sentence-final punctuation, and [DOC]."""
    sp = tokenizer._sp
    table = np.array([sp.id_to_piece(i).endswith(SENTENCE_FINAL) for i in range(tokenizer.vocab_size)])
    table[tokenizer.special_ids] = False  # control symbols are never text, whatever their spelling
    table[tokenizer.token_id("[DOC]")] = True  # a document boundary always ends a sentence
    return table


@OBJECTIVES.register("bart_infilling", config=BartInfillingConfig)
class BartInfilling:
    """Replace Poisson(3.5) spans covering 30% of tokens with one [MASK] each; reconstruct the original row."""

    def __init__(self, cfg: BartInfillingConfig, *, tokenizer: Tokenizer, seq_len: int):
        self.cfg = cfg
        self.names = (cfg.name,)
        self.seq_len = seq_len
        self.pad_id = tokenizer.pad_id
        self.mask_id = tokenizer.token_id("[MASK]")
        self.sentence_end = sentence_end_table(tokenizer)  # (V,) looked up per token, once per batch

    def plan(self, n: int, rng: np.random.Generator) -> RowPlan:
        # Rows of exactly seq_len tokens: the targets fill the model, and the inputs never grow past them,
        # because `spans` keeps at most one span (one [MASK]) per masked token.
        return RowPlan.uniform(n, self.seq_len)

    def __call__(self, rows: Rows, rng: np.random.Generator) -> Features:
        source = self.permute(rows.tokens, rng) if self.cfg.permute_sentences else rows.tokens  # (B, L)
        inputs, input_lengths, _ = self.infill(source, rng)
        return Features(inputs, input_lengths, rows.tokens, rows.lengths.copy(), rows.plan.task.copy())

    def permute(self, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, L) -> (B, L): each row's sentences in a random order; a sentence keeps its closing token."""
        B, L = tokens.shape
        ends = self.sentence_end[tokens]  # (B, L)
        sentence = np.cumsum(ends, axis=1) - ends  # (B, L) sentence index; a closing token stays in its sentence
        keys = rng.random((B, int(sentence[:, -1].max()) + 1))  # (B, sentences) one random key per sentence
        # A stable sort on the sentence keys orders by (key, position): sentences move whole, tokens in order.
        order = np.argsort(keys[np.arange(B)[:, None], sentence], axis=1, kind="stable")  # (B, L)
        return np.take_along_axis(tokens, order, axis=1)

    def infill(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Spans]:
        """(B, L) -> inputs (B, <= L) right-padded, input lengths (B,), and the spans each [MASK] replaced."""
        B, L = tokens.shape
        spans = self.spans(rng, B, L)
        covered = span_mask(spans, L)  # (B, L)
        lengths = L - covered.sum(axis=1) + spans.count  # (B,) kept tokens and one [MASK] per span
        # Span k's [MASK] comes after the clean tokens before the span (its gap) and the k earlier [MASK]s; an
        # empty span is a [MASK] between two clean tokens (or after the last), like any other.
        rows, k = np.nonzero(np.arange(spans.starts.shape[1])[None, :] < spans.count[:, None])
        gap = spans.starts - (np.cumsum(spans.lengths, axis=1) - spans.lengths)  # (B, S)
        width = int(lengths.max())
        is_mask = np.zeros((B, width), dtype=bool)
        is_mask[rows, gap[rows, k] + k] = True
        inputs = np.full((B, width), self.pad_id, dtype=np.int64)
        inputs[is_mask] = self.mask_id
        # The other real slots take the clean tokens in order: both boolean selections walk row by row, and
        # each row has as many free slots as clean tokens.
        inputs[~is_mask & (np.arange(width)[None, :] < lengths[:, None])] = tokens[~covered]
        return inputs, lengths, spans

    def spans(self, rng: np.random.Generator, batch: int, length: int) -> Spans:
        """Poisson spans covering exactly round(mask_ratio * length) tokens, at most one span per masked token.

        Why the cap: the inputs are the length - n_noise clean tokens plus one [MASK] per span, so at most
        n_noise spans keeps the inputs within the row, and rows of seq_len tokens (`plan`) fit the model.
        poisson_spans draws at most n_noise spans; only a span split in two by the row's cut can add one more,
        in a row that drew n_noise spans (as lambda nears 1 in short rows). Such a row is redrawn, so in that
        corner the cap conditions the layout, by design; at BART's 3.5 in 1024-token rows (about 307 masked
        tokens in ~88 spans) it never binds.
        """
        n_noise = round(self.cfg.mask_ratio * length)
        spans = poisson_spans(rng, batch, length, n_noise, self.cfg.poisson_lambda, allow_empty=True)
        redraw = np.flatnonzero(spans.count > n_noise)
        if len(redraw):
            spans = _replace_rows(spans, redraw, self.spans(rng, len(redraw), length), length)
        return spans


def _replace_rows(spans: Spans, rows: np.ndarray, new: Spans, length: int) -> Spans:
    """`spans` with `rows` taken from `new`, both widened to the wider span count (padding as poisson_spans')."""
    width = max(spans.starts.shape[1], new.starts.shape[1])

    def widen(a: np.ndarray, fill: int) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)

    starts, lengths, count = widen(spans.starts, length), widen(spans.lengths, 0), spans.count.copy()
    starts[rows], lengths[rows], count[rows] = widen(new.starts, length), widen(new.lengths, 0), new.count
    return Spans(starts, lengths, count)
