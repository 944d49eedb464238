"""Initialisation keyed by parameter name and seed, so a sharded model initialises exactly like a whole one.

Every module that owns parameters (or derived buffers) initialises them itself in `init_parameters(init)`,
which is what makes a meta-device build safe: `init_weights` walks the modules, hands each one a `ParamInit`
scoped to its name, and then checks that every parameter and buffer was written, so a module that forgets one
fails loudly instead of training from uninitialised memory.

Random values depend only on (seed, the parameter's full name, row block): each block of about 2^20 values
draws from its own generator. A rank that holds rows [a, b) of a sharded parameter (FSDP2 shards dim 0)
draws only the blocks that overlap them and keeps its rows, so its shard equals the same rows of a
single-process init, bitwise, while holding one block beyond its shard at a time.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from torch import nn

BLOCK_VALUES = 1 << 20  # values per random block: bounds the extra memory of a sharded init


def local_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A parameter (plain or a DTensor sharded on dim 0) -> (its local data, index of its first global row)."""
    from torch.distributed.tensor import DTensor  # only sharded runs hold DTensors

    if not isinstance(tensor, DTensor):
        return tensor.data, 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    if any(o != 0 for o in offset[1:]):
        raise ValueError(f"keyed init handles tensors sharded on dim 0 only; got placements {tensor.placements}")
    return tensor.to_local().data, int(offset[0]) if offset else 0


def keyed_normal(seed: int, name: str, shape: torch.Size, rows: range) -> torch.Tensor:
    """Rows `rows` of a standard-normal tensor of `shape` keyed by (seed, name), float32 on the CPU."""
    row_values = math.prod(shape[1:]) if len(shape) > 1 else 1
    per_block = max(1, BLOCK_VALUES // max(1, row_values))
    name_key = zlib.crc32(name.encode("utf-8"))
    parts = []
    for block in range(rows.start // per_block, (rows.stop - 1) // per_block + 1 if len(rows) else 0):
        state = np.random.SeedSequence([seed, name_key, block]).generate_state(2, np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        start = block * per_block
        n = min(per_block, shape[0] - start) if len(shape) else 1
        values = torch.randn((n, *shape[1:]) if len(shape) else (), generator=generator)
        lo, hi = max(rows.start, start) - start, min(rows.stop, start + n) - start
        parts.append(values[lo:hi] if len(shape) else values)
    if not parts:
        return torch.empty((0, *shape[1:]))
    return torch.cat(parts) if len(shape) else parts[0]


class ParamInit:
    """What `init_parameters` receives: the init scheme, the module's name prefix, and a record of what was
    written (so `init_weights` can check coverage)."""

    def __init__(self, seed: int, std: float, residual_std: float, prefix: str = "",
                 written: set[int] | None = None):
        self.seed, self.std, self.residual_std, self.prefix = seed, std, residual_std, prefix
        self.written = set() if written is None else written  # ids of parameters and buffers written

    def scoped(self, prefix: str) -> "ParamInit":
        return ParamInit(self.seed, self.std, self.residual_std, prefix, self.written)

    def _full(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    @torch.no_grad()
    def normal_(self, name: str, param: torch.Tensor, std: float) -> None:
        """N(0, std^2) keyed by the parameter's full name."""
        local, first = local_rows(param)
        rows = range(first, first + (local.shape[0] if local.dim() else 1))
        local.copy_(keyed_normal(self.seed, self._full(name), param.shape, rows).mul_(std).to(local))
        self.written.add(id(param))

    @torch.no_grad()
    def constant_(self, name: str, param: torch.Tensor, value: float) -> None:
        local_rows(param)[0].fill_(value)
        self.written.add(id(param))

    def ones_(self, name: str, param: torch.Tensor) -> None:
        self.constant_(name, param, 1.0)

    def linear_(self, name: str, layer: nn.Linear, std: float) -> None:
        """Normal weights, zero bias."""
        self.normal_(f"{name}.weight", layer.weight, std)
        if layer.bias is not None:
            self.constant_(f"{name}.bias", layer.bias, 0.0)

    def norm_(self, name: str, norm: nn.Module) -> None:
        """A LayerNorm or RMSNorm: unit gain, zero shift."""
        self.ones_(f"{name}.weight", norm.weight)
        if getattr(norm, "bias", None) is not None:
            self.constant_(f"{name}.bias", norm.bias, 0.0)

    def buffers_done(self, module: nn.Module) -> None:
        """A module recomputed its own (non-persistent, derived) buffers."""
        self.written.update(id(b) for b in module.buffers(recurse=False))


def init_modules(model: nn.Module, seed: int, std: float, residual_std: float) -> None:
    """Call every submodule's `init_parameters` with a ParamInit scoped to its name, then check that every
    parameter and buffer of `model` was written (tied parameters count once)."""
    init = ParamInit(seed, std, residual_std)
    for name, module in model.named_modules():
        if hasattr(module, "init_parameters"):
            module.init_parameters(init.scoped(name))
    missed = [name for name, p in [*model.named_parameters(), *model.named_buffers()] if id(p) not in init.written]
    if missed:
        raise RuntimeError(f"{type(model).__name__}.init_weights left {len(missed)} tensors uninitialised: "
                           f"{', '.join(missed[:5])}; the module owning them needs an init_parameters method")
