"""The seq2seq model's Hugging Face layouts: MBart for the paper's components, T5 for T5 v1.1's.

What the target layouts require (read from the transformers 5.24 sources): MBart is the closest
encoder-decoder: pre-LN, learned positions, biases everywhere, a final LayerNorm per stack. It always applies
`layernorm_embedding` after embeddings + positions, so only a model with `embedding_norm=true` maps exactly
(AlexaTM itself has no such norm). It reads positions at index + 2 (a fairseq legacy), so its tables have
two unused leading rows. Its token embeddings are *not* forced to be shared: `MBartModel` builds `shared`,
`encoder.embed_tokens` and `decoder.embed_tokens` as separate modules and ties them (and `lm_head`) only
through `_tied_weights_keys`, which `get_expanded_tied_weights_keys` ignores when
`tie_word_embeddings=False`. So our untied layout (the paper's) exports exactly with that flag; `model.shared`
is then unused by the forward pass and holds a copy of the encoder's matrix.

T5 (`T5ForConditionalGeneration`) takes T5 v1.1's components: RMSNorm (`T5LayerNorm`, float32 statistics),
no biases, `feed_forward_proj="gated-gelu"`, which T5Config turns into `dense_act_fn="gelu_new"` (the tanh
approximation our geglu uses) with `wi_0` the gate and `wi_1` the value, and relative position buckets held
by block 0 of each stack only (`relative_attention_bias`, computed there and passed on to the other blocks;
none on cross-attention), bidirectional in the encoder and causal in the decoder, with the bucket function
ours reproduces. It does not scale attention scores (`scaling = 1.0`), so our 1/sqrt(head_dim) is folded into
the query projections. Its three vocabulary matrices: `encoder.embed_tokens` and `decoder.embed_tokens` are
always `shared`, so only a model that shares its input embeddings maps (share_embeddings or tie_embeddings).
T5Config in 5.24 forces `tie_word_embeddings=True` whatever it is given, so `lm_head` is tied to `shared` at
construction; an untied head is exported as its own tensor (HFLayout.untied), and from_pretrained keeps two
differing checkpoint tensors untied (with a warning that they differ) - T5 v1.1's own checkpoints load that way.
`scale_decoder_outputs` (T5 v1.0 multiplies the decoder output by d_model^-0.5 before the head; 5.24 derives
it from a `tie_word_embeddings` argument and saves it in config.json) is set false: we never scale.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers import MBartConfig, MBartForConditionalGeneration, T5Config, T5ForConditionalGeneration

from seqlab.errors import require
from seqlab.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seqlab_plugins.architectures.export import HFLayout, Needs, WeightMap, constant, same, select_layout, split

if TYPE_CHECKING:
    from seqlab_plugins.architectures.seq2seq.model import Seq2Seq, Seq2SeqConfig

MBART_POSITION_OFFSET = 2  # MBartLearnedPositionalEmbedding reads row position + 2


def mbart_needs(cfg: "Seq2SeqConfig") -> tuple[Needs, ...]:
    """The components MBart hard-codes (embedding_norm is checked once MBart is chosen: mbart_config)."""
    return (Needs("norm", ("layernorm",)), Needs("mlp", ("gelu",)), Needs("positions", ("learned",)),
            Needs("bias", (True,)), Needs("qk_norm", (False,)),
            Needs("n_kv_heads", (None, cfg.n_heads), "n_kv_heads=None (multi-head attention)"),
            Needs("share_embeddings", (False,)))


def t5_needs(cfg: "Seq2SeqConfig") -> tuple[Needs, ...]:
    """The components T5 v1.1 hard-codes."""
    return (Needs("norm", ("rmsnorm",)), Needs("mlp", ("geglu",)), Needs("positions", ("t5_relative_bias",)),
            Needs("bias", (False,)), Needs("qk_norm", (False,)),
            Needs("n_kv_heads", (None, cfg.n_heads), "n_kv_heads=None (multi-head attention)"),
            Needs("share_embeddings", (True,) if not cfg.tie_embeddings else (False, True),
                  "share_embeddings=True or tie_embeddings=True"),
            Needs("embedding_norm", (False,)))


def mbart_config(cfg: "Seq2SeqConfig", vocab_size: int) -> MBartConfig:
    require(cfg.embedding_norm, "architecture.embedding_norm", cfg.embedding_norm,
            "MBart always applies a LayerNorm to the embeddings (layernorm_embedding), so only a seq2seq model "
            "trained with architecture.embedding_norm=true exports to it exactly")
    return MBartConfig(
        vocab_size=vocab_size, d_model=cfg.d_model, max_position_embeddings=cfg.max_positions,
        encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.n_heads, decoder_attention_heads=cfg.n_heads,
        encoder_ffn_dim=cfg.ffn_dim, decoder_ffn_dim=cfg.ffn_dim, activation_function="gelu",
        scale_embedding=False,
        # Our dropout sits where MBart's `dropout` and `attention_dropout` do; we have none after the activation.
        dropout=cfg.dropout, attention_dropout=cfg.dropout, activation_dropout=0.0, init_std=cfg.init_std,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        # Our converter starts every decoder sequence with BOS. MBart's default forced EOS id (2) is our BOS,
        # and our models were never trained to be cut off by a forced EOS: generation stays plain.
        decoder_start_token_id=BOS_ID, forced_eos_token_id=None,
        tie_word_embeddings=cfg.tie_embeddings,
    )


def _positions(ours: str, theirs: str) -> WeightMap:
    return WeightMap(ours, (theirs,), lambda t: [F.pad(t, (0, 0, MBART_POSITION_OFFSET, 0))],
                     lambda parts: parts[0][MBART_POSITION_OFFSET:])


def mbart_weights(cfg: "Seq2SeqConfig", vocab_size: int) -> list[WeightMap]:
    """Our state-dict names -> MBartForConditionalGeneration's."""
    C = cfg.d_model
    weights = [same("encoder.embed.weight", "model.shared.weight", "model.encoder.embed_tokens.weight"),
               same("decoder.embed.weight", "model.decoder.embed_tokens.weight"),
               same("head.weight", "lm_head.weight"), constant("final_logits_bias", torch.zeros(1, vocab_size))]

    def biased(ours: str, theirs: str) -> list[WeightMap]:
        return [same(f"{ours}.{p}", f"{theirs}.{p}") for p in ("weight", "bias")]

    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        weights.append(_positions(f"{side}.positions.weight", f"{prefix}.embed_positions.weight"))
        weights += biased(f"{side}.embed_norm", f"{prefix}.layernorm_embedding")
        weights += biased(f"{side}.final_norm", f"{prefix}.layer_norm")
        for i in range(cfg.encoder_layers if side == "encoder" else cfg.decoder_layers):
            ours, theirs = f"{side}.blocks.{i}", f"{prefix}.layers.{i}"
            weights += biased(f"{ours}.attn_norm", f"{theirs}.self_attn_layer_norm")
            for p in ("weight", "bias"):
                weights.append(split(f"{ours}.attn.qkv.{p}", [C, C, C],
                                     *(f"{theirs}.self_attn.{x}_proj.{p}" for x in "qkv")))
            weights += biased(f"{ours}.attn.out", f"{theirs}.self_attn.out_proj")
            if side == "decoder":
                weights += biased(f"{ours}.cross_norm", f"{theirs}.encoder_attn_layer_norm")
                weights += biased(f"{ours}.cross.q", f"{theirs}.encoder_attn.q_proj")
                for p in ("weight", "bias"):
                    weights.append(split(f"{ours}.cross.kv.{p}", [C, C], f"{theirs}.encoder_attn.k_proj.{p}",
                                         f"{theirs}.encoder_attn.v_proj.{p}"))
                weights += biased(f"{ours}.cross.out", f"{theirs}.encoder_attn.out_proj")
            weights += biased(f"{ours}.ff_norm", f"{theirs}.final_layer_norm")
            weights += biased(f"{ours}.ff.up", f"{theirs}.fc1")
            weights += biased(f"{ours}.ff.down", f"{theirs}.fc2")
    return weights


def t5_config(cfg: "Seq2SeqConfig", vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.ffn_dim,
        num_layers=cfg.encoder_layers, num_decoder_layers=cfg.decoder_layers, num_heads=cfg.n_heads,
        relative_attention_num_buckets=cfg.relative_buckets, relative_attention_max_distance=cfg.relative_max_distance,
        dropout_rate=cfg.dropout, layer_norm_epsilon=cfg.norm_eps, feed_forward_proj="gated-gelu",
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        # T5 starts decoding with pad; our converter starts every decoder sequence with BOS.
        decoder_start_token_id=BOS_ID,
        scale_decoder_outputs=False,  # T5 v1.0's d_model^-0.5 before the head: we have none
    )


def t5_weights(cfg: "Seq2SeqConfig") -> list[WeightMap]:
    """Our state-dict names -> T5ForConditionalGeneration's."""
    C = cfg.n_heads * cfg.head_dim
    q_scale = cfg.head_dim ** -0.5  # T5 does not scale scores: SDPA's 1/sqrt(head_dim) goes into the queries
    weights = [same("encoder.embed.weight", "shared.weight", "encoder.embed_tokens.weight"),
               same("decoder.embed.weight", "decoder.embed_tokens.weight"),
               same("head.weight", "lm_head.weight")]
    for side in ("encoder", "decoder"):
        # One table per stack, ours shared by its blocks, T5's held by block 0 and passed on.
        weights += [same(f"{side}.relative.table.weight",
                         f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                    same(f"{side}.final_norm.weight", f"{side}.final_layer_norm.weight")]
        for i in range(cfg.encoder_layers if side == "encoder" else cfg.decoder_layers):
            ours, theirs = f"{side}.blocks.{i}", f"{side}.block.{i}.layer"
            attn = f"{theirs}.0.SelfAttention"
            weights += [same(f"{ours}.attn_norm.weight", f"{theirs}.0.layer_norm.weight"),
                        split(f"{ours}.attn.qkv.weight", [C, C, C], f"{attn}.q.weight", f"{attn}.k.weight",
                              f"{attn}.v.weight", scales=(q_scale, 1.0, 1.0)),
                        same(f"{ours}.attn.out.weight", f"{attn}.o.weight")]
            ff = 1
            if side == "decoder":
                cross, ff = f"{theirs}.1.EncDecAttention", 2
                weights += [same(f"{ours}.cross_norm.weight", f"{theirs}.1.layer_norm.weight"),
                            split(f"{ours}.cross.q.weight", [C], f"{cross}.q.weight", scales=(q_scale,)),
                            split(f"{ours}.cross.kv.weight", [C, C], f"{cross}.k.weight", f"{cross}.v.weight"),
                            same(f"{ours}.cross.out.weight", f"{cross}.o.weight")]
            dense = f"{theirs}.{ff}.DenseReluDense"
            weights += [same(f"{ours}.ff_norm.weight", f"{theirs}.{ff}.layer_norm.weight"),
                        # ff.up is stacked [gate | value]: T5's wi_0 goes through the GELU, wi_1 is the value.
                        split(f"{ours}.ff.up.weight", [cfg.ffn_dim, cfg.ffn_dim], f"{dense}.wi_0.weight",
                              f"{dense}.wi_1.weight"),
                        same(f"{ours}.ff.down.weight", f"{dense}.wo.weight")]
    return weights


def layout(model: "Seq2Seq") -> HFLayout:
    cfg, vocab_size = model.cfg, model.head.out_features
    target = select_layout(cfg, "seq2seq model", {"MBart": mbart_needs(cfg), "T5": t5_needs(cfg)})
    notes = [f"Decoder sequences start with BOS ({BOS_ID}), as in training (`decoder_start_token_id`)."]
    if cfg.z_loss > 0:
        notes.append(f"It was trained with a z-loss ({cfg.z_loss}); the exported model's loss is plain "
                     "cross-entropy. Logits are unaffected.")
    if target == "MBart":
        if not cfg.tie_embeddings:
            notes.append("Encoder embeddings, decoder embeddings and LM head are separate matrices "
                         "(`tie_word_embeddings: false`); `model.shared` holds a copy of the encoder's.")
        return HFLayout(MBartForConditionalGeneration, mbart_config(cfg, vocab_size),
                        mbart_weights(cfg, vocab_size), "AutoModelForSeq2SeqLM", notes)
    notes.append(f"Relative position buckets carry no length limit, but the model was trained on sequences of at "
                 f"most {cfg.max_positions} tokens per stack.")
    untied: tuple[str, ...] = ()
    if not cfg.tie_embeddings:
        untied = ("lm_head.weight",)
        notes.append("The LM head is a separate matrix from the shared input embeddings. transformers' T5Config "
                     "always says `tie_word_embeddings: true`; from_pretrained keeps the checkpoint's separate "
                     "`lm_head.weight` (warning that the two differ), as for T5 v1.1's own checkpoints.")
    return HFLayout(T5ForConditionalGeneration, t5_config(cfg, vocab_size), t5_weights(cfg),
                    "AutoModelForSeq2SeqLM", notes, untied)
