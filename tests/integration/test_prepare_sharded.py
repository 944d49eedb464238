"""Sharded preparation: N jobs each prepare a deterministic share, `seqlab data merge` joins them, byte for byte
the corpus one job prepares."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from format_fixtures import DOCS, jsonl_bytes, write_formats

from seqlab.cli import main
from seqlab.data.merge import merge_parts
from seqlab.data.plan import assign, plan_tasks
from seqlab.data.prepare import prepare_corpus
from seqlab.errors import ConfigError, DataError


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    write_formats(root / "formats")
    (root / "web" / "en").mkdir(parents=True)
    lines = [d.text for d in DOCS[:100]] + [f"web page {i} on markets" for i in range(300)]
    (root / "web" / "en" / "pages.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "web" / "de").mkdir()
    (root / "web" / "de" / "seiten.jsonl").write_bytes(jsonl_bytes(DOCS[::3]))  # duplicates of formats/ docs
    (root / "eval.txt").write_text(DOCS[7].text + " " + DOCS[9].text + "\n", encoding="utf-8")
    return {"formats": root / "formats", "web": root / "web", "eval": root / "eval.txt"}


OPTIONS = dict(part_bytes=3000, ngram=3, progress=False)


def test_sharded_then_merged_equals_one_job_byte_for_byte(inputs, tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    sources = [inputs["formats"], inputs["web"]]
    evals = [str(inputs["eval"])]
    single = prepare_corpus(sources, tokenizer.path, tmp_path / "single", decontaminate=evals, **OPTIONS)
    assert single.report["duplicate_documents"] > 0 and single.report["contaminated_documents"] > 0
    tasks, _ = plan_tasks(sources, None, None, tmp_path / "x", part_bytes=OPTIONS["part_bytes"])
    assert sum(t.file.span is not None for t in tasks) > 5  # files cut into parts, parquet by row groups too
    parts = []
    for index in range(3):
        parts.append(prepare_corpus(sources, tokenizer.path, tmp_path / f"part{index}", decontaminate=evals,
                                    num_shards=3, shard_index=index, workers=2 if index == 1 else 1, **OPTIONS))
    merged = merge_parts(parts[::-1], tmp_path / "merged", progress=False)  # any order of part folders
    assert files_of(merged.path) == files_of(single.path)
    assert set(files_of(merged.path)) >= {"manifest.json", "removed.jsonl", "web/en.bin", "formats/ja.idx.npy"}


def test_jobs_share_the_plan_disjointly_and_evenly(inputs, tmp_path):
    tasks, _ = plan_tasks([inputs["formats"], inputs["web"]], None, None, tmp_path / "x", part_bytes=3000)
    jobs = assign(tasks, 4)
    assert sorted(i for job in jobs for i in job) == list(range(len(tasks)))
    loads = [sum(tasks[i].size for i in job) for job in jobs]
    assert max(loads) - min(loads) <= max(t.size for t in tasks)  # greedy: within one part of each other
    assert assign(tasks, 4) == jobs


def test_merge_refuses_missing_repeated_and_foreign_parts(inputs, tmp_path, tokenizer):
    sources = [inputs["web"]]
    parts = [prepare_corpus(sources, tokenizer.path, tmp_path / f"p{i}", num_shards=2, shard_index=i, **OPTIONS)
             for i in range(2)]
    with pytest.raises(DataError, match=r"missing shard indices \[1\], repeated \[0\]"):
        merge_parts([parts[0], parts[0]], tmp_path / "out")
    other = prepare_corpus(sources, tokenizer.path, tmp_path / "other", num_shards=2, shard_index=1,
                           **{**OPTIONS, "part_bytes": 5000})
    with pytest.raises(DataError, match="prepared with another plan"):
        merge_parts([parts[0], other], tmp_path / "out")
    with pytest.raises(DataError, match="is not a part folder"):
        merge_parts([parts[0], tmp_path], tmp_path / "out")
    with pytest.raises(ConfigError, match="--num-shards=2 --shard-index=2"):
        prepare_corpus(sources, tokenizer.path, tmp_path / "bad", num_shards=2, shard_index=2, **OPTIONS)
    assert not (tmp_path / "out").exists()


def test_cli_prepare_shards_merge_and_stats(inputs, tmp_path, tokenizer, capsys):
    common = [str(inputs["web"]), "--tokenizer", str(tokenizer.path), "--part-bytes", "3000", "--workers", "1"]
    for index in range(2):
        assert main(["data", "prepare", *common, "--output", str(tmp_path / f"p{index}"), "--num-shards", "2",
                     "--shard-index", str(index)]) == 0
    assert "when every job is done, run `seqlab data merge" in capsys.readouterr().out
    assert main(["data", "merge", str(tmp_path / "p0"), str(tmp_path / "p1"), "--output", str(tmp_path / "c")]) == 0
    assert "removed: duplicate=" in capsys.readouterr().out
    assert main(["data", "stats", str(tmp_path / "c"), "--alpha", "0.3"]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    duplicates = manifest["preparation"]["removed"]["duplicates"]["web"]["documents"]
    assert "web" in printed and f"{duplicates:,}" in printed and "sampled (alpha=0.3)" in printed
    png = tmp_path / "c" / "languages.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", str(tmp_path / "c"), "--alpha", "2"]) == 2
    assert "--alpha=2.0: must be in (0, 1]" in capsys.readouterr().err


def test_hydra_multirun_over_shard_index_then_merge(inputs, tmp_path, tokenizer, monkeypatch):
    """`seqlab prepare -m 'shard_index=range(N)'`: each Hydra job (on the basic launcher here, submitit on
    SLURM) writes its part; merged, they are the single job's corpus."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    env = dict(os.environ)
    keys = [f"inputs=[{inputs['web']}]", f"tokenizer={tokenizer.path}", "part_bytes=3000", "progress=false"]
    sweep = subprocess.run(
        [sys.executable, "-m", "seqlab", "prepare", "-m", *keys, "num_shards=3", "shard_index=range(3)",
         f"output={tmp_path}/parts/${{shard_index}}", f"hydra.sweep.dir={tmp_path}/sweep"],
        capture_output=True, text=True, env=env, timeout=300)
    assert sweep.returncode == 0, sweep.stderr
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["0", "1", "2"]
    merged = merge_parts(sorted((tmp_path / "parts").iterdir()), tmp_path / "merged", progress=False)
    single = subprocess.run([sys.executable, "-m", "seqlab", "prepare", *keys, f"output={tmp_path}/single",
                             f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    assert "prepared corpus written to" in single.stdout
    assert files_of(merged.path) == files_of(tmp_path / "single")
    bad = subprocess.run([sys.executable, "-m", "seqlab", "prepare", *keys, f"output={tmp_path}/bad", "num_shards=2",
                          "shard_index=5", f"hydra.run.dir={tmp_path}/run2"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "num_shards=2 shard_index=5" in bad.stderr and "Traceback" not in bad.stderr
