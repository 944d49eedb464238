"""Attention for both architectures: SDPA (or FlexAttention, flex.py), grouped-query heads, rotary or relative
positions, and the key/value cache of incremental decoding.

Positional schemes reach attention through `Context`: rotary angles for queries and keys, or an additive
score bias (T5's relative buckets). Learned positions never reach it: they are added to the embeddings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from seqlab_plugins.architectures.components import TransformerConfig
from seqlab_plugins.architectures.flex import flex
from seqlab_plugins.architectures.init import ParamInit


def padding_mask(lengths: torch.Tensor, S: int) -> torch.Tensor:
    """(B, 1, 1, S) bool, True on each row's first `lengths` keys: bidirectional attention without padding."""
    return (torch.arange(S, device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]


def prefix_lm_mask(lengths: torch.Tensor, prefix_lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, 1, T, T) bool, True where a query may attend a key.

    Causal everywhere, bidirectional inside each example's prefix, and never onto padding keys. Every query
    keeps at least key 0, so no row is fully masked (which would make SDPA return NaN).
    """
    pos = torch.arange(T, device=lengths.device)
    causal = pos[None, :] <= pos[:, None]  # (T, T): key <= query
    in_prefix = pos[None, None, :] < prefix_lengths[:, None, None]  # (B, 1, T): key inside the prefix
    key_valid = pos[None, None, :] < lengths[:, None, None]  # (B, 1, T)
    return ((causal[None] | in_prefix) & key_valid)[:, None]  # (B, 1, T, T)


def segment_mask(query_segments: torch.Tensor, key_segments: torch.Tensor, causal: bool,
                 key_prefix: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) and (B, S) segment ids of packed rows -> (B, 1, T, S) bool, True where a query may attend a key.

    A query attends only keys of its own example (causally when `causal`, and also onto the keys of its
    example's bidirectional prefix, key_prefix (B, S) bool, for a prefix-LM). A padding query (segment 0)
    attends every key: its output is never used, and a fully masked row would make SDPA return NaN, which
    would reach real positions through the next block's zero attention weights (0 * NaN).
    """
    allowed = query_segments[:, :, None] == key_segments[:, None, :]  # (B, T, S)
    if causal:
        T, S = query_segments.shape[1], key_segments.shape[1]
        order = causal_mask(T, S, query_segments.device)[None]  # (1, T, S)
        if key_prefix is not None:
            order = order | key_prefix[:, None, :]
        allowed = allowed & order
    return (allowed | (query_segments == 0)[:, :, None])[:, None]


def causal_mask(T: int, S: int, device: torch.device) -> torch.Tensor:
    """(T, S) bool: the T queries are the last T of S keys, each attending itself and the keys before it."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)


@dataclass
class Context:
    """What every block of a stack sees in one forward pass, computed once by the model."""

    # (B, 1, T, S) bool (True = attend) or float (added to scores); a BlockMask (attention=flex, flex.py), which
    # holds the causal pattern too; None: no mask.
    mask: torch.Tensor | BlockMask | None
    causal: bool  # with mask None: SDPA's fused causal path
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin of the query positions, (B or 1, 1, T, D)
    memory: torch.Tensor | None = None  # (B, S, C) encoder states, for cross-attention
    memory_mask: torch.Tensor | BlockMask | None = None  # (B, 1, 1 or T, S) bool, or a BlockMask


class LayerCache:
    """One block's attention state during incremental decoding (inference only).

    Self-attention keys/values go into buffers of a fixed capacity allocated on first use, so each step
    writes only its new positions instead of copying the whole past. The cross-attention projection of the
    encoder states is computed once and kept.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.k: torch.Tensor | None = None  # (B, Hkv, capacity, D)
        self.v: torch.Tensor | None = None  # (B, Hkv, capacity, D)
        self.length = 0  # positions filled so far
        self.memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # 2x (B, Hkv, S, D)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, Hkv, T, D) new keys/values after the past ones -> all of them so far, 2x (B, Hkv, length, D)."""
        if self.k is None:
            B, H, _, D = k.shape
            self.k = k.new_empty(B, H, self.capacity, D)
            self.v = v.new_empty(B, H, self.capacity, D)
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"cache of capacity {self.capacity} cannot hold {end} positions")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class Rotary(nn.Module):
    """Rotary position embedding (Su et al.), in the half-split layout: feature i pairs with i + D/2 (the
    layout of Llama's Hugging Face checkpoints, so exports need no permutation)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.theta, self.dim = cfg.rope_theta, cfg.head_dim
        # Derived from the config, never saved: filled here (a model rebuilt to load a checkpoint needs them) and
        # again by init_parameters, after a meta-device build has been materialised.
        self.register_buffer("cos", torch.empty(cfg.max_positions, self.dim), persistent=False)
        self.register_buffer("sin", torch.empty(cfg.max_positions, self.dim), persistent=False)
        self._fill()

    def _fill(self) -> None:
        half = self.dim // 2
        freq = self.theta ** -(torch.arange(half, dtype=torch.float64, device=self.cos.device) / half)  # (D/2,)
        angle = torch.arange(self.cos.shape[0], dtype=torch.float64, device=self.cos.device)[:, None] * freq
        angle = torch.cat([angle, angle], dim=1)  # (P, D)
        with torch.no_grad():
            self.cos.copy_(angle.cos())
            self.sin.copy_(angle.sin())

    def init_parameters(self, init: ParamInit) -> None:
        self._fill()
        init.buffers_done(self)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) or (B, T) -> cos, sin broadcastable over (B, H, T, D)."""
        cos, sin = self.cos[positions], self.sin[positions]  # (T, D) or (B, T, D)
        return (cos[None, None], sin[None, None]) if positions.dim() == 1 else (cos[:, None], sin[:, None])


def rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(B, H, T, D) -> the same features rotated by each position's angles."""
    cos, sin = rope
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


class RelativePositionBias(nn.Module):
    """T5's learned scalar per (head, bucket of key - query distance), added to the attention scores.

    Buckets are exact for small distances and logarithmic up to max_distance. Bidirectional stacks give
    keys before and after the query separate halves of the buckets; causal ones only see the past. One table
    serves every block of a stack (T5 computes it in the first block and reuses it).
    """

    def __init__(self, cfg: TransformerConfig, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.buckets, self.max_distance = cfg.relative_buckets, cfg.relative_max_distance
        self.table = nn.Embedding(cfg.relative_buckets, cfg.n_heads)

    def init_parameters(self, init: ParamInit) -> None:
        init.normal_("table.weight", self.table.weight, init.std)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """Key position - query position (any shape, int64) -> bucket index, same shape."""
        buckets, offset = self.buckets, torch.zeros_like(relative)
        if self.bidirectional:
            buckets //= 2
            offset = (relative > 0).long() * buckets
            distance = relative.abs()
        else:
            distance = (-relative).clamp_min(0)
        exact = buckets // 2
        far = exact + (torch.log(distance.float().clamp_min(1) / exact) / math.log(self.max_distance / exact)
                       * (buckets - exact)).long()
        return offset + torch.where(distance < exact, distance, far.clamp_max(buckets - 1))

    def forward(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """(T,) or (B, T) query positions, (S,) or (B, S) key positions -> bias (B or 1, H, T, S)."""
        q = query_positions if query_positions.dim() == 2 else query_positions[None]
        k = key_positions if key_positions.dim() == 2 else key_positions[None]
        bias = self.table(self.bucket(k[:, None, :] - q[:, :, None]))  # (B, T, S, H)
        return bias.permute(0, 3, 1, 2)


def with_bias(mask: torch.Tensor | None, bias: torch.Tensor, causal: bool) -> torch.Tensor:
    """A bool mask (or causal pattern) and a score bias (B, H, T, S) -> one float mask SDPA adds to scores."""
    T, S = bias.shape[-2:]
    allowed = causal_mask(T, S, bias.device) if causal and mask is None else mask
    if allowed is None:
        return bias
    return bias.masked_fill(~allowed, float("-inf"))


class Attention(nn.Module):
    """Self-attention (queries, keys and values in one projection) or cross-attention over encoder states
    (queries from x, keys and values from memory), with n_kv_heads key/value heads shared by groups of query
    heads."""

    def __init__(self, cfg: TransformerConfig, cross: bool = False):
        super().__init__()
        self.cross, self.dropout = cross, cfg.dropout
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        if cross:
            self.q = nn.Linear(cfg.d_model, q, bias=cfg.bias)
            self.kv = nn.Linear(cfg.d_model, 2 * kv, bias=cfg.bias)
        else:
            self.qkv = nn.Linear(cfg.d_model, q + 2 * kv, bias=cfg.bias)  # stacked [q | k | v]
        self.out = nn.Linear(q, cfg.d_model, bias=cfg.bias)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None

    def init_parameters(self, init: ParamInit) -> None:
        for name in ("q", "kv") if self.cross else ("qkv",):
            init.linear_(name, getattr(self, name), init.std)
        init.linear_("out", self.out, init.residual_std)  # a residual branch's output: scaled down by depth
        if self.q_norm is not None:
            init.ones_("q_norm.weight", self.q_norm.weight)
            init.ones_("k_norm.weight", self.k_norm.weight)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, heads, self.head_dim).transpose(1, 2)  # (B, heads, T, D)

    def forward(self, x: torch.Tensor, ctx: Context, cache: LayerCache | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With a cache, x holds only the new positions, ctx.mask (if any) covers
        every key so far, (B, 1, T, S), and the new keys/values are appended to the cache."""
        B, T, _ = x.shape
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        mask, causal = (ctx.memory_mask, False) if self.cross else (ctx.mask, ctx.causal)
        if self.cross:
            q = self._heads(self.q(x), H)  # (B, H, T, D)
            if cache is not None and cache.memory_kv is not None:
                k, v = cache.memory_kv  # the encoder states do not change while decoding
            else:
                k, v = (self._heads(t, G) for t in self.kv(ctx.memory).split(G * D, dim=-1))  # 2x (B, G, S, D)
                if self.k_norm is not None:
                    k = self.k_norm(k)
                if cache is not None:
                    cache.memory_kv = (k, v)
            if self.q_norm is not None:
                q = self.q_norm(q)
        else:
            q, k, v = self.qkv(x).split([H * D, G * D, G * D], dim=-1)
            q, k, v = self._heads(q, H), self._heads(k, G), self._heads(v, G)  # (B, H|G, T, D)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if ctx.rope is not None:
                q, k = rotate(q, ctx.rope), rotate(k, ctx.rope)
            if cache is not None:
                k, v = cache.append(k, v)  # 2x (B, G, S, D)
                if causal and mask is None:
                    # SDPA's is_causal aligns the diagonal top-left; here the T queries are the last T of S keys.
                    mask, causal = causal_mask(T, k.shape[2], x.device), False
        if isinstance(mask, BlockMask):
            return self.out(flex(q, k, v, mask, enable_gqa=G != H).transpose(1, 2).reshape(B, T, H * D))
        if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)  # a score bias under autocast: SDPA wants the queries' dtype
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=G != H)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(B, T, H * D))
