"""Parameter and training-FLOP accounting of the shared components, from a config alone: nothing is built.

Each architecture sums these pieces over its own layout (its package's accounting module), and a test checks
that the count equals `sum(p.numel() for p in model.parameters())` of the built model for every preset.
`embedding` holds token embeddings (untied copies and the LM head included), learned position tables and
relative-position tables; `non_embedding` holds the rest: blocks, final norms and the optional embedding norm.

Training FLOPs count matrix multiplications only. An (m x k) @ (k x n) product costs 2*m*n*k FLOPs forward;
backward computes the gradients of both operands, two products of the same size, so training costs 3 x
forward. Embedding lookups, norms, activations, rotary rotations, softmax, bias adds, dropout and the loss are
not matmuls and are not counted (each is O(tokens * C), against O(tokens * C^2) for the projections).

Notation: C = d_model, D = head size, H query heads, G key/value heads (H * D = C), F = the feed-forward width,
V = vocabulary. One block on n query tokens attending over m keys costs forward
    projections q, k, v and out   2nC(HD + 2GD) + 2nHDC  = 4nC^2 (1 + G/H)
    scores QK^T and weighted sum  2 * 2nmHD              = 4nmC
    feed-forward                  2nC(kF) + 2nFC         = 2nCF(k + 1),  k = 2 for gated MLPs, else 1
Cross-attention on T decoder positions over S encoder states: q and out on T, k and v on S, scores T x S.
Attention is counted as the full score matrix for causal and prefix-LM masks alike: that is what SDPA's math
and masked kernels compute. A fused causal kernel skips about half of the scores, so there the count
overstates the work by about 2n^2C per block and forward pass. Logits are computed only where there is a
label (`loss.target_losses`).
"""
from __future__ import annotations

import math
from typing import Callable

from seqlab_plugins.architectures.components import TransformerConfig


def norm_parameters(cfg: TransformerConfig, dim: int | None = None) -> int:
    dim = dim or cfg.d_model
    return dim * (2 if cfg.norm == "layernorm" and cfg.bias else 1)


def _linear(cfg: TransformerConfig, fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + (fan_out if cfg.bias else 0)


def attention_parameters(cfg: TransformerConfig, cross: bool = False) -> int:
    C, q, kv = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    projections = (_linear(cfg, C, q) + _linear(cfg, C, 2 * kv)) if cross else _linear(cfg, C, q + 2 * kv)
    qk_norm = 2 * cfg.head_dim if cfg.qk_norm else 0  # RMSNorm gains only
    return projections + _linear(cfg, q, C) + qk_norm


def feed_forward_parameters(cfg: TransformerConfig) -> int:
    F = cfg.ffn_dim
    return _linear(cfg, cfg.d_model, 2 * F if cfg.gated else F) + _linear(cfg, F, cfg.d_model)


def block_parameters(cfg: TransformerConfig, cross: bool = False) -> int:
    """One pre-LN block: a norm before each sub-layer; a cross-attention sub-layer if `cross`."""
    sublayers = attention_parameters(cfg) + feed_forward_parameters(cfg)
    if cross:
        sublayers += attention_parameters(cfg, cross=True)
    return sublayers + (3 if cross else 2) * norm_parameters(cfg)


def position_parameters(cfg: TransformerConfig) -> int:
    """Positional parameters of one stack: a learned table, a relative bias table, or none (rope)."""
    if cfg.positions == "learned":
        return cfg.max_positions * cfg.d_model
    if cfg.positions == "t5_relative_bias":
        return cfg.relative_buckets * cfg.n_heads
    return 0


def block_forward_flops(cfg: TransformerConfig, n: int, m: int) -> int:
    """A self-attention block on n query tokens attending over m keys, feed-forward included."""
    C, F, q, kv = cfg.d_model, cfg.ffn_dim, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    projections = 2 * n * C * (q + 2 * kv) + 2 * n * q * C
    feed_forward = 2 * n * C * (2 * F if cfg.gated else F) + 2 * n * F * C
    return projections + 4 * n * m * q + feed_forward


def cross_attention_forward_flops(cfg: TransformerConfig, T: int, S: int) -> int:
    """Cross-attention of T decoder positions over S encoder states."""
    C, q, kv = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return 2 * T * C * q + 2 * S * C * 2 * kv + 2 * T * q * C + 4 * T * S * q


def closest_depth(cost: Callable[[int], int], target: int) -> int:
    """The depth >= 1 whose cost is closest to target (the smaller on a tie); cost is affine in depth."""
    per_layer = cost(2) - cost(1)
    exact = 1 + (target - cost(1)) / per_layer
    candidates = sorted({max(1, math.floor(exact)), max(1, math.ceil(exact))})
    return min(candidates, key=lambda n: abs(cost(n) - target))
