"""The GPU checks' workers: check.py runs each in its own process (`check.py --worker SPEC RESULT`)."""
from __future__ import annotations

import csv
import time
from pathlib import Path

# Dense bf16 tensor-core peaks (datasheets), matched in order against torch.cuda.get_device_name().
PEAK_BF16 = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("A10G", 70e12)]


def peak_bf16(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def work_prepare(spec: dict) -> dict:
    from seqlab.experiment import compose_config, to_run_config
    from seqlab.registry import DATA_SOURCES
    from seqlab.tokenizer import Tokenizer

    run = to_run_config(compose_config(spec["overrides"]))
    prepared = DATA_SOURCES.build(run.data).prepared_dir(Tokenizer(run.tokenizer.path), Path(run.cache_dir))
    return {"prepared": str(prepared)}


def work_train(spec: dict) -> dict:
    import torch

    from seqlab.experiment import compose_config, to_run_config
    from seqlab.train import train

    run_dir = Path(spec["run_dir"])
    train(to_run_config(compose_config(spec["overrides"])), run_dir)
    with open(run_dir / "csv" / "metrics.csv") as f:
        losses = {int(float(r["step"])): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    shapes = None
    if checkpoint.is_file():  # sharded checkpoints (fsdp, fsdp2) are folders
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        shapes = {k: list(v.shape) for k, v in state.items()}
    return {"losses": losses, "state_dict_shapes": shapes}


def work_throughput(spec: dict) -> dict:
    import numpy as np
    import torch

    from seqlab.config import OptimConfig
    from seqlab.interfaces import Features
    from seqlab.optim import build_optimizer
    from seqlab.registry import ARCHITECTURES, load_plugins
    from seqlab.tokenizer import PAD_ID

    load_plugins()
    plugin = ARCHITECTURES.get(spec["config"]["name"])
    cfg = plugin.config(**spec["config"])
    vocab, S, T, device = spec["vocab"], spec["input_length"], spec["target_length"], torch.device(spec["device"])
    flops = plugin.factory.training_flops(cfg, vocab, S, T)
    torch.manual_seed(0)
    with device:
        model = ARCHITECTURES.build(cfg, vocab_size=vocab)
        model.init_weights()
    optimizer, _ = build_optimizer(model, OptimConfig(), max_steps=1000)
    converter = plugin.factory.feature_converter(cfg, pad_id=PAD_ID)
    result = {"parameters": plugin.factory.parameter_count(cfg, vocab).total, "config": spec["config"],
              "flops_per_example": flops.per_example, "tokens_per_example": flops.tokens}
    batch_size, sdpa, notes = spec["batch"], spec["sdpa"], []
    while True:
        rng = np.random.default_rng(0)
        batch = converter(Features(rng.integers(4, vocab, (batch_size, S)), np.full(batch_size, S),
                                   rng.integers(4, vocab, (batch_size, T)), np.full(batch_size, T),
                                   np.zeros(batch_size, dtype=np.int64)))
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        try:
            seconds = timed_steps(model, optimizer, batch, device, sdpa, spec["warmup"], spec["steps"])
            break
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            notes.append(f"out of memory at batch {batch_size}")
            batch_size //= 2
        except RuntimeError as err:  # no kernel among the enabled SDPA backends: say so, time the default choice
            if sdpa == "default":
                raise
            notes.append(f"sdpa {sdpa} failed ({str(err).splitlines()[0][:200]}); timed with the default backends")
            sdpa = "default"
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    step = seconds / spec["steps"]
    achieved = flops.per_example * batch_size / step
    peak = peak_bf16(torch.cuda.get_device_name()) if device.type == "cuda" else spec.get("peak")
    result.update(batch=batch_size, step_seconds=step, tokens_per_s=batch["num_tokens"] / step,
                  tflops_per_s=achieved / 1e12, mfu=achieved / peak if peak else None, peak_tflops=(peak or 0) / 1e12,
                  sdpa=sdpa, notes=notes, max_memory_gib=torch.cuda.max_memory_allocated() / 2**30
                  if device.type == "cuda" else None)
    return result


def timed_steps(model, optimizer, batch, device, sdpa: str, warmup: int, steps: int) -> float:
    """Seconds for `steps` training steps after `warmup` untimed ones, in bf16 autocast, with these SDPA backends."""
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"flash": [SDPBackend.FLASH_ATTENTION],
                "flash+efficient": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]}

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model.loss(batch)
            loss = out.loss_sum.sum() / out.tokens.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with sdpa_kernel(backends[sdpa]) if sdpa in backends else contextlib.nullcontext():
        for _ in range(warmup):
            step()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
    return time.perf_counter() - start


WORKERS = {"prepare": work_prepare, "train": work_train, "throughput": work_throughput}
