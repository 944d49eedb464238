"""HFModel on an exported seqlab model gives what SeqlabModel gives on the original: ids, scores, generations."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import GenerationConfig  # noqa: E402

from seqlab.errors import DataError  # noqa: E402
from seqlab.evaluation.hf import HFModel  # noqa: E402
from seqlab.evaluation.model import SeqlabModel, TokenRequest  # noqa: E402
from seqlab.registry import ARCHITECTURES  # noqa: E402
from seqlab.tokenizer import EOS_ID  # noqa: E402
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig  # noqa: E402
from seqlab_plugins.architectures.export import export_model  # noqa: E402
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig  # noqa: E402

MAX_POSITIONS = 48
BATCH_SIZE = 3  # fewer than the requests: several batches, and groups split by length within them
MAX_NEW_TOKENS = 8
TEXTS = ["Guten Morgen zusammen", "the cat sat on the mat", "a", "digits 1234 and more words to read here",
         "Ein etwas längerer Satz auf Deutsch"]
CONFIGS = {
    # MBart always normalises embeddings, so only embedding_norm=True maps exactly; GPT-2 is causal only.
    "seq2seq": Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=48,
                             max_positions=MAX_POSITIONS, embedding_norm=True),
    "decoder_only": DecoderOnlyConfig(name="decoder_only", d_model=32, n_layers=2, n_heads=4, d_ff=48,
                                      max_positions=MAX_POSITIONS, prefix_lm=False),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tokenizer, tmp_path_factory) -> tuple[SeqlabModel, Path]:
    """A seqlab model and its export, the same weights. From init, noise on the matrices well above init_std
    makes greedy decoding vary (at init every position predicts much the same token), and a flipped, enlarged
    EOS row of the head makes some rows stop early, so EOS handling is compared too."""
    cfg = CONFIGS[request.param]
    # The seed of the noise: one under which both architectures' greedy rows stop at several lengths (the tests
    # below check that they do, so a seed that made every row run to the limit would fail, not pass weakly).
    torch.manual_seed(3)
    model = ARCHITECTURES.build(cfg, vocab_size=tokenizer.vocab_size)
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():  # tied matrices are listed once, so they stay tied
            p.add_(torch.randn_like(p) * (0.02 if p.ndim == 1 else 0.2))
        model.head.weight[EOS_ID] *= -3
    out = export_model(model, tokenizer, tmp_path_factory.mktemp(request.param))
    return SeqlabModel(model, tokenizer, cfg, name=request.param, batch_size=BATCH_SIZE), out


@pytest.fixture(scope="module")
def pair(exported) -> tuple[SeqlabModel, HFModel]:
    ours, path = exported
    return ours, HFModel.from_pretrained(path, batch_size=BATCH_SIZE)


def requests(model: SeqlabModel) -> list[TokenRequest]:
    """Inputs of different lengths behind a mode token, with and without a forced target prefix."""
    mode = model.special_id("[S2S]" if model.encoder_decoder else "[CLM]")
    ids = model.encode(TEXTS)
    out = []
    for i, text in enumerate(ids):
        other = ids[(i + 1) % len(ids)]
        out.append(TokenRequest((mode, *text), (), tuple(other[:4])))
        out.append(TokenRequest((mode, *text[:3]), tuple(text[-2:]), tuple(other[-3:])))
    out.append(TokenRequest((mode, *ids[0]), tuple(ids[1][:2]), ()))  # nothing to score: 0
    return out


def test_encode_gives_the_same_ids(pair):
    ours, hf = pair
    assert hf.encode(TEXTS) == ours.encode(TEXTS)
    assert hf.decode(ours.encode(TEXTS)[0]) == ours.decode(ours.encode(TEXTS)[0])


def test_shape_attributes_match(pair):
    ours, hf = pair
    assert (hf.encoder_decoder, hf.max_positions) == (ours.encoder_decoder, ours.max_positions)


def test_score_matches(pair):
    ours, hf = pair
    reqs = requests(ours)
    expected = ours.score(reqs)
    got = hf.score(reqs)
    assert got.dtype == np.float64 and got.shape == (len(reqs),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert got[-1] == 0.0 and (got[:-1] < 0).all()
    np.testing.assert_allclose(hf.score(reqs[:1]), got[:1], rtol=0, atol=1e-5)  # batched = alone


def test_score_matches_on_sequences_that_fill_the_positions(pair):
    """The longest sequences training accepts: a seq2seq target of max_positions tokens, a causal sequence of
    max_positions + 1 (its last token is only predicted)."""
    ours, hf = pair
    ids = tuple(range(100, 100 + MAX_POSITIONS + 1))
    longest = (TokenRequest(ids[:7], ids[:5], ids[5:MAX_POSITIONS]) if ours.encoder_decoder
               else TokenRequest(ids[:7], ids[7:9], ids[9:]))
    reqs = [longest, TokenRequest(ids[:3], (), ids[3:6])]
    np.testing.assert_allclose(hf.score(reqs), ours.score(reqs), rtol=0, atol=1e-4)


def test_greedy_generation_matches(pair):
    ours, hf = pair
    reqs = requests(ours)
    expected = ours.generate(reqs, MAX_NEW_TOKENS)
    assert hf.generate(reqs, MAX_NEW_TOKENS) == expected
    # A real comparison: not one repeated token, and rows that stop at EOS beside rows that run to the limit.
    assert len({token for row in expected for token in row}) > 3
    lengths = {len(row) for row in expected}
    assert min(lengths) < MAX_NEW_TOKENS == max(lengths) and len(lengths) > 3
    assert hf.generate(reqs[1:2], MAX_NEW_TOKENS) == expected[1:2]


def test_generation_with_stop_strings_matches(pair):
    """Both adapters end a row at the token whose text completes a stop string, and keep that token."""
    ours, hf = pair
    reqs = requests(ours)
    full = ours.generate(reqs, MAX_NEW_TOKENS)
    longest = max(full, key=len)
    k = next(k for k in range(1, len(longest) + 1) if any(c.isalpha() for c in ours.decode(longest[:k])))
    stop = next(c for c in ours.decode(longest[:k]) if c.isalpha())  # the first letter the longest row writes
    expected = ours.generate(reqs, MAX_NEW_TOKENS, stop=[stop])
    assert hf.generate(reqs, MAX_NEW_TOKENS, stop=[stop]) == expected
    assert sum(map(len, expected)) < sum(map(len, full))
    assert all(row == whole[: len(row)] for row, whole in zip(expected, full))
    assert hf.generate(reqs, MAX_NEW_TOKENS, stop=["\u2603"]) == full  # never generated: nothing changes


def test_generation_is_plain_greedy_whatever_the_folder_asks(exported, tmp_path):
    ours, path = exported
    shutil.copytree(path, tmp_path, dirs_exist_ok=True)
    defaults = GenerationConfig.from_pretrained(path)
    defaults.update(do_sample=True, top_k=5, repetition_penalty=3.0, no_repeat_ngram_size=2, forced_bos_token_id=5,
                    min_new_tokens=MAX_NEW_TOKENS)
    defaults.save_pretrained(tmp_path)
    reqs = requests(ours)
    expected = ours.generate(reqs, MAX_NEW_TOKENS)
    assert min(len(row) for row in expected) < MAX_NEW_TOKENS  # so honouring min_new_tokens alone would show
    assert HFModel.from_pretrained(tmp_path, batch_size=BATCH_SIZE).generate(reqs, MAX_NEW_TOKENS) == expected


def test_special_ids_match_and_unknown_is_none(pair, tokenizer):
    ours, hf = pair
    for adapter in pair:
        assert adapter.special_id("[CLM]") == tokenizer.token_id("[CLM]")
        assert adapter.special_id("[NO_SUCH_TOKEN]") is None
    assert hf.special_id("[SENT_0]") == ours.special_id("[SENT_0]")


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "no_model_here"
    with pytest.raises(DataError, match=f"{re.escape(str(missing))}: not a Hugging Face model folder.*config.json"):
        HFModel.from_pretrained(missing)


@pytest.mark.parametrize("saved", ["config", "config and weights"])
def test_an_incomplete_folder_is_a_data_error(tmp_path: Path, pair, saved):
    _, hf = pair
    if saved == "config":
        hf.model.config.save_pretrained(tmp_path)
        message = "cannot load it"
    else:
        hf.model.save_pretrained(tmp_path)
        message = r"no tokenizer files \(.*tokenizer.json"
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))}: {message}.*must contain config.json"):
        HFModel.from_pretrained(tmp_path)


def test_the_harness_gives_both_adapters_the_same_prompts_and_results(pair, tmp_path):
    """One code path: the same tasks through `evaluate` on the seqlab model and on its HF export give the same
    requests, predictions and metrics."""
    import json

    from seqlab.evaluation.harness import evaluate
    from seqlab.evaluation.tasks import resolve_tasks
    from seqlab.registry import load_plugins

    load_plugins()
    ours, hf = pair
    items = [{"text": text, "choices": ["alpha", "beta gamma"], "label": i % 2} for i, text in enumerate(TEXTS)]
    (tmp_path / "mc").mkdir()
    (tmp_path / "mc" / "test.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    docs = [{"document": text, "summary": TEXTS[(i + 1) % len(TEXTS)]} for i, text in enumerate(TEXTS)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    tasks = resolve_tasks([
        {"name": "rank_classification", "dataset": "jsonl", "path": "mc", "label": "mc", "query_template": "{text}:",
         "shot_split": "test", "shot_template": "{text}: {answer}"},
        {"name": "summarization", "path": "docs.jsonl", "label": "summ", "max_new_tokens": MAX_NEW_TOKENS},
    ])
    results = {}
    for model in (ours, hf):
        out = tmp_path / type(model).__name__
        results[type(model).__name__] = evaluate(model, tasks, out, data_root=tmp_path, progress=False)
    assert results["SeqlabModel"].keys() == results["HFModel"].keys() == {"mc", "summ"}
    compared = 0
    for task in ("mc", "summ"):
        ours_rows = (tmp_path / "SeqlabModel" / f"{task}.predictions.jsonl").read_text().splitlines()
        hf_rows = (tmp_path / "HFModel" / f"{task}.predictions.jsonl").read_text().splitlines()
        for a, b in zip(ours_rows, hf_rows, strict=True):
            a, b = json.loads(a), json.loads(b)
            assert a["prompt"] == b["prompt"]
            if "\ufffd" not in str(a["prediction"]):
                # The token ids match (test_greedy_generation_matches); only text made of an invalid UTF-8 byte
                # sequence decodes differently (the two libraries group the U+FFFD replacements differently).
                assert a["prediction"] == b["prediction"]
                compared += 1
            if "loglikelihoods" in a:
                np.testing.assert_allclose(a["loglikelihoods"], b["loglikelihoods"], atol=1e-3)
    assert compared >= len(TEXTS) + 2
    for metric, value in results["SeqlabModel"]["mc"].items():
        assert results["HFModel"]["mc"][metric] == pytest.approx(value, abs=1e-6), metric
