"""AlexaTM's warm start end to end: a seq2seq whose encoder is read from a checkpoint (`architecture.init_from`)
and frozen for the first steps (`trainer.freeze`). While frozen, the encoder gets no update, no optimizer
moments, no weight decay and no share of the clipped gradient norm; after `until_step` it trains; a run resumed
from a checkpoint before the unfreeze ends bitwise where the uninterrupted run does."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from seqlab.experiment import compose_config, to_run_config
from seqlab.registry import ARCHITECTURES
from seqlab.tokenizer import Tokenizer
from seqlab.train import build_components, build_trainer

UNTIL = 5  # frozen during updates 1..5; checkpoints at 2, 4, 6, 8
STEPS = 8


def _run_config(cache: Path, pretrained: Path, *overrides: str):
    return to_run_config(compose_config([
        "trainer=smoke", "architecture=seq2seq_tiny", f"cache_dir={cache}", f"trainer.max_steps={STEPS}",
        "trainer.checkpoint_every_n_steps=2", "trainer.keep_last_checkpoints=10", "trainer.log_every_n_steps=1",
        "trainer.deterministic=true", "data.batch_size=2", "data.seq_len=64", "data.val_batches=0",
        "optim.warmup_steps=1", "optim.weight_decay=0.5", "trainer.gradient_clip_val=0.05",
        f"architecture.init_from={{path: '{pretrained}', modules: [encoder]}}",
        f"trainer.freeze=[{{module: encoder, until_step: {UNTIL}}}]", *overrides]))


class GradientsSeen(pl.Callback):
    """Which parameters hold a gradient when Lightning clips (its hook runs right after the step's closure)."""

    def __init__(self) -> None:
        self.encoder_grads: dict[int, int] = {}
        self.other_grads: dict[int, int] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step + 1
        named = list(pl_module.model.named_parameters())
        self.encoder_grads[step] = sum(p.grad is not None for n, p in named if n.startswith("encoder."))
        self.other_grads[step] = sum(p.grad is not None for n, p in named if not n.startswith("encoder."))


def _fit(run, run_dir: Path, callbacks=(), ckpt_path=None) -> None:
    parts = build_components(run)
    trainer = build_trainer(run, run_dir, parts.strategy, callbacks)
    trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=ckpt_path, weights_only=True)
    assert trainer.global_step == STEPS


def _checkpoint(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step{step:07d}.ckpt", map_location="cpu", weights_only=True)


def _weights(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def _metrics(run_dir: Path, key: str) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A pre-trained encoder's checkpoint, the uninterrupted run from it and the run resumed from its step 4."""
    root = tmp_path_factory.mktemp("freeze")
    cache = root / "cache"
    probe = _run_config(cache, root / "pretrained.ckpt")
    model = ARCHITECTURES.build(probe.architecture, vocab_size=Tokenizer(probe.tokenizer.path).vocab_size)
    model.init_weights(probe.seed + 1)
    with torch.no_grad():  # unlike any fresh init: norms and biases off their constants too
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": {f"model.{k}": v for k, v in pretrained.items()}}, root / "pretrained.ckpt")
    fresh = ARCHITECTURES.build(probe.architecture, vocab_size=model.head.out_features)
    fresh.init_weights(probe.seed)

    seen = GradientsSeen()
    _fit(probe, root / "full", [seen])
    checkpoint = root / "full" / "checkpoints" / "step0000004.ckpt"  # before the unfreeze (update 6)
    resumed = _run_config(cache, root / "pretrained.ckpt", f"resume={checkpoint}")
    _fit(resumed, root / "resumed", ckpt_path=resumed.resume)
    return {"root": root, "pretrained": pretrained, "fresh": fresh.state_dict(), "seen": seen,
            "encoder_size": sum(p.numel() for p in model.encoder.parameters())}


@pytest.mark.slow
def test_the_frozen_encoder_is_bitwise_the_pretrained_one_until_until_step(runs):
    full, pretrained, fresh = runs["root"] / "full", runs["pretrained"], runs["fresh"]
    for step in (2, 4, 6):
        weights = _weights(_checkpoint(full, step))
        encoder = [name for name in weights if name.startswith("encoder.")]
        changed = [name for name in encoder if not torch.equal(weights[name], pretrained[name])]
        if step < UNTIL:  # no update and no weight decay (0.5 here) for any encoder tensor
            assert changed == [], (step, changed[:3])
        else:  # every encoder tensor trains once unfrozen
            assert sorted(changed) == sorted(encoder), (step, sorted(set(encoder) - set(changed))[:3])
        # The rest starts from the fresh init (only the encoder was read) and trains from the first step.
        others = [name for name in weights if not name.startswith("encoder.")]
        assert others and all(not torch.equal(weights[n], fresh[n]) for n in others), step


@pytest.mark.slow
def test_frozen_parameters_have_no_optimizer_moments_and_no_share_of_the_clipped_norm(runs):
    full = runs["root"] / "full"
    names = list(_weights(_checkpoint(full, 2)))
    for step in (4, 6):
        ckpt = _checkpoint(full, step)
        # AdamW's state is indexed by position over the parameter groups (decay matrices, then the rest), in
        # the model's parameter order: rebuild the names from the checkpoint's own weights.
        weights = _weights(ckpt)
        order = [n for n in names if weights[n].dim() >= 2] + [n for n in names if weights[n].dim() < 2]
        groups = ckpt["optimizer_states"][0]["param_groups"]
        index = {i: order[k] for k, i in enumerate(i for g in groups for i in g["params"])}
        state = {index[i]: s for i, s in ckpt["optimizer_states"][0]["state"].items()}
        encoder_state = {n: s for n, s in state.items() if n.startswith("encoder.")}
        if step < UNTIL:
            assert encoder_state == {}, sorted(encoder_state)[:3]
        else:  # moments start at the first update after the freeze: one step (6) of them, the others six
            assert len(encoder_state) == sum(n.startswith("encoder.") for n in order)
            assert {float(s["step"]) for s in encoder_state.values()} == {float(step - UNTIL)}
        assert {float(s["step"]) for n, s in state.items() if not n.startswith("encoder.")} == {float(step)}
    seen = runs["seen"]
    assert all(seen.other_grads[s] > 0 for s in range(1, STEPS + 1))
    assert [seen.encoder_grads[s] for s in range(1, STEPS + 1)] == [0] * UNTIL + [seen.encoder_grads[STEPS]] * 3
    assert seen.encoder_grads[STEPS] > 0
    frozen = _metrics(full, "train/frozen_parameters")
    assert frozen == {s: float(runs["encoder_size"] if s <= UNTIL else 0) for s in range(1, STEPS + 1)}


@pytest.mark.slow
def test_resumed_before_the_unfreeze_ends_bitwise_like_the_uninterrupted_run(runs):
    root = runs["root"]
    expected, got = _checkpoint(root / "full", STEPS), _checkpoint(root / "resumed", STEPS)
    a, b = _weights(expected), _weights(got)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    sa, sb = expected["optimizer_states"][0]["state"], got["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])) for i in sa for k in sa[i])
    losses, continued = _metrics(root / "full", "train/loss"), _metrics(root / "resumed", "train/loss")
    assert sorted(continued) == list(range(5, STEPS + 1))
    assert all(continued[s] == losses[s] for s in continued), (continued, losses)


# FSDP2 on 2 CPU ranks, with its default sharded checkpoints: torch.distributed.checkpoint needs an optimizer
# state for every trainable parameter, so frozen shards carry AdamW's initial state; resuming before the
# unfreeze must load and stay exact. (Full single-file checkpoints load through another torch path that needed
# the same fix; the weights themselves are checked bitwise on one process above.)

@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp2_resumes_exactly_across_the_unfreeze(tmp_path, runs):
    import os
    import subprocess
    import sys

    root = runs["root"]
    overrides = ["trainer=smoke", "architecture=seq2seq_tiny", "strategy=fsdp2",
                 "trainer.accelerator=cpu", "trainer.devices=2",
                 "trainer.max_steps=5", "trainer.checkpoint_every_n_steps=2", "trainer.keep_last_checkpoints=3",
                 "trainer.deterministic=true",
                 "data.batch_size=1", "data.seq_len=64", "data.val_batches=0", f"cache_dir={root / 'cache'}",
                 f"architecture.init_from={{path: '{root / 'pretrained.ckpt'}'}}",
                 "trainer.freeze=[{module: encoder, until_step: 3}]"]

    def train(run_dir: Path, *extra: str) -> dict[int, float]:
        result = subprocess.run([sys.executable, "-m", "seqlab", "train", *overrides, *extra,
                                 f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env={**os.environ, "PYTHONPATH": ""})
        assert result.returncode == 0, result.stderr[-4000:]
        return _metrics(run_dir, "train/loss")

    full = train(tmp_path / "full")
    continued = train(tmp_path / "resumed", f"resume={tmp_path / 'full' / 'checkpoints' / 'step0000002.ckpt'}")
    assert sorted(continued) == [3, 4, 5] and all(continued[s] == full[s] for s in continued), (continued, full)
    frozen = _metrics(tmp_path / "full", "train/frozen_parameters")
    assert frozen == {1: runs["encoder_size"], 2: runs["encoder_size"], 3: runs["encoder_size"], 4: 0.0, 5: 0.0}


# The schedule's pieces, without training.

def test_a_prefix_that_matches_nothing_lists_the_top_level_modules():
    from seqlab.config import FreezeConfig
    from seqlab.errors import ConfigError
    from seqlab.freeze import FreezeSchedule
    from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig

    with torch.device("meta"):
        model = Seq2Seq(Seq2SeqConfig(name="seq2seq", d_model=16, n_heads=2), vocab_size=32)
    FreezeSchedule([FreezeConfig("encoder.blocks.1", 3), FreezeConfig("head.weight", 3)]).check(model)
    with pytest.raises(ConfigError, match=r"trainer\.freeze\[1\]\.module='enc': matches no parameter of the "
                                          r"Seq2Seq model; its top-level modules are decoder, encoder, head"):
        FreezeSchedule([FreezeConfig("encoder", 3), FreezeConfig("enc", 3)]).check(model)


def test_flattening_wrappers_are_refused():
    from seqlab.config import FreezeConfig
    from seqlab.errors import ConfigError
    from seqlab.freeze import FreezeSchedule

    model = torch.nn.Module()
    model.encoder = torch.nn.Module()
    model.encoder._fsdp_wrapped_module = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"strategy=fsdp flattens parameters .* use strategy=fsdp2, ddp or auto"):
        FreezeSchedule([FreezeConfig("encoder", 3)], "fsdp").drop_gradients(model, 0)


@pytest.mark.parametrize("options", [{}, {"foreach": False}, {"amsgrad": True}], ids=["foreach", "for_loop",
                                                                                     "amsgrad"])
def test_adam_initial_state_is_what_adamw_creates(options):
    """A state given up front and AdamW's own lazy one lead to bitwise the same update."""
    from seqlab.freeze import adam_initial_state

    start = torch.randn(5, 3)
    params = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    optimizers = [torch.optim.AdamW([p], lr=0.1, weight_decay=0.1, **options) for p in params]
    optimizers[1].state[params[1]] = adam_initial_state(optimizers[1], params[1])
    for p, optimizer in zip(params, optimizers):
        p.grad = torch.full_like(p, 0.5)
        optimizer.step()
    assert torch.equal(params[0], params[1])
    a, b = optimizers[0].state[params[0]], optimizers[1].state[params[1]]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
