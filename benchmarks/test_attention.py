"""Causal self-attention, forward + backward: seqlab's Attention against a plain reference and bare SDPA.

Three implementations at each sequence length, in the same run:
- seqlab: the `Attention` module both architectures use, with the default components (fused qkv projection,
  SDPA's causal path, output projection).
- plain: the textbook `softmax(Q K^T / sqrt(d) + causal mask) V` (nanoGPT's non-flash path) with the same
  projections (the module's own weights), so it is the reference the ratios divide by.
- sdpa: one `F.scaled_dot_product_attention(q, k, v, is_causal=True)` on q, k, v that are already projected;
  seqlab's time less this one is what the module adds around the kernel (projections and reshapes).
Each round computes the gradients of the input and weights (q, k, v for sdpa) with `torch.autograd.grad`, so no
gradient accumulates between rounds. Batch 4, d_model 256, 4 heads of 64, float32 on CPU with torch's default
thread count; the module runs in ~20 s on 2 cores. tokens/s counts B * T tokens per round; `vs_plain` is an
implementation's tokens/s over plain's. Run with `make bench`; `benchmarks/profile_model.py` reuses this setup.
"""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from seqlab_plugins.architectures.attention import Attention, Context
from seqlab_plugins.architectures.components import TransformerConfig

BATCH_SIZE = 4
D_MODEL = 256
N_HEADS = 4
# Rounds per length: roughly a second per implementation, as plain's cost grows with T^2.
ROUNDS = {128: 100, 256: 50, 512: 20, 1024: 8, 2048: 4}
IMPLEMENTATIONS = ["plain", "seqlab", "sdpa"]  # plain first: the others' ratios need its number


CAUSAL = Context(mask=None, causal=True)  # no mask tensor: SDPA's fused causal path


def new_attention() -> Attention:
    torch.manual_seed(0)
    return Attention(TransformerConfig(name="attention", d_model=D_MODEL, n_heads=N_HEADS, dropout=0.0))


def plain_attention(attn: Attention, x: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
    """The reference: attn's own projections around an explicit score matrix; causal_mask (T, T) is 0 / -inf."""
    B, T, C = x.shape
    q, k, v = attn.qkv(x).view(B, T, 3, N_HEADS, C // N_HEADS).permute(2, 0, 3, 1, 4)  # 3x (B, H, T, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // N_HEADS) + causal_mask  # (B, H, T, T)
    y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, D)
    return attn.out(y.transpose(1, 2).reshape(B, T, C))


def additive_causal_mask(T: int) -> torch.Tensor:
    """(T, T): 0 on and below the diagonal, -inf above it; built once per length, like nanoGPT's buffer."""
    return torch.full((T, T), float("-inf")).triu(1)


def forward_backward(attn: Attention, implementation: str, T: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    """One round of `implementation` at length T: forward, then the gradients of its inputs and weights."""
    generator = torch.Generator().manual_seed(T)
    if implementation == "sdpa":
        shape = (BATCH_SIZE, N_HEADS, T, D_MODEL // N_HEADS)
        q, k, v = (torch.randn(shape, generator=generator, requires_grad=True) for _ in range(3))
        grad_y = torch.randn(shape, generator=generator)
        return lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), grad_y)
    x = torch.randn(BATCH_SIZE, T, D_MODEL, generator=generator, requires_grad=True)
    grad_y = torch.randn(BATCH_SIZE, T, D_MODEL, generator=generator)
    inputs = (x, *attn.parameters())
    if implementation == "seqlab":
        return lambda: torch.autograd.grad(attn(x, CAUSAL), inputs, grad_y)
    mask = additive_causal_mask(T)
    return lambda: torch.autograd.grad(plain_attention(attn, x, mask), inputs, grad_y)


@pytest.fixture(scope="module")
def attention() -> Attention:
    return new_attention()


@pytest.fixture(scope="module")
def throughput() -> dict[tuple[int, str], float]:
    """tokens/s of each (length, implementation) measured in this module, for the ratios."""
    return {}


@pytest.mark.parametrize("T, implementation", [(T, impl) for T in ROUNDS for impl in IMPLEMENTATIONS],
                         ids=[f"T{T}-{impl}" for T in ROUNDS for impl in IMPLEMENTATIONS])
def test_attention_forward_backward(benchmark, attention, throughput, T, implementation):
    # The same job: the module and the reference agree (SDPA alone has no projections to compare).
    x = torch.randn(2, T, D_MODEL, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(attention(x, CAUSAL), plain_attention(attention, x, additive_causal_mask(T)),
                                   rtol=1e-4, atol=1e-5)

    benchmark.group = f"attention fwd+bwd T={T} B={BATCH_SIZE} d_model={D_MODEL} heads={N_HEADS} causal"
    benchmark.pedantic(forward_backward(attention, implementation, T), rounds=ROUNDS[T], iterations=1,
                       warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    tokens = BATCH_SIZE * T
    throughput[T, implementation] = tokens / benchmark.stats.stats.median
    benchmark.extra_info["tokens_per_s"] = round(throughput[T, implementation])
    benchmark.extra_info["tokens_per_round"] = tokens
    if implementation != "plain" and (T, "plain") in throughput:
        benchmark.extra_info["vs_plain"] = round(throughput[T, implementation] / throughput[T, "plain"], 2)
