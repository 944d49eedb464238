"""SentencePiece unigram tokenizer with the special tokens every objective needs.

Special tokens are SentencePiece *control* symbols: they have ids but are never produced by encoding text,
so a corpus that happens to contain the string "[CLM]" cannot leak a mode token into a text position.
Fixed layout (ids): 0 <pad>, 1 </s> (eos), 2 <s> (bos), 3 <unk>, then [CLM], [DOC], [MASK], [NLU], [NLG],
[S2S], then `num_sentinels` sentinels [SENT_i], then `num_reserved` unused [RESERVED_i] tags for downstream use.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import sentencepiece as spm

from seqlab.errors import ConfigError, DataError

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
MODE_TOKENS = ("[CLM]", "[DOC]", "[MASK]", "[NLU]", "[NLG]", "[S2S]")
_SENTINEL = re.compile(r"^\[SENT_(\d+)\]$")


@dataclass
class TokenizerTrainConfig:
    """Options of `seqlab tokenizer train`."""

    vocab_size: int = 32000
    num_sentinels: int = 100
    num_reserved: int = 0
    character_coverage: float = 0.9995
    max_sentences: int = 2_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        specials = 4 + len(MODE_TOKENS) + self.num_sentinels + self.num_reserved
        if self.vocab_size <= specials:
            raise ConfigError(f"vocab_size={self.vocab_size} must exceed the {specials} reserved special tokens")
        if self.num_sentinels < 0 or self.num_reserved < 0:
            raise ConfigError(f"num_sentinels={self.num_sentinels} and num_reserved={self.num_reserved} must be >= 0")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise ConfigError(f"character_coverage={self.character_coverage} must be in [0.9, 1.0]")
        if self.max_sentences <= 0:
            raise ConfigError(f"max_sentences={self.max_sentences} must be > 0")


def train_tokenizer(texts: Iterable[str], output: str | Path, cfg: TokenizerTrainConfig) -> Path:
    """Train a unigram model on `texts` and write it to `output` (a `.model` file)."""
    output = Path(output)
    if output.suffix != ".model":
        output = output.with_suffix(".model")
    output.parent.mkdir(parents=True, exist_ok=True)
    control = list(MODE_TOKENS)
    control += [f"[SENT_{i}]" for i in range(cfg.num_sentinels)]
    control += [f"[RESERVED_{i}]" for i in range(cfg.num_reserved)]
    # SentencePiece's trainer reads one sentence per item; documents longer than its
    # max_sentence_length are skipped by it, so split them into lines of bounded size first.
    def sentences() -> Iterator[str]:
        for text in texts:
            for start in range(0, len(text), 4000):
                yield text[start : start + 4000]

    # The trainer samples sentences when the corpus exceeds max_sentences: seed it for reproducible models.
    spm.set_random_generator_seed(cfg.seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(),
        model_prefix=str(output.with_suffix("")),
        model_type="unigram",
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        input_sentence_size=cfg.max_sentences,
        shuffle_input_sentence=True,
        pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
        control_symbols=control,
        byte_fallback=True,
        split_digits=True,
        max_sentence_length=16384,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    return output


def missing_tokenizer_message(path: str | Path) -> str:
    return (
        f"tokenizer.path={path}: file not found. Train one on your corpus with\n"
        f"  seqlab tokenizer train CORPUS_PATH --output {path} --vocab-size 32000\n"
        "or point tokenizer.path at an existing SentencePiece .model file."
    )


class Tokenizer:
    """A loaded SentencePiece model plus the ids of the special tokens."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(missing_tokenizer_message(path))
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load(str(self.path))
        except (OSError, RuntimeError) as err:
            raise DataError(f"tokenizer.path={path}: not a SentencePiece model ({err})") from None
        for name in MODE_TOKENS:
            if self._sp.piece_to_id(name) == self._sp.unk_id():
                raise DataError(f"tokenizer.path={path}: model lacks special token {name}; "
                                "train it with `seqlab tokenizer train`")
        pieces = [self._sp.id_to_piece(i) for i in range(self.vocab_size)]
        sentinels = {int(m.group(1)): i for i, p in enumerate(pieces) if (m := _SENTINEL.match(p))}
        self.sentinel_ids = np.array([sentinels[k] for k in sorted(sentinels)], dtype=np.int64)
        self.special_ids = np.array(
            [i for i in range(self.vocab_size) if self._sp.is_control(i) or self._sp.is_unknown(i)], dtype=np.int64
        )

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    pad_id = PAD_ID
    eos_id = EOS_ID
    bos_id = BOS_ID

    def token_id(self, name: str) -> int:
        """Id of a special token such as "[CLM]" or "[DOC]"."""
        idx = self._sp.piece_to_id(name)
        if idx == self._sp.unk_id() and name != "<unk>":
            raise KeyError(f"{name!r} is not in the vocabulary of {self.path}")
        return idx

    def normalize(self, texts: list[str]) -> list[str]:
        """Each text as the model's normalizer rewrites it before segmenting (with "▁" for spaces and its
        dummy prefix): what an exported tokenizer must reproduce."""
        return self._sp.normalize(texts)

    def encode(self, texts: list[str], num_threads: int = -1) -> list[list[int]]:
        """Token ids for each text (batched in C++ over `num_threads`, -1 = all cores; no special tokens)."""
        return self._sp.encode(texts, out_type=int, num_threads=num_threads)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self._sp.decode([int(i) for i in ids])

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()
