"""The rollout worker's loop: take task groups, generate with vLLM, return samples.

Pure of Ray (the actor in peirce.actors.rollout_worker starts it in a thread). Order of
a worker's life: load the engine, catch up to the learner's newest weights, only then
register with the dispatcher (so a worker added at runtime never generates with stale
weights); per batch: swap in the newest received weights, wait until the engine has at
least the version each task was admitted under, generate, return one payload per group.
A payload that fails to decode is answered with an error marker, never a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from peirce.rewards.worker import ERROR_MARKER
from peirce.rollout.engine import GenRequest, RolloutEngine, SamplingSpec
from peirce.rollout.weights_inbox import WeightsInbox
from peirce.tasks.base import get_family
from peirce.transport.dispatch import WorkClient
from peirce.transport.frames import FrameError, RejectCounter
from peirce.transport.groups import pack_messages, unpack_messages
from peirce.transport.wire import RolloutSample, TaskMsg

log = logging.getLogger(__name__)


class RolloutLoop:
    def __init__(self, engine: RolloutEngine, endpoint: str, inbox: WeightsInbox, *, worker_id: str, prompt_style: str,
                 batch_groups: int, tokenizer: Any = None, catch_up_s: float = 5.0,
                 on_generated: Callable[[list[RolloutSample], float], None] | None = None,
                 on_weights: Callable[[int, float], None] | None = None) -> None:
        self.engine = engine
        self.endpoint = endpoint
        self.worker_id = worker_id
        self.inbox = inbox
        self.prompt_style = prompt_style
        self.batch_groups = batch_groups
        self.tokenizer = tokenizer
        self.catch_up_s = catch_up_s
        self.on_generated = on_generated
        self.on_weights = on_weights
        self.rejects = RejectCounter()
        self.stop_event = threading.Event()
        self.generated_groups = 0

    def _apply_weights(self) -> None:
        got = self.inbox.take()
        if got is not None and got[0] > self.engine.policy_version:
            t0 = time.perf_counter()
            self.engine.load_weights(iter(got[1]), version=got[0])
            if self.on_weights:
                self.on_weights(got[0], time.perf_counter() - t0)

    def run(self) -> None:
        # Catch up before registering: the publisher sends its newest version on READY.
        self.inbox.wait_for(self.engine.policy_version + 1, timeout_s=self.catch_up_s)
        self._apply_weights()
        client = WorkClient(self.endpoint, identity=self.worker_id)
        client.request(self.batch_groups)
        try:
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

    def _decode(self, items: list) -> tuple[list[tuple[str, TaskMsg]], list[tuple[str, list]]]:
        good, bad = [], []
        for item_id, payload in items:
            try:
                msgs = unpack_messages(payload)
                if len(msgs) != 1 or not isinstance(msgs[0], TaskMsg):
                    raise FrameError("type", "rollout payload must be exactly one TaskMsg")
                good.append((item_id, msgs[0]))
            except FrameError as err:
                self.rejects.record(err, where=f"rollout item {item_id}")
                bad.append((item_id, [ERROR_MARKER, err.reason.encode()]))
        return good, bad

    def _handle(self, items: list) -> list[tuple[str, list]]:
        good, out = self._decode(items)
        if not good:
            return out
        need = max(m.policy_version_at_dispatch for _, m in good)
        while self.engine.policy_version < need and not self.stop_event.is_set():
            self.inbox.wait_for(need, timeout_s=1.0)
            self._apply_weights()
        requests = []
        prefills = []
        for item_id, msg in good:
            rendered = get_family(msg.task.task).render(msg.task, self.prompt_style, self.tokenizer)
            prefills.append(rendered.prefill)
            requests.append(GenRequest(request_id=item_id, prompt=rendered.text,
                                       sampling=SamplingSpec(n=msg.n_samples, **msg.sampling)))
        t0 = time.perf_counter()
        results = self.engine.generate(requests)
        seconds = time.perf_counter() - t0
        by_request: dict[str, list] = {}
        for r in results:
            by_request.setdefault(r.request_id, []).append(r)
        for (item_id, msg), prefill in zip(good, prefills):
            samples = [RolloutSample(task_id=msg.task.id, task_name=msg.task.task, level=msg.task.level,
                                     group_id=msg.group_id, sample_index=r.sample_index,
                                     prompt_token_ids=r.prompt_token_ids, response_token_ids=r.response_token_ids,
                                     response_logprobs=r.response_logprobs, policy_version=r.policy_version,
                                     completion=r.text, prefill=prefill, finish_reason=r.finish_reason or "",
                                     gen_seconds=seconds)
                       for r in sorted(by_request.get(item_id, []), key=lambda r: r.sample_index)]
            if self.on_generated:
                self.on_generated(samples, seconds)
            out.append((item_id, pack_messages(samples)))
            self.generated_groups += 1
        return out
