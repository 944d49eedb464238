"""`trainer.freeze`: parameters held fixed for the first steps of training (AlexaTM 20B froze its warm-started
encoder for the first ~100k updates).

Frozen means: while `global_step < until_step`, the parameters under the entry's prefix get no update, no
optimizer moments and no weight decay. Forward and backward run unchanged (so every rank takes part in the same
DDP / FSDP collectives, where toggling requires_grad would change them), and their gradients are then set to
None before the optimizer sees them; AdamW skips a parameter without a gradient entirely, and gradient clipping
(which Lightning runs after the step's closure) measures only the gradients that are left. A parameter starts
its moments (and its bias correction) at its first update after the freeze. The schedule depends on the step
count alone, so a resumed run freezes and unfreezes at exactly the steps an uninterrupted one does.

Sharded (DTensor) parameters are the one exception to "no moments": torch.distributed.checkpoint, which FSDP2
checkpoints go through, refuses to load an optimizer state that lacks a trainable parameter. So a frozen
sharded parameter gets AdamW's initial state (step 0, zero moments) up front, exactly what AdamW would create at
its first update, and it stays untouched while the parameter has no gradient.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from seqlab.config import FreezeConfig
from seqlab.errors import ConfigError

# Wrappers that flatten parameters (torch FSDP1, fairscale): a frozen prefix would be part of one flat tensor,
# whose frozen part would still get a zero gradient, moments and weight decay.
FLAT_WRAPPER = "_fsdp_wrapped_module"
# Wrappers that keep each parameter but add a segment to its name.
NAME_WRAPPERS = ("_checkpoint_wrapped_module", "_orig_mod")


def under(name: str, prefix: str) -> bool:
    """Whether the state-dict name `name` lies under `prefix` ("" is everything): encoder covers encoder.x.y,
    not encoder_norm.weight."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def clean_name(name: str) -> str:
    return ".".join(part for part in name.split(".") if part not in NAME_WRAPPERS)


def check_prefixes(model: nn.Module, prefixes: Iterable[tuple[str, str]], names: Sequence[str] | None = None) \
        -> None:
    """ConfigError for the first (field, prefix) that matches no parameter (or state-dict entry) of `model`,
    listing the model's top-level modules."""
    if names is None:
        names = [clean_name(n) for n, _ in model.named_parameters(remove_duplicate=False)]
    for field, prefix in prefixes:
        if not any(under(name, prefix) for name in names):
            top = sorted({name.split(".", 1)[0] for name in names})
            raise ConfigError(f"{field}={prefix!r}: matches no parameter of the {type(model).__name__} model; its "
                              f"top-level modules are {', '.join(top)} (a prefix is a dotted module name, e.g. "
                              f"{top[0]} or {_example(names, top[0])})")


def _example(names: Sequence[str], top: str) -> str:
    deeper = next((n.rsplit(".", 1)[0] for n in names if n.startswith(top + ".") and n.count(".") >= 2), None)
    return deeper or f"{top}.weight"


class FreezeSchedule:
    """The entries of `trainer.freeze`, resolved to parameters at the first step (after every wrapper)."""

    def __init__(self, entries: Sequence[FreezeConfig], strategy: str = ""):
        self.entries = list(entries)
        self.strategy = strategy
        self._params: list[list[torch.Tensor]] | None = None  # per entry, the parameters under its prefix

    def __bool__(self) -> bool:
        return bool(self.entries)

    def check(self, model: nn.Module) -> None:
        """At build time: every prefix must match a parameter (tied parameters match under each name)."""
        check_prefixes(model, ((f"trainer.freeze[{i}].module", e.module) for i, e in enumerate(self.entries)))

    def _resolve(self, model: nn.Module) -> list[list[torch.Tensor]]:
        if self._params is None:
            named = list(model.named_parameters(remove_duplicate=False))
            flat = [name for name, _ in named if FLAT_WRAPPER in name.split(".")]
            if flat:
                raise ConfigError(f"trainer.freeze: strategy={self.strategy or '?'} flattens parameters into one "
                                  f"tensor per wrapped block ({flat[0]}), so a frozen module would still get zero "
                                  "gradients, optimizer moments and weight decay; use strategy=fsdp2, ddp or auto")
            self.check(model)
            self._params = []
            for entry in self.entries:
                seen: dict[int, torch.Tensor] = {}
                for name, param in named:
                    if under(clean_name(name), entry.module):
                        seen.setdefault(id(param), param)
                self._params.append(list(seen.values()))
        return self._params

    def frozen(self, model: nn.Module, step: int) -> list[torch.Tensor]:
        """The parameters frozen during the update that follows `step` completed steps (global_step)."""
        seen: dict[int, torch.Tensor] = {}
        for entry, params in zip(self.entries, self._resolve(model)):
            if step < entry.until_step:
                for param in params:
                    seen.setdefault(id(param), param)
        return list(seen.values())

    def drop_gradients(self, model: nn.Module, step: int, optimizer: Any = None) -> int:
        """Set the gradients of the parameters frozen at `step` to None (and give sharded ones the optimizer's
        initial state, see above); -> how many values they hold (a tied tensor once, a sharded one whole)."""
        frozen = self.frozen(model, step)
        optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper -> the torch optimizer
        for param in frozen:
            param.grad = None
            if optimizer is not None and _is_sharded(param) and not optimizer.state.get(param):
                initial = adam_initial_state(optimizer, param)
                if initial is not None:
                    optimizer.state[param] = initial
        return sum(param.numel() for param in frozen)


def _is_sharded(param: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed support
        return False
    return isinstance(param, DTensor)


def adam_initial_state(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """The state torch's Adam / AdamW creates for `param` before its first update (torch/optim/adam.py
    `_init_group`), or None for other optimizers."""
    if not isinstance(optimizer, torch.optim.Adam):
        return None
    group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
    try:
        from torch.optim.optimizer import _get_scalar_dtype
    except ImportError:  # older or newer torch: its default
        def _get_scalar_dtype(is_fused: bool | None = None) -> torch.dtype:
            return torch.float64 if torch.get_default_dtype() == torch.float64 and not is_fused else torch.float32
    if group.get("capturable") or group.get("fused"):
        step = torch.zeros((), dtype=_get_scalar_dtype(is_fused=group.get("fused")), device=param.device)
    else:
        step = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
    state = {"step": step, "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
             "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
    if group.get("amsgrad"):
        state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state
