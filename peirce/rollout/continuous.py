"""Continuous rollout bookkeeping: groups enter the engine as they arrive and leave as
their last sample ends (pure; the rollout loop drives it over an `EngineStream`).

Why: a batch that waits for its slowest sample decodes its last steps for one or two
samples while admitted groups queue behind it. With long-tailed response lengths that
is most of a rollout engine's time once learner and rollout overlap (measured in README
"Asynchrony on 2 cores"). Here every sample is its own engine request; a group is
answered the moment its last sample ends, and the loop adds new groups between decode
steps, so the engine's batch stays full.

Weights: the engine serves one version at a time. With partial rollouts
(`rollout.interrupt_on_new_weights`) a newer version cuts every live sample, which is
continued under it (peirce.rollout.partial: tokens, logprobs and version spans kept);
at most `max_interrupts` cuts per sample, after which the swap waits for that sample.
Without, the loop stops adding groups, lets the live samples end and then swaps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from peirce.rollout.partial import PartialStats, SampleProgress, sample_seed
from peirce.rollout.sampling import GenRequest, GenResult


@dataclass
class OpenGroup:
    """One group in the engine: its request, its samples so far, and what the loop keeps
    with it (`context`, returned untouched when the group closes)."""

    request: GenRequest
    version: int  # the engine's version when the group entered (a sample that made no token records it)
    started: float
    context: Any = None
    samples: dict[int, SampleProgress] = field(default_factory=dict)

    @property
    def item_id(self) -> str:
        return self.request.request_id

    @property
    def complete(self) -> bool:
        return (len(self.samples) == self.request.sampling.n
                and all(p.finished for p in self.samples.values()))


class GroupBook:
    """The groups in a continuous rollout engine, by the loop's item id (= request id)."""

    def __init__(self, max_interrupts: int) -> None:
        if max_interrupts < 0:
            raise ValueError(f"max_interrupts={max_interrupts}: must be >= 0")
        self.max_interrupts = max_interrupts
        self.groups: dict[str, OpenGroup] = {}
        self._owner: dict[str, tuple[str, int]] = {}  # continuation request id -> (item id, sample index)
        self._cut: list[tuple[str, int]] = []  # samples cut and not yet continued
        self._cuts = 0

    @property
    def cut(self) -> int:
        """Samples cut (aborted or stepped past a load) and not yet continued."""
        return len(self._cut)

    def __len__(self) -> int:
        return len(self.groups)

    def open(self, request: GenRequest, *, version: int, now: float, context: Any = None) -> None:
        if request.request_id in self.groups:
            raise ValueError(f"group {request.request_id!r} is already open")
        self.groups[request.request_id] = OpenGroup(request, version, now, context)

    def add(self, results: Iterable[GenResult]) -> list[str]:
        """Fold engine results (ended or cut samples, first pieces or continuations) in;
        the ids of the groups this completed, in the order they completed."""
        done: list[str] = []
        for r in results:
            item_id, index = self._owner.pop(r.request_id, (r.request_id, r.sample_index))
            group = self.groups.get(item_id)
            if group is None:
                raise KeyError(f"result for {r.request_id!r}#{r.sample_index}: no open group {item_id!r}")
            progress = group.samples.get(index)
            if progress is None:
                spec = group.request.sampling
                progress = group.samples[index] = SampleProgress(
                    item_id, index, list(r.prompt_token_ids),
                    msgspec.structs.replace(spec, n=1, seed=sample_seed(spec.seed, index)))
            progress.add(r)
            if not progress.finished:
                self._cut.append((item_id, index))
            if group.complete and item_id not in done:
                done.append(item_id)
        return done

    def may_interrupt(self) -> bool:
        """Whether a swap may cut the live samples now: none has used up its interruptions
        (a live sample with k pieces so far has been cut k times)."""
        return self.max_interrupts > 0 and all(
            p.finished or p.pieces < self.max_interrupts for g in self.groups.values() for p in g.samples.values())

    def continuations(self) -> list[GenRequest]:
        """One request per cut sample, continuing it under the engine's weights now."""
        self._cuts += 1
        out = []
        for item_id, index in self._cut:
            cid = f"{item_id}#{index}@{self._cuts}"
            self._owner[cid] = (item_id, index)
            out.append(self.groups[item_id].samples[index].continuation(cid))
        self._cut.clear()
        return out

    def close(self, item_id: str, decode: Callable[[list[int]], str]) -> tuple[OpenGroup, list[GenResult], PartialStats]:
        """Take a complete group out: its samples as whole results (by sample index) and
        what interruptions did to it."""
        group = self.groups[item_id]
        if not group.complete:
            raise ValueError(f"group {item_id!r} is not complete")
        del self.groups[item_id]
        stats = PartialStats()
        results = []
        for index in sorted(group.samples):
            p = group.samples[index]
            r = p.result(decode, group.version)
            results.append(r)
            if p.interrupted:
                stats.interrupted_samples += 1
            if r.version_segments:
                stats.max_version_span = max(stats.max_version_span, r.version_segments[-1][1] - r.policy_version)
        return group, results, stats
