"""Parameter and FLOP accounting against built models, decoder-only partners, and `seqlab info`."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from seqlab.cli import main
from seqlab.info import human, info_defaults
from seqlab.interfaces import Features
from seqlab.registry import ARCHITECTURES
from seqlab_plugins.architectures import presets
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig

PAD = 0
TINY_CONFIGS = [
    Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=2, decoder_layers=3, max_positions=40),
    Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, d_ff=48, tie_embeddings=True, max_positions=40),
    Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=2, embedding_norm=True, max_positions=40),
    Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=2, embedding_norm=True, tie_embeddings=True, max_positions=40),
    DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_layers=3, d_ff=48, max_positions=40),
    DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, tie_embeddings=False, max_positions=40),
]


def _architecture(cfg):
    return ARCHITECTURES.get(cfg.name).factory


def _numel(params) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())  # a tied tensor once


def _features(batch: int, input_length: int, target_length: int, vocab_size: int, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    inputs = rng.integers(4, vocab_size, (batch, input_length))
    targets = rng.integers(4, vocab_size, (batch, target_length))
    return Features(inputs, np.full(batch, input_length), targets, np.full(batch, target_length),
                    np.zeros(batch, dtype=np.int64))


@pytest.mark.parametrize("cfg", TINY_CONFIGS, ids=lambda c: f"{c.name}-tie{c.tie_embeddings}")
def test_parameter_count_equals_built_model(cfg):
    model = _architecture(cfg)(cfg, vocab_size=97)
    count = _architecture(cfg).parameter_count(cfg, 97)
    assert count.total == sum(p.numel() for p in model.parameters())
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)] + [model.head]
    assert count.embedding == _numel(p for m in tables for p in m.parameters())


@pytest.mark.parametrize("name", sorted(ARCHITECTURES.presets()))
def test_every_preset_counts_like_its_meta_build(name):
    cfg = ARCHITECTURES.preset(name)
    vocab_size = info_defaults(name).vocab_size
    with torch.device("meta"):  # no memory, so alexatm_20b and its 92-layer partner build in a blink
        model = ARCHITECTURES.build(cfg, vocab_size=vocab_size)
    assert _architecture(cfg).parameter_count(cfg, vocab_size).total == sum(p.numel() for p in model.parameters())


def test_alexatm_20b_has_the_papers_size():
    count = Seq2Seq.parameter_count(ARCHITECTURES.preset("alexatm_20b"), 150_000)
    assert count.total == pytest.approx(19.75e9, rel=0.01)
    assert count.non_embedding == pytest.approx(17.9e9, rel=0.01)  # "the layers account for about 17.9B"


# Under FlopCounterMode the math SDPA backend runs as two bmm per attention call, whose backward is four bmm:
# exactly the 3 x forward of the formula. The default backends would not match: CPU's fused kernel is not in the
# counter's table (it counts 0), and CUDA's flash/efficient formulas add the recomputed scores in backward.
# Everything else the counter sees is an mm/addmm of a Linear (bias adds are not counted), so the count is exact.
@pytest.mark.parametrize("cfg, input_length, target_length", [
    (TINY_CONFIGS[0], 5, 7),
    (TINY_CONFIGS[1], 9, 3),
    (TINY_CONFIGS[4], 5, 7),  # prefix-LM mask
    (TINY_CONFIGS[5], 0, 9),  # packed CLM: no inputs, fused causal path, the first target token is no label
], ids=["seq2seq", "seq2seq-tied", "decoder-prefix", "decoder-causal"])
def test_flop_formula_equals_counted_matmul_flops(cfg, input_length, target_length):
    architecture, batch_size = _architecture(cfg), 2
    model = architecture(cfg, vocab_size=97)
    model.init_weights()
    batch = architecture.feature_converter(cfg, pad_id=PAD)(_features(batch_size, input_length, target_length, 97))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.loss(batch).loss_sum.sum().backward()
    flops = architecture.training_flops(cfg, 97, input_length, target_length)
    assert counter.get_total_flops() == batch_size * flops.per_example
    assert batch["num_tokens"] == batch_size * flops.tokens


def test_lengths_beyond_the_position_table_are_refused():
    with pytest.raises(ValueError, match=r"input_length=41: must be in \[1, architecture.max_positions=40\]"):
        Seq2Seq.training_flops(TINY_CONFIGS[0], 97, 41, 5)
    with pytest.raises(ValueError, match="input_length \\+ target_length - 1=41: must be at most"):
        DecoderOnly.training_flops(TINY_CONFIGS[4], 97, 30, 12)


@pytest.mark.parametrize("name", sorted(presets.SEQ2SEQ))
def test_partners_are_within_half_a_layer_of_their_target(name):
    cfg, defaults = ARCHITECTURES.preset(name), info_defaults(name)
    V, S, T = defaults.vocab_size, defaults.input_length, defaults.target_length
    assert defaults.partners == (f"{name}_decoder_params", f"{name}_decoder_flops", f"{name}_llama_params",
                                 f"{name}_llama_flops")
    by_params, by_flops, llama_params, llama_flops = (ARCHITECTURES.preset(p) for p in defaults.partners)
    params = (lambda c: DecoderOnly.parameter_count(c, V).total, Seq2Seq.parameter_count(cfg, V).total)
    flops = (lambda c: DecoderOnly.training_flops(c, V, S, T).per_example,
             Seq2Seq.training_flops(cfg, V, S, T).per_example)
    for partner, (cost, target), same_components in [(by_params, params, True), (by_flops, flops, True),
                                                      (llama_params, params, False), (llama_flops, flops, False)]:
        assert (partner.d_model, partner.n_heads) == (cfg.d_model, cfg.n_heads)
        assert partner.max_positions >= S + T - 1 and partner.prefix_lm
        if same_components:  # the seq2seq's own components and tying: only the layout differs
            assert partner.d_ff == cfg.d_ff and partner.tie_embeddings == cfg.tie_embeddings
            assert all(getattr(partner, k) == getattr(cfg, k)
                       for k in ("norm", "mlp", "positions", "bias", "n_kv_heads", "qk_norm"))
        else:  # Llama-style components at the seq2seq's width
            assert (partner.norm, partner.mlp, partner.positions, partner.bias, partner.tie_embeddings) == \
                ("rmsnorm", "swiglu", "rope", False, False)
        deeper = DecoderOnlyConfig(**{**vars(partner), "n_layers": partner.n_layers + 1})
        one_layer = cost(deeper) - cost(partner)
        assert abs(cost(partner) - target) <= one_layer / 2 or partner.n_layers == 1


def test_info_prints_counts_and_partners_without_building(capsys, monkeypatch):
    monkeypatch.setattr(Seq2Seq, "__init__", None)  # building it would fail loudly
    assert main(["info", "alexatm_20b"]) == 0
    out = capsys.readouterr().out
    count = Seq2Seq.parameter_count(ARCHITECTURES.preset("alexatm_20b"), 150_000)
    flops = Seq2Seq.training_flops(ARCHITECTURES.preset("alexatm_20b"), 150_000, 870, 1024)
    assert human(count.total) == "19.71B" and "19.71B" in out and "17.86B" in out
    assert human(flops.per_example) in out and human(flops.per_token) in out
    assert "vocab_size=150,000" in out and "input_length=870" in out and "target_length=1,024" in out
    assert "alexatm_20b_decoder_params" in out and "alexatm_20b_decoder_flops" in out


def test_info_unknown_preset_lists_presets(capsys):
    assert main(["info", "alexatm_2b"]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture preset 'alexatm_2b'" in err and "alexatm_20b_decoder_flops" in err


@pytest.mark.parametrize("name", ["seq2seq_tiny", "seq2seq_tiny_decoder_params", "seq2seq_tiny_decoder_flops",
                                  "seq2seq_small", "seq2seq_small_decoder_params", "seq2seq_small_decoder_flops"])
def test_cpu_sized_presets_train_on_a_short_batch(name):
    cfg = ARCHITECTURES.preset(name)
    torch.manual_seed(0)
    with torch.device("meta"):  # skips nn.Linear's own initialisation, which init_weights replaces anyway
        model = ARCHITECTURES.build(cfg, vocab_size=128)  # a small vocabulary: the blocks are what is tested
    model.to_empty(device="cpu")
    model.init_weights()
    batch = _architecture(cfg).feature_converter(cfg, pad_id=PAD)(_features(2, 3, 2, 128))
    out = model.loss(batch)
    (out.loss_sum.sum() / out.tokens.sum()).backward()
    assert torch.isfinite(out.loss_sum).all() and out.tokens.tolist() == [2, 2]
    assert all(p.grad is not None for p in model.parameters())
