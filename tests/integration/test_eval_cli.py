"""`seqlab eval` end to end on a freshly trained checkpoint, and its refusals of bad arguments."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl

from seqlab.cli import main
from seqlab.evaluation.harness import format_scores
from seqlab.experiment import compose_config, to_run_config
from seqlab.train import train

RANK_ROWS = [
    {"id": "r1", "text": "the cat sat on the mat", "choices": ["animals", "sports"], "label": 0},
    {"id": "r2", "text": "the team scored a goal", "choices": ["animals", "sports"], "label": 1},
    {"id": "r3", "text": "a dog barked at night", "choices": ["animals", "sports"], "label": 0},
    {"id": "r4", "text": "the match ended late", "choices": ["animals", "sports"], "label": 1},
]
TASKS = ("tasks=[{name: rank_classification, dataset: jsonl, path: topics}, "
         "{name: summarization, path: news.jsonl, max_new_tokens: 4}]")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    write_jsonl(root / "topics" / "train.jsonl", RANK_ROWS[:2])
    write_jsonl(root / "topics" / "test.jsonl", RANK_ROWS)
    write_jsonl(root / "news.jsonl", [{"document": f"Report {i}: the city council met and voted on the budget.",
                                       "summary": f"Council vote {i}."} for i in range(4)])
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A two-step training run of a small decoder-only model: RUN/checkpoints/last.ckpt at step 2."""
    tmp = tmp_path_factory.mktemp("train")
    run = to_run_config(compose_config([
        "trainer=smoke", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.checkpoint_every_n_steps=2",
        "architecture.d_model=32", "architecture.n_layers=1", "data.seq_len=64", "data.batch_size=4",
        "data.val_batches=1", f"cache_dir={tmp / 'cache'}"]))
    train(run, tmp / "run")
    path = tmp / "run" / "checkpoints" / "last.ckpt"
    assert path.is_file()
    return path


@pytest.mark.slow
def test_eval_a_checkpoint_end_to_end(checkpoint, data_root, capsys):
    code = main(["eval", f"checkpoint={checkpoint}", TASKS, f"data_root={data_root}", "limit=3",
                 "batch_size=2", "progress_bar=false"])
    out, err = capsys.readouterr()
    assert code == 0, err
    out_dir = checkpoint.parent.parent / "eval" / "step2"  # RUN/eval/stepN by default
    saved = json.loads((out_dir / "scores.json").read_text())
    assert saved["model"] == "decoder_only@run:step2"
    scores = saved["scores"]
    assert list(scores) == ["jsonl_topics", "summarization_news"]
    assert scores["jsonl_topics"]["examples"] == 3 and scores["summarization_news"]["examples"] == 3
    assert scores["jsonl_topics"]["accuracy"] in (0.0, 100 / 3, 200 / 3, 100.0)
    assert set(scores["summarization_news"]) == {"rouge1", "rouge2", "rougeL", "gold_ll_per_byte", "icl_gain_per_byte",
                                                 "examples", "truncated"}
    assert set(scores["jsonl_topics"]) == {"accuracy", "accuracy_norm", "accuracy_bytes", "gold_ll_per_byte",
                                           "margin", "icl_gain_per_byte", "examples", "truncated"}
    assert saved["clm_token_used"] == {"jsonl_topics": True, "summarization_news": True}
    assert saved["aggregates"]["summarization_news"] == {name: "ratio" for name in scores["summarization_news"]
                                                         if name not in ("examples", "truncated")}
    assert all(all(higher.values()) for higher in saved["higher_is_better"].values())
    # What was printed is what was saved.
    assert out == f"{saved['model']}\n{format_scores(scores)}\nscores and per-example predictions: {out_dir}\n"
    assert f"jsonl_topics        accuracy={scores['jsonl_topics']['accuracy']:.2f}" in out
    ranked = read_jsonl(out_dir / "jsonl_topics.predictions.jsonl")
    order = [row["id"] for row in RANK_ROWS]
    picked = [r["id"] for r in ranked]
    assert len(picked) == 3 and sorted(picked, key=order.index) == picked  # rows of the test file, in order
    texts = {row["id"]: row["text"] for row in RANK_ROWS}
    assert all(r["prompt"].endswith(f"; Sentence: {texts[r['id']]}; Topic:") for r in ranked)
    assert all(r["candidates"] == ["animals", "sports"] and len(r["loglikelihoods"]) == 2 for r in ranked)
    assert all(r["loglikelihoods"][0] < 0 for r in ranked)
    accuracy = 100 * sum(r["prediction"] == r["label"] for r in ranked) / 3
    assert scores["jsonl_topics"]["accuracy"] == pytest.approx(accuracy)
    summaries = read_jsonl(out_dir / "summarization_news.predictions.jsonl")
    assert len(summaries) == 3
    for r in summaries:  # ids are line numbers here: the reference and the query are that line's
        i = int(r["id"]) - 1
        assert r["reference"] == f"Council vote {i}."
        assert r["prompt"].endswith(f"Article: Report {i}: the city council met and voted on the budget. "
                                    "==> Short summary:")
    assert sorted(p.name for p in out_dir.iterdir()) == ["jsonl_topics.predictions.jsonl", "scores.json",
                                                         "summarization_news.predictions.jsonl"]


@pytest.mark.slow
def test_eval_output_dir_and_a_task_preset_override(checkpoint, data_root, tmp_path, capsys):
    out_dir = tmp_path / "scores"
    code = main(["eval", f"checkpoint={checkpoint}", "tasks=[{name: rank_classification, dataset: jsonl, "
                 "path: topics, shots: 0, mode: denoising, label: zero_shot}]", f"data_root={data_root}",
                 f"output_dir={out_dir}", "progress_bar=false"])
    out, err = capsys.readouterr()
    assert code == 0, err
    saved = json.loads((out_dir / "scores.json").read_text())
    assert list(saved["scores"]) == ["zero_shot"] and saved["scores"]["zero_shot"]["examples"] == 4
    assert saved["clm_token_used"] == {"zero_shot": False}
    assert [r["prompt"] for r in read_jsonl(out_dir / "zero_shot.predictions.jsonl")] == [
        f"Sentence: {row['text']}; Topic:" for row in RANK_ROWS]
    assert out.endswith(f"scores and per-example predictions: {out_dir}\n")


@pytest.mark.slow
def test_eval_missing_data_is_one_message(checkpoint, tmp_path, capsys):
    code = main(["eval", f"checkpoint={checkpoint}", "tasks=[sib200_hi]", f"data_root={tmp_path}"])
    _, err = capsys.readouterr()
    assert code == 2
    assert f"seqlab eval: error: eval data not found at {tmp_path / 'sib200'}; expected layout: SIB-200" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["checkpoint=x.ckpt", "tasks=[sib200_hi]", "foo=1"], "foo: Key 'foo' not in 'EvalCommandConfig'"),
    (["checkpoint=x.ckpt", "tasks=[sib200_hi]", "limit=abc"], "limit: Value 'abc' of type 'str' could not be "
                                                               "converted to Integer"),
    (["checkpoint=x.ckpt", "tasks=[sib200_hi]", "progress_bar=sometimes"], "progress_bar: Value 'sometimes'"),
    (["checkpoint=x.ckpt", "hf=some/model", "tasks=[sib200_hi]"], "give exactly one of checkpoint=PATH or hf=PATH"),
    (["tasks=[sib200_hi]"], "give exactly one of checkpoint=PATH or hf=PATH"),
    (["checkpoint=x.ckpt"], "tasks: no eval tasks"),
    (["checkpoint=x.ckpt", "tasks=[]"], "tasks: no eval tasks"),
    (["checkpoint=x.ckpt", "tasks=[sib200_hi]", "limit=0"], "limit=0: must be >= 1 or null"),
    (["checkpoint=x.ckpt", "tasks=[sib200_hi]", "threads=0"], "threads=0: must be >= 1"),
    (["checkpoint=x.ckpt", "tasks=[{name: generate_match, path: x.jsonl, extract: regex}]"], "task.pattern=None"),
    (["checkpoint=x.ckpt", "tasks=[{name: pair_classification, path: x.jsonl, verbalizers: {0: no, 1: yes}}]"],
     "eval.tasks[0].verbalizers.0=False: a boolean where words are expected"),
    (["checkpoint=x.ckpt", "tasks=[{name: pair_classification, path: x.jsonl, verbalizers: {0: \"yes\"}}]"],
     "task.verbalizers={'0': 'yes'}: needs at least 2 labels"),
    (["checkpoint=x.ckpt", "tasks=[sib200_hi]", "batch_size"], "'batch_size': arguments are KEY=VALUE"),
    (["checkpoint=x.ckpt", "tasks=[nope]"], "unknown eval task preset 'nope'; presets: flores_ar_en"),
    (["checkpoint=x.ckpt", "tasks=[{preset: sib200_hi, shots: many}]"], "eval.tasks[0].shots: Value 'many'"),
    (["checkpoint=x.ckpt", "tasks=[{preset: sib200_hi, shot: 0}]"], "eval.tasks[0]: unknown field(s) shot"),
    (["checkpoint=x.ckpt", "tasks=[sib200_hi]", "data_root=/tmp"], "checkpoint x.ckpt: not a file"),
])
def test_bad_arguments_exit_2_with_one_message(args, message, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SEQLAB_EVAL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("seqlab eval: error: ") and message in err, err
    assert "Traceback" not in err and out == ""
    assert not list(tmp_path.iterdir())  # nothing written


def test_eval_help(capsys):
    assert main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: seqlab eval (checkpoint=PATH | hf=PATH) tasks=[TASK,...]")
    assert "'tasks=[{preset: flores_de_en, shots: 0}, {name: translation, source: ta, target: te}]'" in out
