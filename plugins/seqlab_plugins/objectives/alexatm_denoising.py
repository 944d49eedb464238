"""`alexatm_denoising`: AlexaTM's denoising. Spans are deleted (no mask token); the target is the whole text.

The target ends with EOS (BART's convention: every target says where it stops), so the row read from the packed
stream is one token shorter than seq_len and the target is exactly seq_len. Documents that end inside the row
stay marked by their `[DOC]` separators, in the inputs and the target alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqlab.config import ObjectiveConfig
from seqlab.errors import require
from seqlab.interfaces import Features, RowPlan, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.objectives.noise import append_at_lengths, compact, poisson_spans, span_mask


@dataclass
class AlexaTMDenoisingConfig(ObjectiveConfig):
    noise_density: float = 0.15  # fraction of each sequence's tokens deleted
    mean_span_length: float = 3.0  # Poisson mean of the deleted spans' lengths
    add_eos: bool = True  # end the target with EOS (the row read is then seq_len - 1 tokens)

    def __post_init__(self) -> None:
        require(0.0 < self.noise_density < 0.5, "objective.noise_density", self.noise_density, "must be in (0, 0.5)")
        require(self.mean_span_length >= 1.0, "objective.mean_span_length", self.mean_span_length, "must be >= 1")


@OBJECTIVES.register("alexatm_denoising", config=AlexaTMDenoisingConfig)
class AlexaTMDenoising:
    """Delete 15% of tokens in Poisson(3) spans, insert nothing; reconstruct the full original sequence."""

    def __init__(self, cfg: AlexaTMDenoisingConfig, *, tokenizer: Tokenizer, seq_len: int):
        self.cfg = cfg
        self.names = (cfg.name,)
        self.seq_len = seq_len
        self.pad_id = tokenizer.pad_id
        self.eos_id = tokenizer.eos_id
        self.raw_length = seq_len - int(cfg.add_eos)
        # Every row is a full packed slice, so every row deletes exactly this many tokens.
        self.n_noise = max(1, round(self.raw_length * cfg.noise_density))
        # Every row has these input and target widths: packing siblings in a mixture fill theirs to them.
        self.widths = (self.raw_length - self.n_noise, self.raw_length + int(cfg.add_eos))

    def plan(self, n: int, rng: np.random.Generator) -> RowPlan:
        return RowPlan.uniform(n, self.raw_length)

    def __call__(self, rows: Rows, rng: np.random.Generator) -> Features:
        B, L = rows.tokens.shape  # (B, raw_length): packed rows are always full
        spans = poisson_spans(rng, B, L, self.n_noise, self.cfg.mean_span_length)
        inputs, input_lengths = compact(rows.tokens, ~span_mask(spans, L), self.pad_id)  # (B, L - n_noise)
        targets, target_lengths = rows.tokens, rows.lengths.copy()  # (B, L)
        if self.cfg.add_eos:
            targets, target_lengths = append_at_lengths(self.eos_id, targets, target_lengths, self.pad_id)
        return Features(inputs, input_lengths, targets, target_lengths, rows.plan.task.copy())
