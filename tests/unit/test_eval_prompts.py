"""Eval prompts render exactly as configured, tasks read their data layouts, and the harness applies the mode,
truncation, ranking and output files the same way for every model (checked through a recording fake model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_flores, write_jsonl, write_lines

from seqlab.errors import ConfigError, DataError, PluginError
from seqlab.evaluation.harness import cut_at_stop, evaluate, evaluate_task, format_scores
from seqlab.evaluation.likelihood import Budget, build_request
from seqlab.evaluation.model import TokenRequest
from seqlab.evaluation.tasks import Example, pick_shots, resolve_tasks
from seqlab.registry import EVAL_TASKS, load_plugins

CLM = 1000  # the fake model's [CLM] id: above every character used here


@pytest.fixture(autouse=True, scope="module")
def plugins():
    load_plugins()


class FakeModel:
    """An EvalModel whose tokens are characters (so lengths are easy to count). It records every request;
    scores come from `scores(prompt_text, continuation_text)` and generations from `reply(prompt_text)`."""

    def __init__(self, *, encoder_decoder: bool = True, max_positions: int = 10_000, clm: bool = True,
                 scores=None, reply=None):
        self.name = "fake"
        self.encoder_decoder = encoder_decoder
        self.max_positions = max_positions
        self.clm = clm
        self.scores = scores
        self.reply = reply
        self.scored: list[TokenRequest] = []
        self.generated: list[TokenRequest] = []
        self.max_new_tokens: list[int] = []
        self.stops: list[tuple[str, ...]] = []

    def encode(self, texts):
        return [[ord(c) for c in text] for text in texts]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def special_id(self, token):
        return CLM if token == "[CLM]" and self.clm else None

    def prompt_of(self, request: TokenRequest) -> str:
        return self.decode([i for i in request.inputs if i != CLM])

    def score(self, requests):
        self.scored.extend(requests)
        return np.array([self.scores(self.prompt_of(r), self.decode(r.continuation)) for r in requests],
                        dtype=np.float64)

    def generate(self, requests, max_new_tokens, stop=()):
        self.generated.extend(requests)
        self.max_new_tokens.append(max_new_tokens)
        self.stops.append(tuple(stop))
        return [self.encode([self.reply(self.prompt_of(r))])[0][:max_new_tokens] for r in requests]


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


DEV = {"deu": ["Hallo Welt."], "eng": ["Hello world."]}
DEVTEST = {"deu": ["Guten Morgen.", "Danke schön."], "eng": ["Good morning.", "Thank you."]}


@pytest.fixture
def flores(tmp_path) -> Path:
    """A FLORES-200 layout with one dev pair (so a 1-shot prompt has a known shot) and two devtest pairs."""
    return write_flores(tmp_path, {"dev": DEV, "devtest": DEVTEST})


def task_examples(entry, data_root) -> list[Example]:
    (cfg,) = resolve_tasks([entry]).values()
    return EVAL_TASKS.build(cfg).examples(data_root)


# ---------------------------------------------------------------------------------------------------------------
# Prompts


def test_translation_renders_the_paper_prompt(flores):
    examples = task_examples("flores_de_en", flores)
    assert [ex.prompt for ex in examples] == [
        "Sentence: Hallo Welt.; Translation in English: Hello world.; Sentence: Guten Morgen.; Translation in English:",
        "Sentence: Hallo Welt.; Translation in English: Hello world.; Sentence: Danke schön.; Translation in English:",
    ]
    assert [ex.reference for ex in examples] == ["Good morning.", "Thank you."]
    assert examples[0].id == "devtest:0" and examples[0].fields == {"source": "Guten Morgen."}
    reverse = task_examples("flores_en_de", flores)
    assert reverse[1].prompt == ("Sentence: Hello world.; Translation in German: Hallo Welt.; "
                                 "Sentence: Thank you.; Translation in German:")
    assert reverse[1].reference == "Danke schön."


def test_zero_shots_give_just_the_query_and_need_no_shot_split(flores):
    for code in ("deu", "eng"):
        (flores / "flores200" / "dev" / f"{code}.dev").unlink()
    examples = task_examples({"preset": "flores_de_en", "shots": 0}, flores)
    assert [ex.prompt for ex in examples] == ["Sentence: Guten Morgen.; Translation in English:",
                                              "Sentence: Danke schön.; Translation in English:"]


def test_custom_templates_are_used_verbatim(flores):
    examples = task_examples({"preset": "flores_de_en", "shot_template": "<{source}> => {target} [{target_language}]",
                              "query_template": "<{source}> =>", "separator": " | "}, flores)
    assert examples[0].prompt == "<Hallo Welt.> => Hello world. [English] | <Guten Morgen.> =>"


@pytest.mark.parametrize("key", ["query_template", "shot_template"])
def test_a_template_naming_a_missing_field_names_the_key_and_the_fields(flores, key):
    with pytest.raises(ConfigError) as err:
        task_examples({"preset": "flores_de_en", key: "Sentence: {text};"}, flores)
    message = str(err.value)
    assert f"task.{key}='Sentence: {{text}};'" in message
    assert "no field 'text'" in message
    assert "available: {id}, {source}, {target}, {target_language}" in message


def test_a_malformed_template_is_a_config_error(flores):
    with pytest.raises(ConfigError, match=r"task.query_template='Sentence: \{source': not a valid template"):
        task_examples({"preset": "flores_de_en", "query_template": "Sentence: {source"}, flores)


def test_summarization_renders_the_paper_prompt_and_never_shows_an_item_its_own_summary(tmp_path):
    path = write_jsonl(tmp_path / "news.jsonl", [{"document": "First article.", "summary": "One."},
                                                 {"document": "Second article.", "summary": "Two."}])
    examples = task_examples({"name": "summarization", "path": str(path)}, None)
    assert [ex.prompt for ex in examples] == [
        "Second article. ==> Short summary: Two. <br><br><br> Article: First article. ==> Short summary:",
        "First article. ==> Short summary: One. <br><br><br> Article: Second article. ==> Short summary:",
    ]
    assert [ex.reference for ex in examples] == ["One.", "Two."]
    assert [ex.id for ex in examples] == ["1", "2"]  # line numbers when the data has no ids

    rows = [{"id": f"n{i}", "text": f"document {i:02d}.", "gist": f"summary {i:02d}."} for i in range(12)]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    examples = task_examples({"name": "summarization", "path": str(path), "shots": 3, "document_field": "text",
                              "summary_field": "gist"}, None)
    for row, ex in zip(rows, examples):
        assert ex.id == row["id"]
        assert ex.prompt.count(row["text"]) == 1 and row["gist"] not in ex.prompt  # the item is only the query
        assert ex.prompt.endswith(f"Article: {row['text']} ==> Short summary:")
        assert ex.prompt.count("==> Short summary:") == 4


def test_summarization_shots_from_their_own_file(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"document": "Test doc.", "summary": "Test sum."}])
    write_jsonl(tmp_path / "train.jsonl", [{"document": "Train doc.", "summary": "Train sum."}])
    (ex,) = task_examples({"name": "summarization", "path": "test.jsonl", "shot_path": "train.jsonl"}, tmp_path)
    assert ex.prompt == "Train doc. ==> Short summary: Train sum. <br><br><br> Article: Test doc. ==> Short summary:"


def test_shots_are_fixed_by_the_seed_and_differ_across_seeds(flores):
    pool = [f"Satz {i}." for i in range(20)]
    write_lines(flores / "flores200" / "dev" / "deu.dev", pool)
    write_lines(flores / "flores200" / "dev" / "eng.dev", [f"Sentence {i}." for i in range(20)])

    def prompts(seed: int) -> list[str]:
        return [ex.prompt for ex in task_examples({"preset": "flores_de_en", "shots": 3, "seed": seed}, flores)]

    first = prompts(0)
    assert prompts(0) == first
    assert prompts(1) != first
    for prompt in first:
        shots = [s for s in pool if s in prompt]
        assert len(shots) == 3 and prompt.count("Translation in English:") == 4  # three distinct shots
    # Each test item's shots depend on (seed, item) only: more test items leave earlier prompts unchanged.
    assert pick_shots(20, 3, 0, 1) == pick_shots(20, 3, 0, 1)
    assert pick_shots(20, 3, 0, 0) != pick_shots(20, 3, 0, 1)
    assert 5 not in pick_shots(6, 5, 0, 5, exclude=5) and sorted(pick_shots(6, 5, 0, 5, exclude=5)) == [0, 1, 2, 3, 4]
    assert pick_shots(20, 0, 0, 0) == []
    with pytest.raises(DataError, match="task.shots=3: only 2 examples"):
        pick_shots(3, 3, 0, 0, exclude=1)


# ---------------------------------------------------------------------------------------------------------------
# rank_classification readers


def test_rank_classification_on_generic_jsonl(tmp_path):
    write_jsonl(tmp_path / "qa" / "train.jsonl", [{"question": "Sky colour?", "options": ["blue", "red"], "gold": 0}])
    write_jsonl(tmp_path / "qa" / "test.jsonl", [{"id": "a", "question": "Grass colour?", "options": ["red", "green"],
                                                  "gold": 1},
                                                 {"question": "Snow colour?", "options": ["white", "black", "red"],
                                                  "gold": 0}])
    examples = task_examples({"name": "rank_classification", "dataset": "jsonl", "path": "qa",
                              "choices_field": "options", "label_field": "gold",
                              "shot_template": "Q: {question} A: {answer}", "query_template": "Q: {question} A:",
                              "choice_template": "<{choice}>"}, tmp_path)
    assert [ex.prompt for ex in examples] == ["Q: Sky colour? A: <blue>; Q: Grass colour? A:",
                                              "Q: Sky colour? A: <blue>; Q: Snow colour? A:"]
    assert [ex.candidates for ex in examples] == [("<red>", "<green>"), ("<white>", "<black>", "<red>")]
    assert [ex.label for ex in examples] == [1, 0]
    assert [ex.id for ex in examples] == ["a", "2"]
    default_label = resolve_tasks([{"name": "rank_classification", "dataset": "jsonl", "path": "some/qa"}])
    assert list(default_label) == ["jsonl_qa"]


def test_jsonl_items_without_choices_or_with_a_bad_label_are_data_errors(tmp_path):
    entry = {"name": "rank_classification", "dataset": "jsonl", "path": "qa", "shots": 0}
    write_jsonl(tmp_path / "qa" / "test.jsonl", [{"text": "x", "choices": ["a", "b"], "label": 0}, {"text": "y"}])
    with pytest.raises(DataError, match=r"test.jsonl line 2: needs a list 'choices' and an integer 'label'"):
        task_examples(entry, tmp_path)
    write_jsonl(tmp_path / "qa" / "test.jsonl", [{"text": "x", "choices": ["a", "b"], "label": 2}])
    with pytest.raises(DataError, match=r"test.jsonl line 1: label=2 is not an index into its 2 choices"):
        task_examples(entry, tmp_path)


def sib200(root: Path) -> Path:
    folder = root / "sib200" / "data" / "annotated" / "hin_Deva"
    write(folder / "labels.txt", "science/technology\ntravel\npolitics\n")
    write_lines(folder / "train.tsv", ["index_id\tcategory\ttext", "7\ttravel\tयात्रा वाक्य"])
    write_lines(folder / "test.tsv", ["index_id\tcategory\ttext", "11\tpolitics\tराजनीति वाक्य",
                                      "12\tscience/technology\tविज्ञान वाक्य"])
    return folder


def test_sib200_layout(tmp_path):
    sib200(tmp_path)
    examples = task_examples("sib200_hi", tmp_path)
    assert [ex.prompt for ex in examples] == ["Sentence: यात्रा वाक्य; Topic: travel; Sentence: राजनीति वाक्य; Topic:",
                                              "Sentence: यात्रा वाक्य; Topic: travel; Sentence: विज्ञान वाक्य; Topic:"]
    assert all(ex.candidates == ("science/technology", "travel", "politics") for ex in examples)
    assert [ex.label for ex in examples] == [2, 0] and [ex.id for ex in examples] == ["11", "12"]


def test_sib200_row_with_an_unknown_category_is_a_data_error(tmp_path):
    folder = sib200(tmp_path)
    write_lines(folder / "test.tsv", ["index_id\tcategory\ttext", "11\tpolitics\tok", "12\tcooking\tnot a topic"])
    with pytest.raises(DataError, match=r"test.tsv line 3: expected index_id, category \(one of labels.txt\), text"):
        task_examples({"preset": "sib200_hi", "shots": 0}, tmp_path)


def xcopa_item(idx, premise, choice1, choice2, question, label):
    return {"premise": premise, "choice1": choice1, "choice2": choice2, "question": question, "label": label,
            "idx": idx, "changed": False}


def test_xcopa_layout(tmp_path):
    write_jsonl(tmp_path / "xcopa" / "data" / "ta" / "val.ta.jsonl",
                [xcopa_item(0, "மழை பெய்தது.", "Roads got wet", "Sun shone", "effect", 0)])
    write_jsonl(tmp_path / "xcopa" / "data" / "ta" / "test.ta.jsonl",
                [xcopa_item(5, "The glass broke.", "It fell", "It was full", "cause", 0),
                 xcopa_item(6, "I was hungry", "I ate", "I slept", "effect", 0)])
    examples = task_examples("xcopa_ta", tmp_path)
    shot = "மழை பெய்தது எனவே roads got wet"  # premise without its full stop, effect connector, answer lowered
    assert [ex.prompt for ex in examples] == [f"{shot}; The glass broke காரணமாக", f"{shot}; I was hungry எனவே"]
    assert [ex.candidates for ex in examples] == [("it fell", "it was full"), ("i ate", "i slept")]
    assert [ex.label for ex in examples] == [0, 0] and [ex.id for ex in examples] == ["5", "6"]
    write_jsonl(tmp_path / "xcopa" / "data" / "it" / "test.it.jsonl",
                [xcopa_item(1, "Il vetro si ruppe", "Cadde", "Era pieno", "cause", 1)])
    (ex,) = task_examples({"preset": "xcopa_it", "shots": 0}, tmp_path)
    assert ex.prompt == "Il vetro si ruppe perché" and ex.candidates == ("cadde", "era pieno") and ex.label == 1


# ---------------------------------------------------------------------------------------------------------------
# resolve_tasks and missing data


def test_resolve_tasks_entries():
    tasks = resolve_tasks(["flores_de_en", {"preset": "sib200_hi", "shots": 0},
                           {"name": "translation", "source": "ta", "target": "te"},
                           {"preset": "xcopa_it", "label": "xcopa_it_0shot", "shots": 0}])
    assert list(tasks) == ["flores_de_en", "sib200_hi", "flores_ta_te", "xcopa_it_0shot"]
    de_en = tasks["flores_de_en"]
    assert (de_en.shots, de_en.source, de_en.target) == (1, "de", "en")
    assert tasks["sib200_hi"].shots == 0 and tasks["sib200_hi"].language == "hi"
    assert (tasks["flores_ta_te"].source, tasks["flores_ta_te"].target, tasks["flores_ta_te"].shots) == ("ta", "te", 1)
    assert tasks["xcopa_it_0shot"].query_template == "{premise} {connector}"  # the preset's fields carry over
    assert EVAL_TASKS.preset("sib200_hi").shots == 1  # overriding did not change the preset
    # Overrides that change what the task is also change its name; others keep the preset's.
    assert list(resolve_tasks([{"preset": "flores_de_en", "source": "fr"}, {"preset": "sib200_hi", "language": "ta"},
                               {"preset": "flores_de_en", "mode": "denoising"}])) == [
        "flores_fr_en", "sib200_ta", "flores_de_en"]


def test_resolve_tasks_refuses_bad_entries():
    with pytest.raises(ConfigError, match=r"eval.tasks\[1\]: two tasks are named 'sib200_hi'"):
        resolve_tasks(["sib200_hi", {"preset": "sib200_hi", "shots": 0}])
    resolve_tasks(["sib200_hi", {"preset": "sib200_hi", "shots": 0, "label": "sib200_hi_0"}])  # a label separates them
    with pytest.raises(ConfigError, match=r"eval.tasks\[0\]: unknown field\(s\) bogus, shot for eval task 'transl"):
        resolve_tasks([{"preset": "flores_de_en", "shot": 0, "bogus": 1}])
    with pytest.raises(ConfigError, match=r"eval.tasks\[0\]=.*needs `preset: NAME` or `name: PLUGIN`"):
        resolve_tasks([{"source": "de"}])
    with pytest.raises(ConfigError, match=r"task.source='xx': has no FLORES file stem: add it to task.file_stems"):
        resolve_tasks([{"name": "translation", "source": "xx"}])
    with pytest.raises(PluginError) as err:
        resolve_tasks(["flores_xx_en"])
    assert "unknown eval task preset 'flores_xx_en'" in str(err.value)
    assert "flores_de_en" in str(err.value) and "sib200_hi" in str(err.value) and "xcopa_ta" in str(err.value)
    with pytest.raises(PluginError, match="unknown eval task plugin 'nope'"):
        resolve_tasks([{"name": "nope"}])


def test_resolve_tasks_names_a_field_of_the_wrong_type():
    with pytest.raises(ConfigError) as err:
        resolve_tasks([{"preset": "sib200_hi", "shots": "many"}])
    assert "eval.tasks[0].shots" in str(err.value) and "many" in str(err.value)
    assert resolve_tasks([{"preset": "sib200_hi", "shots": "0"}])["sib200_hi"].shots == 0  # converted like the CLI


def test_missing_data_names_the_path_and_the_layout(tmp_path):
    with pytest.raises(DataError) as err:
        task_examples("flores_de_en", tmp_path)
    assert f"eval data not found at {tmp_path / 'flores200'}" in str(err.value)
    assert "expected layout: FLORES-200: dev/{code}.dev and devtest/{code}.devtest" in str(err.value)

    write_lines(tmp_path / "flores200" / "devtest" / "eng.devtest", ["x"])
    with pytest.raises(DataError, match=f"eval data not found at {tmp_path / 'flores200' / 'devtest' / 'deu.devtest'}"):
        task_examples({"preset": "flores_de_en", "shots": 0}, tmp_path)

    (tmp_path / "sib200").mkdir()
    with pytest.raises(DataError) as err:
        task_examples("sib200_hi", tmp_path)
    assert str(tmp_path / "sib200" / "data" / "annotated" / "hin_Deva" / "labels.txt") in str(err.value)
    assert "SIB-200: data/annotated/{lang_Script}/{split}.tsv" in str(err.value)

    with pytest.raises(DataError, match=f"eval data not found at {tmp_path / 'xcopa'}; expected layout: XCOPA"):
        task_examples("xcopa_ta", tmp_path)
    with pytest.raises(DataError, match=f"eval data not found at {tmp_path / 'none.jsonl'}; expected layout: a .jsonl file"):
        task_examples({"name": "summarization", "path": "none.jsonl"}, tmp_path)


def test_a_relative_path_without_data_root_names_eval_data_root(flores):
    with pytest.raises(ConfigError) as err:
        task_examples("flores_de_en", None)
    assert "task.path='flores200' is relative and eval.data_root is not set" in str(err.value)
    examples = task_examples({"preset": "flores_de_en", "path": str(flores / "flores200")}, None)  # absolute
    assert len(examples) == 2


def test_translation_files_of_different_lengths_are_a_data_error(flores):
    write_lines(flores / "flores200" / "devtest" / "eng.devtest", ["only one"])
    with pytest.raises(DataError, match="de has 2 lines and en 1; FLORES files of one split must be line-aligned"):
        task_examples("flores_de_en", flores)


# ---------------------------------------------------------------------------------------------------------------
# The harness: modes, truncation, stop strings, ranking, outputs


def test_build_request_applies_the_mode():
    prompt = ids("Sentence: x;")
    clm, cut = build_request(prompt, [CLM], "clm", ids(" y"), limit=100)
    assert clm == TokenRequest((CLM, *prompt), (), tuple(ids(" y"))) and not cut
    denoising, cut = build_request(prompt, [], "denoising", ids(" y"), limit=100)
    assert denoising == TokenRequest(tuple(prompt), tuple(prompt), tuple(ids(" y"))) and not cut
    bare, _ = build_request(prompt, [], "clm", (), limit=100)  # a model without [CLM] reads the bare prompt
    assert bare == TokenRequest(tuple(prompt))


def test_build_request_truncates_from_the_left_keeping_the_query_end():
    prompt = ids("shot one; shot two; query:")
    request, cut = build_request(prompt, [CLM], "clm", (), limit=6)
    assert cut and request.inputs == (CLM, *ids("query:"))
    request, cut = build_request(prompt, [], "denoising", ids("z"), limit=6)
    assert cut and request.inputs == request.target_prefix == tuple(ids("query:"))
    request, cut = build_request(prompt, [CLM], "clm", (), limit=len(prompt))
    assert not cut and request.inputs == (CLM, *prompt)


def test_budget_leaves_room_for_mode_token_targets_and_the_prompt_again():
    enc_dec = FakeModel(encoder_decoder=True, max_positions=100)
    assert Budget(enc_dec, "clm", 1).prompt_limit(30) == 99  # targets have the decoder to themselves
    assert Budget(enc_dec, "denoising", 0).prompt_limit(30) == 70  # the prompt is forced on the decoder too
    assert Budget(enc_dec, "denoising", 0).prompt_limit(5) == 95
    dec = FakeModel(encoder_decoder=False, max_positions=100)
    assert Budget(dec, "clm", 1).prompt_limit(10) == 90  # 1 + 90 + 10 tokens, the last one never fed
    assert Budget(dec, "clm", 0).prompt_limit(10) == 91
    assert Budget(dec, "denoising", 0).prompt_limit(10) == 45  # prompt twice


def test_cut_at_stop():
    assert cut_at_stop(" Good morning; Sentence: more", [";"]) == "Good morning"
    assert cut_at_stop("a <br> b; c", [";", "<br>"]) == "a"  # the earliest stop string wins
    assert cut_at_stop("x; y <br> z", ["<br>", ";"]) == "x"
    assert cut_at_stop("  no stop here  ", [";"]) == "no stop here"
    assert cut_at_stop("keep; all", ["", "|"]) == "keep; all"  # an empty stop string is ignored
    assert cut_at_stop(";starts with it", [";"]) == ""


def qa_dataset(root: Path) -> list[dict]:
    """Four items whose fixed scores make raw and per-byte argmax disagree in known ways."""
    rows = [
        # raw: "ab" (-2 > -3) wrong; per byte: "éé" is 4 bytes, -3/4 > -2/2, right; per character (2 each) wrong
        {"id": "q0", "question": "zero", "choices": ["ab", "éé"], "label": 1, "scores": [-2.0, -3.0]},
        # raw right; per byte and per character still right: -1/1 > -8/4
        {"id": "q1", "question": "one", "choices": ["x", "yyyy"], "label": 0, "scores": [-1.0, -8.0]},
        # both right
        {"id": "q2", "question": "two", "choices": ["a", "b", "c"], "label": 2, "scores": [-5.0, -4.0, -1.0]},
        # both wrong
        {"id": "q3", "question": "three", "choices": ["p", "q"], "label": 1, "scores": [-1.0, -3.0]},
    ]
    write_jsonl(root / "qa" / "test.jsonl", rows)
    return rows


def qa_task(mode: str = "clm", **fields) -> dict:
    return {"name": "rank_classification", "dataset": "jsonl", "path": "qa", "shots": 0, "mode": mode,
            "query_template": "Q: {question} A:", "label": "qa", **fields}


def qa_scores(rows):
    table = {(f"Q: {r['question']} A:", c): s for r in rows for c, s in zip(r["choices"], r["scores"])}
    return lambda prompt, continuation: table[(prompt, continuation)]


def test_ranking_argmax_per_byte_argmax_and_outputs(tmp_path):
    rows = qa_dataset(tmp_path)
    model = FakeModel(scores=qa_scores(rows))
    out = tmp_path / "out"
    results = evaluate(model, resolve_tasks([qa_task()]), out, data_root=tmp_path, progress=False)
    # Gold: "éé" -3 (4 bytes), "x" -1, "c" -1, "q" -3; margins over the best distractor: -1, 7, 3, -2.
    assert results == {"qa": {"accuracy": 50.0, "accuracy_norm": 50.0, "accuracy_bytes": 75.0,
                              "gold_ll_per_byte": pytest.approx(-8 / 7),
                              "margin": 1.75, "examples": 4.0, "truncated": 0.0}}
    records = [json.loads(line) for line in (out / "qa.predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3"]
    assert [r["prediction"] for r in records] == [0, 0, 2, 0]
    assert [r["prediction_norm"] for r in records] == [0, 0, 2, 0]
    assert [r["prediction_bytes"] for r in records] == [1, 0, 2, 0]
    assert [r["label"] for r in records] == [1, 0, 2, 1]
    assert [r["loglikelihoods"] for r in records] == [r["scores"] for r in rows]
    assert records[0]["candidates"] == ["ab", "éé"] and records[0]["prompt"] == "Q: zero A:"
    assert not any(r["truncated"] for r in records)
    assert [(r["gold_logprob"], r["gold_bytes"], r["margin"]) for r in records] == [
        (-3.0, 4, -1.0), (-1.0, 1, 7.0), (-1.0, 1, 3.0), (-3.0, 1, -2.0)]
    assert all("zero_shot_gold_logprob" not in r for r in records)  # a 0-shot task has no in-context gain
    assert records[0]["stats"] == {"accuracy": [0.0, 1.0], "accuracy_norm": [0.0, 1.0],
                                   "accuracy_bytes": [100.0, 1.0], "gold_ll_per_byte": [-3.0, 4.0], "margin": [-1.0, 1.0]}
    saved = json.loads((out / "scores.json").read_text())
    assert saved == {"model": "fake", "scores": results, "clm_token_used": {"qa": True},
                     "aggregates": {"qa": {"accuracy": "ratio", "accuracy_norm": "ratio", "accuracy_bytes": "ratio",
                                           "gold_ll_per_byte": "ratio", "margin": "ratio"}},
                     "higher_is_better": {"qa": {"accuracy": True, "accuracy_norm": True, "accuracy_bytes": True,
                                                 "gold_ll_per_byte": True, "margin": True}}}
    assert format_scores(results) == ("qa  accuracy=50.00  accuracy_norm=50.00  accuracy_bytes=75.00  "
                                      "gold_ll_per_byte=-1.1429  margin=1.7500  (n=4, truncated=0)")
    # One request per candidate, in clm mode: [CLM] + prompt, no target prefix, the candidate scored.
    assert len(model.scored) == 9
    assert model.scored[0] == TokenRequest((CLM, *ids("Q: zero A:")), (), tuple(ids("ab")))
    assert all(r.inputs[0] == CLM and r.target_prefix == () for r in model.scored)


def test_ranking_in_denoising_mode_forces_the_prompt_and_limits_apply(tmp_path):
    rows = qa_dataset(tmp_path)
    model = FakeModel(scores=qa_scores(rows))
    tasks = resolve_tasks([qa_task("denoising", limit=3)])
    results = evaluate(model, tasks, tmp_path / "out", data_root=tmp_path, limit=2, progress=False)
    assert results["qa"]["examples"] == 2.0  # the lower of the task's and the run's limit
    records = [json.loads(line) for line in (tmp_path / "out" / "qa.predictions.jsonl").read_text().splitlines()]
    picked = [r["id"] for r in records]
    order = [r["id"] for r in rows]
    assert len(picked) == 2 and sorted(picked, key=order.index) == picked  # examples of the data, in data order
    by_id = {r["id"]: r for r in rows}
    right = [by_id[i]["label"] == int(np.argmax(by_id[i]["scores"])) for i in picked]
    assert results["qa"]["accuracy"] == 100.0 * sum(right) / 2
    # Denoising: no [CLM]; the prompt is the input and, again, the forced target prefix. Only picked items are sent.
    expected = [TokenRequest(tuple(ids(f"Q: {by_id[i]['question']} A:")), tuple(ids(f"Q: {by_id[i]['question']} A:")),
                             tuple(ids(c))) for i in picked for c in by_id[i]["choices"]]
    assert model.scored == expected
    saved = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert saved["clm_token_used"] == {"qa": False}
    # The same examples on every run (every model is scored on the same items).
    again = FakeModel(scores=qa_scores(rows))
    evaluate(again, tasks, None, data_root=tmp_path, limit=2, progress=False)
    assert again.scored == model.scored


def test_a_model_without_clm_reads_the_bare_prompt(tmp_path):
    rows = qa_dataset(tmp_path)
    model = FakeModel(scores=qa_scores(rows), clm=False)
    evaluate(model, resolve_tasks([qa_task()]), tmp_path / "out", data_root=tmp_path, progress=False)
    assert model.scored[0] == TokenRequest(tuple(ids("Q: zero A:")), (), tuple(ids("ab")))
    assert json.loads((tmp_path / "out" / "scores.json").read_text())["clm_token_used"] == {"qa": False}


def test_ranking_truncates_long_prompts_from_the_left_and_counts_them(tmp_path):
    rows = qa_dataset(tmp_path)
    # Decoder-only, 11 positions: an example's prompt gets 11 + 1 - 1 ([CLM]) - its longest candidate tokens,
    # so its candidates are all scored after the same prompt.
    model = FakeModel(encoder_decoder=False, max_positions=11,
                      scores=lambda prompt, c: {"ab": -1.0, "x": -1.0, "a": -1.0}.get(c, -2.0))
    result = evaluate_task(model, "qa", resolve_tasks([qa_task()])["qa"], tmp_path, progress=False)
    metrics, records = result.metrics, result.records
    prompts = [f"Q: {r['question']} A:" for r in rows]  # 10, 9, 9 and 11 characters
    limits = [9, 7, 10, 10]  # longest candidates: 2, 4, 1 and 1 tokens
    assert metrics["truncated"] == 3.0 and [r["truncated"] for r in records] == [True, True, False, True]
    for prompt, limit, row in zip(prompts, limits, rows):
        for choice in row["choices"]:
            sent = [r for r in model.scored if r.continuation == tuple(ids(choice))][0]
            assert sent.inputs == (CLM, *ids(prompt[-limit:]))  # the end of the prompt, the query, survives
    assert all(len(r.inputs) + len(r.continuation) <= 12 for r in model.scored)
    assert records[3]["prompt"] == prompts[3]  # the record keeps the full prompt


def test_generation_cuts_at_stop_strings_and_writes_predictions(tmp_path):
    rows = [{"document": f"Article number {i} is about topic {i}.", "summary": f"Topic {i}."} for i in range(3)]
    path = write_jsonl(tmp_path / "news.jsonl", rows)
    summaries = {r["document"]: r["summary"] for r in rows}

    def reply(prompt: str) -> str:
        document = prompt.rsplit("Article: ", 1)[-1].removesuffix(" ==> Short summary:")
        return f" {summaries[document]} <br><br> Article: something else"

    model = FakeModel(reply=reply, scores=lambda prompt, continuation: -0.5 * len(continuation))
    tasks = resolve_tasks([{"name": "summarization", "path": str(path), "max_new_tokens": 40}])
    results = evaluate(model, tasks, tmp_path / "out", progress=False)
    # The gold summaries are scored as continuations of the 1-shot and the 0-shot prompt: equal scores, no gain.
    assert results == {"summarization_news": {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0,
                                              "gold_ll_per_byte": -0.5, "icl_gain_per_byte": 0.0, "examples": 3.0,
                                              "truncated": 0.0}}
    assert model.max_new_tokens == [40] and model.stops == [("<br>",)]  # the task's stop strings reach the model
    assert all(r.inputs[0] == CLM and r.target_prefix == () and r.continuation == () for r in model.generated)
    assert [model.decode(r.continuation) for r in model.scored] == [r["summary"] for r in rows] * 2
    records = [json.loads(line) for line in (tmp_path / "out" / "summarization_news.predictions.jsonl")
               .read_text().splitlines()]
    assert [r["prediction"] for r in records] == [r["summary"] for r in rows]
    assert [r["reference"] for r in records] == [r["summary"] for r in rows]
    assert records[0]["prompt"].endswith("Article: Article number 0 is about topic 0. ==> Short summary:")

    # max_new_tokens bounds what the model may return: cut before the stop string, the prediction differs.
    short = FakeModel(reply=reply, scores=lambda prompt, continuation: -1.0)
    tasks = resolve_tasks([{"name": "summarization", "path": str(path), "max_new_tokens": 4}])
    results = evaluate(short, tasks, None, progress=False)
    assert short.max_new_tokens == [4] and results["summarization_news"]["rouge1"] < 100.0


def test_generation_in_denoising_mode_and_truncation(tmp_path, flores):
    model = FakeModel(max_positions=50, reply=lambda prompt: "Good morning; Sentence:",
                      scores=lambda prompt, continuation: -1.0)
    cfg = resolve_tasks([{"preset": "flores_de_en", "mode": "denoising", "max_new_tokens": 16}])["flores_de_en"]
    result = evaluate_task(model, "flores_de_en", cfg, flores, progress=False)
    metrics, records = result.metrics, result.records
    # Encoder-decoder in denoising mode: the prompt and the new tokens share the decoder, 50 - 16 = 34 tokens.
    assert metrics["truncated"] == 2.0 and [r["truncated"] for r in records] == [True, True]
    for request, example in zip(model.generated, records):
        assert request.inputs == request.target_prefix == tuple(ids(example["prompt"][-34:]))
        assert model.decode(request.inputs).endswith("; Translation in English:")
    assert [r["prediction"] for r in records] == ["Good morning", "Good morning"]
    assert [r["reference"] for r in records] == ["Good morning.", "Thank you."]
    assert [r["source"] for r in records] == ["Guten Morgen.", "Danke schön."]  # the item's fields come along
    assert set(metrics) == {"chrf++", "bleu", "gold_ll_per_byte", "icl_gain_per_byte", "examples", "truncated"}
    assert result.aggregates == {"chrf++": "chrf", "bleu": "bleu:13a", "gold_ll_per_byte": "ratio",
                                 "icl_gain_per_byte": "ratio"}
    assert 0 < metrics["chrf++"] < 100
    # The references, scored after the denoising prompt like a ranking candidate: 50 - 4 tokens of the gold.
    gold = [r for r in model.scored if r.continuation == tuple(ids("Good morning."))][0]
    assert gold.inputs == gold.target_prefix == tuple(ids(records[0]["prompt"][-(50 - len("Good morning.")):]))


def test_a_task_without_test_examples_is_a_data_error(tmp_path, flores):
    write(tmp_path / "qa" / "test.jsonl", "")
    with pytest.raises(DataError, match=r"eval task 'qa': no test examples in its data \(task.path='qa'\)"):
        evaluate(FakeModel(), resolve_tasks([qa_task()]), None, data_root=tmp_path, progress=False)
    for code in ("deu", "eng"):
        write(flores / "flores200" / "devtest" / f"{code}.devtest", "")
    with pytest.raises(DataError, match="eval task 'flores_de_en': no test examples"):
        evaluate(FakeModel(), resolve_tasks(["flores_de_en"]), None, data_root=flores, progress=False)


def test_several_tasks_write_one_prediction_file_each(tmp_path, flores):
    rows = qa_dataset(flores)
    qa = qa_scores(rows)
    model = FakeModel(scores=lambda prompt, c: qa(prompt, c) if prompt.startswith("Q:") else -1.0,
                      reply=lambda prompt: "x")
    tasks = resolve_tasks([qa_task(), {"preset": "flores_de_en", "max_new_tokens": 3}])
    results = evaluate(model, tasks, tmp_path / "out", data_root=flores, progress=False)
    assert list(results) == ["qa", "flores_de_en"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["flores_de_en.predictions.jsonl",
                                                                     "qa.predictions.jsonl", "scores.json"]
    assert len((tmp_path / "out" / "flores_de_en.predictions.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "out" / "qa.predictions.jsonl").read_text().splitlines()) == 4
    table = format_scores(results).splitlines()
    assert table[0].startswith("qa            accuracy=50.00")
    assert table[1].startswith("flores_de_en  chrf++=") and table[1].endswith("(n=2, truncated=0)")


def test_a_jsonl_task_path_may_be_one_file_whose_other_items_are_the_shots(tmp_path):
    rows = qa_dataset(tmp_path)
    cfg = resolve_tasks([qa_task(path=str(tmp_path / "qa" / "test.jsonl"), shots=2,
                                 shot_template="Q: {question} A: {answer}")])["qa"]
    examples = EVAL_TASKS.build(cfg).examples(tmp_path)
    assert [ex.id for ex in examples] == [r["id"] for r in rows]
    for ex, row in zip(examples, rows):
        assert ex.prompt.endswith(f"Q: {row['question']} A:")
        assert ex.prompt.count(f"Q: {row['question']} ") == 1 and ex.prompt.count("Q: ") == 3  # 2 shots, not itself
    assert EVAL_TASKS.build(cfg).label == "jsonl_test"
