"""seqlab models inside EleutherAI's lm-evaluation-harness: the `seqlab` model type.

    seqlab lm-eval --model seqlab --model_args checkpoint=RUN/checkpoints/last.ckpt,mode=clm --tasks ...

(`seqlab lm-eval` is lm-eval's own command line with this module imported, which registers the model type;
in Python, import this module before `lm_eval.simple_evaluate(model="seqlab", ...)`, or pass `SeqlabLM(...)`.)

Requests go through `SeqlabModel`, so a model is scored by its own feature converter, as `seqlab eval` scores
it, for both architectures. Conventions are lm-eval's where they differ from `seqlab eval`: lm-eval renders
the prompt (a task's `target_delimiter`, usually one space, starts the continuation, and trailing spaces of a
context move to its continuation before encoding), an empty context is conditioned on EOS, `acc_norm`
normalises by characters, and `is_greedy` is checked token by token. `mode` reads contexts as `seqlab eval`
does: `clm` puts `[CLM]` in front of every context (the paper's in-context mode; nothing when the vocabulary
has no `[CLM]`; `mode_token=false`: never, the bare context a public model reads), `denoising` gives the
context to the encoder and forces it again as the decoder's prefix.
Contexts too long for the model lose their start, as in `seqlab eval`.

`loglikelihood_rolling` scores a whole text in disjoint windows, each conditioned on what precedes it within
the model's positions (lm-eval's rolling windows, the first conditioned on EOS). For a seq2seq model a window's
context goes to the encoder (behind the mode token) and its tokens are the decoder's targets: the perplexity of
the text given the preceding text as encoder input, which is how the paper's model reads a causal-LM example.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import lm_eval.models  # noqa: F401 (lm-eval's own model types: registered first, or a non-empty registry hides them)
import numpy as np
import torch
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from seqlab.errors import ConfigError, require
from seqlab.evaluation.likelihood import Budget, build_request
from seqlab.evaluation.model import SeqlabModel, TokenRequest
from seqlab.tokenizer import EOS_ID

MODE_TOKENS = {"clm": "[CLM]", "denoising": None}  # as `seqlab eval` reads a prompt in each mode


def cut_at(text: str, until: Sequence[str]) -> str:
    """text up to the first of the `until` strings (lm-eval keeps what precedes a stop sequence)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


@register_model("seqlab")
class SeqlabLM(TemplateLM):
    """lm-eval's LM interface over a seqlab checkpoint (or an already loaded `SeqlabModel`)."""

    def __init__(self, checkpoint: str | None = None, mode: str = "clm", batch_size: int | str = 16,
                 device: str = "cpu", tokenizer: str | None = None, max_gen_toks: int = 256,
                 mode_token: bool | str = True, model: SeqlabModel | None = None, threads: int | str | None = None,
                 **_: Any):
        super().__init__()
        require(mode in MODE_TOKENS, "model_args mode", mode, f"must be one of {', '.join(MODE_TOKENS)}")
        if threads is not None:
            require(str(threads).isdigit() and int(threads) >= 1, "model_args threads", threads, "must be >= 1")
            torch.set_num_threads(int(threads))  # see `seqlab eval threads=`: shared cores want fewer
        if (checkpoint is None) == (model is None):
            raise ConfigError("seqlab lm-eval model: give model_args checkpoint=PATH (a .ckpt of `seqlab train`)")
        batch = 16 if str(batch_size).startswith("auto") else int(batch_size)  # no automatic batch sizing
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda by default; its hf backend falls back to the CPU too.
            print(f"seqlab lm-eval model: device {device} is not available, using cpu", file=sys.stderr)
            device = "cpu"
        self.model = model or SeqlabModel.from_checkpoint(checkpoint, tokenizer, batch_size=batch, device=device)
        self.model.batch_size = batch
        self.mode = mode
        token = MODE_TOKENS[mode] if str(mode_token).lower() not in ("false", "0", "no") else None
        mode_id = self.model.special_id(token) if token else None
        self.mode_ids = [mode_id] if mode_id is not None else []
        self.budget = Budget(self.model, mode, len(self.mode_ids))
        self.backend = "seq2seq" if self.model.encoder_decoder else "causal"
        self.max_gen_toks = int(max_gen_toks)

    @property
    def eot_token_id(self) -> int:
        return EOS_ID

    @property
    def max_length(self) -> int:
        return self.model.max_positions

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.model.encode([string])[0]  # seqlab adds no special tokens to text

    def tok_decode(self, tokens: Sequence[int], **kwargs: Any) -> str:
        return self.model.decode(list(tokens))

    def _request(self, context: Sequence[int], continuation: Sequence[int], new_tokens: int = 0) -> TokenRequest:
        limit = self.budget.prompt_limit(len(continuation) + new_tokens)
        return build_request(list(context), self.mode_ids, self.mode, continuation, limit)[0]

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """[((context, continuation), context ids, continuation ids)] -> [(log p(continuation), is_greedy)]."""
        built = [self._request(ctx, cont) for _, ctx, cont in requests]
        scores = np.zeros(len(built))
        greedy = np.zeros(len(built), dtype=bool)
        step = max(1, self.model.batch_size) * 4  # a few batches per progress update
        for start in tqdm(range(0, len(built), step), desc="seqlab loglikelihood", disable=disable_tqdm):
            part = slice(start, start + step)
            scores[part], greedy[part] = self.model.score_greedy(built[part])
        out = [(float(s), bool(g)) for s, g in zip(scores, greedy)]
        for (args, _, _), result in zip(requests, out):
            if args is not None:  # rolling windows are not requests of their own
                self.cache_hook.add_partial("loglikelihood", args, result)
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for context, tokens in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, tokens))
                owners.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = np.zeros(len(requests))
        np.add.at(totals, np.array(owners, dtype=np.int64), np.array([s for s, _ in scores]))
        return [float(t) for t in totals]

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation (sampling settings are refused, not ignored), stopped at the `until` strings."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, (_, kwargs) in enumerate(req.args for req in requests):
            kwargs = dict(kwargs)
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            if kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0:
                raise ConfigError("seqlab lm-eval model: generation is greedy; the task asks for sampling")
            groups.setdefault((tuple(until), max_new), []).append(i)
        for (until, max_new), indices in tqdm(groups.items(), desc="seqlab generate_until", disable=disable_tqdm):
            reqs = [self._request(self.tok_encode(requests[i].args[0]), (), max_new) for i in indices]
            generated = self.model.generate(reqs, max_new, stop=list(until))
            for i, ids in zip(indices, generated):
                out[i] = cut_at(self.tok_decode(ids), until)
                self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        return [text or "" for text in out]


def main(argv: Sequence[str] | None = None) -> int:
    """lm-eval's command line, with the `seqlab` model type registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()
    return 0
