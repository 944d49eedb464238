"""The divergence guard: per-objective checks of each training step's loss (NaN, inf, spikes).

The module feeds it every micro-batch's per-objective loss, summed over ranks first: every rank sees the same
numbers and keeps the same running means, so all ranks reach the same verdict without another collective.
Checking costs one copy of those (2, K) numbers to the host per batch.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from seqlab.config_fault import DivergenceConfig
from seqlab.errors import SeqlabError


class DivergenceError(SeqlabError):
    """The training loss diverged and trainer.divergence.action=stop."""

    agreed = True  # every rank judges the same summed losses


@dataclass(frozen=True)
class Problem:
    objective: str
    loss: float
    why: str  # "nan", "inf", or how the spike compares with the running mean


class DivergenceGuard:
    def __init__(self, cfg: DivergenceConfig, objective_names: Sequence[str]):
        self.cfg = cfg
        self.names = tuple(objective_names)
        self.history = {name: deque(maxlen=cfg.window) for name in self.names}
        self.skipped = 0  # steps skipped so far (action=skip), logged and kept across a resume

    def check(self, step: int, sums: torch.Tensor) -> list[Problem]:
        """Problems of one micro-batch of optimizer step `step` (1-based, as logged); sums (2, K): per-objective
        loss sum and target tokens over all ranks. Healthy losses join the running means."""
        losses, tokens = sums.tolist()
        problems = []
        for name, total, count in zip(self.names, losses, tokens, strict=True):
            if count <= 0:  # this objective had no rows in the batch
                continue
            loss = total / count
            problem = self._judge(step, name, loss)
            if problem is None:
                self.history[name].append(loss)
            else:
                problems.append(problem)
        return problems

    def _judge(self, step: int, name: str, loss: float) -> Problem | None:
        if math.isnan(loss) or math.isinf(loss):
            return Problem(name, loss, "nan" if math.isnan(loss) else "inf")
        history = self.history[name]
        factor = self.cfg.spike_factor
        if factor is None or step < self.cfg.warmup_steps or not history:
            return None
        mean = sum(history) / len(history)
        if loss > factor * mean:
            return Problem(name, loss, f"above trainer.divergence.spike_factor={factor} x its running mean "
                                       f"{mean:.4f} over the last {len(history)} steps")
        return None

    def describe(self, step: int, problems: list[Problem], batch: str) -> str:
        """The message of a verdict: step, objectives and batch (data stream position)."""
        found = "; ".join(f"objective {p.objective}: loss {p.loss:.4g}" + ("" if p.why in ("nan", "inf")
                          else f", {p.why}") for p in problems)
        return f"divergence at step {step}: {found}; batch: {batch}"

    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: list(values) for name, values in self.history.items()}, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, values in self.history.items():
            values.clear()
            values.extend(float(v) for v in state["history"].get(name, ()))
        self.skipped = int(state["skipped"])
