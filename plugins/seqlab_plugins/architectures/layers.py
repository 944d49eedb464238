"""The pre-LN block both architectures stack (norm, attention, (cross-attention), norm, feed-forward) and the
stack of blocks with its embeddings.

Both architectures are built from these same blocks, so a comparison between them measures the layout
(encoder-decoder against decoder-only), not implementation differences.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from seqlab_plugins.architectures.attention import (
    Attention, Context, LayerCache, RelativePositionBias, Rotary, with_bias,
)
from seqlab_plugins.architectures.components import TransformerConfig
from seqlab_plugins.architectures.flex import block_mask, flex_runs
from seqlab_plugins.architectures.init import ParamInit


def make_norm(cfg: TransformerConfig, dim: int | None = None) -> nn.Module:
    dim = dim or cfg.d_model
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=cfg.norm_eps)
    return nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias)


class FeedForward(nn.Module):
    """gelu: down(gelu(up x)). Gated: down(act(gate x) * (value x)), gate and value in one projection
    stacked as [gate | value] (one matmul instead of two)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.kind, F_ = cfg.mlp, cfg.ffn_dim
        self.up = nn.Linear(cfg.d_model, 2 * F_ if cfg.gated else F_, bias=cfg.bias)
        self.down = nn.Linear(F_, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def init_parameters(self, init: ParamInit) -> None:
        init.linear_("up", self.up, init.std)
        init.linear_("down", self.down, init.residual_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)  # (B, T, F) or (B, T, 2F)
        if self.kind == "gelu":
            h = F.gelu(h)
        else:
            gate, value = h.chunk(2, dim=-1)
            h = (F.silu(gate) if self.kind == "swiglu" else F.gelu(gate, approximate="tanh")) * value
        return self.dropout(self.down(h))


class Block(nn.Module):
    """Pre-LN: a norm at the start of every sub-layer, residuals outside it (the paper's choice for stability).

    Self-attention, then cross-attention over encoder states (decoder blocks of seq2seq only), then the
    feed-forward layer.
    """

    def __init__(self, cfg: TransformerConfig, cross: bool = False):
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg)
        self.cross_norm = make_norm(cfg) if cross else None
        self.cross = Attention(cfg, cross=True) if cross else None
        self.ff_norm = make_norm(cfg)
        self.ff = FeedForward(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def init_parameters(self, init: ParamInit) -> None:
        for name in ("attn_norm", "cross_norm", "ff_norm"):
            if getattr(self, name) is not None:
                init.norm_(name, getattr(self, name))

    def forward(self, x: torch.Tensor, ctx: Context, cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), ctx, cache))
        if self.cross is not None:
            x = x + self.dropout(self.cross(self.cross_norm(x), ctx, cache))
        return x + self.ff(self.ff_norm(x))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, ctx: Context, checkpointing: bool = False,
               caches: list[LayerCache] | None = None) -> torch.Tensor:
    """Apply blocks in order; with checkpointing, keep only block inputs and recompute the rest in backward.

    caches: one LayerCache per block for incremental decoding. Never checkpointed: a recomputed block would
    append its keys/values twice.
    """
    if caches is not None:
        for block, cache in zip(blocks, caches, strict=True):
            x = block(x, ctx, cache)
        return x
    for block in blocks:
        x = checkpoint(block, x, ctx, use_reentrant=False) if checkpointing else block(x, ctx)
    return x


class Stack(nn.Module):
    """Token embeddings (+ learned positions, + optional norm) -> blocks -> final norm: a decoder-only model
    is one stack, an encoder-decoder two. The stack owns its positional scheme, so it builds the attention
    Context (rotary angles, relative score bias) once per forward pass for all its blocks."""

    def __init__(self, cfg: TransformerConfig, vocab_size: int, n_layers: int, *, cross: bool = False,
                 bidirectional: bool = False, embedding_norm: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_positions, cfg.d_model) if cfg.positions == "learned" else None
        self.rotary = Rotary(cfg) if cfg.positions == "rope" else None
        self.relative = RelativePositionBias(cfg, bidirectional) if cfg.positions == "t5_relative_bias" else None
        self.embed_norm = make_norm(cfg) if embedding_norm else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, cross=cross) for _ in range(n_layers))
        self.final_norm = make_norm(cfg)
        self.flex = cfg.attention == "flex"

    def init_parameters(self, init: ParamInit) -> None:
        init.normal_("embed.weight", self.embed.weight, init.std)
        if self.positions is not None:
            init.normal_("positions.weight", self.positions.weight, init.std)
        for name in ("embed_norm", "final_norm"):
            if getattr(self, name) is not None:
                init.norm_(name, getattr(self, name))

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, causal: bool,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                caches: list[LayerCache] | None = None, key_positions: torch.Tensor | None = None,
                checkpointing: bool = False) -> torch.Tensor:
        """ids (B, T) at positions (T,) or (B, T) -> final hidden states (B, T, C).

        mask: (B, 1, T, S) bool or None (plain causal when `causal`, else full attention). With caches, ids are
        only the new positions and S counts every key so far, at key_positions (S,) or (B, S) (default: the
        positions themselves, i.e. no cache).
        """
        x = self.embed(ids)
        if self.positions is not None:
            x = x + self.positions(positions)
        x = self.dropout(self.embed_norm(x) if self.embed_norm is not None else x)  # (B, T, C)
        rope = self.rotary(positions) if self.rotary is not None else None
        if self.relative is not None:
            keys = positions if key_positions is None else key_positions
            mask, causal = with_bias(mask, self.relative(positions, keys).to(x.dtype), causal), False
        if self.flex and caches is None and flex_runs(x):  # the same masks, as block masks (flex.py)
            B, T = ids.shape
            mask = block_mask(mask, causal, B, T, T, x.device)
            if memory is not None:
                memory_mask = block_mask(memory_mask, False, B, T, memory.shape[1], x.device)
        ctx = Context(mask, causal, rope, memory, memory_mask)
        return self.final_norm(run_blocks(self.blocks, x, ctx, checkpointing, caches))
