"""Losses and scores over labelled positions, shared by every architecture: logits are computed only where
there is a label, and, given a chunk size, never for all labelled positions at once."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from seqlab.interfaces import LossOutput

IGNORE_INDEX = -100  # label of positions that carry no loss (inputs, padding)


def target_losses(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, z_loss: float = 0.0,
                  chunk_size: Optional[int] = None) -> LossOutput:
    """hidden (B, T, C), labels (B, T) -> per-example summed cross-entropy (B,), label counts (B,) and, with
    z_loss > 0, the per-example sum of z_loss * logsumexp(logits)^2 (PaLM's auxiliary loss).

    Logits are computed only where there is a label: the vocabulary projection is the largest matmul of a small
    model, and under denoising or prefix-LM objectives about half of a decoder-only sequence is input without
    loss. (Selecting positions makes a data-dependent shape, one host sync; cheap next to the saved matmul.)
    With `chunk_size`, at most that many positions' logits exist at a time, in forward and backward (see
    `chunked_cross_entropy`).
    """
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)  # (N,) each
    loss, lse = position_losses(hidden[rows, cols], head, labels[rows, cols], chunk_size, need_lse=z_loss > 0)
    B = labels.shape[0]
    regulariser = None
    if lse is not None:
        z = z_loss * lse.square()  # (N,)
        regulariser = z.new_zeros(B).index_add_(0, rows, z)
    return LossOutput(loss.new_zeros(B).index_add_(0, rows, loss), torch.bincount(rows, minlength=B), regulariser)


def label_logprobs(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """hidden (B, T, C), labels (B, T) -> (B, L) float32: the log-probability of each row's j-th label at
    column j (labels are the targets in order, wherever the layout puts them), 0 past the row's last label.

    The scoring twin of target_losses (evaluation ranks candidates by these), computed the same way: logits
    only where there is a label, log-softmax in float32, `chunk_size` positions at a time if given.
    """
    is_label = labels != IGNORE_INDEX  # (B, T)
    rows, cols = is_label.nonzero(as_tuple=True)  # (N,) each, row-major: each row's labels in order
    # Cross-entropy is the negated log-softmax at the label: the same float32 number, negated exactly.
    picked = -position_losses(hidden[rows, cols], head, labels[rows, cols], chunk_size, need_lse=False)[0]  # (N,)
    rank = is_label.long().cumsum(dim=1)[rows, cols] - 1  # (N,): which target each label is
    out = torch.zeros((labels.shape[0], int(is_label.sum(dim=1).max()) if len(rows) else 0),
                      dtype=torch.float32, device=labels.device)
    out[rows, rank] = picked
    return out


def label_scores(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor,
                 chunk_size: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """label_logprobs and, beside it, (B, L) bool: whether each label is the model's most likely token there
    (greedy decoding would produce it; lm-evaluation-harness's `is_greedy`). For scoring, without gradients:
    logits exist for `chunk_size` labelled positions at a time (1024 if None), in float32."""
    is_label = labels != IGNORE_INDEX  # (B, T)
    rows, cols = is_label.nonzero(as_tuple=True)  # (N,) each, row-major
    h, targets = hidden[rows, cols], labels[rows, cols]  # (N, C), (N,)
    picked = torch.empty(len(rows), dtype=torch.float32, device=labels.device)  # (N,)
    top = torch.empty(len(rows), dtype=torch.bool, device=labels.device)  # (N,)
    step = chunk_size or 1024
    for start in range(0, len(rows), step):
        logits = head(h[start: start + step]).float()  # (n, V)
        target = targets[start: start + step, None]  # (n, 1)
        picked[start: start + step] = (logits.gather(1, target) - torch.logsumexp(logits, dim=1, keepdim=True))[:, 0]
        top[start: start + step] = logits.argmax(dim=1) == target[:, 0]
    rank = is_label.long().cumsum(dim=1)[rows, cols] - 1  # (N,): which target each label is
    width = int(is_label.sum(dim=1).max()) if len(rows) else 0
    logprobs = torch.zeros((labels.shape[0], width), dtype=torch.float32, device=labels.device)
    greedy = torch.zeros((labels.shape[0], width), dtype=torch.bool, device=labels.device)
    logprobs[rows, rank], greedy[rows, rank] = picked, top
    return logprobs, greedy


def position_losses(h: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk_size: Optional[int],
                    need_lse: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """h (N, C), targets (N,) -> float32 cross-entropy (N,) and, if `need_lse`, the logsumexp of the logits
    (N,), else None (the plain path would keep another (N, V) tensor for backward).

    The chunked path takes the head's weight directly, so it needs a bias-free nn.Linear (both layouts' heads)
    over plain tensors; anything else (a DTensor shard under tensor parallelism, a head with a bias) takes the
    plain path, which only costs memory. Under FSDP2 and fairscale the root's gathered weight is a plain tensor
    inside `loss` (the strategies route it through the root's forward), so chunking applies there too.
    """
    plain = (torch.Tensor, nn.Parameter)
    if (chunk_size is not None and isinstance(head, nn.Linear) and head.bias is None
            and type(head.weight) in plain and type(h) in plain):
        loss, lse = chunked_cross_entropy(h, head.weight, targets, chunk_size)
        return loss, lse if need_lse else None
    logits = head(h).float()  # (N, V)
    loss = F.cross_entropy(logits, targets, reduction="none")  # (N,)
    return loss, logits.logsumexp(dim=-1) if need_lse else None


def chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """h (N, C), weight (V, C), targets (N,) -> float32 cross-entropy (N,) and logsumexp (N,) of h @ weight.T,
    `chunk_size` positions at a time, with the dtypes of the plain path `head(h).float()`: the matmul in the
    autocast dtype when autocast is on (else the weight's), softmax and logsumexp in float32."""
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    return _ChunkedLinearCrossEntropy.apply(h, weight, targets, chunk_size, dtype)


def _chunks(n: int, chunk_size: int) -> list[slice]:
    return [slice(start, start + chunk_size) for start in range(0, n, chunk_size)]


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Peak memory O(chunk_size x V) instead of O(N x V): forward keeps only the (N,) logsumexp, and backward
    recomputes each chunk's logits to form its gradient, then folds it into grad h and grad weight at once.

    Backward recomputes (one more matmul per chunk) instead of forward computing the gradients ahead (Liger's
    fused linear cross-entropy) because grad weight sums over positions weighted by the upstream gradient,
    which forward does not know: recomputing is exact whatever the caller does with the per-example sums.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        loss = torch.empty(len(h), dtype=torch.float32, device=h.device)  # (N,)
        lse = torch.empty_like(loss)  # (N,)
        with torch.autocast(h.device.type, enabled=False):  # the dtypes below are explicit
            w = weight.to(dtype)  # (V, C)
            for s in _chunks(len(h), chunk_size):
                logits = (h[s].to(dtype) @ w.T).float()  # (n, V)
                lse[s] = logits.logsumexp(dim=-1)
                loss[s] = lse[s] - logits.gather(1, targets[s, None]).squeeze(1)
        ctx.save_for_backward(h, weight, targets)
        ctx.chunk_size, ctx.dtype = chunk_size, dtype
        return loss, lse

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor, grad_lse: torch.Tensor) \
            -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], None, None, None]:
        h, weight, targets = ctx.saved_tensors
        need_h, need_weight = ctx.needs_input_grad[:2]
        # Unused outputs' gradients arrive as zeros (N,) (materialised), e.g. grad_lse without a z-loss.
        grad_h = torch.empty_like(h) if need_h else None  # (N, C)
        # Summed over chunks in float32, as the plain path's single matmul accumulates (V, C).
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        with torch.autocast(h.device.type, enabled=False):
            w = weight.to(ctx.dtype)  # (V, C)
            for s in _chunks(len(h), ctx.chunk_size):
                h_s = h[s].to(ctx.dtype)  # (n, C)
                # exp(log_softmax), not exp(logits - lse): the plain path's rounding (its cross-entropy backward).
                probs = (h_s @ w.T).float().log_softmax(dim=-1).exp_()  # (n, V)
                # d loss / d logits = softmax - onehot(target), d lse / d logits = softmax.
                grad = probs.mul_((grad_loss[s] + grad_lse[s])[:, None])
                grad.scatter_add_(1, targets[s, None], -grad_loss[s, None])
                grad = grad.to(ctx.dtype)  # (n, V): the matmuls' dtype, as autocast casts the plain path's
                if grad_h is not None:
                    grad_h[s] = grad @ w
                if grad_weight is not None:
                    grad_weight += grad.T @ h_s
        return grad_h, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None
