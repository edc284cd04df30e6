"""Typed boundary of the rollout engine: one request, its sampling settings, one result.

Sampling settings travel per request (not per engine call) because multi-phase prompts
(MASA: meta predictions first, then solutions with a per-prompt length limit) mix
different limits in one batch. The structs validate on construction, so a bad value is
rejected with the field and value named before anything reaches vLLM.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec


class SamplingSpecError(ValueError):
    """A request or its sampling settings break a rule; the message names field and value."""

    def __init__(self, field: str, value: Any, rule: str) -> None:
        self.field, self.value, self.rule = field, value, rule
        super().__init__(f"{field}={value!r}: {rule}")


def _check(ok: bool, field: str, value: Any, rule: str) -> None:
    if not ok:
        raise SamplingSpecError(field, value, rule)


class SamplingSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Sampling settings of one request (defaults: plain T=1 sampling with logprobs)."""

    n: int = 1  # samples drawn from this prompt (a GRPO group)
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    max_tokens: int = 256
    min_tokens: int = 0
    stop: tuple[str, ...] = ()  # strings that end the response (not included in it)
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None  # None: the engine's random stream; int: reproducible tokens
    logprobs: bool = True  # record the sampled token's logprob per generated token
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        _check(type(self.n) is int and self.n >= 1, "sampling.n", self.n, "must be an int >= 1")
        _check(isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
               and self.temperature >= 0, "sampling.temperature", self.temperature, "must be a finite float >= 0")
        _check(isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1,
               "sampling.top_p", self.top_p, "must be in (0, 1]")
        _check(type(self.top_k) is int and self.top_k >= 0, "sampling.top_k", self.top_k,
               "must be an int >= 0 (0 disables top-k)")
        _check(type(self.max_tokens) is int and self.max_tokens >= 1, "sampling.max_tokens", self.max_tokens,
               "must be an int >= 1")
        _check(type(self.min_tokens) is int and 0 <= self.min_tokens <= self.max_tokens,
               "sampling.min_tokens", self.min_tokens, f"must be an int in [0, max_tokens={self.max_tokens}]")
        _check(isinstance(self.stop, (tuple, list)) and all(isinstance(s, str) and s for s in self.stop),
               "sampling.stop", self.stop, "must be a sequence of non-empty strings")
        _check(isinstance(self.stop_token_ids, (tuple, list))
               and all(type(t) is int and t >= 0 for t in self.stop_token_ids),
               "sampling.stop_token_ids", self.stop_token_ids, "must be a sequence of ints >= 0")
        _check(self.seed is None or (type(self.seed) is int and 0 <= self.seed < 2**63),
               "sampling.seed", self.seed, "must be None or an int in [0, 2**63)")

    def to_vllm(self) -> Any:
        """The equivalent `vllm.SamplingParams` (logprobs=0 returns only the sampled token's)."""
        from vllm import SamplingParams

        return SamplingParams(
            n=self.n, temperature=float(self.temperature), top_p=float(self.top_p), top_k=self.top_k,
            max_tokens=self.max_tokens, min_tokens=self.min_tokens, stop=list(self.stop) or None,
            stop_token_ids=list(self.stop_token_ids) or None, seed=self.seed,
            logprobs=0 if self.logprobs else None, ignore_eos=self.ignore_eos,
        )


class GenRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One prompt: give exactly one of `prompt` (text, tokenized by the engine) or `prompt_token_ids`."""

    request_id: str
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    sampling: SamplingSpec = SamplingSpec()

    def __post_init__(self) -> None:
        _check(isinstance(self.request_id, str) and self.request_id != "", "request_id", self.request_id,
               "must be a non-empty string")
        where = f"request {self.request_id!r}"
        _check((self.prompt is None) != (self.prompt_token_ids is None), f"{where}: prompt/prompt_token_ids",
               (self.prompt is not None, self.prompt_token_ids is not None), "give exactly one of the two")
        if self.prompt is not None:
            _check(isinstance(self.prompt, str) and self.prompt != "", f"{where}: prompt", self.prompt,
                   "must be a non-empty string")
        else:
            ids = self.prompt_token_ids
            _check(isinstance(ids, list) and len(ids) > 0, f"{where}: prompt_token_ids", ids,
                   "must be a non-empty list of ints")
            bad = next((t for t in ids if type(t) is not int or t < 0), None)
            _check(bad is None, f"{where}: prompt_token_ids", bad, "every token id must be an int >= 0")
        _check(isinstance(self.sampling, SamplingSpec), f"{where}: sampling", type(self.sampling).__name__,
               "must be a SamplingSpec")


class GenResult(msgspec.Struct, frozen=True, kw_only=True):
    """One sampled response; `response_logprobs[i]` is the logprob of `response_token_ids[i]`."""

    request_id: str
    sample_index: int  # 0..n-1 within its request
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    response_logprobs: list[float]  # empty when the request asked for logprobs=False
    text: str
    finish_reason: str | None  # "stop" (EOS or stop string/token), "length", or "abort"
    stop_reason: str | int | None  # the stop string or token id that ended it, if any
    policy_version: int  # weights version that generated the first token (every token, unless segments)
    # [(start_token, version), ...] when weights changed mid-response (peirce.rollout.partial); empty: one version
    version_segments: list[tuple[int, int]] = []
