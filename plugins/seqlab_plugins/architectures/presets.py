"""Named model sizes, selectable as `architecture=NAME` and described by `seqlab info NAME`.

Three families, each from tiny (CPU tests and demos) up:
- `seq2seq_*` and `alexatm_20b`: the paper's encoder-decoder (LayerNorm, GELU, learned positions, biases);
- `t5_*`: a T5 v1.1-style encoder-decoder (RMSNorm, gated GELU, relative position bias, no biases, shared
  input embeddings and a separate LM head);
- `llama_*`: a Llama-style decoder-only (rope, RMSNorm, SwiGLU, grouped-query attention, no biases, untied).

Every encoder-decoder preset comes with decoder-only partners of the same width, differing only in depth:
`<preset>_decoder_params` matches its total parameters and `<preset>_decoder_flops` its training FLOPs per
example, with the preset's own components; `<preset>_llama_params` and `<preset>_llama_flops` do the same
with Llama-style components. All are computed at the preset's reference vocabulary size and example
lengths, which `seqlab info` also counts with by default (see seq2seq/partner.py).
"""
from __future__ import annotations

from seqlab.info import InfoDefaults, register_info_defaults
from seqlab.registry import ARCHITECTURES
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig
from seqlab_plugins.architectures.seq2seq.partner import matched_partner

T5_COMPONENTS = dict(norm="rmsnorm", norm_eps=1e-6, mlp="geglu", positions="t5_relative_bias", bias=False,
                     share_embeddings=True, tie_embeddings=False)
LLAMA_COMPONENTS = dict(norm="rmsnorm", norm_eps=1e-5, mlp="swiglu", positions="rope", bias=False,
                        tie_embeddings=False)


def _seq2seq(**fields) -> Seq2SeqConfig:
    return Seq2SeqConfig(name="seq2seq", **fields)


def _t5(**fields) -> Seq2SeqConfig:
    return Seq2SeqConfig(name="seq2seq", **T5_COMPONENTS, **fields)


def _llama(**fields) -> DecoderOnlyConfig:
    return DecoderOnlyConfig(name="decoder_only", **LLAMA_COMPONENTS, **fields)


# name: (config, description, reference vocabulary size). A built model's vocabulary comes from the tokenizer;
# the reference is for counting and partner matching: the paper's "about 150K" for AlexaTM, the embedded
# tokenizer's 4096 for the CPU models, and 32000 (`seqlab tokenizer train`'s default) elsewhere.
SEQ2SEQ = {
    "seq2seq_tiny": (_seq2seq(d_model=64, n_heads=4, encoder_layers=2, decoder_layers=2, max_positions=512),
                     "CPU tests and demos", 4096),
    "seq2seq_small": (_seq2seq(d_model=512, n_heads=8, encoder_layers=6, decoder_layers=6),
                      "6+6 layers, d_model 512", 32000),
    "seq2seq_base": (_seq2seq(d_model=768, n_heads=12, encoder_layers=12, decoder_layers=12),
                     "12+12 layers, d_model 768", 32000),
    "seq2seq_large": (_seq2seq(d_model=1024, n_heads=16, encoder_layers=24, decoder_layers=24),
                      "24+24 layers, d_model 1024", 32000),
    "alexatm_20b": (_seq2seq(d_model=4096, n_heads=32, encoder_layers=46, decoder_layers=32, d_ff=16384,
                             max_positions=1024), "AlexaTM 20B (paper Table 1)", 150_000),
    # T5 v1.1 sizes (the 1.1 checkpoints): small 8+8 layers d_ff 1024, base 12+12 d_ff 2048. Heads are 64 wide
    # with d_model = heads x 64, so small has 8 heads where T5 v1.1 small has 6 (its heads span 384 of 512).
    "t5_tiny": (_t5(d_model=64, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=128, max_positions=512),
                "T5 v1.1-style, CPU tests and demos", 4096),
    "t5_small": (_t5(d_model=512, n_heads=8, encoder_layers=8, decoder_layers=8, d_ff=1024),
                 "T5 v1.1-style, 8+8 layers, d_model 512", 32000),
    "t5_base": (_t5(d_model=768, n_heads=12, encoder_layers=12, decoder_layers=12, d_ff=2048),
                "T5 v1.1-style, 12+12 layers, d_model 768", 32000),
}

DECODER_ONLY = {
    "llama_tiny": (_llama(d_model=64, n_heads=4, n_kv_heads=2, n_layers=4, max_positions=1024),
                   "Llama-style, CPU tests and demos", 4096),
    "llama_small": (_llama(d_model=512, n_heads=8, n_kv_heads=2, n_layers=12),
                    "Llama-style, 12 layers, d_model 512, 2 key/value heads", 32000),
    "llama_base": (_llama(d_model=768, n_heads=12, n_kv_heads=4, n_layers=12),
                   "Llama-style, 12 layers, d_model 768, 4 key/value heads", 32000),
}


def denoising_lengths(cfg: Seq2SeqConfig) -> tuple[int, int]:
    """(input, target) lengths of the AlexaTM denoising shape at full length L = max_positions: a row of L - 1
    tokens loses 15% of them from the input (no mask tokens), and the target is the whole row plus EOS."""
    L = cfg.max_positions
    return L - 1 - round(0.15 * (L - 1)), L


def llama_template(cfg: Seq2SeqConfig) -> DecoderOnlyConfig:
    """Llama-style components at a seq2seq's width, with a quarter of its heads for keys and values."""
    kv = next(k for k in range(max(1, cfg.n_heads // 4), cfg.n_heads + 1) if cfg.n_heads % k == 0)
    return _llama(d_model=cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=kv, n_layers=1)


def register_presets() -> None:
    """Register each preset, the encoder-decoders' partners and the defaults `seqlab info` counts with."""
    for name, (cfg, description, vocab_size) in SEQ2SEQ.items():
        S, T = denoising_lengths(cfg)
        shape = f"{S}+{T} tokens, vocabulary {vocab_size}"
        partners = {}
        for family, template in (("decoder", None), ("llama", llama_template(cfg))):
            for suffix, match, what in (("params", "parameters", "parameters matched"),
                                        ("flops", "flops", "training FLOPs per example matched")):
                partner = matched_partner(cfg, vocab_size, S, T, match, template)
                style = "" if template is None else "Llama-style "
                partners[f"{name}_{family}_{suffix}"] = (
                    partner, f"{style}decoder-only partner of {name}, {partner.n_layers} layers: {what} at {shape}")
        ARCHITECTURES.register_preset(name, cfg, description)
        register_info_defaults(name, InfoDefaults(vocab_size, S, T, tuple(partners)))
        for partner_name, (partner, partner_description) in partners.items():
            ARCHITECTURES.register_preset(partner_name, partner, partner_description)
            register_info_defaults(partner_name, InfoDefaults(vocab_size, S, T))
    for name, (cfg, description, vocab_size) in DECODER_ONLY.items():
        ARCHITECTURES.register_preset(name, cfg, description)
        # Counted on one full causal row: no inputs, max_positions + 1 targets (the first is never predicted).
        register_info_defaults(name, InfoDefaults(vocab_size, 0, cfg.max_positions + 1))


register_presets()
