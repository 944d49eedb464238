"""Config schemas of the fault handling in training: the divergence guard (seqlab/guard.py) and preemption
(seqlab/preemption.py)."""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import List, Optional

from seqlab.errors import require

# Exit status of a run stopped by a preemption signal after writing its checkpoint: EX_TEMPFAIL of sysexits.h,
# "a temporary failure: retry". Neither success (0) nor a crash, so a scheduler or wrapper can tell it apart.
EXIT_PREEMPTED = 75


@dataclass
class DivergenceConfig:
    """The divergence guard: a NaN or inf loss of any objective, or (with `spike_factor`) a loss above that
    factor times the objective's running mean, stops the run or skips the step."""

    action: str = "stop"  # stop: raise before the step's update, keeping the checkpoints | skip: apply no update
    spike_factor: Optional[float] = None  # null: only NaN and inf count
    window: int = 100  # steps in each objective's running mean
    warmup_steps: int = 100  # spikes count from this step on: the loss falls fast at first

    def __post_init__(self) -> None:
        require(self.action in ("stop", "skip"), "trainer.divergence.action", self.action, "must be stop or skip")
        require(self.spike_factor is None or self.spike_factor > 1, "trainer.divergence.spike_factor",
                self.spike_factor, "must be > 1 or null")
        require(self.window >= 1, "trainer.divergence.window", self.window, "must be >= 1")
        require(self.warmup_steps >= 0, "trainer.divergence.warmup_steps", self.warmup_steps, "must be >= 0")


@dataclass
class PreemptionConfig:
    """What a run does on a preemption signal (SLURM sends SIGTERM before it kills a job, and the signal that
    `#SBATCH --signal=B:USR1@120` names that long before): it finishes the optimizer step in progress, writes
    a checkpoint, requeues the job under SLURM, and exits with `exit_code`."""

    signals: List[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])  # [] leaves signals alone
    # Under SLURM (SLURM_JOB_ID set), rank 0 runs `scontrol requeue JOB` once the checkpoint is written, so
    # the same job starts again and `resume=auto` continues it.
    requeue: bool = True
    exit_code: int = EXIT_PREEMPTED

    def __post_init__(self) -> None:
        for i, name in enumerate(self.signals):
            require(name in _CATCHABLE, f"trainer.preemption.signals[{i}]", name,
                    f"must be a signal name such as SIGTERM or SIGUSR1 ({', '.join(sorted(_CATCHABLE))})")
        require(len(set(self.signals)) == len(self.signals), "trainer.preemption.signals", list(self.signals),
                "lists a signal twice")
        require(1 <= self.exit_code <= 255, "trainer.preemption.exit_code", self.exit_code, "must be in [1, 255]")


# SIGKILL and SIGSTOP cannot be caught; SIGINT stays Ctrl+C (Lightning's graceful interrupt).
_CATCHABLE = {s.name for s in signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")} \
    - {"SIGKILL", "SIGSTOP", "SIGINT", "SIGCHLD"}
