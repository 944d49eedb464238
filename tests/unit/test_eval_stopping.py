"""Generation that stops at a stop string, for both architectures: fewer steps, the token that completed the
stop string kept, and exactly the predictions of generating to max_new_tokens and cutting."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_jsonl, tiny_seqlab_model, write_flores

from seqlab.evaluation.harness import cut_at_stop, evaluate
from seqlab.evaluation.model import SeqlabModel, TokenRequest
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.registry import load_plugins
from seqlab.tokenizer import EOS_ID

ARCHS = ["seq2seq", "prefix_lm", "causal_lm"]
FLORES = {"dev": {"deu": ["Hallo Welt."], "eng": ["Hello world."]},
          "devtest": {"deu": ["Guten Morgen.", "Danke schön.", "Bis bald."],
                      "eng": ["Good morning.", "Thank you.", "See you soon."]}}


@pytest.fixture(autouse=True, scope="module")
def plugins():
    load_plugins()


@pytest.fixture
def data(tmp_path) -> Path:
    return write_flores(tmp_path, FLORES)


def requests_of(ours: SeqlabModel, texts: list[str], denoising: bool = False) -> list[TokenRequest]:
    ids = ours.encode(texts)
    if denoising:
        return [TokenRequest(tuple(i), tuple(i)) for i in ids]
    return [TokenRequest((ours.special_id("[CLM]"), *i)) for i in ids]


def first_letter_stop(ours: SeqlabModel, rows: list[list[int]]) -> tuple[str, int]:
    """A stop string that ends the longest row early: the first letter or digit its text shows, and the number
    of tokens the row has once it shows."""
    row = max(rows, key=len)
    for k in range(1, len(row) + 1):
        letters = [c for c in ours.decode(row[:k]) if c.isalnum()]
        if letters:
            return letters[0], k
    raise AssertionError("the model generated no letters")


PROMPTS = ["Sentence: Guten Morgen; Translation in English:", "the cat", "Ein Satz auf Deutsch, bitte",
           "digits 1234 and more words", "a"]
MAX_NEW = 12


@pytest.mark.parametrize("denoising", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_generation_stops_at_a_stop_string_with_fewer_steps(arch, denoising, tokenizer):
    ours = tiny_seqlab_model(arch, tokenizer)
    ours.batch_size = 1  # every request its own batch: each one's steps are counted
    steps = []
    ours.model.head.register_forward_hook(lambda *_: steps.append(1))  # one head call per generation step
    requests = requests_of(ours, PROMPTS, denoising)
    full = ours.generate(requests, MAX_NEW)
    full_steps = len(steps)
    stop, k = first_letter_stop(ours, full)
    assert k < MAX_NEW - 1
    steps.clear()
    stopped = ours.generate(requests, MAX_NEW, stop=[stop])
    assert len(steps) < full_steps
    shorter = 0
    for a, b in zip(full, stopped, strict=True):
        assert a[: len(b)] == b  # the same greedy tokens, up to where the row stopped
        if stop in ours.decode(a):
            assert stop in ours.decode(b) and stop not in ours.decode(b[:-1])  # the completing token is kept
            shorter += len(b) < len(a)
        else:
            assert a == b
        assert cut_at_stop(ours.decode(b), [stop]) == cut_at_stop(ours.decode(a), [stop])
    assert shorter >= 1
    ours.batch_size = 3  # batched rows stop on their own
    assert ours.generate(requests, MAX_NEW, stop=[stop]) == stopped


@pytest.mark.parametrize("arch", ["seq2seq", "causal_lm"])
def test_harness_predictions_are_those_of_generating_to_the_limit_and_cutting(arch, tokenizer, data, tmp_path,
                                                                             monkeypatch):
    ours = tiny_seqlab_model(arch, tokenizer)
    ours.batch_size = 1  # a row that stops saves steps whatever the other rows do
    shot = "Sentence: Hallo Welt.; Translation in English: Hello world.; "
    probe = ours.generate(requests_of(ours, [f"{shot}Sentence: {s}; Translation in English:"
                                             for s in FLORES["devtest"]["deu"]]), 8)  # the harness's requests
    stop, _ = first_letter_stop(ours, probe)
    tasks = resolve_tasks([{"preset": "flores_de_en", "max_new_tokens": 8, "stop": [stop]}])
    steps = []
    ours.model.head.register_forward_hook(lambda *_: steps.append(1))  # scoring calls it once per batch
    evaluate(ours, tasks, tmp_path / "early", data_root=data, progress=False)
    early_steps = len(steps)
    generate = ours.generate
    monkeypatch.setattr(ours, "generate", lambda requests, max_new_tokens, stop=(): generate(requests, max_new_tokens))
    steps.clear()
    evaluate(ours, tasks, tmp_path / "full", data_root=data, progress=False)
    assert early_steps < len(steps)
    early = read_jsonl(tmp_path / "early" / "flores_de_en.predictions.jsonl")
    assert early == read_jsonl(tmp_path / "full" / "flores_de_en.predictions.jsonl")


def test_stop_strings_leave_eos_rows_alone(tokenizer):
    ours = tiny_seqlab_model("causal_lm", tokenizer)
    with torch.no_grad():
        ours.model.head.weight[EOS_ID] *= 3  # some rows end at EOS before any stop string
    requests = requests_of(ours, PROMPTS)
    full = ours.generate(requests, MAX_NEW)
    assert min(map(len, full)) < MAX_NEW
    assert ours.generate(requests, MAX_NEW, stop=["\u2603"]) == full  # a stop string never generated changes nothing
