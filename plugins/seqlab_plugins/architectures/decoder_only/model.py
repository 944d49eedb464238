"""`decoder_only`: one stack of pre-LN blocks with causal or prefix-LM attention.

Its components are config fields (components.py): the defaults make the GPT-2-style baseline (LayerNorm,
GELU, learned positions, biases), the `llama_*` presets a Llama-style one (RMSNorm, SwiGLU, rope,
grouped-query attention, no biases).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from seqlab.errors import require
from seqlab.interfaces import Batch, FlopCount, ParameterCount
from seqlab.registry import ARCHITECTURES
from seqlab_plugins.architectures.attention import LayerCache, prefix_lm_mask, segment_mask
from seqlab_plugins.architectures.base import LanguageModel
from seqlab_plugins.architectures.components import TransformerConfig
from seqlab_plugins.architectures.decoder_only.accounting import parameters, training_flops
from seqlab_plugins.architectures.decoder_only.converter import DecoderOnlyConverter
from seqlab_plugins.architectures.decoder_only.steps import DecoderOnlySteps
from seqlab_plugins.architectures.init import ParamInit, init_modules
from seqlab_plugins.architectures.layers import Stack


@dataclass
class DecoderOnlyConfig(TransformerConfig):
    n_layers: int = 2
    prefix_lm: bool = True  # bidirectional attention over an example's inputs; False: causal everywhere

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.n_layers >= 1, "architecture.n_layers", self.n_layers, "must be >= 1")


@ARCHITECTURES.register("decoder_only", config=DecoderOnlyConfig)
class DecoderOnly(LanguageModel):
    """Decoder-only Transformer, causal or prefix-LM; GPT-2-style by default, Llama-style by its fields."""

    encoder_decoder = False

    def __init__(self, cfg: DecoderOnlyConfig, *, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        # Relative buckets for keys after the query exist only where a prefix lets a query see them.
        self.decoder = Stack(cfg, vocab_size, cfg.n_layers, bidirectional=cfg.prefix_lm)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.decoder.embed.weight

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated blocks in forward order, for strategies to wrap one by one."""
        return self.decoder.blocks

    @classmethod
    def feature_converter(cls, cfg: DecoderOnlyConfig, *, pad_id: int) -> DecoderOnlyConverter:
        return DecoderOnlyConverter(pad_id, cfg.max_positions, cfg.prefix_lm)

    def init_weights(self, seed: int = 0) -> None:
        """Initialise every parameter, keyed by name and seed (see init.py); also after a meta-device build,
        where materialising gives tied modules separate tensors, so the tie is restored first."""
        if self.cfg.tie_embeddings and self.head.weight is not self.decoder.embed.weight:
            self.head.weight = self.decoder.embed.weight
        std = self.cfg.init_std
        init_modules(self, seed, std, std / math.sqrt(2 * self.cfg.n_layers))

    def init_parameters(self, init: ParamInit) -> None:
        if not self.cfg.tie_embeddings:
            init.normal_("head.weight", self.head.weight, init.std)

    def hidden(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None,
               positions: torch.Tensor | None = None, caches: list[LayerCache] | None = None,
               key_positions: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> final hidden states (B, T, C); mask (B, 1, T, T) bool or None for plain causal.

        For generation: positions (B, T) give each row its own positions (prompts of different lengths), and
        caches (one per block) hold the past keys/values, so input_ids are only the new tokens, the mask
        covers every key so far, (B, 1, T, S), and key_positions (B, S) are those keys' positions.
        """
        pos = torch.arange(input_ids.shape[1], device=input_ids.device) if positions is None else positions
        return self.decoder(input_ids, pos, mask, True, caches=caches, key_positions=key_positions,
                            checkpointing=self.cfg.activation_checkpointing and self.training)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V)."""
        return self.head(self.hidden(input_ids, mask))

    def batch_hidden(self, batch: Batch) -> torch.Tensor:
        ids = batch["input_ids"]
        if "segments" in batch:  # packed rows: attention within each example, positions restarting with it
            segments = batch["segments"]
            mask = segment_mask(segments, segments, causal=True, key_prefix=batch.get("prefix"))
            return self.hidden(ids, mask, positions=batch["positions"])
        mask = None
        if "lengths" in batch:
            mask = prefix_lm_mask(batch["lengths"], batch["prefix_lengths"], ids.shape[1])
        return self.hidden(ids, mask)

    def decode_steps(self, input_ids: torch.Tensor, input_lengths: torch.Tensor, max_new_tokens: int,
                     use_cache: bool, target_prefix: torch.Tensor | None = None) -> DecoderOnlySteps:
        """The generation.DecodeSteps of these prompts (the prefix of the continuation)."""
        return DecoderOnlySteps(self, input_ids, input_lengths, max_new_tokens, use_cache, target_prefix)

    def hf_layout(self) -> Any:
        """The Hugging Face model this one maps to, GPT-2 (the default components) or Llama (rope, RMSNorm,
        SwiGLU, no biases), and the mapping of their weights (an export.HFLayout)."""
        from seqlab_plugins.architectures.decoder_only.hf import layout  # transformers is optional

        return layout(self)

    @classmethod
    def scaled(cls, cfg: DecoderOnlyConfig, width: float, depth: float) -> DecoderOnlyConfig:
        """This config `width` times wider (heads kept, d_model a multiple of them) and `depth` times deeper:
        a rung of a size ladder."""
        return replace(cfg, **cfg.widened(width), n_layers=max(1, round(cfg.n_layers * depth)))

    @classmethod
    def with_depth(cls, cfg: DecoderOnlyConfig, depth: int) -> DecoderOnlyConfig:
        """The same model with `depth` blocks: what parameter- and FLOP-matching vary."""
        return replace(cfg, n_layers=depth)

    @classmethod
    def parameter_count(cls, cfg: DecoderOnlyConfig, vocab_size: int) -> ParameterCount:
        """Parameters of the model `cfg` builds, tied weights once, computed without building it."""
        return parameters(cfg, vocab_size)

    @classmethod
    def training_flops(cls, cfg: DecoderOnlyConfig, vocab_size: int, input_length: int,
                       target_length: int) -> FlopCount:
        """Forward + backward matmul FLOPs of one example; see the accounting modules."""
        return training_flops(cfg, vocab_size, input_length, target_length)
