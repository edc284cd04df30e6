"""Partial (interruptible) rollouts: stop a batch when newer weights arrive, keep every
sample's tokens, and continue the unfinished ones under the new weights.

Why: with `rollout.interrupt_on_new_weights` off (the default), a long batch finishes
under the weights it started with, so the learner's newest version waits for the
slowest sample. On, the engine checks between decode steps whether the inbox holds a
newer version; if so it aborts what is unfinished and returns each sample's tokens and
logprobs so far; the loop loads the new weights and continues every unfinished sample
as its own request (n=1, prompt = prompt + its tokens, max_tokens = what is left).

What a continued sample records (`RolloutSample.version_segments`): [(0, v0), (k1, v1),
...], the version that generated each run of tokens; `policy_version` is v0, the
oldest part, which the planner's staleness bound is held to. Each token's logprob is
the one the engine computed when it sampled that token, under the version that made
it, so the learner's truncated importance sampling weighs every token against its own
behaviour policy and a continued sample is as correct as an uninterrupted one.

Bounded: at most `max_interrupts` interruptions per batch; the last round runs to the
end whatever arrives, so a learner publishing faster than a batch finishes cannot
starve it. No sample is lost: every sample started is continued until it finishes.

This module is the pure bookkeeping (unit-tested without vLLM) plus the driver loop
over any engine with `generate_interruptible` and `decode`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from peirce.rollout.sampling import GenRequest, GenResult, SamplingSpec

#: finish_reason of a sample the engine stopped because newer weights arrived.
INTERRUPTED = "abort"
_SEED_MOD = 2**63


def sample_seed(seed: int | None, index: int) -> int | None:
    """The seed of sample `index` of a seeded request: vLLM's own parallel-sampling rule
    (child i draws from seed + i), so an uninterrupted sample matches `generate`."""
    return None if seed is None else (seed + index) % _SEED_MOD


def continuation_seed(seed: int | None, done_tokens: int) -> int | None:
    """A continuation's seed, derived from its sample's seed and where it was cut.

    A continuation cannot replay the rest of the original random stream (vLLM gives a
    request its own generator, started from its seed), so it draws from a new seed; the
    tokens after an interruption therefore depend on where the interruption fell, and a
    rerun reproduces them only if the interruptions fall at the same tokens."""
    if seed is None:
        return None
    return (seed * 1_000_003 + done_tokens + 1) % _SEED_MOD


def merge_segments(segments: list[tuple[int, int]], start: int, version: int) -> list[tuple[int, int]]:
    """`segments` with a run of tokens from `version` starting at token `start`.

    A run that starts where the last one started (the last produced no token) replaces
    it; a run under the same version as the last extends it. Raises when versions or
    starts would go down: weights only move forward."""
    if segments and start < segments[-1][0]:
        raise ValueError(f"segment start {start} < previous start {segments[-1][0]}")
    if segments and start == segments[-1][0]:
        segments = segments[:-1]
    if segments and version < segments[-1][1]:
        raise ValueError(f"segment version {version} < previous version {segments[-1][1]}: versions only go up")
    if segments and version == segments[-1][1]:
        return segments
    return [*segments, (start, version)]


def wire_segments(segments: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What RolloutSample.version_segments carries: empty for a single-version response."""
    return list(segments) if len(segments) > 1 else []


def cut_at_stop(tokens: list[int], stop: Sequence[str], decode: Callable[[list[int]], str]) -> tuple[int, str, str] | None:
    """(tokens to keep, text, stop string) when a stop string occurs in the decoded tokens.

    A stop string that spans an interruption is invisible to both engine requests (each
    detokenizes only its own output), so a continued sample is checked as a whole: it is
    cut after the first token whose text completes the earliest stop string, and its text
    ends before that string, as vLLM does for an uninterrupted one. None: no stop string."""
    if not stop:
        return None
    text = decode(tokens)
    hits = [(text.find(s), s) for s in stop if s in text]
    if not hits:
        return None
    at, s = min(hits)
    keep = next((j for j in range(1, len(tokens) + 1) if s in decode(tokens[:j])), len(tokens))
    return keep, text[:at], s


@dataclass
class SampleProgress:
    """One sample across its engine requests: tokens, logprobs and versions so far."""

    request_id: str
    sample_index: int
    prompt_token_ids: list[int]
    sampling: SamplingSpec  # the sample's own settings (n=1, its seed)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)
    text: str = ""  # the engine's text while the sample was never interrupted
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    pieces: int = 0  # engine requests that produced part of this sample

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None and self.finish_reason != INTERRUPTED

    @property
    def interrupted(self) -> bool:
        return self.pieces > 1

    def add(self, piece: GenResult) -> None:
        """Append one engine result (the first piece or a continuation)."""
        if self.finished:
            raise ValueError(f"sample {self.request_id}#{self.sample_index}: already finished ({self.finish_reason})")
        if piece.response_token_ids:
            self.segments = merge_segments(self.segments, len(self.tokens), piece.policy_version)
        self.tokens.extend(piece.response_token_ids)
        self.logprobs.extend(piece.response_logprobs)
        self.text = piece.text if self.pieces == 0 else ""
        self.finish_reason, self.stop_reason = piece.finish_reason, piece.stop_reason
        self.pieces += 1

    def continuation(self, request_id: str) -> GenRequest:
        """The request that continues this unfinished sample under the engine's weights now."""
        done = len(self.tokens)
        s = self.sampling
        if done >= s.max_tokens:
            raise ValueError(f"sample {self.request_id}#{self.sample_index}: {done} tokens, max_tokens "
                             f"{s.max_tokens}: nothing left to continue")
        spec = msgspec.structs.replace(s, n=1, max_tokens=s.max_tokens - done, min_tokens=max(0, s.min_tokens - done),
                                       seed=continuation_seed(s.seed, done))
        return GenRequest(request_id=request_id, prompt_token_ids=[*self.prompt_token_ids, *self.tokens], sampling=spec)

    def result(self, decode: Callable[[list[int]], str], fallback_version: int) -> GenResult:
        """The whole sample as one GenResult (text decoded as a whole when it was continued)."""
        tokens, logprobs, segments = self.tokens, self.logprobs, self.segments
        text, finish, stop_reason = self.text, self.finish_reason, self.stop_reason
        if self.interrupted:
            text = decode(tokens)
            cut = cut_at_stop(tokens, self.sampling.stop, decode)
            if cut is not None:
                keep, text, stop_reason = cut
                finish = "stop"
                tokens, logprobs = tokens[:keep], logprobs[:keep]
                segments = [(a, v) for a, v in segments if a < keep]
        version = segments[0][1] if segments else fallback_version
        return GenResult(request_id=self.request_id, sample_index=self.sample_index,
                         prompt_token_ids=list(self.prompt_token_ids), response_token_ids=list(tokens),
                         response_logprobs=list(logprobs), text=text, finish_reason=finish, stop_reason=stop_reason,
                         policy_version=version, version_segments=wire_segments(segments))


class InterruptibleEngine(Protocol):
    policy_version: int

    def generate_interruptible(self, requests: Sequence[GenRequest],
                               should_interrupt: Callable[[], bool]) -> list[GenResult]: ...

    def decode(self, token_ids: list[int]) -> str: ...


@dataclass
class PartialStats:
    """What one batch's interruptions did (for metrics)."""

    interrupts: int = 0  # times the batch was stopped for newer weights
    interrupted_samples: int = 0  # samples that span more than one engine request
    continuations: int = 0  # continuation requests generated
    max_version_span: int = 0  # largest last - first version of a sample

    def add(self, other: PartialStats) -> None:
        """Fold one batch's figures into running totals (the span is a maximum)."""
        self.interrupts += other.interrupts
        self.interrupted_samples += other.interrupted_samples
        self.continuations += other.continuations
        self.max_version_span = max(self.max_version_span, other.max_version_span)


def generate_partial(engine: InterruptibleEngine, requests: Sequence[GenRequest], *, newer: Callable[[], bool],
                     swap: Callable[[], None], max_interrupts: int) -> tuple[list[GenResult], PartialStats]:
    """Generate `requests`, interrupting for newer weights at most `max_interrupts` times.

    `newer()`: is there a version newer than the engine's (checked between decode steps);
    `swap()`: load it. Results are ordered like `engine.generate`'s: by request, then
    sample index; every sample of every request is returned, finished."""
    if max_interrupts < 0:
        raise ValueError(f"max_interrupts={max_interrupts}: must be >= 0")
    never: Callable[[], bool] = lambda: False  # noqa: E731
    stats = PartialStats()
    base = {r.request_id: r for r in requests}
    samples: dict[tuple[str, int], SampleProgress] = {}
    start_version = engine.policy_version
    for res in engine.generate_interruptible(requests, newer if max_interrupts > 0 else never):
        spec = base[res.request_id].sampling
        p = SampleProgress(res.request_id, res.sample_index, list(res.prompt_token_ids),
                           msgspec.structs.replace(spec, n=1, seed=sample_seed(spec.seed, res.sample_index)))
        p.add(res)
        samples[(res.request_id, res.sample_index)] = p
    while unfinished := [p for p in samples.values() if not p.finished]:
        stats.interrupts += 1
        swap()
        conts = {f"{p.request_id}#{p.sample_index}@{stats.interrupts}": p for p in unfinished}
        stats.continuations += len(conts)
        last = stats.interrupts >= max_interrupts
        pieces = engine.generate_interruptible([p.continuation(cid) for cid, p in conts.items()],
                                               never if last else newer)
        for res in pieces:
            conts[res.request_id].add(res)
    order = {rid: i for i, rid in enumerate(base)}
    out = []
    for key in sorted(samples, key=lambda k: (order[k[0]], k[1])):
        r = samples[key].result(engine.decode, start_version)
        out.append(r)
        if samples[key].interrupted:
            stats.interrupted_samples += 1
        if r.version_segments:
            stats.max_version_span = max(stats.max_version_span, r.version_segments[-1][1] - r.policy_version)
    return out, stats
