"""Callbacks of the core: token throughput, and the standard set every run gets."""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

from seqlab.config import TrainerConfig


class TokenThroughput(pl.Callback):
    """Logs tokens/s over a sliding window of steps and the total tokens seen, summed over ranks.

    Every architecture's converter puts the number of non-padding tokens the model reads in
    `batch["num_tokens"]` (a host integer, so counting costs no device synchronisation). Tokens seen is saved
    in checkpoints: loss-versus-tokens plots need it to continue across a resume.
    """

    def __init__(self, window: int = 20) -> None:
        self.tokens_seen = 0
        self._window: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        tokens = int(batch["num_tokens"]) * trainer.world_size
        self.tokens_seen += tokens
        self._window.append((time.perf_counter(), tokens))
        if len(self._window) > 1:
            elapsed = self._window[-1][0] - self._window[0][0]
            # The first entry only marks the window's start time; its tokens were processed before it.
            window_tokens = sum(n for _, n in list(self._window)[1:])
            pl_module.log("train/tokens_per_s", window_tokens / max(elapsed, 1e-9), prog_bar=True)
        pl_module.log("train/tokens_seen", float(self.tokens_seen))

    def state_dict(self) -> dict[str, Any]:
        return {"tokens_seen": self.tokens_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tokens_seen = int(state_dict["tokens_seen"])


def standard_callbacks(cfg: TrainerConfig, run_dir: Path) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="step{step:07.0f}",
            auto_insert_metric_name=False,
            every_n_train_steps=cfg.checkpoint_every_n_steps,
            monitor="step",
            mode="max",
            save_top_k=cfg.keep_last_checkpoints,
            save_last=True,
            # A resumed run saving a step again replaces that step's file (atomically) instead of adding
            # step...-v1.ckpt beside a file left by the killed run.
            enable_version_counter=False,
        ),
        LearningRateMonitor(logging_interval="step"),
        TokenThroughput(),
    ]
    if cfg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_every_n_steps // 5)))
    return callbacks
