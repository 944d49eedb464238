"""Transformer pieces shared by the architectures: pre-LN blocks, SDPA attention, masks, loss.

Both architectures are built from these same blocks, so a comparison between them measures the layout
(encoder-decoder against decoder-only), not implementation differences.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # label of positions that carry no loss (inputs, padding)


class SelfAttention(nn.Module):
    """Multi-head attention with biases, computed by scaled_dot_product_attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # 3x (B, H, T, D)
        # mask None means plain causal attention, the case SDPA's fused kernels handle without a mask tensor.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class DecoderBlock(nn.Module):
    """Pre-LN: a norm at the start of every sub-layer, residuals outside it (the paper's choice for stability)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask))
        return x + self.ff(self.ff_norm(x))


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
            scale = 1 / math.sqrt(2 * n_residual_layers) if name.endswith(("attn.out", "ff.down")) else 1.0
            nn.init.normal_(sub.weight, std=std * scale)
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
