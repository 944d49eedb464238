"""What the GPU checks run (see check.py): the specs of the throughput, kernel and training workers, and the
accounting of the real sizes that even a dry run prints."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from seqlab.throughput import peak_flops

H100_BF16 = peak_flops("H100", "bf16-mixed")  # the dry run's MFU arithmetic uses it


def throughput_specs(dry: bool) -> list[dict]:
    from seqlab.registry import ARCHITECTURES, load_plugins
    from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig

    load_plugins()
    if dry:
        model = Seq2SeqConfig(name="seq2seq", d_model=64, n_heads=4, encoder_layers=1, decoder_layers=1,
                              max_positions=64)
        vocab, length, batch, steps, warmup = 512, 16, 2, 2, 1
        partner = Seq2Seq.matched_baseline(model, vocab, length, length, "flops")
        llama = dataclasses.replace(partner, prefix_lm=False, norm="rmsnorm", mlp="swiglu", positions="rope",
                                    bias=False)
    else:
        model, partner, llama = (ARCHITECTURES.preset(name) for name in
                                 ("seq2seq_base", "seq2seq_base_decoder_flops", "llama_base"))
        vocab, length, batch, steps, warmup = 32000, 512, 16, 10, 3

    def variant(name: str, data: str = "full", attention: str = "sdpa", compile: bool = False,
                sdpa: str = "flash+efficient") -> dict:
        return dict(name=name, data=data, attention=attention, compile=compile, sdpa=sdpa)

    packed = [variant("packed", "packed"), variant("packed flex", "packed", "flex")]
    models = [("seq2seq_base", model, [variant("full"), *packed, variant("full compiled", compile=True)]),
              ("seq2seq_base_decoder_flops", partner, [variant("full"), *packed]),
              ("llama_base", llama, [variant("full", sdpa="flash"), variant("packed flex", "packed", "flex"),
                                     variant("full compiled", compile=True, sdpa="flash")])]
    return [dict(kind="throughput", name=f"throughput {name}" + (" (dry run: tiny size)" if dry else ""),
                 config=dataclasses.asdict(cfg), vocab=vocab, input_length=length, target_length=length,
                 batch=batch, steps=steps, warmup=warmup, variants=variants,
                 device="cpu" if dry else "cuda", timeout=150)
            for name, cfg, variants in models]


def kernel_specs(dry: bool) -> list[dict]:
    device = "cpu" if dry else "cuda"
    attention = dict(batch=2, heads=2, length=256, head_dim=16, repeats=2) if dry else \
        dict(batch=8, heads=12, length=4096, head_dim=64, repeats=10)
    chunks = {"plain": None, "chunk4096": 4096, "chunk1024": 1024}
    loss = dict(positions=256, d_model=32, vocab=1000, repeats=1, implementations={"plain": None, "chunk64": 64}) \
        if dry else dict(positions=16384, d_model=1024, vocab=150_000, repeats=3, implementations=chunks)
    return [dict(kind="attention", name="kernel attention on packed rows", mean_segment=128, device=device,
                 timeout=60, **attention),
            dict(kind="loss", name="kernel chunked loss at V=150K", device=device, timeout=60, **loss)]


def parity_specs(dry: bool, work: Path) -> list[dict]:
    """Training runs: (strategy overrides, architecture, precisions); each non-auto run is compared with auto's."""
    base = ["trainer=smoke", "trainer.devices=1", f"cache_dir={work / 'cache'}"]
    clm, alexatm = ["objective=clm", "objective.packed=true"], ["objective=alexatm"]
    fp32, both, fairscale = ["32-true"], ["32-true", "bf16-mixed"], "strategy=fairscale_fsdp"
    if dry:
        base += ["trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2",
                 "trainer.checkpoint_every_n_steps=2", "data.batch_size=4", "data.seq_len=32"]
        cases = [(clm, "decoder_only", fp32), ([*clm, "strategy=ddp"], "decoder_only", fp32),
                 (alexatm, "seq2seq", fp32), ([*alexatm, "trainer.compile=true"], "seq2seq", fp32)]
    else:
        base += ["trainer.accelerator=gpu"]
        cases = [(clm, "decoder_only", both), ([*clm, "strategy=fsdp"], "decoder_only", both),
                 ([*clm, fairscale], "decoder_only", both), ([*clm, "strategy=fsdp2"], "decoder_only", both),
                 ([*clm, fairscale, "strategy.flatten_parameters=false"], "decoder_only", fp32),
                 ([*clm, fairscale, "strategy.cpu_offload=true"], "decoder_only", fp32),
                 ([*clm, fairscale, "strategy.mixed_precision=bf16"], "decoder_only", ["bf16-mixed"]),
                 (clm, "seq2seq", fp32), ([*clm, fairscale], "seq2seq", fp32),
                 (alexatm, "seq2seq", both), ([*alexatm, "strategy=fsdp2"], "seq2seq", both),
                 ([*alexatm, "trainer.compile=true"], "seq2seq", both)]
    specs = []
    for overrides, arch, precisions in cases:
        objective, rest = overrides[0].split("=", 1)[1], [o for o in overrides if not o.startswith("objective")]
        label = ",".join(o.split("strategy", 1)[1].lstrip("=.") if "strategy" in o else o.split(".", 1)[1]
                         for o in rest) or "auto"
        for precision in precisions:
            group = f"{arch}/{objective}/{precision}"
            name = f"{group}/{label}"
            specs.append(dict(kind="train", name=f"train {name}", group=group, label=label,
                              precision=precision, run_dir=str(work / "runs" / name.replace("/", "_")), timeout=240,
                              overrides=[*base, f"architecture={arch}", f"trainer.precision={precision}",
                                         *overrides]))
    return specs


def accounting() -> str:
    """Parameters and training FLOPs per example of the throughput models at their real sizes (also in a dry run)."""
    from seqlab.registry import ARCHITECTURES, load_plugins

    load_plugins()
    parts = []
    for spec in throughput_specs(dry=False):
        plugin = ARCHITECTURES.get(spec["config"]["name"])
        cfg, V, S, T = plugin.config(**spec["config"]), spec["vocab"], spec["input_length"], spec["target_length"]
        params, flops = plugin.factory.parameter_count(cfg, V), plugin.factory.training_flops(cfg, V, S, T)
        layers = getattr(cfg, "n_layers", None) or f"{cfg.encoder_layers}+{cfg.decoder_layers}"
        parts.append(f"{spec['name'].split()[-1]}: {layers} layers, {params.total / 1e6:.1f}M params "
                     f"({params.non_embedding / 1e6:.1f}M non-embedding), {flops.per_example / 1e12:.3f} TFLOP "
                     f"per {S}+{T}-token example: a step of batch {spec['batch']} takes at least "
                     f"{flops.per_example * spec['batch'] / H100_BF16 * 1e3:.1f} ms at {H100_BF16 / 1e12:.0f} TFLOP/s")
    return "; ".join(parts)


