"""Parameters and training FLOPs of a seq2seq config (the shared pieces are in ../accounting.py).

The encoder runs on the S inputs, the decoder on T positions (BOS + targets[:-1]):
    forward = E * block(S over S) + D * (block(T over T) + cross(T over S)) + 2 T C V
`per_token` divides by S + T positions; `six_n_per_token` (Kaplan et al.'s 6 x non-embedding parameters)
overstates a seq2seq's cost: each encoder parameter sees only the inputs, each decoder one only the targets.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from seqlab.errors import require
from seqlab.interfaces import FlopCount, ParameterCount
from seqlab_plugins.architectures.accounting import (
    block_forward_flops, block_parameters, cross_attention_forward_flops, norm_parameters, position_parameters,
)

if TYPE_CHECKING:
    from seqlab_plugins.architectures.seq2seq.model import Seq2SeqConfig


def parameters(cfg: "Seq2SeqConfig", vocab_size: int) -> ParameterCount:
    # Token tables: encoder embedding, decoder embedding, LM head, minus the tied ones.
    token_tables = 1 if cfg.tie_embeddings else 2 if cfg.share_embeddings else 3
    embedding = token_tables * vocab_size * cfg.d_model + 2 * position_parameters(cfg)  # positions per stack
    stack_norms = norm_parameters(cfg) * (2 if cfg.embedding_norm else 1)  # final norm (+ embedding norm)
    non_embedding = (cfg.encoder_layers * block_parameters(cfg) + cfg.decoder_layers * block_parameters(cfg, True)
                     + 2 * stack_norms)
    return ParameterCount(embedding, non_embedding)


def training_flops(cfg: "Seq2SeqConfig", vocab_size: int, input_length: int, target_length: int) -> FlopCount:
    S, T = input_length, target_length
    require(1 <= S <= cfg.max_positions, "input_length", S,
            f"must be in [1, architecture.max_positions={cfg.max_positions}]")
    require(1 <= T <= cfg.max_positions, "target_length", T,
            f"must be in [1, architecture.max_positions={cfg.max_positions}]")
    forward = (cfg.encoder_layers * block_forward_flops(cfg, S, S)
               + cfg.decoder_layers * (block_forward_flops(cfg, T, T) + cross_attention_forward_flops(cfg, T, S))
               + 2 * T * cfg.d_model * vocab_size)
    six_n = 6 * parameters(cfg, vocab_size).non_embedding
    return FlopCount(per_example=3 * forward, tokens=S + T, six_n_per_token=six_n)
