"""Features -> the decoder-only layout: one sequence `inputs + targets`, labels on the targets."""
from __future__ import annotations

import numpy as np
import torch

from seqlab.errors import DataError
from seqlab.interfaces import Features
from seqlab_plugins.architectures.loss import IGNORE_INDEX


class DecoderOnlyConverter:
    """Features -> one sequence `inputs + targets`, predicting each target token from everything before it.

    Runs in data-loader workers, vectorised over the batch. Labels are the next tokens, kept only where the
    next token is a target; the inputs become a bidirectional prefix when prefix_lm is on.
    """

    def __init__(self, pad_id: int, max_positions: int, prefix_lm: bool):
        self.pad_id = pad_id
        self.max_positions = max_positions
        self.prefix_lm = prefix_lm

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        li, lt = f.input_lengths, f.target_lengths  # (B,)
        total = li + lt
        width = int(total.max())
        t = np.arange(width)[None, :]  # (1, W)
        rows = np.arange(len(li))[:, None]  # (B, 1)
        if f.inputs.shape[1] == 0:
            seq = f.targets[:, :width]
        else:
            from_input = t < li[:, None]
            seq = np.where(from_input, f.inputs[rows, np.minimum(t, f.inputs.shape[1] - 1)],
                           f.targets[rows, np.clip(t - li[:, None], 0, f.targets.shape[1] - 1)])
        seq = np.where(t < total[:, None], seq, self.pad_id)  # (B, W)
        if width - 1 > self.max_positions:
            raise DataError(f"a {width - 1}-token sequence exceeds architecture.max_positions={self.max_positions}; "
                            "lower data.seq_len or raise max_positions")
        nxt = t[:, 1:]  # position of the token each input position predicts
        is_target = (nxt >= li[:, None]) & (nxt < total[:, None])
        labels = np.where(is_target, seq[:, 1:], IGNORE_INDEX)
        lengths = np.maximum(total - 1, 0)
        prefix = li if self.prefix_lm else np.zeros_like(li)
        batch = {
            "input_ids": torch.from_numpy(np.ascontiguousarray(seq[:, :-1])),  # (B, W-1)
            "labels": torch.from_numpy(np.ascontiguousarray(labels)),  # (B, W-1)
            "num_tokens": int(lengths.sum()),
        }
        # Full-length causal batches (packed CLM) need no mask tensor: SDPA takes its fused causal path.
        if prefix.any() or (lengths < width - 1).any():
            batch["lengths"] = torch.from_numpy(lengths)
            batch["prefix_lengths"] = torch.from_numpy(prefix)
        return batch
