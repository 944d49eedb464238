"""`clm`: causal language modelling, AlexaTM style (one document, [CLM] + prefix -> continuation) or packed.

A continuation that reaches its document's end ends with EOS, so a model learns where a text stops and
generation can stop there. A document longer than the row is cut, and its cut continuation gets no EOS: the
text goes on. Packed rows keep their `[DOC]` separators as the only document boundary (GPT-style).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqlab.config import ObjectiveConfig
from seqlab.errors import require
from seqlab.interfaces import Features, RowPlan, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.objectives.noise import append_where, prepend
from seqlab_plugins.objectives.packing import PackSpec, pack_clm


@dataclass
class ClmConfig(ObjectiveConfig):
    # False (AlexaTM): one document per row, split at a uniform point in [min_prefix, max_prefix] of its
    # length; the prefix is the input, the continuation the target. True: next-token prediction over packed
    # sequences (GPT-style baselines), every token a target.
    packed: bool = False
    min_prefix: float = 0.2
    max_prefix: float = 0.8
    mode_token: bool = True  # [CLM] first in the inputs; packed + mode_token gives an encoder a one-token input
    add_eos: bool = True  # end a continuation that reaches its document's end with EOS (not packed rows)
    # AlexaTM rows (packed=false) only: several documents per row, each its own example with its own [CLM] and
    # split, kept apart by segment ids (packing.py). False: one document per row, the rest padding.
    pack_documents: bool = False

    def __post_init__(self) -> None:
        require(0.0 <= self.min_prefix <= self.max_prefix, "objective.min_prefix", self.min_prefix,
                f"must be in [0, objective.max_prefix={self.max_prefix}]")
        require(self.max_prefix <= 1.0, "objective.max_prefix", self.max_prefix, "must be <= 1")
        require(not (self.packed and self.pack_documents), "objective.pack_documents", self.pack_documents,
                "applies to AlexaTM rows (objective.packed=false); packed rows are already full")


@OBJECTIVES.register("clm", config=ClmConfig)
class CausalLM:
    """Causal LM: [CLM] + a document's first 20-80% -> the rest (AlexaTM), or packed next-token prediction."""

    def __init__(self, cfg: ClmConfig, *, tokenizer: Tokenizer, seq_len: int):
        self.cfg = cfg
        self.names = (cfg.name,)
        self.seq_len = seq_len
        self.pad_id = tokenizer.pad_id
        self.clm_id = tokenizer.token_id("[CLM]")
        self.eos_id = tokenizer.eos_id
        self.separator_id = tokenizer.token_id("[DOC]")
        self.fit(seq_len, seq_len)

    def fit(self, input_width: int, target_width: int) -> None:
        """Fill packed rows up to these widths (a mixture passes its siblings' fixed widths, so a batch mixing
        them has no padding column)."""
        self.spec = PackSpec(self.cfg.min_prefix, self.cfg.max_prefix, input_width, target_width,
                             self.clm_id if self.cfg.mode_token else None,
                             self.eos_id if self.cfg.add_eos else None, self.separator_id, self.pad_id)
        # Every example puts [CLM] + its prefix in the input row and the rest + EOS in the target row, about half
        # each, so the narrower row fills first: a slice of twice its width fills it. Reading more fills the
        # other row a little more but leaves out more text (embedded corpus, seq_len 128: 94% of the tokens
        # read are used, 87% of the rows' positions are real; reading both widths: 87% and 87%).
        self.read_length = 2 * min(input_width, target_width)

    def plan(self, n: int, rng: np.random.Generator) -> RowPlan:
        # Document rows read one token past seq_len: a row that comes back longer than seq_len holds a document
        # that goes on (cut, no EOS); any other row holds its whole document. The split leaves at least one
        # token to each side, so [CLM] + prefix and the continuation (+ EOS) both fit in seq_len.
        if self.cfg.packed:
            return RowPlan.uniform(n, self.seq_len)
        if self.cfg.pack_documents:
            return RowPlan.uniform(n, self.read_length)
        return RowPlan.uniform(n, self.seq_len + 1, document=True)

    def __call__(self, rows: Rows, rng: np.random.Generator) -> Features:
        B, W = rows.tokens.shape
        n = rows.lengths  # (B,)
        if self.cfg.pack_documents:
            p = pack_clm(rows.tokens, self.spec, rng)
            return Features(p.inputs, p.input_lengths, p.targets, p.target_lengths, rows.plan.task.copy(),
                            p.input_segments, p.target_segments)
        if self.cfg.packed:
            inputs, input_lengths = np.zeros((B, 0), dtype=np.int64), np.zeros(B, dtype=np.int64)
            targets, target_lengths = rows.tokens, n.copy()
        else:
            complete = n <= self.seq_len  # (B,) the row holds its document to the end
            n = np.minimum(n, self.seq_len)
            fraction = rng.uniform(self.cfg.min_prefix, self.cfg.max_prefix, size=B)
            # Both parts non-empty whenever the document has two tokens or more.
            split = np.minimum(np.maximum(np.floor(fraction * n).astype(np.int64), 1), n - 1)
            width_in, target_lengths = int(split.max()), n - split
            width_out = int(target_lengths.max())
            inputs = np.where(np.arange(width_in)[None, :] < split[:, None], rows.tokens[:, :width_in], self.pad_id)
            # The continuation moved to the front: column j of row b is token split[b] + j.
            cols = np.arange(width_out)[None, :]  # (1, Wt)
            shifted = rows.tokens[np.arange(B)[:, None], np.minimum(cols + split[:, None], W - 1)]  # (B, Wt)
            targets = np.where(cols < target_lengths[:, None], shifted, self.pad_id)
            input_lengths = split
            if self.cfg.add_eos:
                targets, target_lengths = append_where(self.eos_id, targets, target_lengths, complete, self.pad_id)
        if self.cfg.mode_token:
            inputs, input_lengths = prepend(self.clm_id, inputs, input_lengths)
        return Features(inputs, input_lengths, targets, target_lengths, rows.plan.task.copy())
