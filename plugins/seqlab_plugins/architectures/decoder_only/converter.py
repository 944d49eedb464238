"""Features -> the decoder-only layout: one sequence `inputs + targets`, labels on the targets."""
from __future__ import annotations

import numpy as np
import torch

from seqlab.errors import DataError
from seqlab.interfaces import Features
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.packing import segment_positions


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
        if f.packed:
            return self._packed(f)
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

    def _packed(self, f: Features) -> dict[str, torch.Tensor]:
        """Packed rows: example k's inputs then its targets, for k = 1, 2, ...; labels only where the next token
        is a target of the same example, positions restarting at every example."""
        B = len(f.input_lengths)
        K = int(max(f.input_segments.max(initial=0), f.target_segments.max(initial=0))) + 1
        rows = np.arange(B)[:, None]
        flat_in, flat_out = rows * K + f.input_segments, rows * K + f.target_segments  # (B, Li), (B, Lt)
        in_len = np.bincount(flat_in.ravel(), minlength=B * K).reshape(B, K)
        out_len = np.bincount(flat_out.ravel(), minlength=B * K).reshape(B, K)
        in_len[:, 0] = out_len[:, 0] = 0  # segment 0 is padding
        # Input column c of example k lands after the targets of examples 1..k-1; target column c after the
        # inputs of examples 1..k.
        out_before = (np.cumsum(out_len, axis=1) - out_len).ravel()
        in_through = np.cumsum(in_len, axis=1).ravel()
        total = in_len.sum(axis=1) + out_len.sum(axis=1)  # (B,)
        width = int(total.max())
        if width - 1 > self.max_positions:
            raise DataError(f"a {width - 1}-token sequence exceeds architecture.max_positions={self.max_positions}; "
                            "lower data.seq_len or raise max_positions")
        seq = np.full((B, width), self.pad_id, dtype=np.int64)
        seg = np.zeros((B, width), dtype=np.int64)
        is_input = np.zeros((B, width), dtype=bool)
        for ids, segments, flat, before, input_side in ((f.inputs, f.input_segments, flat_in, out_before, True),
                                                         (f.targets, f.target_segments, flat_out, in_through, False)):
            r, c = np.nonzero(segments)
            cols = c + before[flat[r, c]]
            seq[r, cols], seg[r, cols], is_input[r, cols] = ids[r, c], segments[r, c], input_side
        nxt_target = (seg[:, 1:] > 0) & ~is_input[:, 1:] & (seg[:, 1:] == seg[:, :-1])  # (B, W-1)
        labels = np.where(nxt_target, seq[:, 1:], IGNORE_INDEX)
        # A row's last token is only a label, as in the unpadded layout: it counts as padding in the inputs, so
        # every row reads (S + T - 1) positions, the number the FLOP accounting and the budgets use.
        segments = seg[:, :-1].copy()  # (B, W-1)
        short = np.nonzero(total < width)[0]
        segments[short, total[short] - 1] = 0
        batch = {
            "input_ids": torch.from_numpy(np.ascontiguousarray(seq[:, :-1])),  # (B, W-1)
            "labels": torch.from_numpy(np.ascontiguousarray(labels)),  # (B, W-1)
            "num_tokens": int((segments > 0).sum()),
            "segments": torch.from_numpy(np.ascontiguousarray(segments)),  # (B, W-1)
            "positions": torch.from_numpy(segment_positions(segments)),  # (B, W-1)
        }
        if self.prefix_lm:
            batch["prefix"] = torch.from_numpy(np.ascontiguousarray(is_input[:, :-1]))  # (B, W-1) bool
        return batch
