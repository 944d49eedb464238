"""`clm`: causal language modelling over packed sequences (plain next-token prediction)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqlab.config import ObjectiveConfig
from seqlab.interfaces import Features
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer


@dataclass
class ClmConfig(ObjectiveConfig):
    pass


@OBJECTIVES.register("clm", config=ClmConfig)
class CausalLM:
    """Causal LM: every token of a packed sequence is a target; no inputs."""

    def __init__(self, cfg: ClmConfig, *, tokenizer: Tokenizer):
        self.cfg = cfg
        self.names = (cfg.name,)

    def raw_length(self, seq_len: int) -> int:
        # One extra token: a model reading seq_len tokens predicts seq_len next tokens.
        return seq_len + 1

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> Features:
        B, L = tokens.shape
        return Features(
            inputs=np.zeros((B, 0), dtype=np.int64),
            input_lengths=np.zeros(B, dtype=np.int64),
            targets=tokens,
            target_lengths=np.full(B, L, dtype=np.int64),
            objective=np.zeros(B, dtype=np.int64),
        )
