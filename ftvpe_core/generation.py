"""Generating text and reading next-token probabilities from a loaded model.

Generation is a plain decoding loop over the model's KV cache, so it can stream token by token, stop
on the chat template's end token, and time the first token exactly. Each step (forward pass and token
choice) runs on the one compute thread (``models.compute``), one step at a time: several browser sessions
sharing one model progress together, each with its own cache. This module knows nothing about prompt
techniques or pages.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from ftvpe_core import FtvpeError, fastpath, models
from ftvpe_core.models import LoadedModel
from ftvpe_core.settings import GenerationSettings


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    """Seconds from the request to the first new token (tokenizing and the prompt's forward pass)."""
    tokens_per_s: float
    """Decoding speed after the first token."""
    total_s: float
    stop_reason: str
    """'end' (the model finished) or 'length' (max new tokens reached)."""

    def to_dict(self) -> dict:
        return asdict(self)


def encode_chat(loaded: LoadedModel, messages: list[dict]) -> list[int]:
    """Token ids of chat messages through the model's chat template, ending with the assistant's turn."""
    ids = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def check_fits(loaded: LoadedModel, prompt_tokens: int, max_new_tokens: int) -> None:
    if prompt_tokens + max_new_tokens > loaded.context_length:
        raise FtvpeError(
            f"The prompt is {prompt_tokens:,} tokens and {max_new_tokens:,} new tokens were asked for, "
            f"more than the model's context of {loaded.context_length:,} tokens. "
            "Shorten the task or the examples, or ask for fewer new tokens."
        )


def stop_ids(loaded: LoadedModel) -> set[int]:
    """Token ids that end an answer: the generation config's end tokens and the tokenizer's."""
    ids: set[int] = set()
    eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


class GenerationStream:
    """Iterate to get the answer's text piece by piece; ``result`` is set when the iteration ends.

    Time is counted only while this stream computes, so two streams run in turns (see ``interleave``)
    each report their own speed.
    """

    def __init__(self, loaded: LoadedModel, messages: list[dict], settings: GenerationSettings | None = None):
        self.loaded = loaded
        self.settings = settings or GenerationSettings()
        self.result: GenerationResult | None = None
        self.text = ""
        self._busy = 0.0
        self._enter = self._started = time.perf_counter()
        self.prompt_ids = encode_chat(loaded, messages)
        check_fits(loaded, len(self.prompt_ids), self.settings.max_new_tokens)
        self._busy += time.perf_counter() - self._started
        self._iter = self._run()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        self._enter = time.perf_counter()
        try:
            return next(self._iter)
        finally:
            self._busy += time.perf_counter() - self._enter

    def _elapsed(self) -> float:
        """Busy seconds so far, including the current step."""
        return self._busy + (time.perf_counter() - self._enter)

    def _step(self, state: dict, last: int | None) -> int:
        """One forward pass and the choice of the next token. Runs on the compute thread, which owns
        every tensor of this stream (cache, sampler, seen tokens)."""
        import torch
        from transformers import DynamicCache

        loaded, s = self.loaded, self.settings
        with torch.inference_mode():
            if last is None:
                state["cache"] = DynamicCache(config=loaded.model.config)
                state["generator"] = torch.Generator().manual_seed(s.seed)
                state["seen"] = torch.tensor(sorted(set(self.prompt_ids)), dtype=torch.long)
                state["fast"] = fastpath.supports(loaded.model)
                ids = torch.tensor([self.prompt_ids], device=loaded.device)
            else:
                ids = torch.tensor([[last]], device=loaded.device)
                if s.repetition_penalty != 1.0:
                    state["seen"] = torch.cat([state["seen"], torch.tensor([last])]).unique()
            if last is not None and state["fast"]:
                logits = fastpath.step(loaded.model, last, state["cache"]).float().cpu()
            else:
                # logits_to_keep=1: only the last position's scores are needed (cuts prefill time).
                out = loaded.model(input_ids=ids, past_key_values=state["cache"], use_cache=True, logits_to_keep=1)
                state["cache"] = out.past_key_values
                logits = out.logits[0, -1, :].float().cpu()
            return self._pick(logits, state["generator"], state["seen"])

    def _pick(self, logits, generator, seen) -> int:
        import torch

        s = self.settings
        if s.repetition_penalty != 1.0:
            # CTRL-style penalty on every token already in the prompt or the answer.
            logits = logits.clone()
            v = logits[seen]
            logits[seen] = torch.where(v > 0, v / s.repetition_penalty, v * s.repetition_penalty)
        if s.greedy:
            return int(logits.argmax(-1))
        probs = torch.softmax(logits / s.temperature, dim=-1)
        if s.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < s.top_p  # always keeps the most likely token
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=generator))

    def _run(self) -> Iterator[str]:
        loaded, s = self.loaded, self.settings
        stop = stop_ids(loaded)
        state: dict = {}
        new: list[int] = []
        ttft = 0.0
        reason = "length"
        while len(new) < s.max_new_tokens:
            token = models.compute(self._step, state, new[-1] if new else None)
            if not ttft:
                ttft = self._elapsed()
            if token in stop:
                reason = "end"
                break
            new.append(token)
            text = loaded.tokenizer.decode(new, skip_special_tokens=True)
            # Hold back a partial multi-byte character until the next token completes it.
            if not text.endswith("\ufffd") and len(text) > len(self.text) and text.startswith(self.text):
                delta, self.text = text[len(self.text) :], text
                yield delta
        final = loaded.tokenizer.decode(new, skip_special_tokens=True)
        if final != self.text and final.startswith(self.text):
            tail, self.text = final[len(self.text) :], final
            yield tail
        self.text = final
        total = self._elapsed()
        decode_s = total - ttft
        n_after_first = max(len(new) - 1, 0)
        self.result = GenerationResult(
            text=final,
            prompt_tokens=len(self.prompt_ids),
            new_tokens=len(new),
            ttft_s=ttft,
            tokens_per_s=n_after_first / decode_s if n_after_first and decode_s > 0 else 0.0,
            total_s=total,
            stop_reason=reason,
        )


def generate(loaded: LoadedModel, messages: list[dict], settings: GenerationSettings | None = None) -> GenerationResult:
    """The whole answer at once."""
    stream = GenerationStream(loaded, messages, settings)
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


def interleave(streams: list[GenerationStream]) -> Iterable[tuple[int, str]]:
    """Advance several streams a token at a time in turn; yields (stream index, text piece)."""
    active = list(range(len(streams)))
    while active:
        for i in list(active):
            try:
                yield i, next(streams[i])
            except StopIteration:
                active.remove(i)


@dataclass(frozen=True)
class TokenProb:
    token_id: int
    token: str
    prob: float


def next_token_top(loaded: LoadedModel, messages: list[dict], k: int = 10) -> list[TokenProb]:
    """The k most likely first tokens of the answer (one forward pass), most likely first."""
    import torch

    if not 1 <= k <= 100:
        raise FtvpeError(f"Top-k must be between 1 and 100, got {k}.")
    if k > len(loaded.tokenizer):
        raise FtvpeError(f"Top-k {k} is more than the model's vocabulary of {len(loaded.tokenizer)} tokens.")
    ids = encode_chat(loaded, messages)
    check_fits(loaded, len(ids), 1)

    def forward() -> list[tuple[float, int]]:
        with torch.inference_mode():
            logits = loaded.model(input_ids=torch.tensor([ids], device=loaded.device), logits_to_keep=1).logits[0, -1]
            logits = logits.float()
            top = torch.topk(torch.softmax(logits, dim=-1), k)
            return [(float(p), int(i)) for p, i in zip(top.values.cpu(), top.indices.cpu())]

    return [TokenProb(i, loaded.tokenizer.decode([i]), p) for p, i in models.compute(forward)]
