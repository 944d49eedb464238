"""Training-step throughput: seqlab's models against transformers' peers of the same configuration, on CPU.

One step is forward, backward, AdamW step and zero_grad, with the optimizer `seqlab.optim.build_optimizer` makes
(the same for both sides). Pairs, each a benchmark group:
- `seq2seq_tiny` / `seq2seq_small` presets against `MBartForConditionalGeneration` with the same d_model,
  layers, heads, ffn width, vocabulary and positions, no dropout, SDPA attention.
- A `decoder_only` of each preset's size (d_model, heads and positions of the preset, n_layers = encoder +
  decoder layers, causal, as GPT-2 is) against `GPT2LMHeadModel` of that configuration (exact GELU, SDPA).
Block parameters are checked equal before timing, so the bodies are the same size; the rest is each design's:
seqlab's seq2seq keeps the paper's three untied vocabulary matrices (MBart ties them into one) and has no
embedding LayerNorm; both decoder-only models tie input and output embeddings.
Batches are random token ids through seqlab's own feature converters, every example full: 128 input and 128
target tokens (the decoder-only sequence is their concatenation, 255 positions after the shift), batch 8 for
the tiny size and 4 for the small one (halved to keep the module near 40 s on 2 cores). The peers get the same
tensors: MBart an all-ones attention mask, GPT-2 the already shifted labels as `shift_labels`.
seqlab's models compute logits only at labelled positions (their loss path): the same count as MBart's for
seq2seq, where every target position has a label, but half of GPT-2's for the decoder-only pair, which projects
all 255 positions onto the vocabulary and then ignores the 127 input positions in its loss. That saving is
part of seqlab's design, so it stays in the timing; `logit_positions` records it.
tokens/s counts input + target tokens (256 per example) per step; `seqlab_vs_hf` is seqlab's tokens/s over the
peer's at the same precision. Each pair runs in float32 and in bf16 autocast around forward and loss (what
`trainer.precision=bf16-mixed` does; weights, gradients and AdamW stay float32), and seqlab also with its blocks
compiled as `trainer.compile=true` does (`seqlab_compiled`: inductor, torch's default mode; the compilation is in
the untimed warm-up round, the peer stays eager). torch's default thread count. Run with `make bench`;
`benchmarks/profile_model.py` reuses this setup.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, MBartConfig, MBartForConditionalGeneration
from transformers.utils import logging as transformers_logging

from seqlab.config import OptimConfig
from seqlab.experiment import resource_path
from seqlab.interfaces import Batch, Features
from seqlab.module import compile_blocks
from seqlab.optim import build_optimizer
from seqlab.registry import ARCHITECTURES, load_plugins
from seqlab.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig

INPUT_LEN = 128
TARGET_LEN = 128
BATCH_SIZES = {"seq2seq_tiny": 8, "seq2seq_small": 4}
ROUNDS = {"seq2seq_tiny": 20, "seq2seq_small": 5}
MODELS = ["seq2seq", "decoder_only"]
PRECISIONS = ["fp32", "bf16"]
IMPLEMENTATIONS = ["hf", "seqlab", "seqlab_compiled"]  # the peer first: seqlab's ratios need its number
Step = Callable[[], None]


@dataclass
class Setup:
    """One side of a pair: its model, the step that trains it, and the logits it computes per step."""

    model: nn.Module
    step: Step
    logit_positions: int


def vocab_size() -> int:
    return Tokenizer(resource_path("tokenizer/embedded.model")).vocab_size


def features(batch_size: int, vocab: int) -> Features:
    """Full-length random examples (ids past the special pieces), the same for every model of a preset."""
    rng = np.random.default_rng(0)
    return Features(rng.integers(4, vocab, (batch_size, INPUT_LEN)), np.full(batch_size, INPUT_LEN),
                    rng.integers(4, vocab, (batch_size, TARGET_LEN)), np.full(batch_size, TARGET_LEN),
                    np.zeros(batch_size, dtype=np.int64))


def decoder_only_config(cfg: Seq2SeqConfig) -> DecoderOnlyConfig:
    """A decoder-only of the preset's size: as many layers as encoder and decoder together, causal like GPT-2."""
    return DecoderOnlyConfig(name="decoder_only", d_model=cfg.d_model, n_heads=cfg.n_heads,
                             n_layers=cfg.encoder_layers + cfg.decoder_layers, d_ff=cfg.d_ff,
                             max_positions=cfg.max_positions, prefix_lm=False)


def mbart(cfg: Seq2SeqConfig, vocab: int) -> MBartForConditionalGeneration:
    d_ff = cfg.d_ff or 4 * cfg.d_model
    return MBartForConditionalGeneration(MBartConfig(
        vocab_size=vocab, d_model=cfg.d_model, encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.n_heads, decoder_attention_heads=cfg.n_heads, encoder_ffn_dim=d_ff,
        decoder_ffn_dim=d_ff, max_position_embeddings=cfg.max_positions, activation_function="gelu",
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=cfg.init_std,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID, decoder_start_token_id=BOS_ID,
        attn_implementation="sdpa"))


def gpt2(cfg: DecoderOnlyConfig, vocab: int) -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=vocab, n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
        n_inner=cfg.d_ff or 4 * cfg.d_model, n_positions=cfg.max_positions, activation_function="gelu",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=cfg.init_std,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, attn_implementation="sdpa"))


def train_step(model: nn.Module, loss: Callable[[], torch.Tensor], precision: str) -> Step:
    optimizer, _ = build_optimizer(model, OptimConfig(), max_steps=1000)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            value = loss()
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # as Lightning does

    return step


def seqlab_setup(cfg: Seq2SeqConfig | DecoderOnlyConfig, batch: Batch, vocab: int, precision: str,
                 compiled: bool = False) -> Setup:
    """seqlab's model, trained on the mean token loss exactly as SeqLabModule.training_step takes it."""
    torch.manual_seed(0)
    model = ARCHITECTURES.build(cfg, vocab_size=vocab)
    model.init_weights()
    if compiled:
        compile_blocks(model, mode=None)

    def loss() -> torch.Tensor:
        out = model.loss(batch)
        return out.loss_sum.sum() / out.tokens.sum().clamp_min(1)

    return Setup(model, train_step(model, loss, precision), int((batch["labels"] != IGNORE_INDEX).sum()))


def hf_seq2seq_setup(cfg: Seq2SeqConfig, batch: Batch, vocab: int, precision: str) -> Setup:
    torch.manual_seed(0)
    model = mbart(cfg, vocab)
    attention_mask = torch.ones_like(batch["input_ids"])  # what a tokenizer returns for unpadded inputs
    return Setup(model, train_step(model, lambda: model(
        input_ids=batch["input_ids"], attention_mask=attention_mask, decoder_input_ids=batch["decoder_input_ids"],
        labels=batch["labels"]).loss, precision), batch["labels"].numel())


def hf_decoder_only_setup(cfg: DecoderOnlyConfig, batch: Batch, vocab: int, precision: str) -> Setup:
    torch.manual_seed(0)
    model = gpt2(cfg, vocab)
    return Setup(model, train_step(model, lambda: model(
        batch["input_ids"], labels=batch["labels"], shift_labels=batch["labels"]).loss, precision),
        batch["input_ids"].numel())


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of any model here: the parameters that must match between the two sides."""
    if isinstance(model, MBartForConditionalGeneration):
        return [*model.model.encoder.layers, *model.model.decoder.layers]
    if isinstance(model, GPT2LMHeadModel):
        return list(model.transformer.h)
    return list(model.blocks)


def parameters(modules: list[nn.Module]) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


def build(preset: str, model_kind: str, implementation: str, precision: str = "fp32") -> tuple[Setup, int]:
    """The setup of one benchmark and its tokens per step (input + target tokens)."""
    load_plugins()
    transformers_logging.set_verbosity_error()  # silences GPT-2's note that it picked its default causal-LM loss
    vocab, batch_size = vocab_size(), BATCH_SIZES[preset]
    preset_cfg: Seq2SeqConfig = ARCHITECTURES.preset(preset)
    cfg = preset_cfg if model_kind == "seq2seq" else decoder_only_config(preset_cfg)
    converter = ARCHITECTURES.get(cfg.name).factory.feature_converter(cfg, pad_id=PAD_ID)
    batch = converter(features(batch_size, vocab))
    if implementation.startswith("seqlab"):
        setup = seqlab_setup(cfg, batch, vocab, precision, compiled=implementation == "seqlab_compiled")
    elif model_kind == "seq2seq":
        setup = hf_seq2seq_setup(cfg, batch, vocab, precision)
    else:
        setup = hf_decoder_only_setup(cfg, batch, vocab, precision)
    return setup, batch_size * (INPUT_LEN + TARGET_LEN)


@pytest.fixture(scope="module")
def throughput() -> dict[tuple[str, ...], float]:
    """tokens/s of each (preset, model, precision, implementation) measured in this module, for the ratios."""
    return {}


@pytest.fixture(scope="module")
def block_parameters() -> dict[tuple[str, ...], int]:
    """Block parameter counts of each (preset, model, precision, implementation), to check that pairs match."""
    return {}


CASES = [(preset, kind, precision, impl) for preset in BATCH_SIZES for kind in MODELS for precision in PRECISIONS
         for impl in IMPLEMENTATIONS]


@pytest.mark.parametrize("preset, model_kind, precision, implementation", CASES,
                         ids=["-".join(case) for case in CASES])
def test_train_step(benchmark, throughput, block_parameters, preset, model_kind, precision, implementation):
    setup, tokens = build(preset, model_kind, implementation, precision)
    case, peer = (preset, model_kind, precision, implementation), (preset, model_kind, precision, "hf")
    block_parameters[case] = parameters(blocks_of(setup.model))
    if implementation != "hf" and peer in block_parameters:
        assert block_parameters[case] == block_parameters[peer], "configurations differ"

    peer_name = "MBartForConditionalGeneration" if model_kind == "seq2seq" else "GPT2LMHeadModel"
    benchmark.group = (f"train step {model_kind} ({preset} size) vs {peer_name}, {precision}, batch "
                       f"{BATCH_SIZES[preset]} x {INPUT_LEN}+{TARGET_LEN} tokens")
    benchmark.pedantic(setup.step, rounds=ROUNDS[preset], iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    throughput[case] = tokens / benchmark.stats.stats.median
    benchmark.extra_info["tokens_per_s"] = round(throughput[case])
    benchmark.extra_info["tokens_per_step"] = tokens
    benchmark.extra_info["logit_positions"] = setup.logit_positions
    benchmark.extra_info["parameters"] = parameters([setup.model])
    benchmark.extra_info["block_parameters"] = block_parameters[case]
    if implementation != "hf" and peer in throughput:
        benchmark.extra_info["seqlab_vs_hf"] = round(throughput[case] / throughput[peer], 2)
