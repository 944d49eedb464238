"""`t5_span_corruption`: T5's objective. Each noise span becomes one sentinel; the targets spell the spans out.

inputs:  a b [S0] e f g [S1] </s>        (kept tokens, one sentinel per noise span, EOS)
targets: [S0] c d [S1] h </s>            (each span after its sentinel, EOS)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from seqlab.config import ObjectiveConfig
from seqlab.errors import ConfigError, require
from seqlab.interfaces import Features, RowPlan, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.objectives.noise import append_at_lengths, compact, prepend, random_segmentation


@dataclass
class T5SpanCorruptionConfig(ObjectiveConfig):
    noise_density: float = 0.15  # fraction of the raw tokens that are noise
    mean_noise_span_length: float = 3.0  # noise tokens per span, on average
    mode_token: Optional[str] = None  # a special token put first in the inputs (UL2: [NLU], [NLG])
    add_eos: bool = True  # end inputs and targets with EOS, as T5 does

    def __post_init__(self) -> None:
        require(0.0 < self.noise_density < 1.0, "objective.noise_density", self.noise_density, "must be in (0, 1)")
        require(self.mean_noise_span_length >= 1.0, "objective.mean_noise_span_length",
                self.mean_noise_span_length, "must be >= 1")


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a `length`-token row, as T5's random_spans_noise_mask counts them.

    Halves round to even, as in T5 (whose mask multiplies in float32, so a product that lands on .5 exactly,
    such as 570 * 0.15, can round the other way there; here the lengths and the mask share this one function).
    """
    n_noise = min(max(round(length * noise_density), 1), length - 1)  # at least one noise and one kept token
    return n_noise, max(round(n_noise / mean_noise_span_length), 1)


def span_corruption_lengths(seq_len: int, noise_density: float, mean_noise_span_length: float,
                            input_extra: int = 1, target_extra: int = 1) -> tuple[int, int]:
    """(raw length, target length): the longest raw row whose corrupted inputs and targets fit in seq_len.

    This is T5's `random_spans_helper`. A raw row of R tokens with N noise tokens in S spans becomes
        inputs  = (R - N) kept + S sentinels + input_extra  (EOS, plus a mode token if any)
        targets =  N noise     + S sentinels + target_extra (EOS)
    Both grow monotonically with R (N and S step by 0 or 1, S only when N does), so the first R whose
    successor overflows is the largest that fits. Where T5's helper is exact this is it, number for number.
    It differs at two edges, where T5's own helper is off by one: it counts round(N / mean) spans although its
    noise mask uses at least one (few long spans: T5's inputs overflow by a token), and for density 0.5 it
    searches on inputs only, then trims one raw token and reports the targets minus one without recounting.
    Bounding both sides in one search gives T5's raw length there, with the exact target length.
    E.g. seq_len 512, density 0.15, mean 3: R = 568, N = 85, S = 28: inputs 483 + 28 + 1 = 512, targets 114.
    """

    def corrupted(raw: int) -> tuple[int, int]:
        n_noise, n_spans = noise_counts(raw, noise_density, mean_noise_span_length)
        return raw - n_noise + n_spans + input_extra, n_noise + n_spans + target_extra

    raw = 2  # the shortest row with one noise and one kept token
    if max(corrupted(raw)) > seq_len:
        raise ConfigError(f"data.seq_len={seq_len}: too short for span corruption (needs at least "
                          f"{max(corrupted(raw))} tokens)")
    while max(corrupted(raw + 1)) <= seq_len:
        raw += 1
    return raw, corrupted(raw)[1]


@OBJECTIVES.register("t5_span_corruption", config=T5SpanCorruptionConfig)
class T5SpanCorruption:
    """Corrupt 15% of tokens in spans of mean 3, one sentinel per span; predict the spans after their sentinels."""

    def __init__(self, cfg: T5SpanCorruptionConfig, *, tokenizer: Tokenizer, seq_len: int):
        self.cfg = cfg
        self.names = (cfg.name,)
        self.seq_len = seq_len
        self.pad_id = tokenizer.pad_id
        self.eos_id = tokenizer.eos_id
        self.mode_id = tokenizer.token_id(cfg.mode_token) if cfg.mode_token is not None else None
        self.raw_length, self.target_length = span_corruption_lengths(
            seq_len, cfg.noise_density, cfg.mean_noise_span_length,
            input_extra=int(cfg.add_eos) + int(self.mode_id is not None), target_extra=int(cfg.add_eos))
        # Packed rows are always full, so every row of this objective has the same noise layout counts.
        self.n_noise, self.n_spans = noise_counts(self.raw_length, cfg.noise_density, cfg.mean_noise_span_length)
        require(self.n_spans <= self.raw_length - self.n_noise, "objective.noise_density", cfg.noise_density,
                f"leaves {self.raw_length - self.n_noise} kept tokens for {self.n_spans} noise spans of mean "
                f"{cfg.mean_noise_span_length}: each span needs a kept token before it; lower the density or "
                "raise mean_noise_span_length")
        if self.n_spans > len(tokenizer.sentinel_ids):
            raise ConfigError(
                f"objective.mean_noise_span_length={cfg.mean_noise_span_length}: {self.n_spans} noise spans per "
                f"row (data.seq_len={seq_len}, noise_density={cfg.noise_density}) need {self.n_spans} sentinels, "
                f"but tokenizer {tokenizer.path} has {len(tokenizer.sentinel_ids)}; raise the span length or "
                f"retrain the tokenizer with `seqlab tokenizer train --num-sentinels {self.n_spans}`")
        self.sentinel_ids = tokenizer.sentinel_ids[: self.n_spans]  # (S,) the i-th span of a row gets the i-th

    def plan(self, n: int, rng: np.random.Generator) -> RowPlan:
        return RowPlan.uniform(n, self.raw_length)

    def __call__(self, rows: Rows, rng: np.random.Generator) -> Features:
        tokens = rows.tokens  # (B, R): packed rows are always full
        B, R = tokens.shape
        S = self.n_spans
        # T5's layout: kept and noise lengths are each a uniform random composition, interleaved kept first,
        # so every row starts with kept text and ends with a noise span.
        noise = random_segmentation(rng, B, self.n_noise, S)  # (B, S)
        kept = random_segmentation(rng, B, R - self.n_noise, S)  # (B, S)
        segments = np.stack([kept, noise], axis=2).reshape(B, 2 * S)  # (B, 2S) kept_0 noise_0 kept_1 ...
        first = np.zeros((B, R), dtype=bool)  # (B, R) True where a segment starts
        first[:, 0] = True
        # Segments are non-empty, so the 2S - 1 inner boundaries are distinct positions in (0, R).
        first[np.arange(B)[:, None], np.cumsum(segments, axis=1)[:, :-1]] = True
        segment = np.cumsum(first, axis=1) - 1  # (B, R) segment index of each position
        is_noise = segment % 2 == 1
        sentinel = self.sentinel_ids[segment // 2]  # (B, R) the sentinel of each position's (kept, noise) pair
        # Inputs: the first token of each noise span becomes its sentinel, the rest of the span goes.
        inputs, input_lengths = compact(np.where(is_noise, sentinel, tokens), ~is_noise | first, self.pad_id)
        # Targets: the mirror image; the first token of kept segment i becomes sentinel i, which then precedes
        # noise span i, and the rest of the kept text goes.
        targets, target_lengths = compact(np.where(is_noise, tokens, sentinel), is_noise | first, self.pad_id)
        if self.cfg.add_eos:
            inputs, input_lengths = append_at_lengths(self.eos_id, inputs, input_lengths, self.pad_id)
            targets, target_lengths = append_at_lengths(self.eos_id, targets, target_lengths, self.pad_id)
        if self.mode_id is not None:
            inputs, input_lengths = prepend(self.mode_id, inputs, input_lengths)
        return Features(inputs, input_lengths, targets, target_lengths, rows.plan.task.copy())

