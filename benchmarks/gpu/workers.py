"""The GPU checks' workers: check.py runs each in its own process (`check.py --worker SPEC RESULT`); the
attention and loss kernels' workers are in kernels.py."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from kernels import work_attention, work_loss  # beside this file

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
        rows = list(csv.DictReader(f))
    losses = {int(float(r["step"])): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    # The training loop's own throughput figures, last logged value (tiny models: the MFU shows overhead).
    logged = {key: next((float(r[key]) for r in reversed(rows) if r.get(key)), None)
              for key in ("train/mfu", "train/tokens_per_s", "train/target_tokens_per_s")}
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    shapes = None
    if checkpoint.is_file():  # sharded checkpoints (fsdp, fsdp2) are folders
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        shapes = {k: list(v.shape) for k, v in state.items()}
    return {"losses": losses, "state_dict_shapes": shapes, "logged": logged}


def packed_features(vocab: int, batch: int, S: int, T: int, rng):
    """Features of causal-LM documents (geometric lengths, mean 128 tokens) packed into rows of S input and T
    target positions by the objective's own packer, as the alexatm mixture's CLM rows are."""
    import numpy as np

    from seqlab.interfaces import Features
    from seqlab.tokenizer import EOS_ID, PAD_ID
    from seqlab_plugins.objectives.packing import PackSpec, pack_clm

    separator, mode = 4, 5  # any ids: random text is drawn above them
    tokens = rng.integers(6, vocab, (batch, S + T))
    tokens[rng.random(tokens.shape) < 1 / 128] = separator
    p = pack_clm(tokens, PackSpec(0.2, 0.8, S, T, mode, EOS_ID, separator, PAD_ID), rng)
    return Features(p.inputs, p.input_lengths, p.targets, p.target_lengths, np.zeros(batch, dtype=np.int64),
                    p.input_segments, p.target_segments)


def work_throughput(spec: dict) -> dict:
    """bf16 training steps of one architecture in several variants (spec["variants"]: data full|packed,
    attention sdpa|flex, compile), each on a freshly built model; the result file is rewritten after every
    variant, so a worker stopped on its timeout still reports the variants it finished."""
    import dataclasses

    import numpy as np
    import torch

    from seqlab.budget import example_costs
    from seqlab.config import OptimConfig
    from seqlab.interfaces import Features
    from seqlab.module import compile_blocks
    from seqlab.optim import build_optimizer
    from seqlab.registry import ARCHITECTURES, load_plugins
    from seqlab.throughput import peak_flops
    from seqlab.tokenizer import PAD_ID
    from seqlab_plugins.architectures.loss import IGNORE_INDEX

    load_plugins()
    plugin = ARCHITECTURES.get(spec["config"]["name"])
    base = plugin.config(**spec["config"])
    vocab, S, T, device = spec["vocab"], spec["input_length"], spec["target_length"], torch.device(spec["device"])
    peak = peak_flops(torch.cuda.get_device_name(), "bf16-mixed") if device.type == "cuda" else spec.get("peak")
    result = {"parameters": plugin.factory.parameter_count(base, vocab).total, "config": spec["config"],
              "peak_tflops": (peak or 0) / 1e12, "variants": {}}
    for variant in spec["variants"]:
        cfg = dataclasses.replace(base, attention=variant["attention"])
        torch.manual_seed(0)
        with device:
            model = ARCHITECTURES.build(cfg, vocab_size=vocab)
            model.init_weights()
        if variant["compile"]:
            compile_blocks(model, None)
        optimizer, _ = build_optimizer(model, OptimConfig(), max_steps=1000)
        converter = plugin.factory.feature_converter(cfg, pad_id=PAD_ID)
        batch_size, sdpa, notes = spec["batch"], variant["sdpa"], []
        while True:
            rng = np.random.default_rng(0)
            if variant["data"] == "packed":
                features = packed_features(vocab, batch_size, S, T, rng)
            else:
                features = Features(rng.integers(6, vocab, (batch_size, S)), np.full(batch_size, S),
                                    rng.integers(6, vocab, (batch_size, T)), np.full(batch_size, T),
                                    np.zeros(batch_size, dtype=np.int64))
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in converter(features).items()}
            try:
                start = time.perf_counter()
                seconds = timed_steps(model, optimizer, batch, device, sdpa, spec["warmup"], spec["steps"])
                warm = time.perf_counter() - start - seconds
                break
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                notes.append(f"out of memory at batch {batch_size}")
                batch_size //= 2
            except RuntimeError as err:  # no kernel among the enabled SDPA backends: say so, time the default
                if sdpa == "default":
                    raise
                notes.append(f"sdpa {sdpa} failed ({str(err).splitlines()[0][:200]}); timed with the default")
                sdpa = "default"
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        step = seconds / spec["steps"]
        # The accounting of packed rows charges attention over the whole row (an upper bound on its FLOPs).
        flops = float(example_costs(cfg, vocab, features.input_lengths, features.target_lengths)[0].sum())
        targets = int((batch["labels"] != IGNORE_INDEX).sum())
        computed = sum(int(batch[k].numel()) for k in ("input_ids", "decoder_input_ids") if k in batch)
        result["variants"][variant["name"]] = dict(
            batch=batch_size, step_seconds=step, warmup_seconds=warm, tokens_per_s=batch["num_tokens"] / step,
            target_tokens_per_s=targets / step, real_fraction=batch["num_tokens"] / computed,
            tflops_per_s=flops / step / 1e12, mfu=flops / step / peak if peak else None, sdpa=sdpa, notes=notes,
            max_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None)
        Path(spec["result_path"]).write_text(json.dumps(result))
        del model, optimizer, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
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


WORKERS = {"prepare": work_prepare, "train": work_train, "throughput": work_throughput,
           "attention": work_attention, "loss": work_loss}
