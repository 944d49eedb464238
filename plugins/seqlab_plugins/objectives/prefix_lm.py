"""`prefix_lm`: T5's prefix LM over packed rows: the model reads a random prefix and continues the text."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from seqlab.config import ObjectiveConfig
from seqlab.interfaces import Features, RowPlan, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.objectives.noise import prepend


@dataclass
class PrefixLMConfig(ObjectiveConfig):
    mode_token: Optional[str] = None  # a special token put first in the inputs (UL2's S-denoiser: [S2S])


@OBJECTIVES.register("prefix_lm", config=PrefixLMConfig)
class PrefixLM:
    """Split each row at a uniform point in [1, L-1]: the prefix is the input, the rest the target (no EOS)."""

    def __init__(self, cfg: PrefixLMConfig, *, tokenizer: Tokenizer, seq_len: int):
        self.cfg = cfg
        self.names = (cfg.name,)
        self.seq_len = seq_len
        self.pad_id = tokenizer.pad_id
        self.mode_id = tokenizer.token_id(cfg.mode_token) if cfg.mode_token is not None else None

    def plan(self, n: int, rng: np.random.Generator) -> RowPlan:
        # A split leaves at least one target token, so the prefix is at most seq_len - 1 tokens and a mode
        # token still fits: inputs <= seq_len and targets <= seq_len - 1 with a full seq_len-token row.
        return RowPlan.uniform(n, self.seq_len)

    def __call__(self, rows: Rows, rng: np.random.Generator) -> Features:
        tokens = rows.tokens  # (B, L): packed rows are always full
        B, L = tokens.shape
        split = rng.integers(1, L, size=B)  # (B,) prefix lengths, uniform in [1, L-1]
        t = np.arange(L)[None, :]  # (1, L)
        inputs = np.where(t < split[:, None], tokens, self.pad_id)[:, : split.max()]  # (B, max split)
        # Row b's targets are tokens[b, split_b:], shifted to the front; the text goes on past the row, so no
        # EOS (it would teach the model to stop mid-sentence).
        target_lengths = L - split
        shifted = tokens[np.arange(B)[:, None], np.minimum(t + split[:, None], L - 1)]  # (B, L)
        targets = np.where(t < target_lengths[:, None], shifted, self.pad_id)[:, : target_lengths.max()]
        input_lengths = split
        if self.mode_id is not None:
            inputs, input_lengths = prepend(self.mode_id, inputs, input_lengths)
        return Features(inputs, input_lengths, targets, target_lengths, rows.plan.task.copy())
