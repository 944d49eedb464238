"""A Hugging Face transformers model (seq2seq or causal LM, from a local folder) behind the EvalModel calls.

Both model kinds see a request as SeqlabModel's architectures do: a seq2seq model encodes `inputs` and decodes
`[decoder start] + target_prefix + continuation`; a causal LM reads `inputs + target_prefix + continuation` and
each continuation token is predicted from everything before it. Scoring batches are right-padded, which leaves
every real token's position and attention unchanged, so batched scoring equals scoring one by one. Causal
generation batches prompts of any length left-padded (transformers numbers positions by the attention mask);
seq2seq generation batches rows of one forced-prefix length.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from seqlab.errors import DataError, SeqlabError
from seqlab.evaluation.model import StopStrings, TokenRequest, batches_by_length, group_by, pad_rows, strip_eos

try:
    from transformers import (
        AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig, PreTrainedModel,
        PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList,
    )
except ModuleNotFoundError as err:
    raise SeqlabError("evaluating Hugging Face models needs the transformers package: "
                      "pip install 'transformers==5.24.0'") from err

FOLDER_CONTENTS = ("config.json, the weights (model.safetensors or pytorch_model.bin) and the tokenizer files "
                   "(tokenizer.json or tokenizer_config.json with its vocabulary)")
NO_LIMIT = 10 ** 9  # a tokenizer's model_max_length at or above this means "not set" (transformers uses 1e30)


def _as_list(ids: int | list[int] | None) -> list[int]:
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


class _NewTokensStop(StoppingCriteria):
    """transformers' view of a StopStrings check: it sees every id so far, the check only the new ones."""

    def __init__(self, check: StopStrings, start: int):
        self.check = check
        self.start = start  # columns of input_ids before the first new token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs) -> torch.BoolTensor:
        return self.check(input_ids[:, self.start:])


class HFModel:
    """`model` and `tokenizer` as transformers loaded them; generation is plain greedy whatever the model's
    own generation defaults say (repetition penalties, forced tokens or length limits would change the output)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
                 batch_size: int = 16, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.device = torch.device(device)
        config = model.config
        self.encoder_decoder = bool(config.is_encoder_decoder)
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if limit is None and tokenizer.model_max_length < NO_LIMIT:  # no position table (T5): the tokenizer's
            limit = tokenizer.model_max_length
        if limit is None:
            raise DataError(f"model {name}: neither its config (max_position_embeddings / n_positions) nor its "
                            "tokenizer (model_max_length) gives a maximum sequence length")
        self.max_positions = int(limit)
        defaults = model.generation_config
        # Token ids: the generation defaults first, then the config (which need not have the field), then the tokenizer.
        self.eos_ids = (_as_list(defaults.eos_token_id) or _as_list(getattr(config, "eos_token_id", None))
                        or _as_list(tokenizer.eos_token_id))
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids or [0])[0]  # any real id: masks hide padding
        self.start_id: int | None = None
        if self.encoder_decoder:
            self.start_id = next((i for i in (defaults.decoder_start_token_id,
                                              getattr(config, "decoder_start_token_id", None)) if i is not None), None)
            if self.start_id is None:
                raise DataError(f"model {name}: an encoder-decoder without decoder_start_token_id in its config")
        # Replacing the model's own generation config matters: generate() fills every unset field of the config
        # it is given from the model's, so a forced BOS or a repetition penalty there would come back.
        model.generation_config = self._greedy()

    def _greedy(self, max_new_tokens: int | None = None) -> GenerationConfig:
        return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id,
                                decoder_start_token_id=self.start_id)

    @classmethod
    def from_pretrained(cls, path: str | Path, batch_size: int = 16, device: str = "cpu",
                        dtype: str | torch.dtype | None = None, allow_causal_export: bool = False) -> "HFModel":
        """`allow_causal_export`: accept seqlab's export of a prefix-LM model, which attends causally (config.json
        says `seqlab_prefix_lm: true`), knowing that its scores are those of another model."""
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise DataError(f"model path {path}: not a Hugging Face model folder; it must contain {FOLDER_CONTENTS}")
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            if getattr(config, "seqlab_prefix_lm", False) and not allow_causal_export:
                raise DataError(f"model path {path}: an export of a seqlab prefix-LM model (config.json "
                                "seqlab_prefix_lm=true); it attends causally where the model attends "
                                "bidirectionally over its inputs, so its scores and generations are another "
                                "model's. Evaluate the checkpoint (checkpoint=PATH), or allow_causal_export=true "
                                "to measure the causal version")
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = auto.from_pretrained(path, local_files_only=True, **({} if dtype is None else {"dtype": dtype}))
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"model path {path}: cannot load it ({type(err).__name__}: {err}); a model folder "
                            f"must contain {FOLDER_CONTENTS}") from err
        # Without its files transformers builds an empty tokenizer rather than failing, which would encode
        # every text to nothing.
        vocabulary = sorted({"tokenizer.json", *tokenizer.vocab_files_names.values()})
        if not any((path / name).is_file() for name in vocabulary):
            raise DataError(f"model path {path}: no tokenizer files ({' or '.join(vocabulary)}); a model folder "
                            f"must contain {FOLDER_CONTENTS}")
        return cls(model, tokenizer, f"hf:{path.resolve().name}", batch_size, device)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        # Special tokens are not text (SentencePiece drops its control symbols the same way).
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def special_id(self, token: str) -> int | None:
        # convert_tokens_to_ids maps an unknown token to unk's id: look the token up instead.
        return self.tokenizer.get_vocab().get(token)

    def _tensor(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rows).to(self.device)

    @torch.inference_mode()
    def score(self, requests: Sequence[TokenRequest]) -> np.ndarray:
        out = np.zeros(len(requests), dtype=np.float64)
        for idx in batches_by_length(requests, self.batch_size,
                                     key=lambda r: len(r.inputs) + len(r.target_prefix) + len(r.continuation)):
            reqs = [requests[i] for i in idx]
            if self.encoder_decoder:
                inputs, input_lengths = pad_rows([r.inputs for r in reqs], self.pad_id)
                encoder = {"input_ids": self._tensor(inputs), "attention_mask": self._tensor(_mask(input_lengths))}
                full, lengths = pad_rows([(self.start_id, *r.target_prefix, *r.continuation) for r in reqs],
                                         self.pad_id)
                first = np.array([len(r.target_prefix) for r in reqs])
            else:
                encoder = {}
                full, lengths = pad_rows([r.inputs + r.target_prefix + r.continuation for r in reqs], self.pad_id)
                first = np.array([len(r.inputs) + len(r.target_prefix) - 1 for r in reqs])
            # Column j predicts token j + 1 of `full` (first: the column predicting the first scored token). The
            # last token is only predicted, never read, so it is not fed: like training, a sequence one token
            # longer than the position table still scores.
            width = max(1, full.shape[1] - 1)
            side = "decoder_" if self.encoder_decoder else ""
            logits = self.model(**encoder, **{f"{side}input_ids": self._tensor(full[:, :width]),
                                              f"{side}attention_mask": self._tensor(_mask(lengths)[:, :width])}).logits
            targets = full[:, 1:]
            col = np.arange(targets.shape[1])[None, :]
            last = np.array([len(r.continuation) for r in reqs]) + first
            rows, cols = np.nonzero((col >= first[:, None]) & (col < last[:, None]))
            # Log-softmax only where a token is scored (a full (B, T, V) copy in float32 would be large).
            picked = logits[self._tensor(rows), self._tensor(cols)].float().log_softmax(dim=-1)
            picked = picked.gather(1, self._tensor(targets[rows, cols])[:, None]).squeeze(1)
            sums = np.zeros(len(reqs), dtype=np.float64)
            np.add.at(sums, rows, picked.double().cpu().numpy())
            out[idx] = sums
        return out

    @torch.inference_mode()
    def generate(self, requests: Sequence[TokenRequest], max_new_tokens: int,
                 stop: Sequence[str] = ()) -> list[list[int]]:
        """Stop strings are checked on the decoded new tokens after every step, as SeqlabModel does (the same
        decoding as `decode`), rather than by transformers' `stop_strings`, which matches against the vocabulary's
        token strings and could stop a row at a different token."""
        out: list[list[int]] = [[] for _ in requests]

        def group_of(r: TokenRequest) -> int:
            # seq2seq: one forced-prefix length per batch, as the decoder inputs are stacked, not padded.
            # Causal: prompts of any length together, left-padded (generate numbers each row's positions from
            # its first real token, by the attention mask).
            return len(r.target_prefix) if self.encoder_decoder else 0

        for idx in batches_by_length(requests, self.batch_size, key=lambda r: (group_of(r), len(r.inputs))):
            for group in group_by(idx, lambda i: group_of(requests[i])):
                reqs = [requests[i] for i in group]
                check = StopStrings(self.decode, stop, len(group), self.eos_ids) if any(stop) else None
                if self.encoder_decoder:
                    inputs, lengths = pad_rows([r.inputs for r in reqs], self.pad_id)
                    decoder = np.array([(self.start_id, *r.target_prefix) for r in reqs], dtype=np.int64)
                    start = decoder.shape[1]
                    kwargs = {"input_ids": self._tensor(inputs), "attention_mask": self._tensor(_mask(lengths)),
                              "decoder_input_ids": self._tensor(decoder)}
                else:
                    prompt, lengths = pad_rows([(r.inputs + r.target_prefix)[::-1] for r in reqs], self.pad_id)
                    prompt, mask = prompt[:, ::-1].copy(), _mask(lengths)[:, ::-1].copy()  # left-padded
                    start = prompt.shape[1]
                    kwargs = {"input_ids": self._tensor(prompt), "attention_mask": self._tensor(mask)}
                criteria = StoppingCriteriaList([_NewTokensStop(check, start)] if check is not None else [])
                tokens = self.model.generate(**kwargs, generation_config=self._greedy(max_new_tokens),
                                             stopping_criteria=criteria)[:, start:]
                rows = self._until_eos(tokens.cpu())
                if check is not None:  # a stopped row is padded after its stop token, or runs on without an EOS id
                    rows = [row[:n] if n >= 0 else row for row, n in zip(rows, check.lengths.tolist())]
                for i, row in zip(group, rows):
                    out[i] = row
        return out

    def _until_eos(self, tokens: torch.Tensor) -> list[list[int]]:
        """(B, N) generated ids, padded after a row's EOS -> each row without its EOS and what follows.

        A model may stop at any of several EOS ids: they are read as the first so strip_eos recognises them."""
        eos = self.eos_ids[0] if self.eos_ids else -1
        is_eos = torch.isin(tokens, torch.tensor(self.eos_ids, dtype=tokens.dtype))
        ended = is_eos.any(dim=1)
        lengths = torch.where(ended, is_eos.int().argmax(dim=1) + 1, tokens.shape[1])
        return strip_eos(tokens.masked_fill(is_eos, eos).numpy(), lengths.numpy(), eos)


def _mask(lengths: np.ndarray) -> np.ndarray:
    """(B,) lengths -> (B, W) int64 attention mask of right-padded rows, W = max(1, longest)."""
    return (np.arange(max(1, int(lengths.max(initial=0))))[None, :] < lengths[:, None]).astype(np.int64)
