"""`seq2seq`: the paper's encoder-decoder: pre-LN throughout, learned positions, GELU, attention with biases."""
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
from seqlab.tokenizer import BOS_ID, Tokenizer
from seqlab_plugins.architectures.blocks import (
    IGNORE_INDEX, Block, LayerCache, init_linear_and_embeddings, label_logprobs, padding_mask, run_blocks,
    target_losses,
)


@dataclass
class Seq2SeqConfig(ArchitectureConfig):
    d_model: int = 128
    n_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    d_ff: Optional[int] = None  # default 4 * d_model
    max_positions: int = 1024  # per stack: inputs and targets are each at most this long
    dropout: float = 0.0
    # The paper: encoder embedding, decoder embedding and LM head are separate matrices, the latter two
    # initialised from the first. True ties all three (BART, T5).
    tie_embeddings: bool = False
    embedding_norm: bool = False  # a LayerNorm on the embeddings (mBART has one; AlexaTM does not)
    init_std: float = 0.02
    activation_checkpointing: bool = False  # recompute each block in backward: memory for compute

    def __post_init__(self) -> None:
        for key in ("d_model", "n_heads", "encoder_layers", "decoder_layers", "max_positions"):
            require(getattr(self, key) >= 1, f"architecture.{key}", getattr(self, key), "must be >= 1")
        require(self.d_model % self.n_heads == 0, "architecture.n_heads", self.n_heads,
                f"must divide architecture.d_model={self.d_model}")
        require(self.d_ff is None or self.d_ff >= 1, "architecture.d_ff", self.d_ff, "must be >= 1 or null")
        require(0.0 <= self.dropout < 1.0, "architecture.dropout", self.dropout, "must be in [0, 1)")
        require(self.init_std > 0, "architecture.init_std", self.init_std, "must be > 0")


class Seq2SeqConverter:
    """Features -> encoder ids and decoder ids (targets shifted right behind BOS), labels = targets.

    Runs in data-loader workers, vectorised over the batch.
    """

    def __init__(self, pad_id: int, max_positions: int):
        self.pad_id = pad_id
        self.max_positions = max_positions

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        li, lt = f.input_lengths, f.target_lengths  # (B,)
        if (li == 0).any():
            raise DataError("seq2seq needs at least one input token per example; give the objective a mode token "
                            "(e.g. objective.mode_token=true for packed CLM)")
        longest = max(int(li.max()), int(lt.max()))
        if longest > self.max_positions:
            raise DataError(f"a {longest}-token sequence exceeds architecture.max_positions={self.max_positions}; "
                            "lower data.seq_len or raise max_positions")
        inputs = f.inputs[:, : int(li.max())]
        targets = f.targets[:, : int(lt.max())]  # (B, T)
        cols = np.arange(targets.shape[1])[None, :]
        decoder_ids = np.concatenate([np.full((len(lt), 1), BOS_ID, dtype=np.int64), targets[:, :-1]], axis=1)
        decoder_ids = np.where(cols < lt[:, None], decoder_ids, self.pad_id)
        labels = np.where(cols < lt[:, None], targets, IGNORE_INDEX)
        return {
            "input_ids": torch.from_numpy(np.ascontiguousarray(inputs)),  # (B, S)
            "input_lengths": torch.from_numpy(li),
            "decoder_input_ids": torch.from_numpy(np.ascontiguousarray(decoder_ids)),  # (B, T)
            "labels": torch.from_numpy(np.ascontiguousarray(labels)),  # (B, T)
            "num_tokens": int(li.sum() + lt.sum()),
        }


class Stack(nn.Module):
    """Embeddings + positions (+ optional norm) -> pre-LN blocks -> final norm."""

    def __init__(self, cfg: Seq2SeqConfig, vocab_size: int, n_layers: int, cross: bool):
        super().__init__()
        d_ff = cfg.d_ff or 4 * cfg.d_model
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_positions, cfg.d_model)
        self.embed_norm = nn.LayerNorm(cfg.d_model) if cfg.embedding_norm else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, d_ff, cfg.dropout, cross=cross)
                                    for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model)

    def embed_tokens(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(B, T) ids at positions offset.. -> (B, T, C)."""
        pos = torch.arange(offset, offset + ids.shape[1], device=ids.device)
        x = self.embed(ids) + self.positions(pos)
        return self.dropout(self.embed_norm(x) if self.embed_norm is not None else x)


@ARCHITECTURES.register("seq2seq", config=Seq2SeqConfig)
class Seq2Seq(nn.Module):
    """Encoder-decoder Transformer as in AlexaTM 20B: pre-LN, learned positions, GELU, untied embeddings."""

    def __init__(self, cfg: Seq2SeqConfig, *, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = Stack(cfg, vocab_size, cfg.encoder_layers, cross=False)
        self.decoder = Stack(cfg, vocab_size, cfg.decoder_layers, cross=True)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self._tie_weights()

    def _tie_weights(self) -> None:
        # Also called after materialising a meta-device model: to_empty gives every module its own tensor.
        if self.cfg.tie_embeddings:
            self.decoder.embed.weight = self.encoder.embed.weight
            self.head.weight = self.encoder.embed.weight

    @property
    def blocks(self) -> list[nn.Module]:
        """Every repeated block, encoder first, for sharding strategies that wrap blocks one by one."""
        return [*self.encoder.blocks, *self.decoder.blocks]

    @classmethod
    def feature_converter(cls, cfg: Seq2SeqConfig, *, pad_id: int) -> Seq2SeqConverter:
        return Seq2SeqConverter(pad_id, cfg.max_positions)

    def init_weights(self) -> None:
        self._tie_weights()
        init_linear_and_embeddings(self, self.cfg.init_std, self.cfg.encoder_layers + self.cfg.decoder_layers)
        if not self.cfg.tie_embeddings:
            # Separate matrices that start equal (the paper): the decoder reads and writes the encoder's space.
            with torch.no_grad():
                self.decoder.embed.weight.copy_(self.encoder.embed.weight)
                self.head.weight.copy_(self.encoder.embed.weight)

    def encode(self, input_ids: torch.Tensor, input_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) ids -> encoder states (B, S, C) and the key mask (B, 1, 1, S) that hides their padding."""
        mask = padding_mask(input_lengths, input_ids.shape[1])
        x = run_blocks(self.encoder.blocks, self.encoder.embed_tokens(input_ids), mask, False,
                       checkpointing=self.cfg.activation_checkpointing and self.training)
        return self.encoder.final_norm(x), mask

    def decode(self, decoder_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
               caches: list[LayerCache] | None = None) -> torch.Tensor:
        """(B, T) decoder ids over encoder states -> final decoder states (B, T, C).

        Causal self-attention needs no padding mask: targets are right-padded, so a real position never
        attends a padded one, and padded positions carry no loss. With caches (one per decoder block, for
        generation), decoder_ids are only the new positions, which continue where the caches stop.
        """
        offset = caches[0].length if caches else 0
        x = run_blocks(self.decoder.blocks, self.decoder.embed_tokens(decoder_ids, offset), None, True, memory,
                       memory_mask, checkpointing=self.cfg.activation_checkpointing and self.training, caches=caches)
        return self.decoder.final_norm(x)

    def forward(self, input_ids: torch.Tensor, input_lengths: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """-> logits (B, T, V)."""
        memory, mask = self.encode(input_ids, input_lengths)
        return self.head(self.decode(decoder_input_ids, memory, mask))

    def loss(self, batch: Batch) -> LossOutput:
        memory, mask = self.encode(batch["input_ids"], batch["input_lengths"])
        hidden = self.decode(batch["decoder_input_ids"], memory, mask)
        loss_sum, tokens = target_losses(hidden, self.head, batch["labels"])
        return LossOutput(loss_sum, tokens)

    def target_logprobs(self, batch: Batch) -> torch.Tensor:
        """Teacher-forced log-probability of target j at column j (B, Lt): what evaluation ranks by."""
        memory, mask = self.encode(batch["input_ids"], batch["input_lengths"])
        return label_logprobs(self.decode(batch["decoder_input_ids"], memory, mask), self.head, batch["labels"])

    def generate(self, input_ids: torch.Tensor, input_lengths: torch.Tensor, max_new_tokens: int,
                 target_prefix: torch.Tensor | None = None,
                 stop: Optional[object] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy continuation (B, N) and its lengths (B,); `stop` is a generation.StopCheck, rows it declares
        done end early. See generation.generate."""
        from seqlab_plugins.architectures.generation import greedy  # generation imports this module

        return greedy(self, input_ids, input_lengths, max_new_tokens, target_prefix, stop)

    def export_hf(self, tokenizer: Tokenizer, out_dir: str | Path, source: str) -> Path:
        """Write this model in the Hugging Face MBart layout, with a tokenizer transformers can load."""
        from seqlab_plugins.architectures.export import export_model  # transformers is an optional dependency

        return export_model(self, self.cfg, tokenizer, out_dir, source=source)

    @classmethod
    def scaled(cls, cfg: Seq2SeqConfig, width: float, depth: float) -> Seq2SeqConfig:
        """This config `width` times wider (heads kept, d_model a multiple of them) and `depth` times deeper
        (both stacks): a rung of a size ladder."""
        d_model = max(cfg.n_heads, round(cfg.d_model * width / cfg.n_heads) * cfg.n_heads)
        return replace(cfg, d_model=d_model, d_ff=None if cfg.d_ff is None else max(1, round(cfg.d_ff * width)),
                       encoder_layers=max(1, round(cfg.encoder_layers * depth)),
                       decoder_layers=max(1, round(cfg.decoder_layers * depth)))

    @classmethod
    def parameter_count(cls, cfg: Seq2SeqConfig, vocab_size: int) -> ParameterCount:
        """Parameters of the model `cfg` builds, tied weights once, computed without building it."""
        # Imported here: accounting imports this module (for the configs), so a top-level import would be circular.
        from seqlab_plugins.architectures.accounting import seq2seq_parameters

        return seq2seq_parameters(cfg, vocab_size)

    @classmethod
    def matched_baseline(cls, cfg: Seq2SeqConfig, vocab_size: int, input_length: int, target_length: int,
                         match: str) -> ArchitectureConfig:
        """The decoder-only baseline of the same width whose depth makes its total parameters (match=parameters)
        or its training FLOPs per example at these lengths (match=flops) closest to this model's."""
        from seqlab_plugins.architectures.accounting import flop_matched_partner, parameter_matched_partner

        require(match in ("parameters", "flops"), "compare.match", match, "must be parameters or flops")
        partner = parameter_matched_partner if match == "parameters" else flop_matched_partner
        return partner(cfg, vocab_size, input_length, target_length)

    @classmethod
    def training_flops(cls, cfg: Seq2SeqConfig, vocab_size: int, input_length: int,
                       target_length: int) -> FlopCount:
        """Forward + backward matmul FLOPs of one example; the formula is in the accounting module's docstring."""
        from seqlab_plugins.architectures.accounting import seq2seq_training_flops

        return seq2seq_training_flops(cfg, vocab_size, input_length, target_length)
