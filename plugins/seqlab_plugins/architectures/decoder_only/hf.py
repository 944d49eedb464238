"""The decoder-only model's Hugging Face layouts: GPT-2 for the default components, Llama for Llama-style ones.

What the target layouts require (read from the transformers 5.24 sources):
- GPT-2 is pre-LN with learned positions, exact GELU (`activation_function="gelu"`) and LayerNorm with biases;
  its Conv1D layers store weights as (in, out), the transpose of nn.Linear.
- Llama is pre-norm with RMSNorm (float32 statistics, like nn.RMSNorm), SwiGLU (`down(silu(gate x) * up x)`),
  no biases (`attention_bias`, `mlp_bias`), grouped-query attention (`num_key_value_heads`, key/value head g
  serving query heads g * H/G ... (g + 1) * H/G - 1 as SDPA's enable_gqa does) and rotary positions in the
  half-split layout (`rotate_half`) with inv_freq = theta^(-2i/D) (`rope_parameters`), our layout exactly.
  Attention is scaled by 1/sqrt(head_dim) like ours; the LM head is tied to `embed_tokens` by
  `tie_word_embeddings`.
Both attend causally only: a prefix-LM model's bidirectional prefix cannot be expressed, so the export is exact
for causal use alone.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from seqlab.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seqlab_plugins.architectures.export import HFLayout, Needs, WeightMap, same, select_layout, split, transposed

if TYPE_CHECKING:
    from seqlab_plugins.architectures.decoder_only.model import DecoderOnly, DecoderOnlyConfig


def gpt2_needs(cfg: "DecoderOnlyConfig") -> tuple[Needs, ...]:
    """The components GPT-2 hard-codes."""
    return (Needs("norm", ("layernorm",)), Needs("mlp", ("gelu",)), Needs("positions", ("learned",)),
            Needs("bias", (True,)), Needs("qk_norm", (False,)),
            Needs("n_kv_heads", (None, cfg.n_heads), "n_kv_heads=None (multi-head attention)"))


def llama_needs(cfg: "DecoderOnlyConfig") -> tuple[Needs, ...]:
    """The components Llama hard-codes (any n_kv_heads, tied or untied head)."""
    return (Needs("norm", ("rmsnorm",)), Needs("mlp", ("swiglu",)), Needs("positions", ("rope",)),
            Needs("bias", (False,)), Needs("qk_norm", (False,)))


def gpt2_config(cfg: "DecoderOnlyConfig", vocab_size: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size, n_positions=cfg.max_positions, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.ffn_dim,
        activation_function="gelu",  # exact erf GELU as F.gelu; GPT-2's default "gelu_new" is the tanh one
        layer_norm_epsilon=cfg.norm_eps,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, initializer_range=cfg.init_std,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        tie_word_embeddings=cfg.tie_embeddings,
    )


def gpt2_weights(cfg: "DecoderOnlyConfig") -> list[WeightMap]:
    """Our state-dict names -> GPT2LMHeadModel's."""
    weights = [same("decoder.embed.weight", "transformer.wte.weight"),
               same("decoder.positions.weight", "transformer.wpe.weight"),
               same("head.weight", "lm_head.weight"),
               same("decoder.final_norm.weight", "transformer.ln_f.weight"),
               same("decoder.final_norm.bias", "transformer.ln_f.bias")]
    for i in range(cfg.n_layers):
        ours, theirs = f"decoder.blocks.{i}", f"transformer.h.{i}"
        for norm, hf_norm in (("attn_norm", "ln_1"), ("ff_norm", "ln_2")):
            weights += [same(f"{ours}.{norm}.{p}", f"{theirs}.{hf_norm}.{p}") for p in ("weight", "bias")]
        # c_attn holds [q | k | v] stacked like our qkv, transposed.
        for linear, conv in (("attn.qkv", "attn.c_attn"), ("attn.out", "attn.c_proj"), ("ff.up", "mlp.c_fc"),
                             ("ff.down", "mlp.c_proj")):
            weights += [transposed(f"{ours}.{linear}.weight", f"{theirs}.{conv}.weight"),
                        same(f"{ours}.{linear}.bias", f"{theirs}.{conv}.bias")]
    return weights


def llama_config(cfg: "DecoderOnlyConfig", vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.max_positions,
        initializer_range=cfg.init_std, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False, mlp_bias=False,
        # Llama has dropout on attention probabilities only; ours also on embeddings and residual branches.
        attention_dropout=cfg.dropout,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        tie_word_embeddings=cfg.tie_embeddings,
    )


def llama_weights(cfg: "DecoderOnlyConfig") -> list[WeightMap]:
    """Our state-dict names -> LlamaForCausalLM's."""
    H, G, D, F = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.ffn_dim
    weights = [same("decoder.embed.weight", "model.embed_tokens.weight"),
               same("head.weight", "lm_head.weight"),
               same("decoder.final_norm.weight", "model.norm.weight")]
    for i in range(cfg.n_layers):
        ours, theirs = f"decoder.blocks.{i}", f"model.layers.{i}"
        weights += [
            same(f"{ours}.attn_norm.weight", f"{theirs}.input_layernorm.weight"),
            split(f"{ours}.attn.qkv.weight", [H * D, G * D, G * D],
                  *(f"{theirs}.self_attn.{x}_proj.weight" for x in "qkv")),
            same(f"{ours}.attn.out.weight", f"{theirs}.self_attn.o_proj.weight"),
            same(f"{ours}.ff_norm.weight", f"{theirs}.post_attention_layernorm.weight"),
            # ff.up is stacked [gate | value]: Llama's gate_proj goes through SiLU, up_proj is the value.
            split(f"{ours}.ff.up.weight", [F, F], f"{theirs}.mlp.gate_proj.weight", f"{theirs}.mlp.up_proj.weight"),
            same(f"{ours}.ff.down.weight", f"{theirs}.mlp.down_proj.weight"),
        ]
    return weights


def layout(model: "DecoderOnly") -> HFLayout:
    cfg, vocab_size = model.cfg, model.head.out_features
    target = select_layout(cfg, "decoder-only model", {"GPT-2": gpt2_needs(cfg), "Llama": llama_needs(cfg)})
    notes = []
    if cfg.prefix_lm:
        notes.append(f"This model was trained as a prefix LM (bidirectional attention over inputs). {target} "
                     "attends causally only, so this export reproduces the model exactly for causal use alone.")
    if cfg.z_loss > 0:
        notes.append(f"It was trained with a z-loss ({cfg.z_loss}); the exported model's loss is plain "
                     "cross-entropy. Logits are unaffected.")
    if target == "GPT-2":
        return HFLayout(GPT2LMHeadModel, gpt2_config(cfg, vocab_size), gpt2_weights(cfg), "AutoModelForCausalLM",
                        notes)
    return HFLayout(LlamaForCausalLM, llama_config(cfg, vocab_size), llama_weights(cfg), "AutoModelForCausalLM",
                    notes)
