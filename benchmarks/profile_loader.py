"""Profile seqlab's loader with cProfile: where the time of one batch goes, from memory-mapped tokens to tensors.

The setup is test_dataloader.py's (the embedded corpus copied to a few MB and prepared, the AlexaTM mixture,
the decoder-only converter, seq_len 1024, batch 64). The DataLoader runs with num_workers=0 so that every step
runs in this process, where the profiler sees it. Writes benchmarks/results/loader.prof (binary pstats, for
snakeviz or `python -m pstats`) and loader_profile.txt (top functions by cumulative and by internal time).
Run: `make profile` or `python benchmarks/profile_loader.py`.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

# Running as a script puts this folder first on sys.path, so the benchmark's setup is importable.
from test_dataloader import BATCH_SIZE, SEQ_LEN, build_setup, seqlab_loader

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = 100
TOP = 30  # functions listed per ordering


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        batches = iter(seqlab_loader(build_setup(Path(tmp)), num_workers=0))
        next(batches)  # opens the memory maps and builds the first epoch orders: one-off costs, not profiled
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        tokens = sum(next(batches)["num_tokens"] for _ in range(BATCHES))
        profiler.disable()
        elapsed = time.perf_counter() - start
    prof, text = RESULTS / "loader.prof", RESULTS / "loader_profile.txt"
    profiler.dump_stats(prof)
    out = io.StringIO()
    out.write(f"seqlab loader, num_workers=0: {BATCHES} batches of {BATCH_SIZE} x seq_len {SEQ_LEN}, {tokens} model "
              f"tokens in {elapsed:.2f} s under the profiler ({tokens / elapsed:,.0f} tokens/s)\n")
    for order in ("cumulative", "tottime"):
        out.write(f"\n=== top {TOP} by {order} time ===\n")
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(TOP)
    text.write_text(out.getvalue(), encoding="utf-8")
    print(out.getvalue().splitlines()[0])
    print(f"wrote {prof} and {text}")


if __name__ == "__main__":
    main()
