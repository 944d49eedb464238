"""FlexAttention (`architecture.attention=flex`): the masks SDPA takes, as block masks.

SDPA with an explicit mask computes every score of (T, S) and then discards the masked ones; its fused causal
path takes no mask at all. A block mask records which (128 x 128) tiles have any allowed score, and the kernel
skips the rest: in a packed row the examples are short against the row, so most tiles lie between two
examples (75% of them for ~100-token examples in 1024-token rows). The mask is the same one SDPA gets (segment,
prefix-LM, padding), so both paths compute the same attention.

Where it runs: on CUDA, in training and inference. Not on CPU, where the layers take SDPA: in torch 2.13
FlexAttention has no CPU backward kernel, and its compiled CPU forward is not reliable (measured on packed
segment masks: wrong outputs at batch 4, and a C++ compile error when a new sequence length recompiles it),
while the eager fallback materialises every score and is slower than SDPA. Incremental decoding (a
key/value cache) stays on SDPA on every device: it attends one query at a time.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

_compiled: Callable[..., torch.Tensor] | None = None


def flex_runs(x: torch.Tensor) -> bool:
    """Whether FlexAttention runs for this forward pass of activations x (see the module docstring)."""
    return x.device.type == "cuda"


def block_mask(mask: torch.Tensor | None, causal: bool, B: int, T: int, S: int, device: torch.device) -> BlockMask:
    """SDPA's mask -> a BlockMask of B rows, T queries and S keys.

    mask: (B, 1, T or 1, S) bool (True = attend), or None for plain causal attention (`causal`) or none at all.
    The dense mask is expanded to (B, T, S) bools once per forward pass and indexed by the mask function, so any
    pattern the models build converts without a mask function of its own.
    """
    if mask is None:
        def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return q >= k if causal else q >= 0
    else:
        dense = mask.expand(B, 1, T, S)[:, 0]  # (B, T, S)

        def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            # The kernels evaluate whole tiles, past T and S too: clamp the indices so the lookup stays in bounds
            # (compiled code has no bounds check), and allow nothing out there.
            inside = (q < T) & (k < S)
            return inside & dense[b, q.clamp(max=T - 1), k.clamp(max=S - 1)]
    return create_block_mask(mask_mod, B, None, T, S, device=device)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockMask, enable_gqa: bool) -> torch.Tensor:
    """q (B, H, T, D), k and v (B, G, S, D) -> (B, H, T, D) under the block mask.

    FlexAttention is only fast compiled (eager, it runs a reference implementation that materialises the
    scores), so it is compiled once per process; inside a block compiled by trainer.compile it is traced into
    the block's graph instead.
    """
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(flex_attention)
    return _compiled(q, k, v, block_mask=mask, enable_gqa=enable_gqa)
