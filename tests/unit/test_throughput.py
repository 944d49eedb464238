"""train/mfu and useful tokens/s: the GPU peak table, and the in-loop figures against the FLOP and token counts
the same run logs."""
import csv
from pathlib import Path

import pytest

from seqlab.errors import ConfigError
from seqlab.experiment import compose_config, to_run_config
from seqlab.throughput import peak_flops
from seqlab.train import train


@pytest.mark.parametrize("device, precision, tf32, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16-mixed", False, 989e12),
    ("NVIDIA H100 PCIe", "bf16-true", False, 756e12),
    ("NVIDIA H100 NVL", "16-mixed", False, 835e12),
    ("NVIDIA H200", "bf16-mixed", False, 989e12),
    ("NVIDIA A100-SXM4-80GB", "32-true", True, 156e12),  # TF32 tensor cores when matmul precision allows
    ("NVIDIA A100-SXM4-80GB", "32-true", False, 19.5e12),
    ("NVIDIA L40S", "bf16-mixed", False, 362e12),  # not L4's figure
    ("NVIDIA L4", "bf16-mixed", False, 121e12),
    ("Tesla V100-SXM2-32GB", "16-mixed", False, 125e12),
    ("Tesla V100-SXM2-32GB", "bf16-mixed", False, None),  # no bf16 tensor cores
    ("NVIDIA A10G", "bf16-mixed", False, None),  # AWS's variant: no datasheet, not the A10's figure
    ("NVIDIA GH200 480GB", "bf16-mixed", False, None),  # not the H200's figure
    ("NVIDIA H100 80GB HBM3", "64-true", False, None),
])
def test_peak_table(device, precision, tf32, expected):
    assert peak_flops(device, precision, tf32) == expected


def test_bad_peak_flops_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.peak_flops=-1.0: must be > 0"):
        to_run_config(compose_config(["trainer=smoke", f"cache_dir={tmp_path}", "trainer.peak_flops=-1"]))


def _rows(metrics_csv: Path) -> dict[int, dict[str, float]]:
    """step -> the train/ columns logged at it (validation rows left out)."""
    with open(metrics_csv) as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/tokens_seen")]
    return {int(row["step"]): {k: float(v) for k, v in row.items() if k.startswith("train/") and v} for row in rows}


@pytest.mark.slow
def test_mfu_and_target_tokens_per_s_follow_the_logged_counts(tmp_path):
    """Over the throughput window (steps 2..n: step 1 only starts the clock), MFU x peak / target tokens/s is
    FLOPs per target token, so it must equal the FLOPs and target tokens counted between steps 1 and n; and
    tokens/s over target tokens/s is the ratio of the tokens-seen and target-tokens-seen increments."""
    peak = 1e14  # far above a CPU's FLOP/s (bf16 matmuls on 2 cores: ~2e12), so MFU must lie in (0, 1)
    run_dir = tmp_path / "run"
    train(to_run_config(compose_config(["trainer=smoke", f"cache_dir={tmp_path / 'cache'}",
                                        f"trainer.peak_flops={peak}", f"hydra.run.dir={run_dir}"])), run_dir)
    rows = _rows(run_dir / "csv" / "metrics.csv")
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert "train/mfu" not in rows[1]  # one entry: no window yet
    first = rows[1]
    for step in range(2, 7):
        row = rows[step]
        flops = row["train/flops_seen"] - first["train/flops_seen"]
        targets = row["train/target_tokens_seen"] - first["train/target_tokens_seen"]
        tokens = row["train/tokens_seen"] - first["train/tokens_seen"]
        assert 0 < targets < tokens
        assert 0 < row["train/mfu"] < 1
        assert row["train/mfu"] * peak / row["train/target_tokens_per_s"] == pytest.approx(flops / targets, rel=1e-5)
        assert row["train/tokens_per_s"] / row["train/target_tokens_per_s"] == pytest.approx(tokens / targets,
                                                                                           rel=1e-5)


def test_no_mfu_without_a_known_peak(tmp_path):
    """A CPU has no peak in the table: the run trains and logs useful tokens/s, but no train/mfu."""
    run_dir = tmp_path / "run"
    train(to_run_config(compose_config(["trainer=smoke", f"cache_dir={tmp_path / 'cache'}", "trainer.max_steps=3",
                                        "trainer.val_check_interval=3", f"hydra.run.dir={run_dir}"])), run_dir)
    rows = _rows(run_dir / "csv" / "metrics.csv")
    assert rows[3]["train/target_tokens_per_s"] > 0
    assert not any("train/mfu" in row for row in rows.values())
