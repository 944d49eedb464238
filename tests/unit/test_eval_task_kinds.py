"""The sentence-pair, partial-scoring and generate-extract-match task kinds: metrics against hand computations,
what partial scoring scores, the presets' layouts, and malformed files named by file, line and field."""
from __future__ import annotations

import json
import re
from decimal import Decimal

import numpy as np
import pytest
from helpers import CharModel, tiny_seqlab_model, write_jsonl, write_lines

from seqlab.errors import ConfigError, DataError
from seqlab.evaluation.harness import evaluate
from seqlab.evaluation.model import TokenRequest
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.registry import EVAL_TASKS, load_plugins
from seqlab_plugins.evals.generate_match import as_number, extract, matches


@pytest.fixture(autouse=True, scope="module")
def plugins():
    load_plugins()


class ScriptModel(CharModel):
    """`score` asks `judge(prompt, continuation)` and records every request, `generate` answers from `replies`
    by the text after the last "Question: "."""

    def __init__(self, judge=None, replies=None):
        self.judge, self.replies, self.requests = judge, replies or {}, []

    def score(self, requests):
        self.requests.extend(requests)
        return np.array([self.judge(self.decode(r.inputs), self.decode(r.continuation)) for r in requests])

    def generate(self, requests, max_new_tokens, stop=()):
        return [self.encode([self.replies[self.decode(r.inputs).rsplit("Question: ", 1)[1].split(" Answer:")[0]]])[0]
                for r in requests]


def run(model, entry, root):
    label = entry["label"]
    results = evaluate(model, resolve_tasks([entry]), root / "out", data_root=root, progress=False)[label]
    return results, [json.loads(line) for line in (root / "out" / f"{label}.predictions.jsonl").read_text().splitlines()]


# --- sentence-pair classification ---------------------------------------------------------------------------

NLI = [{"premise": "Rain fell.", "hypothesis": "It was wet.", "label": 0},
       {"premise": "Sun shone.", "hypothesis": "It was dark.", "label": 2},
       {"premise": "A man sang.", "hypothesis": "He was tall.", "label": 1},
       {"premise": "A dog ran.", "hypothesis": "It moved.", "label": 0}]


def test_pair_classification_ranks_the_verbalisers_and_scores_accuracy(tmp_path):
    write_jsonl(tmp_path / "nli.jsonl", NLI)
    # The judge prefers "True" for every item but the second, where it prefers "False": 3 of 4 right
    # (the third item is neutral, answered True).
    def judge(prompt, word):
        favourite = "False" if "Sun shone" in prompt else "True"
        return 0.0 if word == favourite else -5.0 - len(word)
    model = ScriptModel(judge)
    results, records = run(model, {"name": "pair_classification", "path": "nli.jsonl", "label": "nli"}, tmp_path)
    assert results["accuracy"] == pytest.approx(75.0)
    assert [r["prediction"] for r in records] == [0, 2, 0, 0] and [r["label"] for r in records] == [0, 2, 1, 0]
    assert records[0]["candidates"] == ["True", "Neither", "False"]
    assert records[0]["prompt"] == "Rain fell. Question: It was wet. True, False or Neither? Answer:"
    assert {model.decode(r.continuation) for r in model.requests} >= {"True", "Neither", "False"}


def test_pair_classification_reads_a_tsv_and_string_or_boolean_labels(tmp_path):
    write_lines(tmp_path / "paws.tsv", ["id\tsentence1\tsentence2\tlabel", '7\tA "cat" sat.\tA cat sat.\t1',
                                        "8\tA dog.\tA cat.\t0"])
    cfg = EVAL_TASKS.preset("paws_x_en")
    task = EVAL_TASKS.build(type(cfg)(**{**cfg.__dict__, "path": "paws.tsv", "shot_path": None}))
    examples = task.examples(tmp_path)
    assert [(ex.id, ex.label, ex.candidates) for ex in examples] == [("7", 1, ("No", "Yes")), ("8", 0, ("No", "Yes"))]
    assert 'A "cat" sat.' in examples[0].prompt  # quotes are text in a TSV
    write_jsonl(tmp_path / "super_glue" / "BoolQ" / "val.jsonl",
                [{"idx": 3, "passage": "Cats sit.", "question": "do cats sit", "label": True}])
    boolq = EVAL_TASKS.build(EVAL_TASKS.preset("superglue_boolq")).examples(tmp_path)
    assert [(ex.id, ex.label, ex.candidates) for ex in boolq] == [("3", 1, ("no", "yes"))]
    assert boolq[0].prompt == "Cats sit. Question: do cats sit? Answer:"


def test_pair_classification_shots_show_their_own_verbaliser(tmp_path):
    write_jsonl(tmp_path / "nli.jsonl", NLI)
    task = EVAL_TASKS.build(EVAL_TASKS.example("pair_classification").__class__(
        name="pair_classification", path="nli.jsonl", shots=1, verbalizers={"0": "yes", "1": "maybe", "2": "no"}))
    for ex in task.examples(tmp_path):
        shot = ex.prompt.split(" <br> ")[0]
        source = next(item for item in NLI if shot.startswith(item["premise"]))
        assert shot.endswith("Answer: " + ["yes", "maybe", "no"][source["label"]])


@pytest.mark.parametrize("rows, message", [
    ([NLI[0], {"premise": "x", "label": 0}], r"nli\.jsonl line 2: no field 'hypothesis'"),
    ([NLI[0], {**NLI[0], "label": 5}], r"nli\.jsonl line 2: label=5 is not one of task\.verbalizers' labels"),
    ([NLI[0], "not an object"], r"nli\.jsonl line 2: a JSON str, not an object"),
])
def test_a_malformed_pair_file_names_file_line_and_field(tmp_path, rows, message):
    write_jsonl(tmp_path / "nli.jsonl", rows)
    task = EVAL_TASKS.build(EVAL_TASKS.example("pair_classification"))
    with pytest.raises(DataError, match=message):
        task.examples(tmp_path)


def test_broken_json_and_a_short_tsv_row_name_their_line(tmp_path):
    (tmp_path / "nli.jsonl").write_text(json.dumps(NLI[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"nli\.jsonl line 2: not JSON"):
        EVAL_TASKS.build(EVAL_TASKS.example("pair_classification")).examples(tmp_path)
    write_lines(tmp_path / "nli.tsv", ["premise\thypothesis\tlabel", "a\tb\t0", "a\t0"])
    cfg = EVAL_TASKS.example("pair_classification")
    with pytest.raises(DataError, match=r"nli\.tsv line 3: 2 tab-separated fields, the header names 3"):
        EVAL_TASKS.build(type(cfg)(name="pair_classification", path="nli.tsv")).examples(tmp_path)


def test_bad_verbalisers_are_config_errors():
    with pytest.raises(ConfigError, match="task.verbalizers"):
        resolve_tasks([{"name": "pair_classification", "path": "x.jsonl", "verbalizers": {"0": "yes"}}])
    with pytest.raises(ConfigError, match="task.verbalizers"):
        resolve_tasks([{"name": "pair_classification", "path": "x.jsonl", "verbalizers": {"0": "yes", "1": "yes"}}])


# --- partial scoring ----------------------------------------------------------------------------------------

SCHEMAS = [{"sentence": "The trophy did not fit in the suitcase because _ was too big.", "option1": "the trophy",
            "option2": "the suitcase", "answer": "1"},
           {"sentence": "The trophy did not fit in the suitcase because _ was too small.", "option1": "the trophy",
            "option2": "the suitcase", "answer": "2"},
           {"sentence": "Anna thanked Maria because _ had helped her.", "option1": "Anna", "option2": "Maria",
            "answer": "2"}]


def test_partial_scoring_scores_only_the_continuation_after_each_option(tmp_path):
    write_jsonl(tmp_path / "wino.jsonl", SCHEMAS)
    # The judge likes "the trophy" before "was too big." and "the suitcase" elsewhere; Anna for the third.
    def judge(context, continuation):
        if continuation == "had helped her.":
            return -1.0 if context.endswith("Anna") else -2.0
        return -1.0 if context.endswith("the trophy") == (continuation == "was too big.") else -3.0
    model = ScriptModel(judge)
    results, records = run(model, {"name": "partial_scoring", "path": "wino.jsonl", "label": "wino"}, tmp_path)
    assert results["accuracy"] == pytest.approx(100 * 2 / 3)
    assert "accuracy_norm" not in results  # one shared continuation: normalising changes nothing
    # One request per option: the context up to the blank with the option, the rest of the sentence scored.
    seen = [(model.decode(r.inputs), model.decode(r.continuation)) for r in model.requests[:6]]
    assert seen == [("The trophy did not fit in the suitcase because the trophy", "was too big."),
                    ("The trophy did not fit in the suitcase because the suitcase", "was too big."),
                    ("The trophy did not fit in the suitcase because the trophy", "was too small."),
                    ("The trophy did not fit in the suitcase because the suitcase", "was too small."),
                    ("Anna thanked Maria because Anna", "had helped her."),
                    ("Anna thanked Maria because Maria", "had helped her.")]
    assert [r["prediction"] for r in records] == [0, 1, 0]
    assert records[2]["contexts"] == ["Anna thanked Maria because Anna", "Anna thanked Maria because Maria"]
    assert records[2]["loglikelihoods"] == [-1.0, -2.0]
    # The gold's likelihood is the continuation's under the right option.
    assert [r["gold_logprob"] for r in records] == [-1.0, -1.0, -2.0]


@pytest.mark.parametrize("arch", ["seq2seq", "prefix_lm"])
@pytest.mark.parametrize("mode", ["clm", "denoising"])
def test_partial_scoring_on_a_real_model_equals_scoring_each_option_by_hand(arch, mode, tokenizer, tmp_path):
    write_jsonl(tmp_path / "wino.jsonl", SCHEMAS)
    model = tiny_seqlab_model(arch, tokenizer)
    _, records = run(model, {"name": "partial_scoring", "path": "wino.jsonl", "mode": mode, "label": "w"}, tmp_path)
    clm = [model.special_id("[CLM]")] if mode == "clm" else []
    for schema, record in zip(SCHEMAS, records):
        before, after = schema["sentence"].split("_")
        (continuation,) = model.encode([after.strip()])
        hand = []
        for option in (schema["option1"], schema["option2"]):
            (context,) = model.encode([before + option])
            prefix = tuple(context) if mode == "denoising" else ()
            hand.append(model.score([TokenRequest(tuple(clm + context), prefix, tuple(continuation))])[0])
        assert record["loglikelihoods"] == pytest.approx(np.round(hand, 4).tolist(), abs=1e-4)
        assert record["prediction"] == int(np.argmax(hand))


def test_partial_scoring_shots_are_filled_sentences(tmp_path):
    write_jsonl(tmp_path / "wino.jsonl", SCHEMAS)
    task = EVAL_TASKS.build(type(EVAL_TASKS.example("partial_scoring"))(name="partial_scoring",
                                                                         path="wino.jsonl", shots=1))
    filled = [s["sentence"].replace("_", s["option" + s["answer"]]) for s in SCHEMAS]
    for i, ex in enumerate(task.examples(tmp_path)):
        # Both options' contexts follow the same shot: another schema's sentence with its right option.
        (shot,) = [f for j, f in enumerate(filled) if j != i and ex.contexts[0].startswith(f + " ")]
        assert ex.contexts[1].startswith(shot + " ") and "_" not in ex.contexts[0] + ex.contexts[1]


@pytest.mark.parametrize("bad, message", [
    ({**SCHEMAS[0], "sentence": "No blank here."}, r"line 2: sentence must hold the blank '_' exactly once"),
    ({**SCHEMAS[0], "answer": "3"}, r"line 2: answer='3' is not an option number from 1 to 2"),
    ({**SCHEMAS[0], "sentence": "It was _"}, r"line 2: nothing follows the blank"),
    ({"sentence": "A _ b.", "option1": "x"}, r"line 2: no field 'option2'"),
])
def test_a_malformed_schema_names_file_line_and_field(tmp_path, bad, message):
    write_jsonl(tmp_path / "winograd.jsonl", [SCHEMAS[0], bad])
    with pytest.raises(DataError, match=r"winograd\.jsonl " + message):
        EVAL_TASKS.build(EVAL_TASKS.example("partial_scoring")).examples(tmp_path)


def test_xwinograd_presets_read_the_hugging_face_folders():
    assert EVAL_TASKS.preset("xwinograd_ja").path == "xwinograd/jp/test.jsonl"
    assert EVAL_TASKS.preset("xwinograd_en").shots == 0


# --- generate, extract, match -------------------------------------------------------------------------------

def test_extractors_on_known_strings():
    text = "She had 3 apples, bought 1,200 more and ate 2.5. #### 1,200.5"
    assert extract(text, "last_number") == "1,200.5" and extract(text, "first_number") == "3"
    assert extract(text, "regex", re.compile(r"####\s*(\S+)")) == "1,200.5"
    assert extract(text, "regex", re.compile(r"bought \d")) == "bought 1"  # no group: the whole match
    assert extract("no digits", "last_number") is None and extract("  ", "full") is None
    assert extract("-7 degrees", "first_number") == "-7" and extract("૧૮ apples", "last_number") == "૧૮"


def test_number_matching_compares_values_and_falls_back_to_text():
    assert as_number("1,000.50") == Decimal("1000.5") and as_number("$18.") == Decimal(18)
    assert as_number("١٨") == Decimal(18) and as_number("eighteen") is None and as_number("nan") is None
    assert matches("1000.0", "1,000", "number", True) and not matches("1001", "1000", "number", True)
    assert matches("Paris", "paris", "number", True) and not matches("Paris", "paris", "text", False)
    assert not matches(None, "3", "number", True)


GSM = [{"question": "What is 2 + 3?", "answer": "2 plus 3 is 5. #### 5"},
       {"question": "What is 10 * 100?", "answer": "Ten hundreds. #### 1,000"},
       {"question": "What is 7 - 9?", "answer": "Seven minus nine. #### -2"},
       {"question": "What is 1 + 1?", "answer": "One and one. #### 2"}]
REPLIES = {"What is 2 + 3?": "2 plus 3 is 5.", "What is 10 * 100?": "It is 1000.0", "What is 7 - 9?": "It is 2",
           "What is 1 + 1?": "I do not know."}


def test_generate_match_extracts_and_scores_exact_match(tmp_path):
    write_jsonl(tmp_path / "gsm.jsonl", GSM)
    entry = {"name": "generate_match", "path": "gsm.jsonl", "shots": 1, "reference_pattern": r"####\s*(.+)$",
             "label": "gsm"}
    results, records = run(ScriptModel(judge=lambda p, c: -1.0, replies=REPLIES), entry, tmp_path)
    assert results["exact_match"] == pytest.approx(50.0)  # 5 and 1000 right; 2 is not -2; nothing in the last
    assert [r["extracted"] for r in records] == ["5", "1000.0", "2", None]
    assert [r["reference"] for r in records] == [item["answer"] for item in GSM]
    shot = records[0]["prompt"].split(" <br> ")[0]
    assert shot.startswith("Question: ") and shot.endswith("####" + shot.rsplit("####", 1)[1])  # a worked shot


def test_generate_match_reads_a_headerless_tsv_as_mgsm_ships(tmp_path):
    write_lines(tmp_path / "mgsm" / "mgsm_de.tsv", ["Was ist 2 + 2?\t4", "Was ist 3 + 3?\t6"])
    examples = EVAL_TASKS.build(EVAL_TASKS.preset("mgsm_de")).examples(tmp_path)
    assert [(ex.prompt, ex.fields["gold"]) for ex in examples] == [("Question: Was ist 2 + 2? Answer:", "4"),
                                                                   ("Question: Was ist 3 + 3? Answer:", "6")]


def test_a_missing_gold_names_file_line_and_pattern(tmp_path):
    write_jsonl(tmp_path / "arithmetic.jsonl", [GSM[0], {"question": "q", "answer": "no marker"}])
    cfg = EVAL_TASKS.example("generate_match")
    task = EVAL_TASKS.build(type(cfg)(name="generate_match", path="arithmetic.jsonl", reference_pattern="####(.+)"))
    with pytest.raises(DataError, match=r"arithmetic\.jsonl line 2: no gold answer in answer='no marker'"):
        task.examples(tmp_path)


@pytest.mark.parametrize("fields, key", [({"extract": "regex"}, "task.pattern"), ({"pattern": "x"}, "task.pattern"),
                                         ({"extract": "regex", "pattern": "("}, "task.pattern"),
                                         ({"extract": "middle"}, "task.extract"), ({"match": "fuzzy"}, "task.match")])
def test_bad_extractor_settings_are_config_errors(fields, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        resolve_tasks([{"name": "generate_match", "path": "x.jsonl", **fields}])


def test_verbalisers_given_in_config_replace_the_default_ones():
    (cfg,) = resolve_tasks([{"name": "pair_classification", "path": "x.jsonl",
                             "verbalizers": {"0": "yes", "1": "no"}}]).values()
    assert cfg.verbalizers == {"0": "yes", "1": "no"}
    (cfg,) = resolve_tasks([{"preset": "superglue_cb", "verbalizers": {"entailment": "yes", "contradiction": "no",
                                                                       "neutral": "maybe"}}]).values()
    assert list(cfg.verbalizers.values()) == ["yes", "no", "maybe"]
    # Keys as the command line parses them: numbers and booleans are the labels data files write.
    (cfg,) = resolve_tasks([{"name": "pair_classification", "path": "x.jsonl",
                             "verbalizers": {0: "no", 1: "yes"}}]).values()
    assert cfg.verbalizers == {"0": "no", "1": "yes"}
    (cfg,) = resolve_tasks([{"preset": "superglue_boolq", "verbalizers": {False: "No", True: "Yes"}}]).values()
    assert cfg.verbalizers == {"false": "No", "true": "Yes"}


def test_pair_classification_reads_sib200_as_the_sib200_reader_does(shared_data):
    # SIB-200's TSV through the generic reader, the categories as verbalisers: the same prompts and candidates
    # as the dedicated rank_classification reader.
    folder = shared_data / "sib200" / "data" / "annotated" / "hin_Deva"
    labels = [line for line in (folder / "labels.txt").read_text(encoding="utf-8").split("\n") if line.strip()]
    preset = EVAL_TASKS.preset("sib200_hi")
    generic = EVAL_TASKS.build(type(EVAL_TASKS.example("pair_classification"))(
        name="pair_classification", path=str(folder / "test.tsv"), shot_path=str(folder / "train.tsv"), shots=1,
        label_field="category", id_field="index_id", verbalizers={label: label for label in labels},
        shot_template=preset.shot_template, query_template=preset.query_template, separator=preset.separator))
    ours = generic.examples(None)
    theirs = EVAL_TASKS.build(preset).examples(shared_data)
    assert len(ours) == len(theirs) == 204
    assert [(e.id, e.prompt, e.candidates, e.label) for e in ours] == \
        [(e.id, e.prompt, e.candidates, e.label) for e in theirs]


# --- translation beyond FLORES' folder and 12 languages -----------------------------------------------------

def test_translation_reads_a_pairs_file_in_any_language(tmp_path):
    write_lines(tmp_path / "tatoeba.tsv", ["1\tGuten Morgen.\t2\tBonjour.", "3\tDanke.\t4\tMerci.",
                                          "5\tTschüss.\t6\tSalut."])
    (cfg,) = resolve_tasks([{"name": "translation", "dataset": "pairs", "path": "tatoeba.tsv", "source": "de",
                             "target": "fr", "columns": ["id", "source", "target_id", "target"]}]).values()
    examples = EVAL_TASKS.build(cfg).examples(tmp_path)
    assert EVAL_TASKS.build(cfg).label == "tatoeba_de_fr"
    assert [(ex.id, ex.reference) for ex in examples] == [("1", "Bonjour."), ("3", "Merci."), ("5", "Salut.")]
    for ex in examples:  # one shot from the file's other pairs, never the item itself
        shot, query = ex.prompt.split("; Sentence: ")
        assert shot.startswith("Sentence: ") and ex.fields["source"] not in shot
        assert query == f"{ex.fields['source']}; Translation in French:"
    write_jsonl(tmp_path / "sw.jsonl", [{"en": "Water.", "sw": "Maji."}, {"en": "Fire.", "sw": "Moto."}])
    (cfg,) = resolve_tasks([{"name": "translation", "dataset": "pairs", "path": "sw.jsonl", "source": "en",
                             "target": "sw", "source_field": "en", "target_field": "sw", "target_language": "Swahili",
                             "shots": 0}]).values()
    assert [ex.prompt for ex in EVAL_TASKS.build(cfg).examples(tmp_path)] == [
        "Sentence: Water.; Translation in Swahili:", "Sentence: Fire.; Translation in Swahili:"]


def test_translation_reads_other_flores_languages_by_their_file_stem(tmp_path):
    for split in ("dev", "devtest"):
        write_lines(tmp_path / "flores200" / split / f"eng.{split}", [f"One {split}.", f"Two {split}."])
        write_lines(tmp_path / "flores200" / split / f"swh_Latn.{split}", [f"Moja {split}.", f"Mbili {split}."])
    (cfg,) = resolve_tasks([{"name": "translation", "source": "en", "target": "sw", "target_language": "Swahili",
                             "file_stems": {"sw": "swh_Latn"}}]).values()
    examples = EVAL_TASKS.build(cfg).examples(tmp_path)
    assert [ex.reference for ex in examples] == ["Moja devtest.", "Mbili devtest."]
    assert examples[0].prompt.endswith("Sentence: One devtest.; Translation in Swahili:")


@pytest.mark.parametrize("fields, message", [
    ({"target": "sw", "file_stems": {"sw": "swh_Latn"}}, "task.target_language=None: is needed for target 'sw'"),
    ({"source": "deu"}, "task.source='deu': must be a two-letter ISO 639-1 code"),
    ({"dataset": "tatoeba"}, "task.dataset='tatoeba': must be one of flores, pairs"),
])
def test_bad_translation_settings_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_tasks([{"name": "translation", **fields}])


def test_a_pairs_file_without_its_fields_names_file_and_line(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", [{"source": "a", "target": "b"}, {"source": "c"}])
    (cfg,) = resolve_tasks([{"name": "translation", "dataset": "pairs", "path": "pairs.jsonl"}]).values()
    with pytest.raises(DataError, match=r"pairs\.jsonl line 2: no field 'target'"):
        EVAL_TASKS.build(cfg).examples(tmp_path)


def test_superglue_copa_reads_the_official_layout_as_xcopa_items(tmp_path):
    write_jsonl(tmp_path / "super_glue" / "COPA" / "val.jsonl",
                [{"idx": 7, "premise": "The man fell.", "choice1": "He slipped.", "choice2": "He sang.",
                  "question": "cause", "label": 0}])
    (example,) = EVAL_TASKS.build(EVAL_TASKS.preset("superglue_copa")).examples(tmp_path)
    assert (example.id, example.prompt, example.candidates, example.label) == \
        ("7", "The man fell because", ("he slipped.", "he sang."), 0)
