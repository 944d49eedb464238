"""The divergence guard in training: a NaN loss injected at step 5 stops the run with the documented message,
keeping the checkpoints of the steps before it, or (action=skip) leaves the weights untouched by that step."""
import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from seqlab.experiment import compose_config, to_run_config
from seqlab.fault import inspect_checkpoint, resolve_resume
from seqlab.guard import DivergenceError
from seqlab.interfaces import LossOutput
from seqlab.train import build_components, build_trainer

NAN_STEP = 5


def _parts(tmp_path: Path, *overrides: str):
    run = to_run_config(compose_config(["trainer=smoke", f"cache_dir={tmp_path / 'cache'}",
                                        "trainer.checkpoint_every_n_steps=2", "trainer.val_check_interval=6",
                                        "data.val_batches=1", *overrides]))
    parts = build_components(run)
    parts.module.configure_model()
    return run, parts


def _inject_nan(parts) -> list[str]:
    """Make the loss of the NAN_STEP-th training batch NaN on the rows of one objective (its first row's);
    the returned list receives that objective's name."""
    model, names, hit = parts.module.model, parts.module.objective_names, []
    real_loss = model.loss
    calls = []

    def loss(batch) -> LossOutput:
        out = real_loss(batch)
        if model.training:
            calls.append(None)
            if len(calls) == NAN_STEP:
                first = batch["objective"][0]
                hit.append(names[int(first)])
                poison = torch.where(batch["objective"] == first, float("nan"), 1.0)
                out = LossOutput(out.loss_sum * poison, out.tokens)
        return out

    model.loss = loss
    return hit


@pytest.mark.slow
def test_nan_at_step_5_stops_with_the_message_and_keeps_the_checkpoint_of_step_4(tmp_path):
    run, parts = _parts(tmp_path)
    hit = _inject_nan(parts)
    run_dir = tmp_path / "run"
    with pytest.raises(DivergenceError) as raised:
        build_trainer(run, run_dir, parts.strategy).fit(parts.module, datamodule=parts.datamodule)
    checkpoint = run_dir / "checkpoints" / "step0000004.ckpt"
    assert str(raised.value) == (
        f"divergence at step 5: objective {hit[0]}: loss nan; batch: data stream step 4 of seed 0, batch_idx 4. "
        f"The run stopped before this step's update, so no checkpoint holds it; the last checkpoint is {checkpoint}. "
        "Resume from it with a lower optim.lr, or set trainer.divergence.action=skip")
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt", "step0000002.ckpt",
                                                                    "step0000004.ckpt"]
    assert inspect_checkpoint(checkpoint.parent / "last.ckpt").step == 4  # loadable, weights finite
    assert resolve_resume("auto", run_dir).step == 4


class WeightsAroundStep(pl.Callback):
    """A copy of the weights before and after one optimizer step."""

    def __init__(self, step: int):
        self.step, self.before, self.after = step, None, None

    def _weights(self, module) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in module.parameters()])

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step - 1:
            self.before = self._weights(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.after = self._weights(module)


@pytest.mark.slow
def test_skip_applies_no_update_for_the_nan_step_and_training_goes_on(tmp_path):
    run, parts = _parts(tmp_path, "trainer.divergence.action=skip")
    hit = _inject_nan(parts)
    weights = WeightsAroundStep(NAN_STEP)
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning) as warned:
        trainer = build_trainer(run, run_dir, parts.strategy, [weights])
        trainer.fit(parts.module, datamodule=parts.datamodule)
    assert trainer.global_step == 6
    expected = (f"divergence at step 5: objective {hit[0]}: loss nan; batch: data stream step 4 of seed 0, "
                "batch_idx 4; skipping this step (trainer.divergence.action=skip)")
    assert expected in [str(w.message) for w in warned]
    assert torch.equal(weights.before, weights.after)  # the skipped step changed nothing
    assert torch.isfinite(weights.after).all()
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f) if r.get("train/loss")}
    assert rows[5]["train/loss"] == "nan" and rows[6]["train/loss"] != "nan"
    assert rows[4]["train/skipped_steps"] == "" and rows[6]["train/skipped_steps"] == "1.0"
    assert inspect_checkpoint(run_dir / "checkpoints" / "step0000006.ckpt").step == 6  # finite weights
