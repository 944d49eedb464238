"""Named model sizes, selectable as `architecture=NAME` and described by `seqlab info NAME`."""
from __future__ import annotations

from seqlab.registry import ARCHITECTURES
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig

# name: (config, description). Vocabulary size comes from the tokenizer at build time.
SEQ2SEQ = {
    "seq2seq_tiny": (Seq2SeqConfig(name="seq2seq", d_model=64, n_heads=4, encoder_layers=2, decoder_layers=2,
                                   max_positions=512), "CPU tests and demos"),
    "seq2seq_small": (Seq2SeqConfig(name="seq2seq", d_model=512, n_heads=8, encoder_layers=6, decoder_layers=6),
                      "6+6 layers, d_model 512"),
    "seq2seq_base": (Seq2SeqConfig(name="seq2seq", d_model=768, n_heads=12, encoder_layers=12, decoder_layers=12),
                     "12+12 layers, d_model 768"),
    "seq2seq_large": (Seq2SeqConfig(name="seq2seq", d_model=1024, n_heads=16, encoder_layers=24,
                                    decoder_layers=24), "24+24 layers, d_model 1024"),
    "alexatm_20b": (Seq2SeqConfig(name="seq2seq", d_model=4096, n_heads=32, encoder_layers=46, decoder_layers=32,
                                  d_ff=16384, max_positions=1024), "AlexaTM 20B (paper Table 1)"),
}

for _name, (_cfg, _description) in SEQ2SEQ.items():
    ARCHITECTURES.register_preset(_name, _cfg, _description)
