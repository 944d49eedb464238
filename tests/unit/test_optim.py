"""Optimizer groups and learning-rate schedule as the paper describes them."""
import pytest
import torch

from seqlab.config import OptimConfig
from seqlab.optim import build_optimizer, lr_factor, parameter_groups
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig


def test_no_weight_decay_on_biases_and_norms():
    model = DecoderOnly(DecoderOnlyConfig(d_model=16, n_layers=1, n_heads=2), vocab_size=10)
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert all(n.endswith("bias") or "norm" in n for n in no_decay_names)
    assert {"decoder.blocks.0.attn_norm.weight", "decoder.blocks.0.attn.qkv.bias",
            "decoder.final_norm.bias"} <= no_decay_names
    assert {"decoder.embed.weight", "decoder.positions.weight", "decoder.blocks.0.ff.up.weight"} <= decay_names
    assert len(no_decay_names) + len(decay_names) == len(list(model.parameters()))


def test_warmup_then_linear_decay_to_min_lr():
    cfg = OptimConfig(lr=1e-4, min_lr=5e-6, warmup_steps=10)
    assert lr_factor(0, cfg, 110) == pytest.approx(0.1)
    assert lr_factor(9, cfg, 110) == pytest.approx(1.0)
    assert lr_factor(60, cfg, 110) == pytest.approx((1 + 0.05) / 2)
    assert lr_factor(110, cfg, 110) == pytest.approx(0.05)
    assert lr_factor(500, cfg, 110) == pytest.approx(0.05)  # stays at the floor past max_steps


def test_scheduler_drives_the_optimizer():
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(model, OptimConfig(lr=1.0, min_lr=0.0, warmup_steps=2), max_steps=4)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.5])
