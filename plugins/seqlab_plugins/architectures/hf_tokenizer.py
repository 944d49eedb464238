"""Our SentencePiece model as a Hugging Face fast tokenizer (`tokenizer.json`) that encodes text to the same ids.

A `tokenizers` Unigram model built from the SentencePiece proto by transformers' own converter (normalizer
charsmap, whitespace rules, byte fallback), with the normalizer rules that converter's `Precompiled` step
misses put back in front of it (`composition_rules`).
"""
from __future__ import annotations

import unicodedata

from sentencepiece import sentencepiece_model_pb2
from tokenizers import normalizers

from seqlab.errors import SeqlabError
from seqlab.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

try:
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter
except ModuleNotFoundError as err:
    raise SeqlabError("exporting to Hugging Face layouts needs the transformers package: "
                      "pip install 'transformers==5.24.0'") from err


def composition_rules(tokenizer: Tokenizer) -> dict[str, str]:
    """Pairs that the SentencePiece normalizer rewrites as a whole -> what it writes: a letter or mark followed
    by a mark of the same Unicode block (Tamil ெ + ா -> ொ, Devanagari र + ़ -> ऱ).

    SentencePiece applies its rules by longest match along the text; tokenizers' `Precompiled` normalizer looks
    a whole grapheme up, then its characters one by one, so a rule that covers part of a longer grapheme (the
    two vowel signs after a consonant) is never applied. Written as `Replace` steps before it, the rules apply
    again. Found by asking the model's own normalizer, so they are exactly its rules for such pairs."""
    marks = [c for c in map(chr, range(0x300, 0x10000)) if unicodedata.category(c) in ("Mn", "Mc")]
    blocks: dict[int, list[str]] = {}
    for c in marks:
        blocks.setdefault(ord(c) >> 7, []).append(c)
    pairs = [chr(a) + b for block, block_marks in blocks.items()
             for a in range(block << 7, (block + 1) << 7) for b in block_marks if chr(a).isprintable()]
    whole = tokenizer.normalize(pairs)
    firsts, seconds = tokenizer.normalize([p[0] for p in pairs]), tokenizer.normalize([p[1] for p in pairs])
    # Each normalized text starts with the dummy-prefix "▁"; apart, the second loses it when joined.
    return {p: w.removeprefix("▁") for p, w, a, b in zip(pairs, whole, firsts, seconds)
            if w != a + b.removeprefix("▁")}


def to_hf_tokenizer(tokenizer: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """Our SentencePiece model as a fast tokenizer that encodes text to the same ids.

    Like our Tokenizer it adds no special tokens around the text (objectives decide those). Unlike it, the
    control symbols ([CLM], [S2S], [SENT_i], ...) are special tokens, so writing "[S2S]" in the text gives that
    token's id; the text between them is encoded exactly as SentencePiece encodes each piece alone.
    """
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.path.read_bytes())
    pieces = [p.piece for p in proto.pieces]
    # legacy=True gives every chunk between special tokens its own dummy prefix, as encoding it alone would.
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, [(p.piece, p.score) for p in proto.pieces],
                                                          legacy=True)
    rules = composition_rules(tokenizer)
    if rules and backend.normalizer is not None:
        backend.normalizer = normalizers.Sequence(
            [normalizers.Replace(pair, composed) for pair, composed in rules.items()] + [backend.normalizer])
    named = {PAD_ID, EOS_ID, BOS_ID, UNK_ID}
    control = [p.piece for i, p in enumerate(proto.pieces)
               if p.type == sentencepiece_model_pb2.ModelProto.SentencePiece.CONTROL and i not in named]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=pieces[PAD_ID], eos_token=pieces[EOS_ID], bos_token=pieces[BOS_ID],
        unk_token=pieces[UNK_ID], extra_special_tokens=control, model_max_length=model_max_length,
    )
