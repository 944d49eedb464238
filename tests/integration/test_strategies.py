"""Strategies on CPU with gloo and 2 processes: the same losses as one process, real sharding, sharded
checkpoints that resume exactly, and a clear error for the GPU-only strategies.

Every training case is its own `python -m seqlab train` subprocess; Lightning launches the second rank.
"""
import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A deterministic objective: packed next-token prediction has no noise. Stochastic objectives (denoising, span
# corruption, prefix splits) draw their noise per rank, so only the token rows, not the noise, are the same
# whether a global batch is split over ranks or not; their losses would differ for that reason alone.
# No gradient clipping: the clip norm would be one more reduction to compare, not what is tested here. A learning
# rate of 3e-3 from the first step makes every update move the loss, so a wrong gradient shows, while training
# stays stable: at 1e-2 the loss spikes by step 4 (7.47 -> 8.76 for decoder_only), and a spiking run amplifies
# the float noise of summation order (one process sums a batch's rows, two ranks sum halves) to 4e-3.
COMMON = ("trainer=smoke", "objective=clm", "objective.packed=true", "trainer.gradient_clip_val=null",
          "optim.lr=3e-3", "optim.warmup_steps=1")
TWO_RANKS = ("trainer.accelerator=cpu", "trainer.devices=2")
ROWS_PER_RANK = 2


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One prepared corpus for every run of this module (the first run prepares it)."""
    return tmp_path_factory.mktemp("cache")


def _train(run_dir: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, "-m", "seqlab", "train", *overrides, f"hydra.run.dir={run_dir}", f"cache_dir={cache}"],
        cwd=run_dir.parent, capture_output=True, text=True, timeout=300, env=env,
    )


def _fit(run_dir: Path, cache: Path, *overrides: str) -> dict[int, float]:
    """Train; -> {step: global train/loss} as rank 0 logged it."""
    result = _train(run_dir, cache, *COMMON, *overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")}


@pytest.fixture(scope="module")
def single_process_losses(tmp_path_factory, cache_dir):
    """{architecture: losses of one process on the whole global batch}, each run once for both strategies."""
    done: dict[str, dict[int, float]] = {}

    def losses(architecture: str) -> dict[int, float]:
        if architecture not in done:
            run_dir = tmp_path_factory.mktemp(f"single-{architecture}") / "run"
            done[architecture] = _fit(run_dir, cache_dir, f"architecture={architecture}", "trainer.max_steps=5",
                                      "trainer.val_check_interval=5", "trainer.checkpoint_every_n_steps=5",
                                      f"data.batch_size={2 * ROWS_PER_RANK}")
        return done[architecture]

    return losses


@pytest.mark.distributed
@pytest.mark.slow
# decoder_only under fsdp2 against one process: test_cluster_faults.py resumes it 2 -> 1 -> 2 ranks.
@pytest.mark.parametrize("strategy, architecture", [("ddp", "seq2seq_tiny"), ("ddp", "decoder_only"),
                                                    ("fsdp2", "seq2seq_tiny")])
def test_two_ranks_train_like_one_process_on_the_same_global_batch(tmp_path, cache_dir, single_process_losses,
                                                                    strategy, architecture):
    reference = single_process_losses(architecture)
    losses = _fit(tmp_path / "run", cache_dir, f"architecture={architecture}", f"strategy={strategy}",
                  *TWO_RANKS, "trainer.max_steps=5", "trainer.val_check_interval=5",
                  "trainer.checkpoint_every_n_steps=5", f"data.batch_size={ROWS_PER_RANK}")
    assert sorted(losses) == sorted(reference) == [1, 2, 3, 4, 5]
    for step in reference:
        assert losses[step] == pytest.approx(reference[step], abs=1e-5), (step, losses, reference)


SHARD_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    from seqlab.registry import ARCHITECTURES, load_plugins
    from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
    from seqlab_plugins.strategies.fsdp2 import FSDP2Config, shard_model

    dist.init_process_group("gloo")  # rank, world size, address and port from the environment
    load_plugins()
    configs = {"decoder_only": DecoderOnlyConfig(name="decoder_only"),  # tied embeddings
               "seq2seq_tiny": ARCHITECTURES.preset("seq2seq_tiny"), "llama_tiny": ARCHITECTURES.preset("llama_tiny"),
               "t5_tiny": ARCHITECTURES.preset("t5_tiny")}
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("data_parallel",))
    report = {}
    for name, cfg in configs.items():
        whole = ARCHITECTURES.build(cfg, vocab_size=999)  # odd: the embedding rows split unevenly
        whole.init_weights(seed=7)
        full = {n: (p.numel(), p.numel() // p.shape[0]) for n, p in whole.named_parameters()}
        # As SeqLabModule.configure_model does under fsdp2: shard on meta, then materialise and init the shards.
        with torch.device("meta"):
            model = ARCHITECTURES.build(cfg, vocab_size=999)
        shard_model(FSDP2Config(), model, mesh)
        model.to_empty(device="cpu")
        model.init_weights(seed=7)
        params = dict(model.named_parameters())
        report[name] = {
            "full": sum(numel for numel, _ in full.values()),
            # An uneven first dimension gives one rank at most one row more than the other.
            "slack": sum(row for _, row in full.values()),
            "local": sum(p.to_local().numel() for p in params.values() if isinstance(p, DTensor)),
            # What each rank holds: its shards' storage (FSDP2 pads shards to equal size), never a full copy.
            "local_bytes": sum(p.to_local().untyped_storage().nbytes() for p in params.values()),
            "full_bytes": sum(p.numel() * p.element_size() for p in whole.parameters()),
            "not_sharded": [n for n, p in params.items() if not isinstance(p, DTensor)],
            "same_names": sorted(params) == sorted(full),
            "differ_from_whole_init": [n for n, p in params.items()
                                       if not torch.equal(p.full_tensor(), dict(whole.named_parameters())[n])]
                                      + [n for (n, b), (_, c) in zip(model.named_buffers(), whole.named_buffers())
                                         if not torch.equal(b, c)],
        }
    with open(sys.argv[1] + f".{dist.get_rank()}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp2_initialises_each_rank_s_half_of_the_parameters_like_one_process(tmp_path):
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    env = {**os.environ, "PYTHONPATH": "", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": "2"}
    ranks = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "report")], cwd=tmp_path,
                              env={**env, "RANK": str(rank)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank in range(2)]
    for rank, process in enumerate(ranks):
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, f"rank {rank}: {stderr[-4000:]}"
    reports = [json.loads((tmp_path / f"report.{rank}.json").read_text()) for rank in range(2)]
    for name in reports[0]:
        counts = [report[name] for report in reports]
        for rank, count in enumerate(counts):
            assert count["same_names"] and count["not_sharded"] == [], (name, rank, count)
            assert abs(count["local"] - count["full"] / 2) <= count["slack"], (name, rank, count)
            assert count["local_bytes"] <= 0.51 * count["full_bytes"] + 4 * count["slack"], (name, rank, count)
            assert count["differ_from_whole_init"] == [], (name, rank, count)
        assert counts[0]["full"] == counts[1]["full"]
        assert counts[0]["local"] + counts[1]["local"] == counts[0]["full"], (name, counts)


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp2_full_checkpoint_of_two_ranks_resumes_like_an_uninterrupted_run(tmp_path, cache_dir):
    """A single-file checkpoint (strategy.sharded_checkpoint=false) gathered from the shards; sharded ones are
    killed mid-save and resumed in tests/integration/test_cluster_faults.py."""
    overrides = ("architecture=decoder_only", "strategy=fsdp2", "strategy.sharded_checkpoint=false", *TWO_RANKS,
                 "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", f"data.batch_size={ROWS_PER_RANK}")
    reference = _fit(tmp_path / "full", cache_dir, *overrides)
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]
    checkpoint = tmp_path / "full" / "checkpoints" / "step0000003.ckpt"
    assert checkpoint.is_file()
    continued = _fit(tmp_path / "resumed", cache_dir, *overrides, f"resume={checkpoint}")
    assert sorted(continued) == [4, 5, 6]
    for step in (4, 5, 6):
        assert continued[step] == pytest.approx(reference[step], abs=1e-6), (step, continued, reference)


@pytest.mark.parametrize("strategy", ["fsdp", "fairscale_fsdp"])
def test_gpu_only_strategy_on_cpu_says_so_and_points_to_fsdp2(tmp_path, cache_dir, strategy, capsys):
    from seqlab.cli import main
    from seqlab.registry import STRATEGIES, load_plugins

    load_plugins()
    if strategy not in STRATEGIES.names():
        pytest.skip(f"strategy {strategy} is not registered (`seqlab plugins`)")
    try:  # in this process: the strategy refuses before any rank is launched
        status = main(["train", "trainer=smoke", f"strategy={strategy}", *TWO_RANKS, f"hydra.run.dir={tmp_path}",
                       f"cache_dir={cache_dir}", "hydra/job_logging=none", "hydra/hydra_logging=none"])
    except SystemExit as exit:
        status = exit.code
    stderr = capsys.readouterr().err
    assert status == 2, stderr[-4000:]
    assert f"strategy={strategy}" in stderr
    assert "needs CUDA GPUs" in stderr
    assert "strategy=fsdp2" in stderr
    assert "Traceback" not in stderr


@pytest.mark.distributed
@pytest.mark.slow
def test_ranks_with_different_target_counts_still_train_like_one_process(tmp_path, cache_dir):
    """AlexaTM's CLM with a fixed split point is deterministic, and takes one document per row: the ranks hold
    different numbers of target tokens, so this exercises the loss normalisation by the global token count."""
    overrides = ("trainer=smoke", "objective=clm", "objective.min_prefix=0.5", "objective.max_prefix=0.5",
                 "trainer.gradient_clip_val=null", "optim.lr=1e-2", "optim.warmup_steps=1",
                 "architecture=decoder_only", "trainer.max_steps=4", "trainer.val_check_interval=4",
                 "trainer.checkpoint_every_n_steps=4")

    def fit(run_dir: Path, *extra: str) -> dict[int, float]:
        result = _train(run_dir, cache_dir, *overrides, *extra)
        assert result.returncode == 0, result.stderr[-4000:]
        with open(run_dir / "csv" / "metrics.csv") as f:
            return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}

    single = fit(tmp_path / "single", f"data.batch_size={2 * ROWS_PER_RANK}")
    ranks = fit(tmp_path / "ddp", "strategy=ddp", *TWO_RANKS, f"data.batch_size={ROWS_PER_RANK}")
    assert sorted(ranks) == sorted(single) == [1, 2, 3, 4]
    for step in single:
        assert ranks[step] == pytest.approx(single[step], abs=1e-5), (step, ranks, single)
