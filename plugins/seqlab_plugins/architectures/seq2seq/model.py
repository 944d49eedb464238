"""`seq2seq`: an encoder stack and a decoder stack with cross-attention.

Its components are config fields (components.py): the defaults are the paper's (pre-LN with LayerNorm,
learned positions, GELU, biases, untied embeddings), the `t5_*` presets T5 v1.1's (RMSNorm, gated GELU,
relative position bias, no biases, shared input embeddings).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from seqlab.config import ArchitectureConfig
from seqlab.errors import require
from seqlab.interfaces import Batch, FlopCount, ParameterCount
from seqlab.registry import ARCHITECTURES
from seqlab_plugins.architectures.attention import LayerCache, padding_mask, segment_mask
from seqlab_plugins.architectures.base import LanguageModel
from seqlab_plugins.architectures.components import TransformerConfig
from seqlab_plugins.architectures.init import ParamInit, init_modules
from seqlab_plugins.architectures.layers import Stack
from seqlab_plugins.architectures.seq2seq.accounting import parameters, training_flops
from seqlab_plugins.architectures.seq2seq.converter import Seq2SeqConverter
from seqlab_plugins.architectures.seq2seq.partner import matched_partner
from seqlab_plugins.architectures.seq2seq.steps import Seq2SeqSteps


@dataclass
class Seq2SeqConfig(TransformerConfig):
    encoder_layers: int = 2
    decoder_layers: int = 2
    # max_positions applies per stack: inputs and targets are each at most this long.
    # The paper: encoder embedding, decoder embedding and LM head are separate matrices, the latter two
    # initialised from the first. tie_embeddings ties all three (BART, T5 v1.0); share_embeddings only the two
    # input embeddings, the LM head separate (T5 v1.1).
    tie_embeddings: bool = False
    share_embeddings: bool = False
    embedding_norm: bool = False  # a norm on the embeddings (mBART has one; AlexaTM does not)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("encoder_layers", "decoder_layers"):
            require(getattr(self, key) >= 1, f"architecture.{key}", getattr(self, key), "must be >= 1")
        require(not (self.tie_embeddings and self.share_embeddings), "architecture.share_embeddings",
                self.share_embeddings, "is implied by architecture.tie_embeddings=true (all three tied); "
                "set one of them")


@ARCHITECTURES.register("seq2seq", config=Seq2SeqConfig)
class Seq2Seq(LanguageModel):
    """Encoder-decoder Transformer; AlexaTM 20B's by default, T5 v1.1's by its fields."""

    encoder_decoder = True

    def __init__(self, cfg: Seq2SeqConfig, *, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = Stack(cfg, vocab_size, cfg.encoder_layers, bidirectional=True,
                             embedding_norm=cfg.embedding_norm)
        self.decoder = Stack(cfg, vocab_size, cfg.decoder_layers, cross=True, embedding_norm=cfg.embedding_norm)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self._tie_weights()

    def _tie_weights(self) -> None:
        # Also called after materialising a meta-device model: to_empty gives every module its own tensor.
        shared = self.encoder.embed.weight
        if self.cfg.tie_embeddings or self.cfg.share_embeddings:
            self.decoder.embed.weight = shared
        if self.cfg.tie_embeddings:
            self.head.weight = shared

    @property
    def blocks(self) -> list[nn.Module]:
        """Every repeated block, encoder first, for strategies to wrap one by one."""
        return [*self.encoder.blocks, *self.decoder.blocks]

    @classmethod
    def feature_converter(cls, cfg: Seq2SeqConfig, *, pad_id: int) -> Seq2SeqConverter:
        return Seq2SeqConverter(pad_id, cfg.max_positions)

    def init_weights(self, seed: int = 0) -> None:
        """Initialise every parameter, keyed by name and seed (see init.py)."""
        enc, dec, head = self.encoder.embed.weight, self.decoder.embed.weight, self.head.weight
        if ((self.cfg.tie_embeddings or self.cfg.share_embeddings) and dec is not enc
                or self.cfg.tie_embeddings and head is not enc):
            self._tie_weights()
        std = self.cfg.init_std
        init_modules(self, seed, std, std / math.sqrt(2 * (self.cfg.encoder_layers + self.cfg.decoder_layers)))
        if not self.cfg.tie_embeddings:
            # Separate matrices that start equal (the paper): the decoder reads and writes the encoder's space.
            with torch.no_grad():
                for weight in (self.decoder.embed.weight, self.head.weight):
                    if weight is not self.encoder.embed.weight:
                        weight.copy_(self.encoder.embed.weight)

    def init_parameters(self, init: ParamInit) -> None:
        if not self.cfg.tie_embeddings:
            init.constant_("head.weight", self.head.weight, 0.0)  # set to the encoder's embedding by init_weights

    def encode(self, input_ids: torch.Tensor, input_lengths: torch.Tensor, segments: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) ids -> encoder states (B, S, C) and the key mask (B, 1, 1, S) that hides their padding.

        Packed rows give segments and positions (B, S) (converter.py): attention stays within each example.
        """
        if segments is None:
            mask = padding_mask(input_lengths, input_ids.shape[1])
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        else:
            mask = segment_mask(segments, segments, causal=False)  # (B, 1, S, S)
        memory = self.encoder(input_ids, positions, mask, False,
                              checkpointing=self.cfg.activation_checkpointing and self.training)
        return memory, mask

    def decode(self, decoder_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
               caches: list[LayerCache] | None = None) -> torch.Tensor:
        """(B, T) decoder ids over encoder states -> final decoder states (B, T, C).

        Causal self-attention needs no padding mask: targets are right-padded, so a real position never
        attends a padded one, and padded positions carry no loss. With caches (one per decoder block, for
        generation), decoder_ids are only the new positions, which continue where the caches stop.
        """
        offset = caches[0].length if caches else 0
        device = decoder_ids.device
        positions = torch.arange(offset, offset + decoder_ids.shape[1], device=device)
        keys = torch.arange(offset + decoder_ids.shape[1], device=device)
        return self.decoder(decoder_ids, positions, None, True, memory, memory_mask, caches, keys,
                            checkpointing=self.cfg.activation_checkpointing and self.training)

    def forward(self, input_ids: torch.Tensor, input_lengths: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """-> logits (B, T, V)."""
        memory, mask = self.encode(input_ids, input_lengths)
        return self.head(self.decode(decoder_input_ids, memory, mask))

    def batch_hidden(self, batch: Batch) -> torch.Tensor:
        if "input_segments" not in batch:
            memory, mask = self.encode(batch["input_ids"], batch["input_lengths"])
            return self.decode(batch["decoder_input_ids"], memory, mask)
        # Packed rows: each example's decoder attends causally within itself and only its own encoder tokens.
        enc, dec = batch["input_segments"], batch["decoder_segments"]
        memory, _ = self.encode(batch["input_ids"], batch["input_lengths"], enc, batch["input_positions"])
        return self.decoder(batch["decoder_input_ids"], batch["decoder_positions"],
                            segment_mask(dec, dec, causal=True), False, memory,
                            segment_mask(dec, enc, causal=False),
                            checkpointing=self.cfg.activation_checkpointing and self.training)

    def decode_steps(self, input_ids: torch.Tensor, input_lengths: torch.Tensor, max_new_tokens: int,
                     use_cache: bool, target_prefix: torch.Tensor | None = None) -> Seq2SeqSteps:
        """The generation.DecodeSteps of these prompts (the encoder input)."""
        return Seq2SeqSteps(self, input_ids, input_lengths, max_new_tokens, use_cache, target_prefix)

    def hf_layout(self) -> Any:
        """The Hugging Face model this one maps to, MBart (the paper's components with embedding_norm) or T5
        (T5 v1.1's), and the mapping of their weights (an export.HFLayout)."""
        from seqlab_plugins.architectures.seq2seq.hf import layout  # transformers is optional

        return layout(self)

    @classmethod
    def scaled(cls, cfg: Seq2SeqConfig, width: float, depth: float) -> Seq2SeqConfig:
        """This config `width` times wider (heads kept, d_model a multiple of them) and `depth` times deeper
        (both stacks): a rung of a size ladder."""
        return replace(cfg, **cfg.widened(width), encoder_layers=max(1, round(cfg.encoder_layers * depth)),
                       decoder_layers=max(1, round(cfg.decoder_layers * depth)))

    @classmethod
    def matched_baseline(cls, cfg: Seq2SeqConfig, vocab_size: int, input_length: int, target_length: int,
                         match: str) -> ArchitectureConfig:
        """The decoder-only baseline of the same width and components whose depth makes its total parameters
        (match=parameters) or its training FLOPs per example at these lengths (match=flops) closest to this
        model's (partner.py)."""
        return matched_partner(cfg, vocab_size, input_length, target_length, match)

    @classmethod
    def parameter_count(cls, cfg: Seq2SeqConfig, vocab_size: int) -> ParameterCount:
        """Parameters of the model `cfg` builds, tied weights once, computed without building it."""
        return parameters(cfg, vocab_size)

    @classmethod
    def training_flops(cls, cfg: Seq2SeqConfig, vocab_size: int, input_length: int,
                       target_length: int) -> FlopCount:
        """Forward + backward matmul FLOPs of one example; see the accounting modules."""
        return training_flops(cfg, vocab_size, input_length, target_length)

