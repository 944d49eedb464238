"""Features -> the encoder-decoder layout: encoder ids, decoder ids (targets shifted right behind BOS), labels."""
from __future__ import annotations

import numpy as np
import torch

from seqlab.errors import DataError
from seqlab.interfaces import Features
from seqlab.tokenizer import BOS_ID
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.packing import segment_positions, segment_starts


class Seq2SeqConverter:
    """Features -> encoder ids and decoder ids (targets shifted right behind BOS), labels = targets.

    Runs in data-loader workers, vectorised over the batch.
    """

    def __init__(self, pad_id: int, max_positions: int):
        self.pad_id = pad_id
        self.max_positions = max_positions

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        li, lt = f.input_lengths, f.target_lengths  # (B,)
        if (li == 0).any():
            raise DataError("seq2seq needs at least one input token per example; give the objective a mode token "
                            "(e.g. objective.mode_token=true for packed CLM)")
        longest = max(int(li.max()), int(lt.max()))
        if longest > self.max_positions:
            raise DataError(f"a {longest}-token sequence exceeds architecture.max_positions={self.max_positions}; "
                            "lower data.seq_len or raise max_positions")
        inputs = f.inputs[:, : int(li.max())]
        targets = f.targets[:, : int(lt.max())]  # (B, T)
        cols = np.arange(targets.shape[1])[None, :]
        decoder_ids = np.concatenate([np.full((len(lt), 1), BOS_ID, dtype=np.int64), targets[:, :-1]], axis=1)
        decoder_ids = np.where(cols < lt[:, None], decoder_ids, self.pad_id)
        labels = np.where(cols < lt[:, None], targets, IGNORE_INDEX)
        batch = {
            "input_ids": torch.from_numpy(np.ascontiguousarray(inputs)),  # (B, S)
            "input_lengths": torch.from_numpy(li),
            "decoder_input_ids": torch.from_numpy(np.ascontiguousarray(decoder_ids)),  # (B, T)
            "labels": torch.from_numpy(np.ascontiguousarray(labels)),  # (B, T)
            "num_tokens": int(li.sum() + lt.sum()),
        }
        if f.packed:
            enc_seg = f.input_segments[:, : inputs.shape[1]]
            dec_seg = f.target_segments[:, : targets.shape[1]]
            # Each example's decoder input starts with BOS, not with the previous example's last target.
            batch["decoder_input_ids"] = torch.from_numpy(np.where(
                segment_starts(dec_seg), BOS_ID, batch["decoder_input_ids"].numpy()))
            batch.update({
                "input_segments": torch.from_numpy(np.ascontiguousarray(enc_seg)),  # (B, S)
                "input_positions": torch.from_numpy(segment_positions(enc_seg)),  # (B, S)
                "decoder_segments": torch.from_numpy(np.ascontiguousarray(dec_seg)),  # (B, T)
                "decoder_positions": torch.from_numpy(segment_positions(dec_seg)),  # (B, T)
            })
        return batch
