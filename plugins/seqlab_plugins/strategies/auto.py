"""`auto`: one device, whichever Lightning picks (CPU, one GPU, MPS)."""
from __future__ import annotations

from dataclasses import dataclass

from seqlab.config import StrategyConfig
from seqlab.interfaces import StrategySetup
from seqlab.registry import STRATEGIES


@dataclass
class AutoConfig(StrategyConfig):
    pass


@STRATEGIES.register("auto", config=AutoConfig)
def auto_strategy(cfg: AutoConfig) -> StrategySetup:
    """Single device: Lightning's automatic choice."""
    return StrategySetup("auto")
