"""Parameters and training FLOPs of a decoder-only config (the shared pieces are in ../accounting.py).

One sequence of N = S + T - 1 positions (the last target token is only a label):
    forward = L * block(N over N) + 2 T' C V,   T' = labelled positions = min(T, N)
`per_token` divides by the N positions processed (the converter's num_tokens); `six_n_per_token` is Kaplan et
al.'s 6 x non-embedding parameters.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from seqlab.errors import require
from seqlab.interfaces import FlopCount, ParameterCount
from seqlab_plugins.architectures.accounting import (
    block_forward_flops, block_parameters, norm_parameters, position_parameters,
)

if TYPE_CHECKING:
    from seqlab_plugins.architectures.decoder_only.model import DecoderOnlyConfig


def parameters(cfg: "DecoderOnlyConfig", vocab_size: int) -> ParameterCount:
    token_tables = 1 if cfg.tie_embeddings else 2  # embedding, LM head
    embedding = token_tables * vocab_size * cfg.d_model + position_parameters(cfg)
    non_embedding = cfg.n_layers * block_parameters(cfg) + norm_parameters(cfg)  # blocks, final norm
    return ParameterCount(embedding, non_embedding)


def training_flops(cfg: "DecoderOnlyConfig", vocab_size: int, input_length: int, target_length: int) -> FlopCount:
    S, T = input_length, target_length
    N = S + T - 1  # the model reads inputs + targets[:-1]: the last target token is only a label
    require(S >= 0, "input_length", S, "must be >= 0")
    require(T >= 1 and N >= 1, "target_length", T, f"must be >= {2 - S} with input_length={S}")
    require(N <= cfg.max_positions, "input_length + target_length - 1", N,
            f"must be at most architecture.max_positions={cfg.max_positions}")
    labelled = min(T, N)  # without inputs the first target token is never predicted
    forward = cfg.n_layers * block_forward_flops(cfg, N, N) + 2 * labelled * cfg.d_model * vocab_size
    six_n = 6 * parameters(cfg, vocab_size).non_embedding
    return FlopCount(per_example=3 * forward, tokens=N, six_n_per_token=six_n)
