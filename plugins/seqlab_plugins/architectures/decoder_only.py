"""`decoder_only`: a GPT-style baseline (pre-LN, learned positions, GELU) with causal or prefix-LM attention."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from seqlab.config import ArchitectureConfig
from seqlab.errors import DataError, require
from seqlab.interfaces import Batch, Features, FlopCount, LossOutput, ParameterCount
from seqlab.registry import ARCHITECTURES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.blocks import (
    IGNORE_INDEX, Block, LayerCache, init_linear_and_embeddings, label_logprobs, prefix_lm_mask, run_blocks,
    target_losses,
)


@dataclass
class DecoderOnlyConfig(ArchitectureConfig):
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: Optional[int] = None  # default 4 * d_model
    max_positions: int = 1024
    dropout: float = 0.0
    prefix_lm: bool = True  # bidirectional attention over an example's inputs; False: causal everywhere
    tie_embeddings: bool = True
    init_std: float = 0.02
    activation_checkpointing: bool = False  # recompute each block in backward: memory for compute

    def __post_init__(self) -> None:
        for key in ("d_model", "n_layers", "n_heads", "max_positions"):
            require(getattr(self, key) >= 1, f"architecture.{key}", getattr(self, key), "must be >= 1")
        require(self.d_model % self.n_heads == 0, "architecture.n_heads", self.n_heads,
                f"must divide architecture.d_model={self.d_model}")
        require(self.d_ff is None or self.d_ff >= 1, "architecture.d_ff", self.d_ff, "must be >= 1 or null")
        require(0.0 <= self.dropout < 1.0, "architecture.dropout", self.dropout, "must be in [0, 1)")
        require(self.init_std > 0, "architecture.init_std", self.init_std, "must be > 0")


class DecoderOnlyConverter:
    """Features -> one sequence `inputs + targets`, predicting each target token from everything before it.

    Runs in data-loader workers, vectorised over the batch. Labels are the next tokens, kept only where the
    next token is a target; the inputs become a bidirectional prefix when prefix_lm is on.
    """

    def __init__(self, pad_id: int, max_positions: int, prefix_lm: bool):
        self.pad_id = pad_id
        self.max_positions = max_positions
        self.prefix_lm = prefix_lm

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        li, lt = f.input_lengths, f.target_lengths  # (B,)
        total = li + lt
        width = int(total.max())
        t = np.arange(width)[None, :]  # (1, W)
        rows = np.arange(len(li))[:, None]  # (B, 1)
        if f.inputs.shape[1] == 0:
            seq = f.targets[:, :width]
        else:
            from_input = t < li[:, None]
            seq = np.where(from_input, f.inputs[rows, np.minimum(t, f.inputs.shape[1] - 1)],
                           f.targets[rows, np.clip(t - li[:, None], 0, f.targets.shape[1] - 1)])
        seq = np.where(t < total[:, None], seq, self.pad_id)  # (B, W)
        if width - 1 > self.max_positions:
            raise DataError(f"a {width - 1}-token sequence exceeds architecture.max_positions={self.max_positions}; "
                            "lower data.seq_len or raise max_positions")
        nxt = t[:, 1:]  # position of the token each input position predicts
        is_target = (nxt >= li[:, None]) & (nxt < total[:, None])
        labels = np.where(is_target, seq[:, 1:], IGNORE_INDEX)
        lengths = np.maximum(total - 1, 0)
        prefix = li if self.prefix_lm else np.zeros_like(li)
        batch = {
            "input_ids": torch.from_numpy(np.ascontiguousarray(seq[:, :-1])),  # (B, W-1)
            "labels": torch.from_numpy(np.ascontiguousarray(labels)),  # (B, W-1)
            "num_tokens": int(lengths.sum()),
        }
        # Full-length causal batches (packed CLM) need no mask tensor: SDPA takes its fused causal path.
        if prefix.any() or (lengths < width - 1).any():
            batch["lengths"] = torch.from_numpy(lengths)
            batch["prefix_lengths"] = torch.from_numpy(prefix)
        return batch


@ARCHITECTURES.register("decoder_only", config=DecoderOnlyConfig)
class DecoderOnly(nn.Module):
    """GPT-style decoder-only Transformer (pre-LN, learned positions, GELU), causal or prefix-LM."""

    def __init__(self, cfg: DecoderOnlyConfig, *, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_positions, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, d_ff, cfg.dropout) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self._tie_weights()

    def _tie_weights(self) -> None:
        # Also called after materialising a meta-device model: to_empty gives every module its own tensor.
        if self.cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    @classmethod
    def feature_converter(cls, cfg: DecoderOnlyConfig, *, pad_id: int) -> DecoderOnlyConverter:
        return DecoderOnlyConverter(pad_id, cfg.max_positions, cfg.prefix_lm)

    def init_weights(self) -> None:
        self._tie_weights()
        init_linear_and_embeddings(self, self.cfg.init_std, self.cfg.n_layers)

    def hidden(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None,
               positions: torch.Tensor | None = None, caches: list[LayerCache] | None = None) -> torch.Tensor:
        """input_ids (B, T) -> final hidden states (B, T, C); mask (B, 1, T, T) bool or None for plain causal.

        For generation: positions (B, T) give each row its own positions (prompts of different lengths), and
        caches (one per block) hold the past keys/values, so input_ids are only the new tokens and the mask
        covers every key so far, (B, 1, T, S).
        """
        pos = torch.arange(input_ids.shape[1], device=input_ids.device) if positions is None else positions
        x = self.dropout(self.embed(input_ids) + self.positions(pos))  # (B, T, C)
        x = run_blocks(self.blocks, x, mask, True, checkpointing=self.cfg.activation_checkpointing and self.training,
                       caches=caches)
        return self.final_norm(x)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V)."""
        return self.head(self.hidden(input_ids, mask))

    def loss(self, batch: Batch) -> LossOutput:
        ids = batch["input_ids"]
        mask = None
        if "lengths" in batch:
            mask = prefix_lm_mask(batch["lengths"], batch["prefix_lengths"], ids.shape[1])
        loss_sum, tokens = target_losses(self.hidden(ids, mask), self.head, batch["labels"])
        return LossOutput(loss_sum, tokens)

    def target_logprobs(self, batch: Batch) -> torch.Tensor:
        """Teacher-forced log-probability of target j at column j (B, Lt): what evaluation ranks by."""
        ids = batch["input_ids"]
        mask = None
        if "lengths" in batch:
            mask = prefix_lm_mask(batch["lengths"], batch["prefix_lengths"], ids.shape[1])
        return label_logprobs(self.hidden(ids, mask), self.head, batch["labels"])

    def generate(self, input_ids: torch.Tensor, input_lengths: torch.Tensor, max_new_tokens: int,
                 target_prefix: torch.Tensor | None = None,
                 stop: Optional[object] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy continuation (B, N) and its lengths (B,); `stop` is a generation.StopCheck, rows it declares
        done end early. See generation.generate."""
        from seqlab_plugins.architectures.generation import greedy  # generation imports this module

        return greedy(self, input_ids, input_lengths, max_new_tokens, target_prefix, stop)

    def export_hf(self, tokenizer: Tokenizer, out_dir: str | Path, source: str) -> Path:
        """Write this model in the Hugging Face GPT-2 layout, with a tokenizer transformers can load."""
        from seqlab_plugins.architectures.export import export_model  # transformers is an optional dependency

        return export_model(self, self.cfg, tokenizer, out_dir, source=source)

    @classmethod
    def scaled(cls, cfg: DecoderOnlyConfig, width: float, depth: float) -> DecoderOnlyConfig:
        """This config `width` times wider (heads kept, d_model a multiple of them) and `depth` times deeper:
        a rung of a size ladder."""
        d_model = max(cfg.n_heads, round(cfg.d_model * width / cfg.n_heads) * cfg.n_heads)
        return replace(cfg, d_model=d_model, d_ff=None if cfg.d_ff is None else max(1, round(cfg.d_ff * width)),
                       n_layers=max(1, round(cfg.n_layers * depth)))

    @classmethod
    def parameter_count(cls, cfg: DecoderOnlyConfig, vocab_size: int) -> ParameterCount:
        """Parameters of the model `cfg` builds, tied weights once, computed without building it."""
        # Imported here: accounting imports this module (for the configs), so a top-level import would be circular.
        from seqlab_plugins.architectures.accounting import decoder_only_parameters

        return decoder_only_parameters(cfg, vocab_size)

    @classmethod
    def training_flops(cls, cfg: DecoderOnlyConfig, vocab_size: int, input_length: int,
                       target_length: int) -> FlopCount:
        """Forward + backward matmul FLOPs of one example; the formula is in the accounting module's docstring."""
        from seqlab_plugins.architectures.accounting import decoder_only_training_flops

        return decoder_only_training_flops(cfg, vocab_size, input_length, target_length)
