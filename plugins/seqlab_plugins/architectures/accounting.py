"""Parameter and training-FLOP accounting from a config and a vocabulary size alone: nothing is built.

Parameters equal `sum(p.numel() for p in model.parameters())` of the built model (tied weights once).
`embedding` holds the token embeddings (the decoder's copy and the LM head too when untied) and the position
tables; `non_embedding` holds the rest: blocks, final norms and the optional embedding norm.

Training FLOPs of one example count matrix multiplications only. An (m x k) @ (k x n) product costs 2*m*n*k
FLOPs forward; backward computes the gradients of both operands, two products of the same size, so training
costs 3 x forward. Embedding lookups, norms, activations, softmax, bias adds, dropout and the loss are not
matmuls and are not counted (each is O(tokens * C), against O(tokens * C^2) for the projections).

Notation: C = d_model, F = d_ff, V = vocabulary, S = input tokens, T = target tokens. Summed over heads,
H * head_dim = C, so heads drop out. One block on n query tokens attending over m keys costs forward
    projections q, k, v and out   2*n*C*4C  = 8nC^2
    scores QK^T and weighted sum  2 * 2nmC  = 4nmC
    feed-forward up and down      2 * 2nCF  = 4nCF
seq2seq (encoder on the S inputs; decoder on T positions: BOS + targets[:-1]):
    forward = E * (8SC^2 + 4S^2C + 4SCF)
            + D * (8TC^2 + 4T^2C + 4TCF + 4TC^2 + 4SC^2 + 4TSC)    cross-attention: q and out projections on
                                                                    the targets, k and v on the S encoder
                                                                    states, scores over the S inputs
            + 2TCV                                                  logits at the T labelled positions only
decoder-only (one sequence of N = S + T - 1 positions; the last target token is only a label):
    forward = L * (8NC^2 + 4N^2C + 4NCF) + 2T'CV,   T' = labelled positions = min(T, N)
Attention is counted as the full N x N (or T x T) score matrix for causal and prefix-LM masks alike: that is
what SDPA's math and masked kernels compute. A fused causal kernel skips about half of the scores, so there the
count overstates the work by about 2N^2C per block and forward pass. Logits are computed only where there is a label
(`blocks.target_losses`), which is why the LM head sees T positions, not S + T.

`per_token` divides by the positions processed (the converters' num_tokens: S + T, or S + T - 1);
`six_n_per_token` is Kaplan et al.'s 6 x non-embedding parameters, the usual approximation. For seq2seq it
overstates the cost: each encoder parameter sees only the inputs and each decoder parameter only the targets.

Decoder-only partners of a seq2seq config keep its d_model, heads, d_ff, dropout and embedding tying, and vary
only n_layers: one matches total parameters, the other training FLOPs per example at given lengths. Keeping the
tying makes the layout the only difference (for AlexaTM: untied, as in the paper; an untied decoder-only has
one V x C matrix fewer than an untied seq2seq and spends it on layers). Partners use prefix-LM attention, the
decoder-only analogue of a bidirectional encoder, and max_positions = S + T so a whole example fits.
"""
from __future__ import annotations

import math
from typing import Callable

from seqlab.errors import require
from seqlab.interfaces import FlopCount, ParameterCount
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig


def _block_parameters(C: int, F: int, cross: bool) -> int:
    """One pre-LN block: norms (weight + bias), biased projections; a cross-attention sub-layer if `cross`."""
    self_attention = 2 * C + (3 * C * C + 3 * C) + (C * C + C)  # norm, fused qkv, out
    feed_forward = 2 * C + (C * F + F) + (F * C + C)  # norm, up, down
    cross_attention = 2 * C + (C * C + C) + (2 * C * C + 2 * C) + (C * C + C)  # norm, q, fused kv, out
    return self_attention + feed_forward + (cross_attention if cross else 0)


def _block_forward_flops(C: int, F: int, n: int, m: int) -> int:
    """Self-attention block on n query tokens attending over m keys, feed-forward included."""
    return 8 * n * C * C + 4 * n * m * C + 4 * n * C * F


def seq2seq_parameters(cfg: Seq2SeqConfig, vocab_size: int) -> ParameterCount:
    C, F = cfg.d_model, cfg.d_ff or 4 * cfg.d_model
    token_tables = 1 if cfg.tie_embeddings else 3  # encoder embedding, decoder embedding, LM head
    embedding = token_tables * vocab_size * C + 2 * cfg.max_positions * C  # a position table per stack
    stack_norms = 2 * C * (2 if cfg.embedding_norm else 1)  # final norm (+ embedding norm) of one stack
    non_embedding = (cfg.encoder_layers * _block_parameters(C, F, cross=False)
                     + cfg.decoder_layers * _block_parameters(C, F, cross=True) + 2 * stack_norms)
    return ParameterCount(embedding, non_embedding)


def decoder_only_parameters(cfg: DecoderOnlyConfig, vocab_size: int) -> ParameterCount:
    C, F = cfg.d_model, cfg.d_ff or 4 * cfg.d_model
    token_tables = 1 if cfg.tie_embeddings else 2  # embedding, LM head
    embedding = token_tables * vocab_size * C + cfg.max_positions * C
    non_embedding = cfg.n_layers * _block_parameters(C, F, cross=False) + 2 * C  # blocks, final norm
    return ParameterCount(embedding, non_embedding)


def seq2seq_training_flops(cfg: Seq2SeqConfig, vocab_size: int, input_length: int,
                           target_length: int) -> FlopCount:
    S, T = input_length, target_length
    require(1 <= S <= cfg.max_positions, "input_length", S,
            f"must be in [1, architecture.max_positions={cfg.max_positions}]")
    require(1 <= T <= cfg.max_positions, "target_length", T,
            f"must be in [1, architecture.max_positions={cfg.max_positions}]")
    C, F = cfg.d_model, cfg.d_ff or 4 * cfg.d_model
    cross_attention = 4 * T * C * C + 4 * S * C * C + 4 * T * S * C  # q + out on targets, k + v on inputs, scores
    forward = (cfg.encoder_layers * _block_forward_flops(C, F, S, S)
               + cfg.decoder_layers * (_block_forward_flops(C, F, T, T) + cross_attention)
               + 2 * T * C * vocab_size)
    six_n = 6 * seq2seq_parameters(cfg, vocab_size).non_embedding
    return FlopCount(per_example=3 * forward, tokens=S + T, six_n_per_token=six_n)


def decoder_only_training_flops(cfg: DecoderOnlyConfig, vocab_size: int, input_length: int,
                                target_length: int) -> FlopCount:
    S, T = input_length, target_length
    N = S + T - 1  # the model reads inputs + targets[:-1]: the last target token is only a label
    require(S >= 0, "input_length", S, "must be >= 0")
    require(T >= 1 and N >= 1, "target_length", T, f"must be >= {2 - S} with input_length={S}")
    require(N <= cfg.max_positions, "input_length + target_length - 1", N,
            f"must be at most architecture.max_positions={cfg.max_positions}")
    C, F = cfg.d_model, cfg.d_ff or 4 * cfg.d_model
    labelled = min(T, N)  # without inputs the first target token is never predicted
    forward = cfg.n_layers * _block_forward_flops(C, F, N, N) + 2 * labelled * C * vocab_size
    six_n = 6 * decoder_only_parameters(cfg, vocab_size).non_embedding
    return FlopCount(per_example=3 * forward, tokens=N, six_n_per_token=six_n)


def _partner(cfg: Seq2SeqConfig, n_layers: int, input_length: int, target_length: int) -> DecoderOnlyConfig:
    return DecoderOnlyConfig(name="decoder_only", d_model=cfg.d_model, n_layers=n_layers, n_heads=cfg.n_heads,
                             d_ff=cfg.d_ff, max_positions=input_length + target_length, dropout=cfg.dropout,
                             prefix_lm=True, tie_embeddings=cfg.tie_embeddings, init_std=cfg.init_std,
                             activation_checkpointing=cfg.activation_checkpointing)


def _closest_layers(cost: Callable[[int], int], target: int) -> int:
    """The n_layers >= 1 whose cost is closest to target (the smaller on a tie); cost is affine in n_layers."""
    per_layer = cost(2) - cost(1)
    exact = 1 + (target - cost(1)) / per_layer
    candidates = sorted({max(1, math.floor(exact)), max(1, math.ceil(exact))})
    return min(candidates, key=lambda n: abs(cost(n) - target))


def parameter_matched_partner(cfg: Seq2SeqConfig, vocab_size: int, input_length: int,
                              target_length: int) -> DecoderOnlyConfig:
    """The decoder-only partner whose total parameters are closest to the seq2seq's."""
    target = seq2seq_parameters(cfg, vocab_size).total
    n_layers = _closest_layers(lambda n: decoder_only_parameters(
        _partner(cfg, n, input_length, target_length), vocab_size).total, target)
    return _partner(cfg, n_layers, input_length, target_length)


def flop_matched_partner(cfg: Seq2SeqConfig, vocab_size: int, input_length: int,
                         target_length: int) -> DecoderOnlyConfig:
    """The decoder-only partner whose training FLOPs per example at these lengths are closest to the seq2seq's."""
    target = seq2seq_training_flops(cfg, vocab_size, input_length, target_length).per_example
    n_layers = _closest_layers(lambda n: decoder_only_training_flops(
        _partner(cfg, n, input_length, target_length), vocab_size, input_length, target_length).per_example,
        target)
    return _partner(cfg, n_layers, input_length, target_length)
