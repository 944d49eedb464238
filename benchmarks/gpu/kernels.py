"""The GPU checks' kernel workers (run by check.py through workers.WORKERS, each in its own process).

- attention: packed rows' attention (causal within segments), forward + backward in bf16, as SDPA with the
  dense mask the layers build, as FlexAttention on the block mask made from that mask (what
  `architecture.attention=flex` runs), and as SDPA's fused causal kernel over the whole row (no mask: a
  different, cheaper pattern, the speed bound a mask-free kernel sets). Outputs are compared with an fp32 SDPA
  reference.
- loss: cross-entropy over a 150K vocabulary at N labelled positions, plain against `loss_chunk_size` chunks:
  peak device memory above the inputs, time, and the loss and gradients against plain's.
"""
from __future__ import annotations

import time


def segment_ids(B: int, T: int, mean: int, generator):
    """(B, T) int64 example ids 1, 2, ... of rows of back-to-back segments of geometric lengths (mean `mean`)."""
    import torch

    starts = torch.rand(B, T, generator=generator) < 1 / mean
    starts[:, 0] = True
    return torch.cumsum(starts.long(), dim=1)


def timed(fn, device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs after one warm-up run."""
    import statistics

    import torch

    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def work_attention(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from seqlab_plugins.architectures.flex import block_mask, flex, flex_runs

    B, H, T, D, device = spec["batch"], spec["heads"], spec["length"], spec["head_dim"], torch.device(spec["device"])
    generator = torch.Generator().manual_seed(0)
    segments = segment_ids(B, T, spec["mean_segment"], generator).to(device)  # (B, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    mask = (segments[:, :, None] == segments[:, None, :]) & causal  # (B, T, T): same example, causal
    mask = mask[:, None]  # (B, 1, T, T), as the layers pass it
    q, k, v = (torch.randn(B, H, T, D, generator=generator).to(device, torch.bfloat16).requires_grad_()
               for _ in range(3))
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)

    def fwd_bwd(attend):
        def run():
            q.grad = k.grad = v.grad = None
            attend().sum().backward()
        return run

    rows: dict[str, dict] = {}
    paths = {"sdpa_mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
             "sdpa_causal_row": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
    notes = []
    if flex_runs(q):
        build_start = time.perf_counter()
        blocks = block_mask(mask, True, B, T, T, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows["block_mask_build_ms"] = {"ms": (time.perf_counter() - build_start) * 1e3,
                                       "sparsity": float(blocks.sparsity())}
        paths["flex"] = lambda: flex(q, k, v, blocks, enable_gqa=False)
    else:
        notes.append(f"FlexAttention does not run on {device.type}: SDPA paths only")
    for name, attend in paths.items():
        seconds = timed(fwd_bwd(attend), device, spec["repeats"])
        with torch.no_grad():
            error = None if name == "sdpa_causal_row" else float((attend().float() - reference).abs().max())
        rows[name] = {"ms": seconds * 1e3, "max_abs_error_vs_fp32": error,
                      "tokens_per_s": B * T / seconds}
    return {"rows": rows, "notes": notes, "shape": [B, H, T, D], "mean_segment": spec["mean_segment"]}


def work_loss(spec: dict) -> dict:
    import torch
    from torch import nn

    from seqlab_plugins.architectures.loss import target_losses

    N, C, V, device = spec["positions"], spec["d_model"], spec["vocab"], torch.device(spec["device"])
    generator = torch.Generator().manual_seed(0)
    hidden = (torch.randn(1, N, C, generator=generator) * 0.5).to(device).requires_grad_()
    labels = torch.randint(6, V, (1, N), generator=generator).to(device)
    head = nn.Linear(C, V, bias=False, device=device)
    cuda = device.type == "cuda"

    def run(chunk):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = target_losses(hidden, head, labels, chunk_size=chunk)
            grads = torch.autograd.grad(out.loss_sum.sum(), (hidden, head.weight))
        return out.loss_sum.detach(), *grads

    rows, plain = {}, None
    for name, chunk in spec["implementations"].items():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        loss, grad_hidden, grad_weight = run(chunk)
        peak = (torch.cuda.max_memory_allocated() - before) / 2**30 if cuda else None
        if plain is None:
            plain = (loss, grad_hidden, grad_weight)

        def rel(a, b):
            return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))

        rows[name] = {"peak_gib": peak, "ms": timed(lambda: run(chunk), device, spec["repeats"]) * 1e3,
                      "loss": float(loss.sum()), "loss_rel_diff": rel(loss, plain[0]),
                      "grad_hidden_rel_diff": rel(grad_hidden, plain[1]),
                      "grad_weight_rel_diff": rel(grad_weight, plain[2])}
        del loss, grad_hidden, grad_weight
        if cuda:
            torch.cuda.empty_cache()
    return {"rows": rows, "positions": N, "vocab": V, "d_model": C}
