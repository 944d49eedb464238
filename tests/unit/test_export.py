"""Export to Hugging Face layouts: the exported MBart / GPT-2 give our logits, the tokenizer gives our ids."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from helpers import padded_ids, perturbed  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: E402

from seqlab.errors import ConfigError, DataError  # noqa: E402
from seqlab.evaluation.hf import HFModel  # noqa: E402
from seqlab.experiment import resource_path  # noqa: E402
from seqlab.tokenizer import BOS_ID, EOS_ID, MODE_TOKENS, PAD_ID, UNK_ID, Tokenizer  # noqa: E402
from seqlab_plugins.architectures.attention import prefix_lm_mask  # noqa: E402
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig  # noqa: E402
from seqlab_plugins.architectures.export import export_model  # noqa: E402
from seqlab_plugins.architectures.hf_tokenizer import to_hf_tokenizer  # noqa: E402
from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig  # noqa: E402

TOLERANCE = 1e-4
MAX_POSITIONS = 24  # the test batches fill the whole position table, so every row's mapping is checked


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_seq2seq_exports_to_mbart_with_our_logits(tmp_path, tokenizer, tie):
    cfg = Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=2, decoder_layers=3, d_ff=48,
                        max_positions=MAX_POSITIONS, embedding_norm=True, tie_embeddings=tie)
    model = perturbed(Seq2Seq(cfg, vocab_size=tokenizer.vocab_size))
    export_model(model, tokenizer, tmp_path)
    hf = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "MBartForConditionalGeneration"
    embeddings = (hf.model.encoder.embed_tokens.weight, hf.model.decoder.embed_tokens.weight, hf.lm_head.weight)
    assert len({w.data_ptr() for w in embeddings}) == (1 if tie else 3)

    input_lengths = [24, 9, 1, 15]
    input_ids, attention_mask = padded_ids(input_lengths, tokenizer.vocab_size, MAX_POSITIONS)
    decoder_ids, _ = padded_ids([20, 24, 3, 11], tokenizer.vocab_size, MAX_POSITIONS, first=BOS_ID)
    with torch.no_grad():
        ours = model(input_ids, torch.tensor(input_lengths), decoder_ids)  # (B, T, V)
        theirs = hf(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_ids).logits
    assert (ours - theirs).abs().max() < TOLERANCE
    assert hf.generation_config.decoder_start_token_id == BOS_ID


@pytest.mark.parametrize("tie,prefix_lm", [(True, False), (False, True)], ids=["tied-causal", "untied-prefix"])
def test_decoder_only_exports_to_gpt2_with_our_causal_logits(tmp_path, tokenizer, tie, prefix_lm):
    cfg = DecoderOnlyConfig(name="decoder_only", d_model=32, n_layers=3, n_heads=4, d_ff=40,
                            max_positions=MAX_POSITIONS, tie_embeddings=tie, prefix_lm=prefix_lm)
    model = perturbed(DecoderOnly(cfg, vocab_size=tokenizer.vocab_size))
    export_model(model, tokenizer, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) == tie
    assert hf.config.layer_norm_epsilon == torch.nn.LayerNorm(1).eps  # too small a change for the logits to show

    lengths = [24, 7, 1, 16]
    ids, attention_mask = padded_ids(lengths, tokenizer.vocab_size, MAX_POSITIONS)
    causal = prefix_lm_mask(torch.tensor(lengths), torch.zeros(len(lengths), dtype=torch.long), MAX_POSITIONS)
    with torch.no_grad():
        padded = (model(ids, causal) - hf(input_ids=ids, attention_mask=attention_mask).logits).abs().max()
        full = (model(ids) - hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits).abs().max()
    assert padded < TOLERANCE and full < TOLERANCE
    # GPT-2 cannot attend bidirectionally over a prefix: the README says the export is exact for causal use.
    assert ("exactly for causal use alone" in (tmp_path / "README.md").read_text()) == prefix_lm
    # ... and config.json, so `seqlab eval hf=` refuses to score the causal version as if it were the model.
    assert hf.config.seqlab_prefix_lm == prefix_lm
    if prefix_lm:
        with pytest.raises(DataError, match="seqlab_prefix_lm=true.*allow_causal_export=true"):
            HFModel.from_pretrained(tmp_path)
    assert HFModel.from_pretrained(tmp_path, allow_causal_export=prefix_lm).encoder_decoder is False


def test_mbart_export_requires_embedding_norm(tmp_path, tokenizer):
    cfg = Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=1, decoder_layers=1,
                        max_positions=MAX_POSITIONS, embedding_norm=False)
    with pytest.raises(ConfigError, match=r"architecture.embedding_norm=False: MBart always applies a LayerNorm"):
        export_model(Seq2Seq(cfg, vocab_size=tokenizer.vocab_size), tokenizer, tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_export_rejects_a_tokenizer_of_another_vocabulary(tmp_path, tokenizer):
    cfg = DecoderOnlyConfig(name="decoder_only", d_model=32, n_layers=1, n_heads=4, max_positions=MAX_POSITIONS)
    with pytest.raises(ConfigError, match=f"vocab_size {tokenizer.vocab_size} differs from the model's 100"):
        export_model(DecoderOnly(cfg, vocab_size=100), tokenizer, tmp_path)


def _corpus_lines(corpus_dir: Path) -> list[str]:
    return [line for path in sorted(corpus_dir.rglob("*.txt"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


EDGE_CASES = ["", "  leading,  double   and trailing spaces  ", "digits 1234567 and 3.14", "tab\there\nnewline",
              "emoji 🤖 and rare ☃ ꙮ", "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ", "mixed English, Deutsch, 日本語 und हिन्दी"]


@pytest.mark.parametrize("which", ["embedded", "small"])
def test_tokenizer_encodes_our_ids(tmp_path, request, embedded_corpus_dir, which):
    path = resource_path("tokenizer/embedded.model") if which == "embedded" else request.getfixturevalue(
        "small_tokenizer")
    ours = Tokenizer(path)
    to_hf_tokenizer(ours, model_max_length=MAX_POSITIONS).save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)

    texts = _corpus_lines(embedded_corpus_dir) + EDGE_CASES
    expected = ours.encode(texts)
    assert hf(texts)["input_ids"] == expected  # add_special_tokens defaults to True: there are none to add
    assert [hf.decode(ids) for ids in expected[:200]] == [ours.decode(ids) for ids in expected[:200]]

    assert (hf.pad_token_id, hf.eos_token_id, hf.bos_token_id, hf.unk_token_id) == (PAD_ID, EOS_ID, BOS_ID, UNK_ID)
    specials = [*MODE_TOKENS, "[SENT_0]", "[SENT_15]"]
    assert hf.convert_tokens_to_ids(specials) == [ours.token_id(name) for name in specials]
    assert len(hf) == ours.vocab_size and hf.model_max_length == MAX_POSITIONS
    # Control symbols written in the text are those tokens; each stretch between them encodes as alone.
    prompt = hf("[S2S] Guten Morgen [SENT_0] zusammen")["input_ids"]
    assert prompt == [ours.token_id("[S2S]"), *ours.encode(["Guten Morgen"])[0], ours.token_id("[SENT_0]"),
                      *ours.encode(["zusammen"])[0]]


def test_tokenizer_composes_vowel_signs_as_sentencepiece_does(tmp_path, shared_data):
    # Tamil/Telugu vowel signs typed as two marks (ெ + ா for ொ) and Marathi र + nukta: SentencePiece's
    # normalizer composes them by longest match, which tokenizers' per-grapheme lookup alone does not.
    ours = Tokenizer(resource_path("tokenizer/embedded.model"))
    to_hf_tokenizer(ours, model_max_length=MAX_POSITIONS).save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    texts = [line for stem in ("tam", "tel", "mar") for split in ("dev", "devtest")
             for line in (shared_data / "flores200" / split / f"{stem}.{split}").read_text(encoding="utf-8").splitlines()]
    for split in ("test", "val"):
        for line in (shared_data / "xcopa" / "data" / "ta" / f"{split}.ta.jsonl").read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            texts += [item["premise"], item["choice1"], item["choice2"]]
    assert sum("\u0bc6\u0bbe" in t or "\u0930\u093c" in t for t in texts) >= 5  # the cases are there
    assert hf(texts)["input_ids"] == ours.encode(texts)
    assert hf(["\u0b95\u0bc6\u0bbe"])["input_ids"] == ours.encode(["\u0b95\u0bca"])  # கொ typed in two signs
