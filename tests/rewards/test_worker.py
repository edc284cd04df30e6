"""RewardLoop over a real WorkDispatcher on loopback: hostile items never stop it.

Each bad item (undecodable, deeply nested, empty, unknown task, unknown reward, a
verifier returning garbage) is answered with a WorkerFault (reason, detail) or scored as a
failure, counted, and the loop goes on to score the good item sent after them all.
"""

from __future__ import annotations

import math
import threading
import time

import msgspec
import numpy as np
import pytest

from peirce.rewards.registry import RewardResult, register_reward
from peirce.rewards.worker import RewardLoop, RewardResolver
from peirce.tasks.base import Task
from peirce.tasks.dataset import generate_dataset
from peirce.testing import wrap_response
from peirce.transport.dispatch import WorkDispatcher
from peirce.transport.frames import encode
from peirce.transport.groups import pack_messages, unpack_messages
from peirce.transport.wire import RolloutSample, ScoredSample, TaskMsg

NAN_REWARD = "test-worker-nan"  # a hostile verifier, registered for real under its own name


@register_reward(NAN_REWARD)
def _nan_reward(task: Task, assistant_turn: str) -> RewardResult:
    return RewardResult(reward=math.nan, format_ok=True, correct=True)


def _sample(task: Task, completion: str) -> RolloutSample:
    return RolloutSample(task_id=task.id, family=task.family, level=task.level, group_id="g", sample_index=0,
                         prompt_token_ids=np.arange(3), response_token_ids=np.arange(2),
                         response_logprobs=np.zeros(2, np.float32), policy_version=0, completion=completion)


def _payload(task: Task, completion: str = "x") -> list[bytes]:
    frames = pack_messages([TaskMsg(task=task, group_id="g"), _sample(task, completion)])
    return [bytes(memoryview(f).cast("B")) for f in frames]


def _deep_payload(task: Task) -> list[bytes]:
    """A valid group whose task puzzle nests 100k arrays deep (RecursionError in msgspec)."""
    frames = _payload(task)
    hole = msgspec.msgpack.encode("\0hole\0")
    t = msgspec.structs.replace(task, puzzle={"n": "\0hole\0"})
    head = encode(TaskMsg(task=t, group_id="g"))[0].replace(hole, b"\x91" * 100_000 + b"\xc0")
    return [frames[0], head, *frames[2:]]


@pytest.fixture()
def dispatcher():
    d = WorkDispatcher()
    yield d
    d.close()


def _serve(d: WorkDispatcher, resolver: RewardResolver, items: dict[str, list[bytes]]):
    loop = RewardLoop(d.endpoint, resolver, credit=2, worker_id="reward-test")
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    for item_id, payload in items.items():
        d.submit(item_id, payload)
    results: dict[str, list] = {}
    deadline = time.monotonic() + 60
    while len(results) < len(items) and time.monotonic() < deadline:
        for item_id, payload in d.pump(20):
            results[item_id] = payload
    alive = thread.is_alive()
    loop.stop_event.set()
    thread.join(timeout=10)
    return loop, results, alive


def _error(payload: list) -> str | None:
    """The reason of a WorkerFault answer (read as the driver reads it), None for results."""
    from peirce.trainer.planner import WorkerError, read_result
    from peirce.transport.wire import Msg

    got = read_result(payload, Msg)
    return got.reason if isinstance(got, WorkerError) else None


def test_hostile_items_are_answered_and_the_loop_keeps_scoring(dispatcher):
    [task] = generate_dataset("deduction", 1, 1, "train", seed=0)
    unknown = msgspec.structs.replace(task, family="no-such-task")
    items = {
        "garbage": [b"\xc1\xc1"],
        "deep": _deep_payload(task),
        "empty": [msgspec.msgpack.encode([])],
        "unknown-task": _payload(unknown),
        "wrong-types": [bytes(memoryview(f).cast("B")) for f in pack_messages([_sample(task, "x")])],
        "good": _payload(task, wrap_response(task.solution_text)),
    }
    loop, results, alive = _serve(dispatcher, RewardResolver("auto"), items)
    assert alive and set(results) == set(items)
    errors = {k: _error(v) for k, v in results.items()}
    assert errors == {"garbage": "malformed", "deep": "depth", "empty": "empty", "unknown-task": "unservable",
                      "wrong-types": "type", "good": None}
    assert loop.rejects.as_dict() == {"malformed": 1, "depth": 1, "empty": 1, "unservable": 1, "type": 1}
    [scored] = unpack_messages(results["good"])
    assert isinstance(scored, ScoredSample) and scored.reward == 3.0 and scored.correct
    assert loop.scored_groups == 1


def test_unknown_reward_name_rejects_every_item_without_dying(dispatcher):
    [task] = generate_dataset("deduction", 1, 1, "train", seed=0)
    items = {f"t{i}": _payload(task) for i in range(3)}
    loop, results, alive = _serve(dispatcher, RewardResolver("no-such-reward"), items)
    assert alive and {k: _error(v) for k, v in results.items()} == {k: "unservable" for k in items}
    assert loop.rejects.as_dict() == {"unservable": 3}


def test_verifier_returning_nan_scores_the_sample_as_a_failure(dispatcher):
    [task] = generate_dataset("deduction", 1, 1, "train", seed=0)
    items = {"nan": _payload(task), "nan2": _payload(task)}
    loop, results, alive = _serve(dispatcher, RewardResolver(NAN_REWARD), items)
    assert alive and set(results) == set(items)
    for payload in results.values():
        [scored] = unpack_messages(payload)
        assert scored.reward == -3.0 and not scored.correct and not scored.format_ok
        assert "verifier error" in scored.reward_details["answer"]
    assert loop.rejects.total == 0 and loop.scored_groups == 2
