"""Tokenizer: reserved special tokens, no leaks from text, helpful errors."""
import pytest

from seqlab.errors import ConfigError, DataError
from seqlab.tokenizer import BOS_ID, EOS_ID, MODE_TOKENS, PAD_ID, Tokenizer, TokenizerTrainConfig, train_tokenizer


def test_special_tokens_are_reserved_in_a_fixed_layout(small_tokenizer):
    tok = Tokenizer(small_tokenizer)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (PAD_ID, EOS_ID, BOS_ID) == (0, 1, 2)
    assert [tok.token_id(name) for name in MODE_TOKENS] == list(range(4, 4 + len(MODE_TOKENS)))
    assert tok.sentinel_ids.tolist() == list(range(4 + len(MODE_TOKENS), 4 + len(MODE_TOKENS) + 16))
    assert set(tok.sentinel_ids.tolist()) <= set(tok.special_ids.tolist())


def test_special_token_strings_in_text_never_become_special_ids(small_tokenizer):
    tok = Tokenizer(small_tokenizer)
    ids = tok.encode(["[CLM] [DOC] [SENT_0] <pad> </s> text"])[0]
    assert not set(ids) & set(tok.special_ids.tolist()) - {3}  # 3 is <unk>, only for unseen characters
    assert tok.decode(ids) == "[CLM] [DOC] [SENT_0] <pad> </s> text"


def test_embedded_tokenizer_ships_with_the_package():
    from seqlab.experiment import resource_path

    tok = Tokenizer(resource_path("tokenizer/embedded.model"))
    assert tok.vocab_size == 4096 and len(tok.sentinel_ids) == 100
    for text in ("नमस्ते दुनिया", "こんにちは世界", "வணக்கம்", "مرحبا", "Olá, mundo"):
        assert tok.decode(tok.encode([text])[0]) == text  # byte fallback: nothing is lost


def test_missing_tokenizer_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)tokenizer.path=.*missing.model: file not found.*"
                                          r"seqlab tokenizer train CORPUS_PATH --output"):
        Tokenizer(tmp_path / "missing.model")


def test_a_file_that_is_not_a_model_is_reported(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        Tokenizer(bad)


def test_train_config_validation():
    with pytest.raises(ConfigError, match="vocab_size=50 must exceed the 110 reserved special tokens"):
        TokenizerTrainConfig(vocab_size=50)


def test_training_is_reproducible(tmp_path, embedded_corpus_dir):
    import sentencepiece.sentencepiece_model_pb2 as pb

    texts = (embedded_corpus_dir / "en" / "sample.txt").read_text().splitlines()
    cfg = TokenizerTrainConfig(vocab_size=600, num_sentinels=4)
    models = []
    for name in ("a", "b"):
        proto = pb.ModelProto()
        proto.ParseFromString(train_tokenizer(texts, tmp_path / f"{name}.model", cfg).read_bytes())
        models.append([(p.piece, p.score) for p in proto.pieces])
    assert models[0] == models[1]
