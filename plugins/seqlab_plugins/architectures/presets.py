"""Named model sizes, selectable as `architecture=NAME` and described by `seqlab info NAME`.

Every seq2seq preset comes with two decoder-only partners of the same width (d_model, heads, d_ff), differing
only in depth: `<preset>_decoder_params` matches its total parameters, `<preset>_decoder_flops` its training
FLOPs per example (see accounting.py). Both are computed at the preset's reference vocabulary size and example
lengths, which `seqlab info` also counts with by default.
"""
from __future__ import annotations

from seqlab.info import InfoDefaults, register_info_defaults
from seqlab.registry import ARCHITECTURES
from seqlab_plugins.architectures.accounting import flop_matched_partner, parameter_matched_partner
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig

# name: (config, description, reference vocabulary size). A built model's vocabulary comes from the tokenizer;
# the reference is for counting and partner matching: the paper's "about 150K" for AlexaTM, the embedded
# tokenizer's 4096 for the CPU model, and 32000 (`seqlab tokenizer train`'s default) elsewhere.
SEQ2SEQ = {
    "seq2seq_tiny": (Seq2SeqConfig(name="seq2seq", d_model=64, n_heads=4, encoder_layers=2, decoder_layers=2,
                                   max_positions=512), "CPU tests and demos", 4096),
    "seq2seq_small": (Seq2SeqConfig(name="seq2seq", d_model=512, n_heads=8, encoder_layers=6, decoder_layers=6),
                      "6+6 layers, d_model 512", 32000),
    "seq2seq_base": (Seq2SeqConfig(name="seq2seq", d_model=768, n_heads=12, encoder_layers=12, decoder_layers=12),
                     "12+12 layers, d_model 768", 32000),
    "seq2seq_large": (Seq2SeqConfig(name="seq2seq", d_model=1024, n_heads=16, encoder_layers=24,
                                    decoder_layers=24), "24+24 layers, d_model 1024", 32000),
    "alexatm_20b": (Seq2SeqConfig(name="seq2seq", d_model=4096, n_heads=32, encoder_layers=46, decoder_layers=32,
                                  d_ff=16384, max_positions=1024), "AlexaTM 20B (paper Table 1)", 150_000),
}


def denoising_lengths(cfg: Seq2SeqConfig) -> tuple[int, int]:
    """(input, target) lengths of the AlexaTM denoising shape at full length L = max_positions: a row of L - 1
    tokens loses 15% of them from the input (no mask tokens), and the target is the whole row plus EOS."""
    L = cfg.max_positions
    return L - 1 - round(0.15 * (L - 1)), L


def register_presets() -> None:
    """Register each seq2seq preset, its two decoder-only partners and the defaults `seqlab info` counts with."""
    for name, (cfg, description, vocab_size) in SEQ2SEQ.items():
        input_length, target_length = denoising_lengths(cfg)
        shape = f"{input_length}+{target_length} tokens, vocabulary {vocab_size}"
        partners = {
            f"{name}_decoder_params": (parameter_matched_partner(cfg, vocab_size, input_length, target_length),
                                       f"parameters matched ({shape})"),
            f"{name}_decoder_flops": (flop_matched_partner(cfg, vocab_size, input_length, target_length),
                                      f"training FLOPs per example matched at {shape}"),
        }
        ARCHITECTURES.register_preset(name, cfg, description)
        register_info_defaults(name, InfoDefaults(vocab_size, input_length, target_length, tuple(partners)))
        for partner_name, (partner, matched) in partners.items():
            ARCHITECTURES.register_preset(
                partner_name, partner, f"decoder-only partner of {name}, {partner.n_layers} layers: {matched}")
            register_info_defaults(partner_name, InfoDefaults(vocab_size, input_length, target_length))


register_presets()
