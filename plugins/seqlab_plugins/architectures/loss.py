"""Losses and scores over labelled positions, shared by every architecture: logits are computed only where
there is a label."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.interfaces import LossOutput

IGNORE_INDEX = -100  # label of positions that carry no loss (inputs, padding)


def target_losses(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, z_loss: float = 0.0) -> LossOutput:
    """hidden (B, T, C), labels (B, T) -> per-example summed cross-entropy (B,), label counts (B,) and, with
    z_loss > 0, the per-example sum of z_loss * logsumexp(logits)^2 (PaLM's auxiliary loss).

    Logits are computed only where there is a label: the vocabulary projection is the largest matmul of a small
    model, and under denoising or prefix-LM objectives about half of a decoder-only sequence is input without
    loss. (Selecting positions makes a data-dependent shape, one host sync; cheap next to the saved matmul.)
    """
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)  # (N,) each
    logits = head(hidden[rows, cols]).float()  # (N, V)
    loss = F.cross_entropy(logits, labels[rows, cols], reduction="none")  # (N,)
    B = labels.shape[0]
    regulariser = None
    if z_loss > 0:
        z = z_loss * logits.logsumexp(dim=-1).square()  # (N,)
        regulariser = z.new_zeros(B).index_add_(0, rows, z)
    return LossOutput(loss.new_zeros(B).index_add_(0, rows, loss), torch.bincount(rows, minlength=B), regulariser)


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
