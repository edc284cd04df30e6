"""The rollout worker's loop: take task groups, generate with vLLM, return samples.

Pure of Ray (the actor in peirce.actors.rollout_worker starts it in a thread). Order of
a worker's life: load the engine, catch up to the learner's newest weights, only then
register with the dispatcher (so a worker added at runtime never generates with stale
weights); per batch: swap in the newest received weights, wait until the engine has at
least the version each task was admitted under, generate, return one payload per group.
With `interrupt_on_new_weights` (config `rollout.interrupt_on_new_weights`) a batch does
not wait for its end to take newer weights: the engine stops between decode steps when the
inbox holds a newer version, the loop loads it and continues every unfinished sample
(peirce.rollout.partial; at most `max_interrupts` times per batch), and each sample records
the versions that made its tokens (`version_segments`). With `continuous` (config
`rollout.continuous`) there are no batches: groups join the engine between decode steps and
are answered as their last sample ends (peirce.rollout.continuous).

Nothing an item carries can stop the loop. Every item gets an answer: its samples, or
a `WorkerFault` (reason, detail; counted in `rejects` and logged) when it fails to decode, when
it decodes but cannot be served (`unservable`: unknown task family or phase, sampling
overrides that break a rule, a prompt the engine refuses), or when it waits for a policy version
that does not arrive within `version_wait_s` (`version`). A request the engine refuses
fails the whole batched call, so the batch is then generated item by item to answer
the good ones. Other engine errors propagate: the worker dies and its pool replaces it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from peirce.masa.prompt import render_meta
from peirce.rollout.continuous import GroupBook
from peirce.rollout.engine import EngineStream, GenRequest, GenResult, RolloutEngine, SamplingSpec
from peirce.rollout.partial import PartialStats, generate_partial
from peirce.rollout.weights_inbox import WeightsInbox
from peirce.tasks.base import get_family
from peirce.transport.dispatch import WorkClient
from peirce.transport.frames import FrameError, RejectCounter
from peirce.transport.groups import fault_payload, pack_messages, unpack_messages
from peirce.transport.security import RunKeys
from peirce.transport.shm_sync import VersionSuperseded
from peirce.transport.wire import RolloutSample, TaskMsg

log = logging.getLogger(__name__)


def _refusal(item_id: str, exc: Exception) -> FrameError:
    """The answer to a request the engine refused (it broke a rule; nothing was generated)."""
    return FrameError("unservable", f"engine refused {item_id}: {exc!s:.200}")


@dataclass
class _Queued:
    """An item taken but not yet started (its admission version not yet loaded, or weights
    about to change)."""

    item_id: str
    msg: TaskMsg
    request: GenRequest
    prefill: str
    deadline: float  # monotonic: past it, a version that never came is answered as a fault


class RolloutLoop:
    def __init__(self, engine: RolloutEngine, endpoint: str, inbox: WeightsInbox, *, worker_id: str, prompt_style: str,
                 prompts_per_step: int, tokenizer: Any = None, catch_up_s: float = 5.0, version_wait_s: float = 300.0,
                 on_generated: Callable[[list[RolloutSample], float], None] | None = None,
                 on_weights: Callable[[int, float], None] | None = None,
                 on_skipped: Callable[[int], None] | None = None, keys: RunKeys | None = None,
                 interrupt_on_new_weights: bool = False, max_interrupts: int = 2,
                 on_partial: Callable[[PartialStats], None] | None = None, continuous: bool = False) -> None:
        self.engine = engine
        self.endpoint = endpoint
        self.worker_id = worker_id
        self.inbox = inbox
        self.prompt_style = prompt_style
        self.prompts_per_step = prompts_per_step  # the credit it asks for: one step's groups in flight
        self.tokenizer = tokenizer
        self.catch_up_s = catch_up_s
        self.version_wait_s = version_wait_s  # a task admitted under a version never published must not hang us
        self.on_generated = on_generated
        self.on_weights = on_weights
        self.on_skipped = on_skipped  # a version superseded before it could be loaded
        self.keys = keys  # the run's CURVE keys (worker copy) when it spans nodes
        self.rejects = RejectCounter()
        self.stop_event = threading.Event()
        self.generated_groups = 0
        self.interrupt_on_new_weights = interrupt_on_new_weights
        if max_interrupts < 0:
            raise ValueError(f"max_interrupts={max_interrupts}: must be >= 0")
        self.max_interrupts = max_interrupts  # per batch: a fast learner cannot starve a batch
        self.on_partial = on_partial
        self.partial = PartialStats()  # totals over the loop's life
        self.continuous = continuous  # groups stream through the engine (peirce.rollout.continuous)
        self._superseded = -1  # newest version skipped as superseded: not "newer weights" any more

    def _apply_weights(self) -> None:
        got = self.inbox.take()
        while got is not None and got[0] > self.engine.policy_version:
            t0 = time.perf_counter()
            try:
                self.engine.load_received(got[1], version=got[0])
            except VersionSuperseded as e:
                # The engine lagged two versions: the learner's file already holds a newer one,
                # which is in (or on its way to) the inbox. Nothing was loaded; serve the old
                # version whole until then.
                log.warning("weights v%d skipped: %s", got[0], e)
                self._superseded = max(self._superseded, got[0])
                if self.on_skipped:
                    self.on_skipped(got[0])
                got = self.inbox.take()
                continue
            if self.on_weights:
                self.on_weights(got[0], time.perf_counter() - t0)
            return

    def run(self) -> None:
        # Catch up before registering: the publisher sends its newest version on READY.
        self.inbox.wait_for(self.engine.policy_version + 1, timeout_s=self.catch_up_s)
        self._apply_weights()
        client = WorkClient(self.endpoint, identity=self.worker_id, rejected=self.rejects, keys=self.keys)
        client.request(self.prompts_per_step)
        try:
            if self.continuous:
                return self._run_continuous(client)
            while not self.stop_event.is_set():
                self._apply_weights()
                items = client.receive(50)
                if items:
                    for item_id, payload in self._handle(items):
                        client.result(item_id, payload)
                    client.request(len(items))
        finally:
            client.bye()  # anything not yet returned goes back to the dispatcher
            client.close()

    def _reject(self, item_id: str, err: FrameError) -> tuple[str, list]:
        self.rejects.record(err, where=f"rollout item {item_id}")
        return item_id, fault_payload(err)

    def _decode(self, items: list) -> tuple[list[tuple[str, TaskMsg]], list[tuple[str, list]]]:
        good, bad = [], []
        for item_id, payload in items:
            try:
                msgs = unpack_messages(payload)
                if len(msgs) != 1 or not isinstance(msgs[0], TaskMsg):
                    raise FrameError("type", "rollout payload must be exactly one TaskMsg")
                good.append((item_id, msgs[0]))
            except FrameError as err:
                bad.append(self._reject(item_id, err))
        return good, bad

    def _prepare(self, item_id: str, msg: TaskMsg) -> tuple[GenRequest, str]:
        """(request, prefill) for one task; FrameError("unservable") naming what is wrong."""
        try:
            if msg.phase == "meta":  # MASA: the meta prompt is its own conversation, no task system turn
                if msg.prompt is None:
                    raise ValueError("phase 'meta' needs TaskMsg.prompt (the meta prompt text), got None")
                rendered = render_meta(msg.prompt, self.prompt_style, self.tokenizer)
            elif msg.phase == "solve":
                task = msg.task if msg.prompt is None else msgspec.structs.replace(msg.task, puzzle_text=msg.prompt)
                rendered = get_family(task.family).render(task, self.prompt_style, self.tokenizer)
            else:
                raise ValueError(f"phase: {msg.phase!r} is not 'meta' or 'solve'")
            request = GenRequest(request_id=item_id, prompt=rendered.text,
                                 sampling=SamplingSpec(n=msg.n_samples, **msg.sampling.overrides()))
        except Exception as exc:  # unknown family, unknown/invalid sampling keys, a puzzle the renderer cannot use
            raise FrameError("unservable", f"task {msg.task.family!r} ({msg.task.id}): {exc!r:.200}") from None
        return request, rendered.prefill

    def _wait_for_version(self, good: list[tuple[str, TaskMsg]]) -> list[tuple[str, TaskMsg]]:
        """Wait (bounded) until the engine has each task's admission version; the tasks
        whose version did not arrive in `version_wait_s` are returned."""
        need = max(m.policy_version_at_dispatch for _, m in good)
        deadline = time.monotonic() + self.version_wait_s
        while self.engine.policy_version < need and not self.stop_event.is_set() and time.monotonic() < deadline:
            self.inbox.wait_for(need, timeout_s=min(1.0, max(0.0, deadline - time.monotonic())))
            self._apply_weights()
        have = self.engine.policy_version
        return [(i, m) for i, m in good if m.policy_version_at_dispatch > have]

    def _version_fault(self, msg: TaskMsg) -> FrameError:
        return FrameError("version", f"admitted under policy version {msg.policy_version_at_dispatch}, engine has "
                                     f"{self.engine.policy_version} after {self.version_wait_s:.0f}s")

    def _newer_weights(self) -> bool:
        """The interrupt decision: the inbox holds a version the engine does not serve yet
        (one found superseded at load does not count: the next is on its way)."""
        return self.inbox.received_version > max(self.engine.policy_version, self._superseded)

    def _report_partial(self, stats: PartialStats) -> None:
        self.partial.add(stats)
        if self.on_partial and (stats.interrupts or stats.interrupted_samples):
            try:
                self.on_partial(stats)
            except Exception:  # metrics must not cost a generated batch
                log.exception("on_partial callback failed")

    def _engine_generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if not self.interrupt_on_new_weights:
            return self.engine.generate(requests)
        results, stats = generate_partial(self.engine, requests, newer=self._newer_weights,
                                          swap=self._apply_weights, max_interrupts=self.max_interrupts)
        self._report_partial(stats)
        return results

    def _generate(self, requests: list[GenRequest]) -> tuple[list[GenResult], dict[str, FrameError]]:
        """All results, and the requests the engine refused (found by retrying one by one)."""
        try:
            return self._engine_generate(requests), {}
        except ValueError as exc:  # SamplingSpecError & co: a request broke a rule, the call did nothing
            if len(requests) == 1:
                return [], {requests[0].request_id: _refusal(requests[0].request_id, exc)}
        results, refused = [], {}
        for r in requests:
            try:
                results.extend(self._engine_generate([r]))
            except ValueError as exc:
                refused[r.request_id] = _refusal(r.request_id, exc)
        return results, refused

    def _handle(self, items: list) -> list[tuple[str, list]]:
        good, out = self._decode(items)
        prepared: list[tuple[str, TaskMsg, GenRequest, str]] = []
        for item_id, msg in good:
            try:
                prepared.append((item_id, msg, *self._prepare(item_id, msg)))
            except FrameError as err:
                out.append(self._reject(item_id, err))
        if not prepared:
            return out
        late = {i for i, _ in self._wait_for_version([(i, m) for i, m, _, _ in prepared])}
        for item_id, msg, _, _ in prepared:
            if item_id in late:
                out.append(self._reject(item_id, self._version_fault(msg)))
        prepared = [p for p in prepared if p[0] not in late]
        if not prepared:
            return out
        t0 = time.perf_counter()
        results, refused = self._generate([req for _, _, req, _ in prepared])
        seconds = time.perf_counter() - t0
        by_request: dict[str, list] = {}
        for r in results:
            by_request.setdefault(r.request_id, []).append(r)
        for item_id, msg, _, prefill in prepared:
            if item_id in refused:
                out.append(self._reject(item_id, refused[item_id]))
                continue
            results = sorted(by_request.get(item_id, []), key=lambda r: r.sample_index)
            out.append((item_id, self._answer(item_id, msg, prefill, results, seconds)))
        return out

    def _answer(self, item_id: str, msg: TaskMsg, prefill: str, results: list[GenResult], seconds: float) -> list:
        """One generated group's payload (its samples, in sample order), counted."""
        samples = [RolloutSample(task_id=msg.task.id, family=msg.task.family, level=msg.task.level,
                                 group_id=msg.group_id, sample_index=r.sample_index,
                                 prompt_token_ids=r.prompt_token_ids, response_token_ids=r.response_token_ids,
                                 response_logprobs=r.response_logprobs, policy_version=r.policy_version,
                                 version_segments=r.version_segments,
                                 completion=r.text, prefill=prefill, finish_reason=r.finish_reason or "",
                                 gen_seconds=seconds)
                   for r in results]
        if self.on_generated:
            try:
                self.on_generated(samples, seconds)
            except Exception:  # metrics must not cost a generated group
                log.exception("on_generated callback failed for %s", item_id)
        self.generated_groups += 1
        return pack_messages(samples)

    # -- continuous: groups stream through the engine (peirce.rollout.continuous) -----------------

    def _run_continuous(self, client: WorkClient) -> None:
        """The loop with `continuous` on: between decode steps, take new items, start the
        groups whose version the engine has, answer each group as its last sample ends, and
        swap weights as peirce.rollout.continuous says. On stop, the live groups are finished
        and answered; the queued ones go back to the dispatcher with `bye`."""
        stream = self.engine.stream()
        book = GroupBook(self.max_interrupts if self.interrupt_on_new_weights else 0)
        queue: list[_Queued] = []
        try:
            while stream.live or not self.stop_event.is_set():
                stopping = self.stop_event.is_set()
                self._swap_between_steps(stream, book)
                answers: list[tuple[str, list]] = []
                if not stopping:
                    items = client.receive(0 if stream.live else 50)
                    if items:
                        answers += self._enqueue(items, queue)
                    answers += self._start_queued(stream, book, queue)
                if stream.live:
                    ended = book.add(stream.step())
                    if book.cut:  # the step found the weights changed under them (a CUDA inbox loads on arrival)
                        self._continue(stream, book)
                    for item_id in ended:
                        group, results, stats = book.close(item_id, self.engine.decode)
                        self._report_partial(stats)
                        msg, prefill = group.context
                        answers.append((item_id, self._answer(item_id, msg, prefill, results,
                                                              time.perf_counter() - group.started)))
                for item_id, payload in answers:
                    client.result(item_id, payload)
                if answers:
                    client.request(len(answers))
        finally:
            stream.abort()  # after an error: nothing of ours stays in the engine

    def _swap_between_steps(self, stream: EngineStream, book: GroupBook) -> None:
        """Load newer weights now if the engine is empty, or (partial rollouts) by cutting the
        live samples and continuing them under the new weights; else wait for them to end."""
        if not self._newer_weights():
            return
        if not stream.live:
            self._apply_weights()
            return
        if not book.may_interrupt():
            return  # draining: `_start_queued` adds nothing while newer weights wait
        book.add(stream.abort())
        self._apply_weights()
        self._continue(stream, book)

    def _continue(self, stream: EngineStream, book: GroupBook) -> None:
        """Put every cut sample back into the engine, continued under its weights now."""
        continuations = book.continuations()
        for request in continuations:
            stream.add(request)
        self._report_partial(PartialStats(interrupts=1, continuations=len(continuations)))

    def _enqueue(self, items: list, queue: list[_Queued]) -> list[tuple[str, list]]:
        """Decode and prepare new items into `queue`; the answers for those that fail."""
        good, out = self._decode(items)
        deadline = time.monotonic() + self.version_wait_s
        for item_id, msg in good:
            try:
                queue.append(_Queued(item_id, msg, *self._prepare(item_id, msg), deadline))
            except FrameError as err:
                out.append(self._reject(item_id, err))
        return out

    def _start_queued(self, stream: EngineStream, book: GroupBook, queue: list[_Queued]) -> list[tuple[str, list]]:
        """Start every queued group the engine's version allows (none while newer weights wait
        for live samples to end); the answers for groups refused or out of time."""
        out: list[tuple[str, list]] = []
        have = self.engine.policy_version
        draining = stream.live > 0 and self._newer_weights()
        waiting = []
        for q in queue:
            if q.msg.policy_version_at_dispatch > have:
                if time.monotonic() < q.deadline:
                    waiting.append(q)
                else:
                    out.append(self._reject(q.item_id, self._version_fault(q.msg)))
            elif draining:
                waiting.append(q)
            else:
                try:
                    stream.add(q.request)
                except ValueError as exc:  # SamplingSpecError & co: this request broke a rule, nothing added
                    out.append(self._reject(q.item_id, _refusal(q.item_id, exc)))
                    continue
                book.open(q.request, version=have, now=time.perf_counter(), context=(q.msg, q.prefill))
        queue[:] = waiting
        return out
