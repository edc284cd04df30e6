"""The run's moving parts in one test process: real loops, real sockets, no Ray.

What is real: WorkDispatcher and WorkClient over ZeroMQ `inproc://` (the same protocol
and frames as tcp), RolloutLoop with a WeightsInbox fed by a real WeightPublisher,
RewardLoop inside the real RewardWorker class, WorkerPool, and the Orchestrator, all
driven through `ThreadCalls` (peirce.actors.calls) instead of Ray. What stands in, and
why: `StandInEngine` for vLLM and `StandInLearner` for DeepSpeed, both far too slow to
start in a unit test; tests/trainer/test_engine_e2e.py and test_chaos.py (slow) run the
real ones.

Imported by name from any test directory (tests/ is on sys.path through tests/conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peirce.actors.calls import ThreadCalls
from peirce.actors.common import LoopThread
from peirce.actors.reward_worker import RewardWorker
from peirce.config import TrainConfig
from peirce.rollout.sampling import GenRequest, GenResult, SamplingSpecError
from peirce.rollout.weights_inbox import WeightsInbox
from peirce.rollout.worker import RolloutLoop
from peirce.tasks.dataset import generate_dataset
from peirce.trainer.topology import Topology, requeue_on_death, reward_scheme
from peirce.trainer.worker_pool import WorkerPool
from peirce.transport.dispatch import WorkDispatcher, inproc_endpoint
from peirce.transport.groups import pack_messages, unpack_messages
from peirce.transport.weight_sync import WeightPublisher
from peirce.transport.wire import ScoredSample, TaskMsg

Respond = Callable[[GenRequest, int], str]


def alternating_case(request: GenRequest, i: int) -> str:
    """Even samples upper case, odd ones lower: every "uppercase" group has reward variance."""
    return "ANSWER" if i % 2 == 0 else "answer"


class StandInEngine:
    """Stand-in for peirce.rollout.engine.RolloutEngine: vLLM takes minutes to start, far
    too slow for a unit test (the slow e2e tests run the real engine). It has what
    RolloutLoop uses (`policy_version`, `generate`, `load_weights`, and for partial
    rollouts `generate_interruptible`, `decode`) and keeps the real
    contracts that matter to the loop: a refused request fails the whole call with
    SamplingSpecError before anything is generated, every result carries the version
    that made it, weights must be a full state dict (here: each tensor equal to its
    version, as StandInLearner publishes them).

    Deterministic: sample i of a request says `respond(request, i)`, cut to max_tokens
    bytes. `refuse`: request ids it refuses (a retry has a new id, so it is served).
    Test hooks: clear `running` to hold the next generate call (`busy` is set while one
    waits there); set `dead` to say its engine process exited (the worker's `alive()`
    then raises, as RolloutWorker's does)."""

    def __init__(self, respond: Respond = alternating_case, refuse: frozenset[str] = frozenset(),
                 version: int = 0, step_s: float = 0.0) -> None:
        self.policy_version = version
        self.respond = respond
        self.refuse = refuse
        self.running = threading.Event()
        self.running.set()
        self.busy = threading.Event()
        self.dead = False
        self.loaded: list[int] = []  # versions loaded, in order
        self.served: list[tuple[str, int]] = []  # (request id, version) per generated request
        self.step_s = step_s  # seconds per decode step in generate_interruptible
        self.step_hook: Callable[[int], None] | None = None  # called before each decode step with its number
        self.interrupted_calls = 0

    def load_weights(self, named_tensors: Any, version: int) -> None:
        named = list(named_tensors)
        wrong = [name for name, t in named if not torch.all(t == float(version))]
        if not named or wrong:
            raise ValueError(f"version {version}: tensors {wrong or 'none'} do not hold that version")
        self.loaded.append(version)
        self.policy_version = version

    def load_received(self, payload: Any, version: int) -> None:
        """What the loop calls: tensors here (a shared-memory version is read as tensors, under
        its file's lock as the real engine reads it)."""
        if not hasattr(payload, "reading"):
            return self.load_weights(payload, version)
        with payload.reading():
            self.load_weights(payload.tensors(), version)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        for r in requests:
            if r.request_id in self.refuse:
                raise SamplingSpecError(f"request {r.request_id!r}", r.request_id, "refused by the stand-in")
        self.busy.set()
        self.running.wait()
        self.busy.clear()
        out = []
        for r in requests:
            self.served.append((r.request_id, self.policy_version))
            for i in range(r.sampling.n):
                text = self.respond(r, i).encode()[: r.sampling.max_tokens].decode(errors="ignore")
                tokens = list(text.encode())
                out.append(GenResult(request_id=r.request_id, sample_index=i,
                                     prompt_token_ids=list((r.prompt or "?").encode()[:8]),
                                     response_token_ids=tokens, response_logprobs=[-0.5] * len(tokens), text=text,
                                     finish_reason="stop", stop_reason=None, policy_version=self.policy_version))
        return out

    def generate_interruptible(self, requests: list[GenRequest], should_interrupt: Callable[[], bool]) -> list[GenResult]:
        """RolloutEngine.generate_interruptible's contract, one token per sample per step,
        `should_interrupt()` asked before each step. What it writes tells which weights
        wrote it: every sample runs to its max_tokens, each token is ord("a") + the
        version generating it, with logprob -(version + 1) / 10."""
        for r in requests:
            if r.request_id in self.refuse:
                raise SamplingSpecError(f"request {r.request_id!r}", r.request_id, "refused by the stand-in")
        live = [(r, i, r.prompt_token_ids or list((r.prompt or "?").encode()[:8]), [])
                for r in requests for i in range(r.sampling.n)]
        step = 0
        while any(len(toks) < r.sampling.max_tokens for r, _, _, toks in live):
            if self.step_hook is not None:
                self.step_hook(step)
            if should_interrupt():
                self.interrupted_calls += 1
                break
            time.sleep(self.step_s)
            for r, _, _, toks in live:
                if len(toks) < r.sampling.max_tokens:
                    toks.append(ord("a") + self.policy_version)
            step += 1
        self.served.extend((r.request_id, self.policy_version) for r in requests)
        v = self.policy_version
        return [GenResult(request_id=r.request_id, sample_index=i, prompt_token_ids=prompt, response_token_ids=toks,
                          response_logprobs=[-(v + 1) / 10] * len(toks), text=self.decode(toks),
                          finish_reason="length" if len(toks) == r.sampling.max_tokens else "abort",
                          stop_reason=None, policy_version=v)
                for r, i, prompt, toks in live]

    def decode(self, token_ids: list[int]) -> str:
        return bytes(token_ids).decode(errors="ignore")

    def stream(self) -> StandInStream:
        self.last_stream = StandInStream(self)
        return self.last_stream


class StandInStream:
    """RolloutEngine's EngineStream contract over a StandInEngine, written as its
    `generate_interruptible` writes: one token per live sample per step, each
    ord("a") + the version generating it, every sample running to its max_tokens; a
    sample started under a version the engine no longer serves is returned cut. Records
    the live samples of every step (`batch_sizes`)."""

    def __init__(self, engine: StandInEngine) -> None:
        self.engine = engine
        self._live: dict[tuple[str, int], tuple[GenRequest, list[int], list[int], int]] = {}
        self.batch_sizes: list[int] = []

    @property
    def live(self) -> int:
        return len(self._live)

    def add(self, r: GenRequest) -> None:
        if r.request_id in self.engine.refuse:
            raise SamplingSpecError(f"request {r.request_id!r}", r.request_id, "refused by the stand-in")
        if any(rid == r.request_id for rid, _ in self._live):
            raise SamplingSpecError("request_id", r.request_id, "already live in this stream")
        prompt = r.prompt_token_ids or list((r.prompt or "?").encode()[:8])
        for i in range(r.sampling.n):
            self._live[(r.request_id, i)] = (r, prompt, [], self.engine.policy_version)
        self.engine.served.append((r.request_id, self.engine.policy_version))

    def _result(self, key: tuple[str, int], finish: str) -> GenResult:
        r, prompt, toks, v = self._live.pop(key)
        return GenResult(request_id=r.request_id, sample_index=key[1], prompt_token_ids=prompt,
                         response_token_ids=toks, response_logprobs=[-(v + 1) / 10] * len(toks),
                         text=self.engine.decode(toks), finish_reason=finish, stop_reason=None, policy_version=v)

    def step(self) -> list[GenResult]:
        if not self._live:
            return []
        now = self.engine.policy_version
        old = [k for k, (_, _, _, v) in self._live.items() if v != now]
        if old:
            return [self._result(k, "abort") for k in old]
        if self.engine.step_hook is not None:
            self.engine.step_hook(len(self.batch_sizes))
        self.batch_sizes.append(len(self._live))
        time.sleep(self.engine.step_s)
        done = []
        for key, (r, _, toks, v) in list(self._live.items()):
            toks.append(ord("a") + v)
            if len(toks) >= r.sampling.max_tokens:
                done.append(self._result(key, "length"))
        return done

    def abort(self) -> list[GenResult]:
        if self._live:
            self.engine.interrupted_calls += 1
        return [self._result(k, "abort") for k in list(self._live)]


class StandInLearner:
    """Stand-in for peirce.actors.learner.Learner: DeepSpeed is too slow for a unit test
    (the slow e2e tests run the real learner). The verbs the driver calls (train, sft,
    save, load, close, weight_endpoint), each train or sft adding 1 to the policy
    version and publishing it over a real WeightPublisher (inproc), so the rollout
    engines really wait for and load each version. Records what it was given."""

    def __init__(self, version: int = 0, train_s: float = 0.0) -> None:
        self.version = version
        self.train_s = train_s  # how long a train step takes (lets generation overlap it)
        self.publisher = WeightPublisher(inproc_endpoint("weights"), ack_timeout=10.0)
        self.batches: list[tuple[int, list[ScoredSample]]] = []  # (version trained under, samples)
        self.steps: list[tuple[str, int]] = []  # ("rl" | "sft", policy version after it)
        self.sft_sizes: list[int] = []
        self.saved: dict[str, dict[str, Any]] = {}  # checkpoint dir -> driver state

    def weight_endpoint(self) -> str:
        return self.publisher.endpoint

    def _step(self, kind: str) -> dict[str, float]:
        self.version += 1
        self.publisher.publish({"w": torch.full((4,), float(self.version))}, self.version)
        self.steps.append((kind, self.version))
        return {"policy_version": self.version, "loss": 0.0}

    def train(self, payload: list[bytes]) -> dict[str, float]:
        scored = [m for m in unpack_messages(payload) if isinstance(m, ScoredSample)]
        self.batches.append((self.version, scored))
        time.sleep(self.train_s)
        return {**self._step("rl"), "tokens": float(sum(len(s.sample.response_token_ids) for s in scored))}

    def sft(self, examples: list, lr: float | None = None) -> dict[str, float]:
        self.sft_sizes.append(len(examples))
        return self._step("sft")

    def save(self, directory: str, extra_state: dict[str, Any]) -> str:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "driver_state.json").write_text(json.dumps(extra_state))
        self.saved[directory] = extra_state
        return directory

    def load(self, directory: str) -> dict[str, Any]:
        state = json.loads((Path(directory) / "driver_state.json").read_text())
        self.version = int(state["policy_version"])
        return state

    def close(self) -> None:
        self.publisher.close()


class ThreadRolloutWorker:
    """peirce.actors.rollout_worker.RolloutWorker without vLLM or Ray: a WeightsInbox, a
    RolloutLoop over `engine` on a LoopThread, and the actor's `alive` / `drain` verbs."""

    def __init__(self, engine: StandInEngine, endpoint: str, weight_endpoint: str, worker_id: str, *,
                 prompt_style: str = "reference", prompts_per_step: int = 2, interrupt_on_new_weights: bool = False,
                 max_interrupts: int = 2, continuous: bool = False) -> None:
        self.engine = engine
        self.inbox = WeightsInbox(weight_endpoint, worker_id, engine.policy_version)
        self.loop = RolloutLoop(engine, endpoint, self.inbox, worker_id=worker_id, prompt_style=prompt_style,
                                prompts_per_step=prompts_per_step, catch_up_s=0.2, version_wait_s=20.0,
                                interrupt_on_new_weights=interrupt_on_new_weights, max_interrupts=max_interrupts,
                                continuous=continuous)
        self.thread = LoopThread(self.loop.run, f"{worker_id}-loop")

    def alive(self) -> bool:
        if self.engine.dead:
            raise RuntimeError("the stand-in engine's process exited; this worker cannot generate")
        return self.thread.alive()

    def drain(self, timeout_s: float = 20.0) -> int:
        self.loop.stop_event.set()
        self.thread.join(timeout_s)
        self.inbox.close()
        return self.loop.generated_groups


@dataclass
class InprocRun:
    """A Topology of threads, and what a test inspects afterwards."""

    topology: Topology
    learner: StandInLearner
    engines: dict[str, StandInEngine] = field(default_factory=dict)  # worker id -> its engine
    workers: dict[str, Any] = field(default_factory=dict)  # every worker ever spawned, by id


def inproc_topology(cfg: TrainConfig, learner: StandInLearner | None = None,
                    engine: Callable[[str], StandInEngine] = lambda wid: StandInEngine(),
                    ping_every_s: float = 0.1) -> InprocRun:
    """Both pools at the configured sizes, as build_topology starts them, but on threads."""
    learner = learner or StandInLearner()
    engines: dict[str, StandInEngine] = {}
    workers: dict[str, Any] = {}
    calls = ThreadCalls()
    rollout_dispatch = WorkDispatcher(endpoint=inproc_endpoint("rollout"))
    reward_dispatch = WorkDispatcher(endpoint=inproc_endpoint("reward"))

    def rollout(wid: str) -> ThreadRolloutWorker:
        engines[wid] = engine(wid)
        workers[wid] = ThreadRolloutWorker(engines[wid], rollout_dispatch.endpoint, learner.weight_endpoint(), wid,
                                           prompt_style=cfg.tasks.prompt_style,
                                           prompts_per_step=cfg.rollout.prompts_per_step,
                                           interrupt_on_new_weights=cfg.rollout.interrupt_on_new_weights,
                                           max_interrupts=cfg.rollout.max_interrupts,
                                           continuous=cfg.rollout.continuous)
        return workers[wid]

    def reward(wid: str) -> RewardWorker:
        workers[wid] = RewardWorker(reward_dispatch.endpoint, cfg.name, wid, cfg.reward.name, reward_scheme(cfg))
        return workers[wid]

    pools = [WorkerPool(role, spawn, on_dead=requeue_on_death(cfg.name, d), ping_every_s=ping_every_s, calls=calls)
             for role, spawn, d in (("rollout", rollout, rollout_dispatch), ("reward", reward, reward_dispatch))]
    pools[0].resize(cfg.rollout.workers)
    pools[1].resize(cfg.reward.workers)
    return InprocRun(Topology(learner, rollout_dispatch, reward_dispatch, *pools, calls=calls), learner, engines,
                     workers)


def task_items(n: int, prefix: str = "t", **msg: Any) -> dict[str, list[bytes]]:
    """`n` rollout work items (one TaskMsg each, on "uppercase" tasks), by item id."""
    tasks = generate_dataset("uppercase", 1, n, "train", seed=0)
    return {f"{prefix}{i}": [bytes(memoryview(f)) for f in pack_messages([TaskMsg(task=t, group_id=f"{prefix}{i}", **msg)])]
            for i, t in enumerate(tasks)}


def pump_until(dispatcher: WorkDispatcher, done: Callable[[dict[str, list]], bool], *,
               into: dict[str, list] | None = None, also: Callable[[], Any] | None = None,
               timeout_s: float = 15.0) -> dict[str, list]:
    """Pump until `done(results)`; returns the results, added to `into` when given (an item
    delivered twice fails). `also`: called every round (a pool's `reap`)."""
    results: dict[str, list] = {} if into is None else into
    deadline = time.monotonic() + timeout_s
    while not done(results):
        assert time.monotonic() < deadline, f"not done after {timeout_s}s; results so far: {sorted(results)}"
        for item_id, payload in dispatcher.pump(10):
            assert item_id not in results, f"{item_id} delivered twice"
            results[item_id] = payload
        if also is not None:
            also()
    return results


def publish_mid_generation(engine: StandInEngine, learner: StandInLearner, worker: ThreadRolloutWorker,
                           at_step: int = 4) -> threading.Event:
    """Make the learner publish its next version before the engine's decode step `at_step`
    (on the rollout loop's thread, so the version is in the worker's inbox before that step
    decodes); the event is set once it is."""
    published = threading.Event()

    def hook(step: int) -> None:
        if step == at_step and not published.is_set():
            learner._step("rl")  # over the real publisher; its ack comes from the inbox thread
            assert worker.inbox.wait_for(learner.version, timeout_s=10)
            published.set()

    engine.step_hook = hook
    return published


def serve_items(dispatcher: WorkDispatcher, items: dict[str, list[bytes]], worker: ThreadRolloutWorker,
                learner: StandInLearner, timeout_s: float = 20.0) -> dict[str, list]:
    """Submit every item, pump until all are answered, then drain the worker and close the learner."""
    try:
        for item_id, payload in items.items():
            dispatcher.submit(item_id, payload)
        return pump_until(dispatcher, lambda r: len(r) == len(items), timeout_s=timeout_s)
    finally:
        worker.drain()
        learner.close()


def serve_loop(engine: Any, items: dict[str, list[bytes]], timeout_s: float = 300.0,
               **loop_kw: Any) -> tuple[RolloutLoop, dict[str, list], bool]:
    """Run a bare RolloutLoop thread (loopback dispatcher, idle publisher) until every item is
    answered; (loop, results, whether the loop was still alive then)."""
    d = WorkDispatcher()
    pub = WeightPublisher()
    inbox = WeightsInbox(pub.endpoint, "rollout-test", version=0)
    loop = RolloutLoop(engine, d.endpoint, inbox, worker_id="rollout-test", prompt_style="reference",
                       prompts_per_step=len(items), catch_up_s=0.1, **loop_kw)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        for item_id, payload in items.items():
            d.submit(item_id, payload)
        results = pump_until(d, lambda r: len(r) == len(items), timeout_s=timeout_s)
        alive = thread.is_alive()
    finally:
        loop.stop_event.set()
        thread.join(timeout=30)
        inbox.close()
        pub.close()
        d.close()
    return loop, results, alive
