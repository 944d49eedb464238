"""What pre-emption handling costs a 2-rank training step: the ranks all-reduce one flag after every optimizer step
(seqlab/preemption.py). Trains the same 2-rank DDP run (gloo, CPU) with the default `trainer.preemption` and with
`trainer.preemption.signals=[]` (no handler, no all-reduce), alternating, and compares the mean
`train/tokens_per_s` over the steps after the first window (startup and the first steps excluded).
Run: `python benchmarks/profile_preemption.py [--steps 80] [--repeats 3]`; it prints a table and writes it to
benchmarks/results/preemption.txt.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"preemption handled (default)": (), "no preemption signals": ("trainer.preemption.signals=[]",)}


def tokens_per_s(run_dir: Path, skip: int) -> float:
    with open(run_dir / "csv" / "metrics.csv") as f:
        rates = [float(r["train/tokens_per_s"]) for r in csv.DictReader(f)
                 if r.get("train/tokens_per_s") and int(r["step"]) > skip]
    return statistics.mean(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for repeat in range(args.repeats):
            for i, (name, extra) in enumerate(VARIANTS.items()):
                run_dir = work / f"run{repeat}_{i}"
                command = [sys.executable, "-m", "seqlab", "train", "experiment=ddp_cpu", "trainer=smoke",
                           "architecture.d_model=64", "architecture.n_layers=2", "data.batch_size=4",
                           f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}",
                           f"trainer.checkpoint_every_n_steps={args.steps}", f"hydra.run.dir={run_dir}",
                           f"cache_dir={work / 'cache'}", *extra]
                subprocess.run(command, check=True, capture_output=True, timeout=1800)
                results[name].append(tokens_per_s(run_dir, skip=20))
    base = statistics.median(results["no preemption signals"])
    lines = [f"2-rank DDP (gloo, CPU), {args.steps} steps, median of {args.repeats} runs each, alternating",
             f"{'variant':32} {'tokens/s':>10} {'ratio':>7}"]
    for name, values in results.items():
        median = statistics.median(values)
        lines.append(f"{name:32} {median:10.0f} {median / base:7.3f}")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "preemption.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
