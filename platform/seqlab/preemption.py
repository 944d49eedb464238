"""Preemption: a run told to stop (SIGTERM from a scheduler) finishes its step, checkpoints and exits 75.

Lightning's own handling of SIGTERM kills the other ranks at once and ends the run with status 0 and no
checkpoint: a scheduler reads a pre-empted run as finished, and up to a checkpoint interval of work is lost.
Here the signal handler only records the signal. At the end of every optimizer step the ranks agree (one
all-reduce of a flag) whether any of them received one; if so, every rank takes part in writing a checkpoint
of that step, and Preempted is raised on every rank before the next step starts (RunCheckpoint). The job is
then requeued under SLURM, and the run exits with `trainer.preemption.exit_code` (75, EX_TEMPFAIL: "retry").
The same command with `resume=auto` continues it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
from types import FrameType

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.connectors.signal_connector import _SignalConnector
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from seqlab.config_fault import PreemptionConfig
from seqlab.errors import SeqlabError


class Preempted(SeqlabError):
    """The run stopped on a preemption signal, after writing its checkpoint; exit with `exit_code`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class PreemptionSignals(_SignalConnector):
    """Lightning's signal connector with seqlab's handlers: each configured signal is only recorded.

    It replaces `trainer._signal_connector`, the one place Lightning installs its handlers (at fit start, and
    restores the previous ones at teardown). Lightning's handler would kill the other ranks from inside the
    signal handler and stop the loops through `received_sigterm`, which stays False here."""

    def __init__(self, trainer: pl.Trainer, cfg: PreemptionConfig):
        super().__init__(trainer)
        self.cfg = cfg
        self.received: int | None = None  # the first preemption signal this process received

    def register_signal_handlers(self) -> None:
        self.received_sigterm = False
        self._original_handlers = self._get_current_signal_handlers()
        for name in self.cfg.signals:
            self._register_signal(signal.Signals[name], self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum


def install(trainer: pl.Trainer, cfg: PreemptionConfig) -> PreemptionSignals:
    connector = PreemptionSignals(trainer, cfg)
    trainer._signal_connector = connector
    return connector


def agreed_signal(trainer: pl.Trainer) -> int | None:
    """The preemption signal any rank received (the largest number if several), the same on every rank; None.
    Every rank must call this at the same point: it is a collective under data parallelism."""
    connector = trainer._signal_connector
    mine = connector.received if isinstance(connector, PreemptionSignals) and connector.received else 0
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        # Lightning's strategy.reduce offers sum and mean only; a maximum keeps the signal's number.
        flag = torch.tensor([mine], dtype=torch.int64, device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        mine = int(flag.item())
    return mine or None


def requeue(cfg: PreemptionConfig) -> str | None:
    """Under SLURM with `cfg.requeue`, run `scontrol requeue JOB` (rank 0 only); what happened, for the message."""
    job = os.environ.get("SLURM_JOB_ID")
    if not cfg.requeue or job is None:
        return None
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else job
    if not re.fullmatch(r"[0-9_]+", job):
        rank_zero_warn(f"not requeueing: SLURM job id {job!r} is not a number")
        return None
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        rank_zero_warn(f"scontrol requeue {job} failed: {err}")
        return f"requeueing SLURM job {job} failed ({err})"
    if result.returncode != 0:
        rank_zero_warn(f"scontrol requeue {job} failed: {result.stderr.strip()}")
        return f"requeueing SLURM job {job} failed ({result.stderr.strip()})"
    rank_zero_info(f"requeued SLURM job {job}")
    return f"SLURM job {job} requeued"
