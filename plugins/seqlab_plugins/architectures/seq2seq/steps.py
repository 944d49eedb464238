"""Incremental decoding of a seq2seq model: the generation.DecodeSteps protocol."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from seqlab.errors import require
from seqlab.tokenizer import BOS_ID
from seqlab_plugins.architectures.attention import LayerCache
from seqlab_plugins.architectures.generation import no_prefix

if TYPE_CHECKING:
    from seqlab_plugins.architectures.seq2seq.model import Seq2Seq


class Seq2SeqSteps:
    """Encode the prompts once, then decode from BOS. With the cache, each step runs only the newest token:
    self-attention keys/values accumulate, the encoder states' cross-attention keys/values are reused."""

    def __init__(self, model: "Seq2Seq", input_ids: torch.Tensor, input_lengths: torch.Tensor,
                 max_new_tokens: int, use_cache: bool, target_prefix: torch.Tensor | None = None):
        target_prefix = no_prefix(input_ids) if target_prefix is None else target_prefix  # (B, P)
        P = target_prefix.shape[1]
        require(P + max_new_tokens <= model.max_positions, "generation.max_new_tokens", max_new_tokens,
                f"after a {P}-token target prefix exceeds the decoder's "
                f"architecture.max_positions={model.max_positions}")
        if input_ids.shape[1] > model.max_positions:
            raise ValueError(f"a {input_ids.shape[1]}-token prompt exceeds the encoder's "
                             f"architecture.max_positions={model.max_positions}")
        self.model = model
        self.memory, self.memory_mask = model.encode(input_ids, input_lengths)  # (B, S, C), (B, 1, 1, S)
        bos = input_ids.new_full((input_ids.shape[0], 1), BOS_ID)
        self.ids = torch.cat([bos, target_prefix], dim=1)  # (B, t): decoder input so far
        # BOS, the prefix and every generated token but the last are fed: P + max_new_tokens positions.
        self.caches = [LayerCache(P + max_new_tokens) for _ in model.decoder.blocks] if use_cache else None

    def __call__(self, new: torch.Tensor | None) -> torch.Tensor:
        """Feed the last step's tokens (B,) (None at the start) -> next-token logits (B, V)."""
        if new is not None:
            self.ids = torch.cat([self.ids, new[:, None]], dim=1)
        fresh = self.ids if self.caches is None or new is None else self.ids[:, -1:]
        hidden = self.model.decode(fresh, self.memory, self.memory_mask, self.caches)  # (B, T, C)
        return self.model.head(hidden[:, -1])
