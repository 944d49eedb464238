"""Callbacks of the core: throughput (tokens/s, MFU), and the standard set every run gets."""
from __future__ import annotations

from collections import deque
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_info

from seqlab.budget import example_costs
from seqlab.config import TrainerConfig
from seqlab.registry import ARCHITECTURES
from seqlab.run_checkpoint import RunCheckpoint
from seqlab.throughput import device_peak_flops


class TokenThroughput(pl.Callback):
    """Logs throughput over a sliding window of steps: tokens/s, useful (target) tokens/s and model FLOPs
    utilisation; and the tokens and target tokens seen, which checkpoints keep (loss-versus-tokens plots need
    them to continue across a resume).

    Everything is counted from host data, so it costs no device synchronisation: the converters' non-padding
    `batch["num_tokens"]` (the positions the model reads) and the model-neutral `batch["feature_lengths"]`,
    whose row 1 holds the target lengths (the labelled positions) and from which the architecture's accounting
    gives the batch's training FLOPs (as `train/flops_seen` counts them). Counts are this rank's times the
    number of ranks: ranks step in lockstep, and rows of varying length (CLM documents) average out over the
    window. `train/mfu` is the FLOPs per second over `peak_flops` (one device; None: the GPU's datasheet peak
    at `precision`, see seqlab/throughput.py); it is not logged when no peak is known. Validation time is left
    out of the window: the rates measure training.
    """

    def __init__(self, precision: str = "32-true", peak_flops: float | None = None, window: int = 20) -> None:
        self.precision = precision
        self.peak_flops = peak_flops
        self.tokens_seen = 0
        self.target_tokens_seen = 0
        self._architecture: Any = None  # the architecture's config, set at fit start when it has FLOP accounting
        self._vocab_size = 0
        self._peak: float | None = None  # FLOP/s of one device; None: no train/mfu
        # (clock, tokens, target tokens, FLOPs) of this rank per batch; the first entry only marks the start.
        self._window: deque[tuple[float, int, int, float]] = deque(maxlen=window + 1)
        self._paused = 0.0  # seconds spent in validation, taken off the clock
        self._pause_start = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        architecture = pl_module.run.architecture
        if not hasattr(ARCHITECTURES.get(architecture.name).factory, "training_flops"):
            rank_zero_info(f"train/mfu is not logged: architecture {architecture.name!r} has no FLOP accounting")
            return
        peak = self.peak_flops if self.peak_flops is not None else device_peak_flops(pl_module.device,
                                                                                      self.precision)
        if peak is None:
            rank_zero_info(f"train/mfu is not logged: no peak FLOP/s is known for {_device_name(pl_module.device)} "
                           f"at trainer.precision={self.precision}; set trainer.peak_flops=FLOP/s of one device")
            return
        self._architecture, self._vocab_size, self._peak = architecture, pl_module.vocab_size, peak

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause_start = perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._paused += perf_counter() - self._pause_start

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        lengths = batch["feature_lengths"]  # (2, B) numpy: input and target lengths of this rank's rows
        tokens, targets = int(batch["num_tokens"]), int(lengths[1].sum())
        flops = 0.0
        if self._peak is not None:
            flops = float(example_costs(self._architecture, self._vocab_size, lengths[0], lengths[1])[0].sum())
        world = trainer.world_size
        self.tokens_seen += tokens * world
        self.target_tokens_seen += targets * world
        self._window.append((perf_counter() - self._paused, tokens, targets, flops))
        if len(self._window) > 1:
            elapsed = max(self._window[-1][0] - self._window[0][0], 1e-9)
            # The first entry only marks the window's start time; its tokens were processed before it.
            sums = np.sum([entry[1:] for entry in list(self._window)[1:]], axis=0)
            pl_module.log("train/tokens_per_s", sums[0] * world / elapsed, prog_bar=True)
            pl_module.log("train/target_tokens_per_s", sums[1] * world / elapsed)
            if self._peak is not None:  # this rank's FLOP/s over one device's peak
                pl_module.log("train/mfu", sums[2] / elapsed / self._peak)
        pl_module.log("train/tokens_seen", float(self.tokens_seen))
        pl_module.log("train/target_tokens_seen", float(self.target_tokens_seen))

    def state_dict(self) -> dict[str, Any]:
        return {"tokens_seen": self.tokens_seen, "target_tokens_seen": self.target_tokens_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tokens_seen = int(state_dict["tokens_seen"])
        # Checkpoints written before target tokens were counted have none: they count from the resume on.
        self.target_tokens_seen = int(state_dict.get("target_tokens_seen", 0))


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"device {device.type!r}"


def standard_callbacks(cfg: TrainerConfig, run_dir: Path) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = [
        RunCheckpoint(run_dir / "checkpoints", cfg.checkpoint_every_n_steps, cfg.keep_last_checkpoints,
                      cfg.preemption),
        LearningRateMonitor(logging_interval="step"),
        TokenThroughput(cfg.precision, cfg.peak_flops),
    ]
    if cfg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_every_n_steps // 5)))
    return callbacks
