"""What every Transformer layout here does the same way once it says how a batch becomes final hidden states.

A layout subclasses `LanguageModel` and provides `cfg`, `head`, `batch_hidden(batch)` and `decode_steps(...)`
(and, to export, `hf_layout()`); losses, scores, greedy generation, export and warm-start mapping follow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from seqlab.interfaces import Batch, LossOutput
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.generation import StopCheck, greedy
from seqlab_plugins.architectures.loss import label_logprobs, label_scores, target_losses


class LanguageModel(nn.Module):
    cfg: Any
    head: nn.Linear

    @property
    def max_positions(self) -> int:
        """The longest sequence a stack reads: per stack for an encoder-decoder, the whole sequence otherwise."""
        return self.cfg.max_positions

    def batch_hidden(self, batch: Batch) -> torch.Tensor:
        """The converter's batch -> final hidden states (B, T, C) at the positions its labels sit on."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> LossOutput:
        return target_losses(self.batch_hidden(batch), self.head, batch["labels"], self.cfg.z_loss,
                             self.cfg.loss_chunk_size)

    def target_logprobs(self, batch: Batch) -> torch.Tensor:
        """Teacher-forced log-probability of target j at column j (B, Lt): what evaluation ranks by."""
        return label_logprobs(self.batch_hidden(batch), self.head, batch["labels"], self.cfg.loss_chunk_size)

    def target_scores(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """target_logprobs and whether each target is the argmax at its position (B, Lt) bool; no gradients."""
        return label_scores(self.batch_hidden(batch), self.head, batch["labels"], self.cfg.loss_chunk_size)

    def generate(self, input_ids: torch.Tensor, input_lengths: torch.Tensor, max_new_tokens: int,
                 target_prefix: torch.Tensor | None = None, stop: StopCheck | None = None,
                 prefix_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy continuation (B, N) and its lengths (B,); rows `stop` declares done end early."""
        return greedy(self, input_ids, input_lengths, max_new_tokens, target_prefix, stop, prefix_lengths)

    def export_hf(self, tokenizer: Tokenizer, out_dir: str | Path, source: str) -> Path:
        """Write this model in its Hugging Face layout (hf_layout), with a tokenizer transformers can load."""
        from seqlab_plugins.architectures.export import export_model  # transformers is optional

        return export_model(self, tokenizer, out_dir, source=source)

    def state_from_hf(self, hf_state: Mapping[str, torch.Tensor], modules: Sequence[str] = ("",)) \
            -> dict[str, torch.Tensor]:
        """Weights in this model's Hugging Face layout (hf_layout) under our state-dict names, for warm starts
        (`architecture.init_from`): only those under the `modules` prefixes ("": all), so `hf_state` (which
        may read lazily) is asked only for theirs."""
        from seqlab_plugins.architectures.export import state_from_hf  # transformers is optional

        return state_from_hf(self.hf_layout(), hf_state, modules)
