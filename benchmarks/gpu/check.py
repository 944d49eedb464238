"""The GPU checks, for one lent GPU and a few minutes (check.sh installs the carried wheels, then runs this;
what runs is in specs.py, the work of each check in workers.py and kernels.py).

1. throughput: bf16 training steps (autocast, as trainer.precision=bf16-mixed does; AdamW, clipping) of the
   `seq2seq_base` preset (the paper's layout, 12+12 layers, d_model 768), its FLOP-matched decoder-only partner
   (prefix-LM) and `llama_base` (causal), vocabulary 32000, rows of 512 input + 512 target positions. Variants:
   full-length random examples; CLM documents packed as the alexatm mixture packs them, with SDPA and with
   FlexAttention (`architecture.attention=flex`); and blocks compiled (`trainer.compile=true`). tokens/s counts
   the positions the model reads (the converters' num_tokens), target tokens/s the labelled ones; MFU = the
   accounting's training FLOPs per step / step time / the GPU's dense bf16 peak (seqlab/throughput.py). SDPA
   backends: flash takes no explicit mask, so masked models run with flash + memory-efficient enabled and the
   causal full-length rows with flash alone, which fails rather than falls back.
2. kernels: packed-row attention forward + backward as SDPA with the dense mask, FlexAttention on its block
   mask and SDPA's fused causal kernel; the cross-entropy over a 150K vocabulary at 16K positions, plain
   against chunked (`architecture.loss_chunk_size`): peak memory, time, equal loss and gradients.
3. pytest tests/unit/test_fairscale_strategy.py (its GPU test: 3 steps, full state dict, resume).
4. parity: 6 steps of the tiny models on the embedded corpus, seed 0, under each sharding strategy and under
   strategy=auto, with objective=clm objective.packed=true, and the seq2seq with the default alexatm mixture
   (packed CLM rows) under fsdp2 and with trainer.compile=true; the train/loss of every step must agree within
   1e-3 in fp32 and 2e-2 in bf16-mixed (bf16 keeps 8 mantissa bits: 0.4% of a loss near 8 is 0.03, and most
   of that averages out). Each run's logged train/mfu is reported.

Every check runs in its own subprocess (own session, killed on timeout) under one overall deadline; results.json
and summary.txt in --out are rewritten after each check, so a run cut short still reports what finished.
`--dry-run` runs on CPU in a few minutes: config composition of every GPU parity run, the FLOP and MFU arithmetic
of the real sizes, 2-step CPU trainings through the parity comparison, the CPU test, and the timed loops and
kernel checks at tiny sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from specs import H100_BF16, accounting, kernel_specs, parity_specs, throughput_specs  # beside this file
from workers import WORKERS

from seqlab.throughput import peak_flops

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = {"32-true": 1e-3, "bf16-mixed": 2e-2}


def passes(spec: dict, result: dict) -> bool:
    """A throughput check passes when every variant ran; a kernel check when its paths agree: FlexAttention as
    close to the fp32 reference as masked SDPA (bf16 rounding), the chunked loss equal to plain's up to bf16
    summation order (relative 1e-3 on the loss, 1e-2 on the gradients)."""
    if spec["kind"] == "throughput":
        return len(result["variants"]) == len(spec["variants"])
    rows = result["rows"]
    if spec["kind"] == "attention":
        return "flex" not in rows or (rows["flex"]["max_abs_error_vs_fp32"]
                                      <= 2 * rows["sdpa_mask"]["max_abs_error_vs_fp32"] + 1e-3)
    return all(row["loss_rel_diff"] <= 1e-3 and row["grad_hidden_rel_diff"] <= 1e-2
               and row["grad_weight_rel_diff"] <= 1e-2 for row in rows.values())


def describe(spec: dict, result: dict) -> str:
    """One line of figures for a throughput or kernel check's result."""
    if spec["kind"] == "throughput":
        parts = []
        for name, v in result["variants"].items():
            mfu = f"MFU {v['mfu']:.1%}" if v["mfu"] is not None else "MFU n/a (GPU not in the peak table)"
            parts.append(f"[{name}] batch {v['batch']}, {v['step_seconds'] * 1e3:.1f} ms/step, {v['tokens_per_s']:,.0f} "
                         f"tokens/s ({v['real_fraction']:.1%} real), {v['target_tokens_per_s']:,.0f} target tokens/s, "
                         f"{v['tflops_per_s']:.3g} TFLOP/s, {mfu}, sdpa {v['sdpa']}, warm-up {v['warmup_seconds']:.0f} s"
                         + "".join(f", {note}" for note in v["notes"]))
        return f"{result['parameters'] / 1e6:.1f}M params: " + "; ".join(parts)
    rows = result["rows"]
    if spec["kind"] == "attention":
        return f"{result['shape']} bf16 fwd+bwd: " + "; ".join(
            f"{name} {row['ms']:.2f} ms" + (f" (max |err| vs fp32 {row['max_abs_error_vs_fp32']:.1e})"
                                            if row.get("max_abs_error_vs_fp32") is not None else "")
            + (f" (block sparsity {row['sparsity']:.0f}%)" if "sparsity" in row else "")
            for name, row in rows.items()) + "".join(f"; {note}" for note in result["notes"])
    return f"N={result['positions']} V={result['vocab']} C={result['d_model']} bf16: " + "; ".join(
        f"{name} " + (f"peak {row['peak_gib']:.2f} GiB, " if row["peak_gib"] is not None else "")
        + f"{row['ms']:.1f} ms, loss rel diff {row['loss_rel_diff']:.1e}, grad rel diffs "
        f"{row['grad_hidden_rel_diff']:.1e}/{row['grad_weight_rel_diff']:.1e}" for name, row in rows.items())


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
    why = f"timed out after {timeout:.0f} s" if proc.returncode == -signal.SIGKILL else f"exit {proc.returncode}"
    if result_path.is_file():  # complete, or the partial result of a worker that writes as it goes
        return json.loads(result_path.read_text()), "" if proc.returncode == 0 else why, seconds
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.is_file() else ""
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
        env.update(gpu=name, cuda=torch.version.cuda, peak_bf16_tflops=(peak_flops(name, "bf16-mixed") or 0) / 1e12)
    env["mode"] = "dry-run (CPU)" if dry else "GPU"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/seqlab_gpu_check_out")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/seqlab_gpu_check"))
    parser.add_argument("--budget", type=float, default=400.0, help="seconds for all checks together")
    parser.add_argument("--jobs", type=int, default=8, help="training runs at once (tiny models share the GPU)")
    parser.add_argument("--dry-run", action="store_true", help="CPU only: exercise everything that needs no GPU")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text())
        spec["result_path"] = args.worker[1]
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

    for i, spec in enumerate(throughput_specs(args.dry_run) + kernel_specs(args.dry_run)):  # alone on the GPU
        spec["peak"] = H100_BF16 if args.dry_run else None
        result, error, seconds = run_worker(spec, args.work, deadline, 29410 + i)
        ok = bool(result) and passes(spec, result)
        detail = describe(spec, result) + ("" if ok else f"; {error}") if result else error
        report.add(spec["name"], "PASS" if ok else ("SKIP" if error.startswith("SKIP") else "FAIL"), detail,
                   seconds=seconds, **(result or {}))

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
        mfu = (result or {}).get("logged", {}).get("train/mfu")
        report.add(spec["name"], "PASS" if result else ("SKIP" if error.startswith("SKIP") else "FAIL"),
                   f"{len(result['losses'])} steps ({seconds:.0f} s)" + (f", train/mfu {mfu:.2%}" if mfu else "")
                   if result else error, seconds=seconds)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        pool.submit(run_pytest)
        for i, spec in enumerate(train_specs):
            pool.submit(train_one, i, spec)
    compare(report, runs, train_specs)
    return 0 if all(c["status"] == "PASS" for c in report.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
