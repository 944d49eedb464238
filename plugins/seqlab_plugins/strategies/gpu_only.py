"""The check shared by strategies that need CUDA, so that choosing one on a CPU machine fails while the run is
being configured, with the reason and the alternative, not deep inside the first training step."""
from __future__ import annotations

import torch

from seqlab.errors import ConfigError


def require_cuda(strategy: str, why: str) -> None:
    if not torch.cuda.is_available():
        raise ConfigError(f"strategy={strategy}: needs CUDA GPUs ({why}), and this machine has none; "
                          "use strategy=fsdp2, which shards the same way on CPU and GPU")
