"""The GPU checks, for one lent GPU and a few minutes (check.sh installs the carried wheels, then runs this;
the work of each check is in workers.py).

1. throughput: bf16 training steps (autocast, as trainer.precision=bf16-mixed does; AdamW, clipping) of a ~350M
   seq2seq (d_model 1024, 16 heads, 12+12 layers, ffn 4096, vocabulary 32000, untied embeddings as in the paper)
   and of its FLOP-matched decoder-only partner, on full-length random examples of 512 input + 512 target tokens.
   tokens/s counts the tokens the model reads (the converters' num_tokens); MFU = the accounting's training FLOPs
   per example x examples/s / the GPU's dense bf16 peak. SDPA backends: the flash kernel takes no explicit mask,
   and seq2seq (padding masks) and the prefix-LM partner pass one, so those run with flash + memory-efficient
   enabled; the causal partner (same FLOPs, no mask) runs with flash alone, which fails rather than falls back.
2. pytest tests/unit/test_fairscale_strategy.py (its GPU test: 3 steps, full state dict, resume).
3. parity: 6 steps of the tiny models on the embedded corpus, objective=clm objective.packed=true, seed 0, under
   each sharding strategy and under strategy=auto; the train/loss of every step must agree within 1e-3 in fp32 and
   2e-2 in bf16-mixed (bf16 keeps 8 mantissa bits: 0.4% of a loss near 8 is 0.03, and most of that averages out).

Every check runs in its own subprocess (own session, killed on timeout) under one overall deadline; results.json
and summary.txt in --out are rewritten after each check, so a run cut short still reports what finished.
`--dry-run` runs on CPU in about a minute: config composition of every GPU parity run, the FLOP and MFU arithmetic
of the real sizes, two 2-step CPU trainings through the parity comparison, the CPU test, and the timed loop on a
tiny model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from workers import PEAK_BF16, WORKERS, peak_bf16  # beside this file, on sys.path when run as a script

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = {"32-true": 1e-3, "bf16-mixed": 2e-2}


# ---------------------------------------------------------------- the checks, as specs for worker processes
def throughput_specs(dry: bool) -> list[dict]:
    from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig

    if dry:
        cfg = Seq2SeqConfig(name="seq2seq", d_model=64, n_heads=4, encoder_layers=1, decoder_layers=1, max_positions=64)
        vocab, length, batch, steps, warmup = 512, 16, 2, 2, 1
    else:
        cfg = Seq2SeqConfig(name="seq2seq", d_model=1024, n_heads=16, encoder_layers=12, decoder_layers=12,
                            d_ff=4096, max_positions=1024)
        vocab, length, batch, steps, warmup = 32000, 512, 16, 10, 3
    partner = Seq2Seq.matched_baseline(cfg, vocab, length, length, "flops")
    models = [("seq2seq_350m", cfg, "flash+efficient"), ("decoder_partner_prefix_lm", partner, "flash+efficient"),
              ("decoder_partner_causal", dataclasses.replace(partner, prefix_lm=False), "flash")]
    return [dict(kind="throughput", name=f"throughput {name}" + (" (dry run: tiny size)" if dry else ""),
                 config=dataclasses.asdict(model), vocab=vocab, input_length=length, target_length=length,
                 batch=batch, steps=steps, warmup=warmup, sdpa=sdpa,
                 device="cpu" if dry else "cuda", timeout=150)
            for name, model, sdpa in models]


def parity_specs(dry: bool, work: Path) -> list[dict]:
    """Training runs: (strategy overrides, architecture, precisions); each non-auto run is compared with auto's."""
    base = ["trainer=smoke", "trainer.devices=1", "objective=clm", "objective.packed=true",
            f"cache_dir={work / 'cache'}"]
    fp32, both, fairscale = ["32-true"], ["32-true", "bf16-mixed"], "strategy=fairscale_fsdp"
    if dry:
        base += ["trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2",
                 "trainer.checkpoint_every_n_steps=2", "data.batch_size=4", "data.seq_len=32"]
        cases = [([], "decoder_only", fp32), (["strategy=ddp"], "decoder_only", fp32)]
    else:
        base += ["trainer.accelerator=gpu"]
        cases = [([], "decoder_only", both), (["strategy=fsdp"], "decoder_only", both),
                 ([fairscale], "decoder_only", both), (["strategy=fsdp2"], "decoder_only", both),
                 ([fairscale, "strategy.flatten_parameters=false"], "decoder_only", fp32),
                 ([fairscale, "strategy.cpu_offload=true"], "decoder_only", fp32),
                 ([fairscale, "strategy.mixed_precision=bf16"], "decoder_only", ["bf16-mixed"]),
                 ([], "seq2seq", fp32), ([fairscale], "seq2seq", fp32)]
    specs = []
    for strategy, arch, precisions in cases:
        label = ",".join(o.split("strategy", 1)[1].lstrip("=.") for o in strategy) or "auto"
        for precision in precisions:
            name = f"{arch}/{precision}/{label}"
            specs.append(dict(kind="train", name=f"train {name}", group=f"{arch}/{precision}", label=label,
                              precision=precision, run_dir=str(work / "runs" / name.replace("/", "_")), timeout=240,
                              overrides=[*base, f"architecture={arch}", f"trainer.precision={precision}", *strategy]))
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
                     f"{flops.per_example * spec['batch'] / PEAK_BF16[0][1] * 1e3:.1f} ms at 989 TFLOP/s")
    return "; ".join(parts)


# ---------------------------------------------------------------- the orchestrator
class Report:
    """Results so far, rewritten to results.json and summary.txt after every check."""

    def __init__(self, out: Path, env: dict):
        self.out, self.env, self.checks, self.lock = out, env, {}, threading.Lock()
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, status: str, detail: str, **data) -> None:
        with self.lock:
            self.checks[name] = dict(status=status, detail=detail, **data)
            print(f"{status:4}  {name}: {detail}", flush=True)
            (self.out / "results.json").write_text(json.dumps({"env": self.env, "checks": self.checks}, indent=1))
            lines = [f"{k}: {v}" for k, v in self.env.items()] + [""]
            lines += [f"{c['status']:4}  {n}: {c['detail']}" for n, c in self.checks.items()]
            counts = {s: sum(c["status"] == s for c in self.checks.values()) for s in ("PASS", "FAIL", "SKIP")}
            lines += ["", " ".join(f"{s} {n}" for s, n in counts.items())]
            (self.out / "summary.txt").write_text("\n".join(lines) + "\n")


def run_worker(spec: dict, work: Path, deadline: float, port: int) -> tuple[dict | None, str, float]:
    """Run one spec in a subprocess (own session, killed with its children on timeout) -> (result, error, seconds)."""
    slug = "".join(c if c.isalnum() else "_" for c in spec["name"])
    spec_path, result_path, log_path = (work / "specs" / f"{slug}.{ext}" for ext in ("json", "result.json", "log"))
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    timeout = min(spec["timeout"], deadline - time.monotonic())
    if timeout < 15:
        return None, "SKIP: out of time", 0.0
    env = dict(os.environ, PYTHONUNBUFFERED="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(spec_path), str(result_path)], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.monotonic() - start
    if result_path.is_file():
        return json.loads(result_path.read_text()), "", seconds
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.is_file() else ""
    why = f"timed out after {timeout:.0f} s" if proc.returncode == -signal.SIGKILL else f"exit {proc.returncode}"
    return None, f"{why}; log {log_path}; tail:\n{tail}", seconds


def compare(report: Report, runs: dict[str, dict], specs: list[dict]) -> None:
    """Each non-auto training run against the auto run of its architecture and precision."""
    baselines = {s["group"]: runs.get(s["name"]) for s in specs if s["label"] == "auto"}
    for spec in specs:
        if spec["label"] == "auto":
            continue
        name, tol = f"parity {spec['group']}/{spec['label']}", TOLERANCE[spec["precision"]]
        base, run = baselines.get(spec["group"]), runs.get(spec["name"])
        if not base or not run:
            report.add(name, "FAIL", "training run " + ("auto" if not base else spec["label"]) + " did not finish")
            continue
        steps = sorted(set(base["losses"]) | set(run["losses"]))
        if set(base["losses"]) != set(run["losses"]):
            report.add(name, "FAIL", f"logged steps differ: {sorted(base['losses'])} vs {sorted(run['losses'])}")
            continue
        diffs = [abs(float(base["losses"][s]) - float(run["losses"][s])) for s in steps]
        detail = (f"max |dloss| {max(diffs):.2e} over {len(steps)} steps (tol {tol:.0e}); first step "
                  f"{diffs[0]:.2e}; losses {[round(float(run['losses'][s]), 4) for s in steps]}")
        same = True
        if run.get("state_dict_shapes") is not None and base.get("state_dict_shapes") is not None:
            same = run["state_dict_shapes"] == base["state_dict_shapes"]
            detail += f"; checkpoint keys and shapes {'equal' if same else 'DIFFER'} to auto's"
        report.add(name, "PASS" if max(diffs) <= tol and same else "FAIL", detail, diffs=diffs)


def environment(dry: bool) -> dict:
    import pytorch_lightning
    import torch

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "lightning": pytorch_lightning.__version__}
    try:
        import fairscale
        env["fairscale"] = fairscale.__version__
    except ImportError:
        env["fairscale"] = "not installed"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        env.update(gpu=name, cuda=torch.version.cuda, peak_bf16_tflops=(peak_bf16(name) or 0) / 1e12)
    env["mode"] = "dry-run (CPU)" if dry else "GPU"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/seqlab_gpu_check_out")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/seqlab_gpu_check"))
    parser.add_argument("--budget", type=float, default=400.0, help="seconds for all checks together")
    parser.add_argument("--jobs", type=int, default=5, help="training runs at once (tiny models share the GPU)")
    parser.add_argument("--dry-run", action="store_true", help="CPU only: exercise everything that needs no GPU")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text())
        Path(args.worker[1]).write_text(json.dumps(WORKERS[spec["kind"]](spec)))
        return 0

    deadline = time.monotonic() + args.budget
    report = Report(args.out, environment(args.dry_run))
    if not args.dry_run and "gpu" not in report.env:
        report.add("cuda", "FAIL", "torch sees no CUDA GPU: nothing to check")
        return 1
    from seqlab.experiment import compose_config, to_run_config

    report.add("accounting", "PASS", accounting())
    train_specs = parity_specs(args.dry_run, args.work)
    for spec in train_specs:  # every run's config composes and validates here, before any GPU time
        to_run_config(compose_config(spec["overrides"]))
    prepare = dict(kind="prepare", name="prepare embedded corpus", overrides=train_specs[0]["overrides"], timeout=120)
    result, error, seconds = run_worker(prepare, args.work, deadline, 29400)
    report.add(prepare["name"], "PASS" if result else "FAIL", error or f"{result['prepared']} ({seconds:.0f} s)")

    for i, spec in enumerate(throughput_specs(args.dry_run)):  # alone on the GPU, one after another
        spec["peak"] = 989e12 if args.dry_run else None  # the dry run's MFU arithmetic uses the H100's peak
        result, error, seconds = run_worker(spec, args.work, deadline, 29410 + i)
        if result:
            mfu = (f"MFU {result['mfu'] * 100:.3g}%" if result["mfu"] is not None
                   else "MFU n/a (GPU not in the peak table)")
            detail = (f"{result['parameters'] / 1e6:.1f}M params, batch {result['batch']} x "
                      f"({spec['input_length']}+{spec['target_length']}) tokens, {result['step_seconds'] * 1e3:.1f} "
                      f"ms/step: {result['tokens_per_s']:,.0f} tokens/s, {result['tflops_per_s']:.3g} TFLOP/s, {mfu} "
                      f"[sdpa {result['sdpa']}]" + "".join(f"; {note}" for note in result["notes"]))
        report.add(spec["name"], "PASS" if result else ("SKIP" if error.startswith("SKIP") else "FAIL"),
                   detail if result else error, seconds=seconds, **(result or {}))

    # On the GPU, the test of the CPU-only error is deselected and nothing may skip (fairscale missing, say).
    pytest_spec = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/unit/test_fairscale_strategy.py",
                   *([] if args.dry_run else ["-k", "not without_cuda"])]

    def run_pytest() -> None:
        start = time.monotonic()
        try:
            done = subprocess.run([sys.executable, *pytest_spec], cwd=REPO, capture_output=True, text=True,
                                  env=dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT="29499"),
                                  timeout=max(15.0, min(300.0, deadline - time.monotonic())))
            last = (done.stdout.strip().splitlines() or ["no output"])[-1]
            ok = done.returncode == 0 and (args.dry_run or "skipped" not in last)
            report.add("pytest tests/unit/test_fairscale_strategy.py", "PASS" if ok else "FAIL",
                       f"{last} ({time.monotonic() - start:.0f} s)"
                       + ("" if ok else "\n" + (done.stdout + done.stderr)[-1500:]))
        except subprocess.TimeoutExpired:
            report.add("pytest tests/unit/test_fairscale_strategy.py", "FAIL", "timed out")

    runs: dict[str, dict] = {}

    def train_one(i: int, spec: dict) -> None:
        result, error, seconds = run_worker(spec, args.work, deadline, 29500 + i)
        if result:
            runs[spec["name"]] = result
        report.add(spec["name"], "PASS" if result else ("SKIP" if error.startswith("SKIP") else "FAIL"),
                   f"{len(result['losses'])} steps ({seconds:.0f} s)" if result else error, seconds=seconds)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        pool.submit(run_pytest)
        for i, spec in enumerate(train_specs):
            pool.submit(train_one, i, spec)
    compare(report, runs, train_specs)
    return 0 if all(c["status"] == "PASS" for c in report.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
