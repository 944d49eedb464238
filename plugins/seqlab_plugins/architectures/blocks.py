"""Transformer pieces shared by the architectures: pre-LN blocks, SDPA attention, masks, loss.

Both architectures are built from these same blocks, so a comparison between them measures the layout
(encoder-decoder against decoder-only), not implementation differences.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100  # label of positions that carry no loss (inputs, padding)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool,
           dropout: float) -> torch.Tensor:
    """(B, H, T, D) queries over (B, H, S, D) keys/values. A causal call without a mask tensor takes SDPA's
    fused causal path; a mask (bool, True = attend) covers padding and prefix-LM patterns."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                          dropout_p=dropout)


class LayerCache:
    """One block's attention state during incremental decoding (inference only).

    Self-attention keys/values go into buffers of a fixed capacity allocated on first use, so each step
    writes only its new positions instead of copying the whole past. The cross-attention projection of the
    encoder states is computed once and kept.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.k: torch.Tensor | None = None  # (B, H, capacity, D)
        self.v: torch.Tensor | None = None  # (B, H, capacity, D)
        self.length = 0  # positions filled so far
        self.memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # 2x (B, H, S, D)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, T, D) new keys/values after the past ones -> all of them so far, 2x (B, H, length, D)."""
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


class SelfAttention(nn.Module):
    """Multi-head self-attention with biases; one fused projection for queries, keys and values."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool,
                cache: LayerCache | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With a cache, x holds only the new positions and the mask (if any) covers
        all keys so far, (B, 1, T, S); the new keys/values are appended to the cache."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # 3x (B, H, T, D)
        if cache is not None:
            k, v = cache.append(k, v)  # 2x (B, H, S, D)
            if causal and mask is None:
                # SDPA's is_causal aligns the diagonal top-left; here the T queries are the last T of S keys.
                S = k.shape[2]
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
        y = attend(q, k, v, mask, causal, self.dropout if self.training else 0.0)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class CrossAttention(nn.Module):
    """Decoder queries over encoder states, with biases; keys and values share one projection."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                cache: LayerCache | None = None) -> torch.Tensor:
        """x (B, T, C) over memory (B, S, C) -> (B, T, C). With a cache, the memory's keys/values are projected
        on the first call only: the encoder states do not change while decoding."""
        B, T, C = x.shape
        S, H = memory.shape[1], self.n_heads
        q = self.q(x).view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        if cache is not None and cache.memory_kv is not None:
            k, v = cache.memory_kv
        else:
            k, v = self.kv(memory).view(B, S, 2, H, C // H).permute(2, 0, 3, 1, 4)  # 2x (B, H, S, D)
            if cache is not None:
                cache.memory_kv = (k, v)
        y = attend(q, k, v, memory_mask, False, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """Pre-LN: a norm at the start of every sub-layer, residuals outside it (the paper's choice for stability).

    Self-attention, then cross-attention over encoder states (decoder blocks of seq2seq only), then the
    feed-forward layer.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, cross: bool = False):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.cross_norm = nn.LayerNorm(d_model) if cross else None
        self.cross = CrossAttention(d_model, n_heads, dropout) if cross else None
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask, causal, cache))
        if self.cross is not None:
            x = x + self.dropout(self.cross(self.cross_norm(x), memory, memory_mask, cache))
        return x + self.ff(self.ff_norm(x))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *args, checkpointing: bool = False,
               caches: list[LayerCache] | None = None) -> torch.Tensor:
    """Apply blocks in order; with checkpointing, keep only block inputs and recompute the rest in backward.

    caches: one LayerCache per block for incremental decoding. Never checkpointed: a recomputed block would
    append its keys/values twice.
    """
    if caches is not None:
        for block, cache in zip(blocks, caches, strict=True):
            x = block(x, *args, cache=cache)
        return x
    for block in blocks:
        x = checkpoint(block, x, *args, use_reentrant=False) if checkpointing else block(x, *args)
    return x


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


def init_linear_and_embeddings(module: nn.Module, std: float, n_residual_layers: int) -> None:
    """Normal(0, std) weights and zero biases; output projections of residual branches scaled down by
    sqrt(2 * layers) (GPT-2) so the residual stream's variance does not grow with depth."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            residual = name.endswith(("attn.out", "cross.out", "ff.down"))
            nn.init.normal_(sub.weight, std=std / math.sqrt(2 * n_residual_layers) if residual else std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=std)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def target_losses(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (B, T, C), labels (B, T) -> per-example summed cross-entropy (B,) and label counts (B,).

    Logits are computed only where there is a label: the vocabulary projection is the largest matmul of a small
    model, and under denoising or prefix-LM objectives about half of a decoder-only sequence is input without
    loss. (Selecting positions makes a data-dependent shape, one host sync; cheap next to the saved matmul.)
    """
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)  # (N,) each
    logits = head(hidden[rows, cols])  # (N, V)
    loss = F.cross_entropy(logits.float(), labels[rows, cols], reduction="none")  # (N,)
    B = labels.shape[0]
    return loss.new_zeros(B).index_add_(0, rows, loss), torch.bincount(rows, minlength=B)


def label_logprobs(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, C), labels (B, T) -> (B, L) float32: the log-probability of each row's j-th label at
    column j (labels are the targets in order, wherever the layout puts them), 0 past the row's last label.

    The scoring twin of target_losses (evaluation ranks candidates by these), computed the same way: logits
    only where there is a label, log-softmax in float32.
    """
    is_label = labels != IGNORE_INDEX  # (B, T)
    rows, cols = is_label.nonzero(as_tuple=True)  # (N,) each, row-major: each row's labels in order
    logits = head(hidden[rows, cols]).float()  # (N, V)
    picked = logits.log_softmax(dim=-1).gather(1, labels[rows, cols][:, None]).squeeze(1)  # (N,)
    rank = is_label.long().cumsum(dim=1)[rows, cols] - 1  # (N,): which target each label is
    out = torch.zeros((labels.shape[0], int(is_label.sum(dim=1).max()) if len(rows) else 0),
                      dtype=torch.float32, device=labels.device)
    out[rows, rank] = picked
    return out
