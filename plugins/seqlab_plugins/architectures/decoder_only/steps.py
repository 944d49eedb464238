"""Incremental decoding of a decoder-only model: the generation.DecodeSteps protocol."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from seqlab.errors import require
from seqlab.tokenizer import PAD_ID
from seqlab_plugins.architectures.attention import LayerCache, prefix_lm_mask
from seqlab_plugins.architectures.generation import append_rows, no_prefix

if TYPE_CHECKING:
    from seqlab_plugins.architectures.decoder_only.model import DecoderOnly


class DecoderOnlySteps:
    """The prompt is the prefix: bidirectional within itself when the model was trained as a prefix LM,
    generated tokens causal. Each row keeps its true positions, so position embeddings, rotary angles and
    relative biases match unbatched decoding.

    Cached: the right-padded prompts fill cache slots 0..W-1; generated token i of every row goes to slot W+i
    with position length+i, and a key mask hides each row's padding slots. (Attention does not see slot
    order: positions enter through embeddings, rotated keys, or biases computed from each slot's position.)
    Uncached: each row's prompt and tokens are kept contiguous, right-padded, and run through the
    training-path forward with the training-path prefix-LM mask.
    """

    def __init__(self, model: "DecoderOnly", input_ids: torch.Tensor, input_lengths: torch.Tensor,
                 max_new_tokens: int, use_cache: bool, target_prefix: torch.Tensor | None = None):
        target_prefix = no_prefix(input_ids) if target_prefix is None else target_prefix  # (B, P)
        # The target prefix continues each prompt causally, as targets do in training: the prompt grows, its
        # bidirectional part does not.
        bidirectional = input_lengths if model.cfg.prefix_lm else torch.zeros_like(input_lengths)  # (B,)
        input_ids, input_lengths = append_rows(input_ids, input_lengths, target_prefix)
        B, W = input_ids.shape
        # The last generated token is never fed back: the largest position is max(length) + max_new_tokens - 2.
        require(W + max_new_tokens - 1 <= model.max_positions, "generation.max_new_tokens",
                max_new_tokens, f"after a {W}-token prompt needs {W + max_new_tokens - 1} positions; "
                f"architecture.max_positions={model.max_positions}")
        self.model, self.input_ids, self.lengths = model, input_ids, input_lengths
        self.prefix = bidirectional
        self.rows = torch.arange(B, device=input_ids.device)
        self.fed = 0  # generated tokens fed back so far
        capacity = W + max_new_tokens - 1
        self.caches = [LayerCache(capacity) for _ in model.blocks] if use_cache else None
        if use_cache:
            # Each slot's position: the prompt's own (padding slots are masked), then length + i.
            self.slot_positions = torch.arange(capacity, device=input_ids.device).repeat(B, 1)  # (B, capacity)
            self.slot_positions[:, W:] += (self.lengths - W)[:, None]
        else:
            self.seq = input_ids.new_full((B, capacity), PAD_ID)  # rows contiguous, right-padded
            self.seq[:, :W] = input_ids

    def __call__(self, new: torch.Tensor | None) -> torch.Tensor:
        """Feed the last step's tokens (B,) (None at the start) -> next-token logits (B, V)."""
        return self.cached(new) if self.caches is not None else self.uncached(new)

    def cached(self, new: torch.Tensor | None) -> torch.Tensor:
        model, W = self.model, self.input_ids.shape[1]
        if new is None:
            mask = prefix_lm_mask(self.lengths, self.prefix, W)  # (B, 1, W, W); padding keys hidden
            hidden = model.hidden(self.input_ids, mask, caches=self.caches)  # (B, W, C)
            return model.head(hidden[self.rows, self.lengths - 1])
        S = W + self.fed + 1  # every key so far, this token's included
        slots = torch.arange(S, device=new.device)
        mask = (slots[None, :] < self.lengths[:, None]) | (slots[None, :] >= W)  # (B, S): skip prompt padding
        positions = (self.lengths + self.fed)[:, None]  # (B, 1)
        hidden = model.hidden(new[:, None], mask[:, None, None, :], positions, self.caches,
                              self.slot_positions[:, :S])  # (B, 1, C)
        self.fed += 1
        return model.head(hidden[:, 0])

    def uncached(self, new: torch.Tensor | None) -> torch.Tensor:
        if new is not None:
            self.seq[self.rows, self.lengths + self.fed] = new
            self.fed += 1
        total = self.lengths + self.fed  # (B,)
        width = self.input_ids.shape[1] + self.fed
        hidden = self.model.hidden(self.seq[:, :width], prefix_lm_mask(total, self.prefix, width))  # (B, T, C)
        return self.model.head(hidden[self.rows, total - 1])
