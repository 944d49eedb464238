"""Profile the model hot paths with torch.profiler: where the time of one attention call and one step goes.

Two traces, each of one call after an untraced warm-up (which allocates the optimizer state and warms the
allocator, one-off costs that would otherwise dominate):
(a) seqlab's Attention forward + backward, test_attention.py's setup at T=1024 (batch 4, d_model 256,
    4 heads, causal);
(b) one training step (forward, backward, AdamW step, zero_grad) of the seq2seq_tiny preset, test_train_step.py's
    setup (batch 8, 128 input + 128 target tokens, vocabulary 4096).
Writes benchmarks/results/{attention,train_step}_trace.json (Chrome trace JSON: open in chrome://tracing or
https://ui.perfetto.dev) and {attention,train_step}_profile.txt (operator tables by total and by self CPU time).
Run: `make profile` or `python benchmarks/profile_model.py`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch.profiler import ProfilerActivity, profile, record_function

# Running as a script puts this folder first on sys.path, so the benchmarks' setups are importable.
from test_attention import BATCH_SIZE, D_MODEL, N_HEADS, forward_backward, new_attention
from test_train_step import BATCH_SIZES, INPUT_LEN, TARGET_LEN, build

RESULTS = Path(__file__).resolve().parent / "results"
ATTENTION_T = 1024  # long enough that the attention kernel, not the projections, leads the table
TRAIN_PRESET = "seq2seq_tiny"
TOP = 30  # operators listed per ordering


def trace(name: str, title: str, run: Callable[[], object]) -> None:
    """Warm up, profile one call of `run`, write NAME_trace.json and NAME_profile.txt, print their paths."""
    run()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, profile_memory=True) as prof:
        with record_function(name):
            run()
    trace_path, table_path = RESULTS / f"{name}_trace.json", RESULTS / f"{name}_profile.txt"
    prof.export_chrome_trace(str(trace_path))
    averages = prof.key_averages()
    tables = [f"=== top {TOP} operators by {order} ===\n{averages.table(sort_by=order, row_limit=TOP)}"
              for order in ("cpu_time_total", "self_cpu_time_total")]
    table_path.write_text(f"{title}\n\n" + "\n\n".join(tables) + "\n", encoding="utf-8")
    print(f"{title}\n  trace: {trace_path}\n  table: {table_path}")


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    trace("attention", f"seqlab Attention forward + backward, B={BATCH_SIZE} T={ATTENTION_T} d_model={D_MODEL} "
          f"heads={N_HEADS}, causal", forward_backward(new_attention(), "seqlab", ATTENTION_T))
    setup, tokens = build(TRAIN_PRESET, "seq2seq", "seqlab")
    trace("train_step", f"{TRAIN_PRESET} training step (forward, backward, AdamW), batch {BATCH_SIZES[TRAIN_PRESET]} "
          f"x {INPUT_LEN}+{TARGET_LEN} tokens = {tokens} tokens", setup.step)


if __name__ == "__main__":
    main()
