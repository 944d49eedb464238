"""The checkpoints of a run: every `checkpoint_every_n_steps`, at the last step, and on preemption."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.callbacks import ModelCheckpoint

from seqlab.config_fault import PreemptionConfig
from seqlab.preemption import Preempted, agreed_signal


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (step-named files, the newest `keep` kept, plus last.ckpt) with three more
    guarantees:

    - the last step is always saved, so last.ckpt is the finished run and relaunching it trains nothing;
    - on a preemption signal (see preemption.py), the step that just finished is saved on every rank's
      agreement, and Preempted is raised on every rank;
    - the checkpoint a run resumed from counts among the `keep` like any other. Lightning never deletes the
      file it resumed from, so every relaunch of a run left one more file behind.
    """

    def __init__(self, dirpath: Path, every_n_steps: int, keep: int, preemption: PreemptionConfig):
        super().__init__(
            dirpath=dirpath,
            filename="step{step:07.0f}",
            auto_insert_metric_name=False,
            every_n_train_steps=every_n_steps,
            monitor="step",  # logged by the module: the steps completed, so the newest files rank highest
            mode="max",
            save_top_k=keep,
            save_last=True,
            # A resumed run saving a step again replaces that step's file (atomically) instead of adding
            # step...-v1.ckpt beside a file left by the killed run.
            enable_version_counter=False,
        )
        self.preemption = preemption
        self._stop: Preempted | None = None  # raised at the next batch once a pre-emption's checkpoint is saved
        self._step_seen = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step_seen = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.global_step == self._step_seen:  # a micro-batch of gradient accumulation: no step yet
            return
        self._step_seen = trainer.global_step
        signum = agreed_signal(trainer) if self.preemption.signals else None
        if (signum is not None or trainer.global_step >= trainer.max_steps) and \
                self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        if signum is not None:
            path = self.best_model_path or self.last_model_path
            self._stop = Preempted(f"stopped by {signal.Signals(signum).name} after step {trainer.global_step}, "
                                   f"saved in {path}", self.preemption.exit_code)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # Raised here, before the next step, rather than right after the save: the saved step's metrics row
        # is written after this callback's on_train_batch_end. Not `trainer.should_stop` either: Lightning runs
        # a validation before a requested stop, which would eat into the time left before SIGKILL.
        if self._stop is not None:
            raise self._stop

    def _should_remove_checkpoint(self, trainer: pl.Trainer, previous: str, current: str) -> bool:
        if previous == current:
            return False
        if not _is_local_file_protocol(previous):
            return True
        return Path(self.dirpath).absolute() in Path(previous).absolute().parents
