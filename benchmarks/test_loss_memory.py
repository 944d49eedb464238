"""Cross-entropy over a 150K vocabulary, forward + backward: all labelled positions' logits at once (plain)
against `architecture.loss_chunk_size` chunks, in the same run; peak memory is the point, time the price.

Each round is `target_losses` on hidden states (B, T, C) whose every position is labelled (N = B * T), then the
gradients of the hidden states and the head weight with `torch.autograd.grad` (nothing accumulates between
rounds). C = 512; float32 at N = 4096 and, as CPU bf16 matmuls are several times slower than float32 ones
without bf16 matrix instructions, bf16 autocast at N = 1024. `peak_mb` is the growth of the process's peak
resident memory over one untimed round (Linux: reset through /proc/self/clear_refs, read as VmHWM), so it counts
every allocation, the head weight's gradient included; the inputs and the weight exist before it. Each chunked
row's loss and gradients are checked against plain's from the same untimed round. `vs_plain` is plain's median
time over the row's (below 1: slower). About 4 minutes on 2 cores, most of it the float32 rounds. Run with `make
bench`.
"""
from __future__ import annotations

import contextlib
import gc
import re
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
from torch import nn

from seqlab_plugins.architectures.loss import target_losses

V = 150_000  # the paper's vocabulary
D_MODEL = 512
T = 1024
ROWS = {  # precision -> (batch size, rounds); N = batch size * T labelled positions
    "fp32": (4, 2),
    "bf16": (1, 1),
}
IMPLEMENTATIONS = {"plain": None, "chunk1024": 1024, "chunk256": 256}  # plain first: the reference

Grads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # loss sums (B,), grad hidden (B, T, C), grad weight (V, C)


def forward_backward(head: nn.Linear, hidden: torch.Tensor, labels: torch.Tensor, precision: str,
                     chunk_size: Optional[int]) -> Callable[[], Grads]:
    def run() -> Grads:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with autocast:
            out = target_losses(hidden, head, labels, chunk_size=chunk_size)
            grad_hidden, grad_weight = torch.autograd.grad(out.loss_sum.sum(), (hidden, head.weight))
        return out.loss_sum.detach(), grad_hidden, grad_weight

    return run


def _status_mb(field: str) -> float:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) / 1024


def peak_growth_mb(fn: Callable[[], Grads]) -> tuple[Grads, Optional[float]]:
    """fn's result and how far the process's peak resident memory rose above its resident memory before fn
    (None where the peak cannot be reset: not Linux). torch has no CPU allocator statistics, but its large
    blocks are mmap'ed, so they are resident while live and returned when freed."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
    except OSError:
        return fn(), None
    before = _status_mb("VmRSS")
    result = fn()
    return result, _status_mb("VmHWM") - before


@pytest.fixture(scope="module")
def inputs() -> dict[str, tuple[nn.Linear, torch.Tensor, torch.Tensor]]:
    """The head (bias-free, as both layouts'), hidden states and labels of each precision, made once."""
    made = {}
    for precision, (batch_size, _) in ROWS.items():
        g = torch.Generator().manual_seed(batch_size)
        head = nn.Linear(D_MODEL, V, bias=False)
        nn.init.normal_(head.weight, std=0.02, generator=g)
        hidden = torch.randn(batch_size, T, D_MODEL, generator=g).requires_grad_()
        made[precision] = head, hidden, torch.randint(0, V, (batch_size, T), generator=g)
    return made


@pytest.fixture(scope="module")
def reference() -> dict[str, Grads]:
    """precision -> plain's results from its untimed round, which the chunked rows must reproduce."""
    return {}


@pytest.fixture(scope="module")
def medians() -> dict[tuple[str, str], float]:
    """(precision, implementation) -> median seconds per round measured in this module, for the ratios."""
    return {}


@pytest.mark.parametrize("precision, implementation", [(p, i) for p in ROWS for i in IMPLEMENTATIONS],
                         ids=[f"{p}-{i}" for p in ROWS for i in IMPLEMENTATIONS])
def test_loss_forward_backward(benchmark, inputs, reference, medians, precision, implementation):
    head, hidden, labels = inputs[precision]
    run = forward_backward(head, hidden, labels, precision, IMPLEMENTATIONS[implementation])
    result, peak_mb = peak_growth_mb(run)  # also the warm-up round
    if implementation == "plain":
        reference[precision] = result
    elif precision in reference:
        tolerance = {"rtol": 1e-4, "atol": 1e-5} if precision == "fp32" else {"rtol": 2e-2, "atol": 1e-3}
        for name, got, want in zip(("loss sums", "grad hidden", "grad weight"), result, reference[precision]):
            torch.testing.assert_close(got, want, msg=lambda m: f"{name}: {m}", **tolerance)
    del result  # not live during the timed rounds

    N = labels.numel()
    benchmark.group = f"cross-entropy fwd+bwd {precision} N={N} V={V} d_model={D_MODEL}"
    benchmark.pedantic(run, rounds=ROWS[precision][1], iterations=1)
    if peak_mb is not None:
        benchmark.extra_info["peak_mb"] = round(peak_mb)
    benchmark.extra_info["logits_fp32_mb"] = round(N * V * 4 / 2**20)  # one (N, V) float32 tensor
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    medians[precision, implementation] = benchmark.stats.stats.median
    if implementation != "plain" and (precision, "plain") in medians:
        benchmark.extra_info["vs_plain"] = round(medians[precision, "plain"] / medians[precision, implementation], 2)
