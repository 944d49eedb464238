"""Decoder-only partners of a seq2seq config: the baselines `seqlab compare` trains against it.

A partner keeps the seq2seq's width (d_model, heads, d_ff) and varies only its depth, so that either its
total parameters or its training FLOPs per example at given lengths are closest to the seq2seq's. By default
it also keeps every component and the embedding tying, which makes the layout the only difference (for
AlexaTM: untied, as in the paper; an untied decoder-only has one V x C matrix fewer than an untied seq2seq
and spends it on layers). A template (e.g. Llama-style components) can replace the components instead.
Partners use prefix-LM attention, the decoder-only analogue of a bidirectional encoder, and max_positions =
S + T so a whole example fits.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING

from seqlab.errors import require
from seqlab_plugins.architectures.accounting import closest_depth
from seqlab_plugins.architectures.components import TransformerConfig
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq.accounting import parameters, training_flops

if TYPE_CHECKING:
    from seqlab_plugins.architectures.seq2seq.model import Seq2SeqConfig

MATCHES = ("parameters", "flops")


def same_components(cfg: "Seq2SeqConfig") -> DecoderOnlyConfig:
    """A one-layer decoder-only config with every shared field of `cfg` (components, width, tying). Not its
    warm start: `init_from` names the seq2seq's own weights."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(TransformerConfig) if f.name != "init_from"}
    return DecoderOnlyConfig(**{**shared, "name": "decoder_only"}, n_layers=1, prefix_lm=True)


def matched_partner(cfg: "Seq2SeqConfig", vocab_size: int, input_length: int, target_length: int, match: str,
                    template: DecoderOnlyConfig | None = None) -> DecoderOnlyConfig:
    """The partner of `cfg` (components from `template`, default the seq2seq's own) whose depth makes its
    total parameters (match=parameters) or its training FLOPs per example at these lengths (match=flops)
    closest to the seq2seq's."""
    require(match in MATCHES, "compare.match", match, f"must be one of {', '.join(MATCHES)}")
    base = replace(template or same_components(cfg), d_model=cfg.d_model, n_heads=cfg.n_heads,
                   d_ff=cfg.d_ff if template is None else template.d_ff, dropout=cfg.dropout,
                   max_positions=input_length + target_length, prefix_lm=True,
                   activation_checkpointing=cfg.activation_checkpointing)
    S, T = input_length, target_length
    if match == "parameters":
        target = parameters(cfg, vocab_size).total
        depth = closest_depth(lambda n: DecoderOnly.parameter_count(DecoderOnly.with_depth(base, n), vocab_size).total,
                              target)
    else:
        target = training_flops(cfg, vocab_size, S, T).per_example
        depth = closest_depth(lambda n: DecoderOnly.training_flops(DecoderOnly.with_depth(base, n), vocab_size, S,
                                                                   T).per_example, target)
    return DecoderOnly.with_depth(base, depth)
