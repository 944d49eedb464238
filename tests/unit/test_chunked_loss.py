"""Chunked cross-entropy (`architecture.loss_chunk_size`): the same losses, z-loss and gradients as computing
every labelled position's logits at once, under float32 and bf16 autocast, in eval scoring and in whole models,
while no tensor of (labelled positions x vocabulary) elements is ever made or saved."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np
import pytest
import torch
from helpers import features
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from seqlab.errors import ConfigError
from seqlab.registry import ARCHITECTURES, load_plugins
from seqlab.tokenizer import PAD_ID
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.loss import IGNORE_INDEX, label_logprobs, target_losses
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig

load_plugins()

B, T, C, V = 4, 24, 8, 97  # C < every chunk size below the tracker test's, so grad weight (V, C) is no larger


def _case(seed: int = 0) -> tuple[torch.Tensor, nn.Linear, torch.Tensor]:
    """hidden (B, T, C), a bias-free head (V <- C) and labels (B, T): about 3 in 4 positions labelled, row 2
    without any label (its sums must be 0), logits (std ~3) far from a uniform softmax."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, C, generator=g)
    head = nn.Linear(C, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, C, generator=g))
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.25] = IGNORE_INDEX
    labels[2] = IGNORE_INDEX
    return hidden, head, labels


def _run(hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor, z_loss: float,
         chunk_size: Optional[int]) -> tuple[torch.Tensor, ...]:
    """Loss sums, counts, regulariser, and the gradients of hidden and head weight under per-example weights (an
    upstream gradient that differs between positions, which grad weight must sum with)."""
    hidden = hidden.detach().requires_grad_()
    head.zero_grad()
    out = target_losses(hidden, head, labels, z_loss, chunk_size)
    weights = torch.arange(1.0, B + 1) / B  # (B,)
    objective = (out.loss_sum * weights).sum()
    if out.regulariser is not None:
        objective = objective + (out.regulariser * weights.flip(0)).sum()
    objective.backward()
    regulariser = out.regulariser.detach() if out.regulariser is not None else torch.zeros(0)
    return out.loss_sum.detach(), out.tokens, regulariser, hidden.grad, head.weight.grad.clone()


def _assert_same(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...], **tolerance: float) -> None:
    for name, a, b in zip(("loss_sum", "tokens", "regulariser", "grad hidden", "grad weight"), got, want):
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}", **tolerance)


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 64, 1000])  # 7 divides no N here; 1000 exceeds every N
def test_chunked_loss_and_gradients_equal_the_plain_path(chunk_size, z_loss):
    hidden, head, labels = _case()
    want = _run(hidden, head, labels, z_loss, None)
    got = _run(hidden, head, labels, z_loss, chunk_size)
    _assert_same(got, want, rtol=1e-5, atol=1e-6)
    assert got[0][2] == 0 and got[1][2] == 0 and (got[3][2] == 0).all()  # the row without labels
    assert (got[2].numel() > 0) == (z_loss > 0)


def test_no_labelled_position_at_all():
    hidden, head, labels = _case()
    got = _run(hidden, head, torch.full_like(labels, IGNORE_INDEX), 1e-2, 5)
    assert all((t == 0).all() for t in got)


def test_bf16_autocast_is_close_to_the_plain_bf16_path():
    """Both paths: matmuls in bf16, softmax and logsumexp in float32; grad weight sums its chunks in float32
    where the plain path rounds one bf16 matmul, hence a bf16-sized tolerance."""
    hidden, head, labels = _case(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _run(hidden, head, labels, 1e-2, None)
        got = _run(hidden, head, labels, 1e-2, 10)
    assert got[3].dtype == hidden.dtype and got[4].dtype == head.weight.dtype
    _assert_same(got, want, rtol=1e-2, atol=1e-2)
    # ...and bf16 is what ran: float32 is measurably different.
    assert not torch.allclose(got[0], _run(hidden, head, labels, 1e-2, 10)[0], rtol=1e-5, atol=1e-6)


def test_label_logprobs_chunked_equal_plain():
    hidden, head, labels = _case(2)
    with torch.no_grad():
        want = label_logprobs(hidden, head, labels)
        for chunk_size in (1, 7, 1000):
            torch.testing.assert_close(label_logprobs(hidden, head, labels, chunk_size), want, rtol=1e-5, atol=1e-6)


def test_a_head_with_bias_falls_back_to_the_plain_path():
    hidden, head, labels = _case(3)
    biased = nn.Linear(C, V)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.normal_()
    _assert_same(_run(hidden, biased, labels, 1e-2, 7), _run(hidden, biased, labels, 1e-2, None),
                 rtol=1e-5, atol=1e-6)


class _LargestOutput(TorchDispatchMode):
    """Records the most elements of any tensor an op returns (forward and backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


def _largest_tensors(chunk_size: Optional[int], z_loss: float) -> tuple[int, int]:
    """(most elements of a tensor saved for backward, most elements of any op's output) over forward+backward."""
    hidden, head, labels = _case()
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with _LargestOutput() as ops, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _run(hidden, head, labels, z_loss, chunk_size)
    return max(saved), ops.largest


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_no_tensor_holds_every_positions_logits(z_loss):
    n = int((_case()[2] != IGNORE_INDEX).sum())
    assert _largest_tensors(None, z_loss) == (n * V, n * V)  # the trackers see the plain path's logits
    chunk_size = 16
    assert n > 2 * chunk_size
    saved, made = _largest_tensors(chunk_size, z_loss)
    assert saved <= V * C  # the head weight: nothing per position and vocabulary entry is kept
    assert made <= chunk_size * V


# ---------------------------------------------------------------------------------------------------------------
# Whole models: the config field reaches the loss, and training sees no difference.

MODELS = {
    "seq2seq": Seq2SeqConfig(name="seq2seq", d_model=16, n_heads=2, encoder_layers=1, decoder_layers=1, d_ff=32,
                             max_positions=32, tie_embeddings=False, z_loss=1e-3),
    "decoder_only": DecoderOnlyConfig(name="decoder_only", d_model=16, n_heads=2, n_layers=1, d_ff=32,
                                      max_positions=64, prefix_lm=True, z_loss=1e-3),  # tied head
}


def _batch(cfg: Any, model: nn.Module) -> dict:
    rng = np.random.default_rng(0)
    ids = lambda n: rng.integers(16, 200, n).tolist()
    f = features([ids(9), ids(4), ids(6)], [ids(7), ids(12), ids(3)])
    return type(model).feature_converter(cfg, pad_id=PAD_ID)(f)


@pytest.mark.parametrize("arch", list(MODELS))
def test_model_with_loss_chunk_size_trains_identically(arch):
    results = []
    for chunk_size in (None, 5):
        cfg = replace(MODELS[arch], loss_chunk_size=chunk_size)
        torch.manual_seed(0)
        model = ARCHITECTURES.build(cfg, vocab_size=200)
        model.init_weights()
        model.train()
        with _LargestOutput() as ops:
            out = model.loss(_batch(cfg, model))
            loss = out.loss_sum.sum() / out.tokens.sum()
            (loss + out.regulariser.sum()).backward()
        # The chunked path ran: no (N, V) logits (other tensors, the embeddings' (V, C) included, are smaller).
        assert (ops.largest < int(out.tokens.sum()) * 200) == (chunk_size is not None)
        with torch.no_grad():
            scores = model.target_logprobs(_batch(cfg, model))
        results.append((loss.detach(), scores, {name: p.grad for name, p in model.named_parameters()}))
    (loss, scores, grads), (loss_chunked, scores_chunked, grads_chunked) = results
    torch.testing.assert_close(loss_chunked, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores_chunked, scores, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_chunked[name], grad, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_loss_chunk_size_must_be_positive():
    with pytest.raises(ConfigError, match=r"architecture.loss_chunk_size=0: must be >= 1"):
        replace(MODELS["seq2seq"], loss_chunk_size=0)
