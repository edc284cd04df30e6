"""A rollout engine loading straight from the learner's shared-memory file
(`weight_sync.strategy: shm`), and an engine running in-process; real vLLM, tiny model.

The shared load must serve exactly what a copying load of the same tensors serves; a torn
read (the learner repacked the file during the load) must leave the engine refusing to
generate until a whole version is in."""

from __future__ import annotations

import threading

import pytest
import torch

from peirce.transport.shm_sync import ShmWeightPublisher, ShmWeightSubscriber

pytestmark = pytest.mark.vllm

PROMPT = [5, 17, 99, 3, 42, 7, 64, 12]
RESPONSE = [11, 23, 5, 8, 19, 77, 2, 31, 40, 9]


def _scaled(state: dict[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    return {k: (v.float() * factor).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}


class _Link:
    """A shared-memory publisher and one subscriber receiving on a thread per publish."""

    def __init__(self) -> None:
        self.pub = ShmWeightPublisher("tcp://127.0.0.1:*", bucket_bytes=1 << 20)
        self.sub = ShmWeightSubscriber(self.pub.endpoint, name="eng", version=0)

    def send(self, state: dict[str, torch.Tensor], version: int):
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("v", self.sub.receive(timeout=20)))
        t.start()
        assert self.pub.publish(state, version, timeout=20).acked == ["eng"]
        t.join(25)
        assert got.get("v") is not None and got["v"][0] == version
        return got["v"][1]

    def close(self) -> None:
        self.sub.close()
        self.pub.close()


@pytest.fixture
def link():
    ln = _Link()
    yield ln
    ln.close()


def test_a_shared_load_serves_what_a_copying_load_of_the_same_tensors_serves(engine, tiny_state, link):
    state = _scaled(tiny_state, 1.1)
    shared = link.send(state, engine.policy_version + 1)
    stats = engine.load_shared(shared)
    assert stats.via == "shared" and stats.write_seconds == 0.0 and engine.reload_breakdown()["path"] == "direct"
    via_shared = engine.sequence_logprobs(PROMPT, RESPONSE)
    engine.load_weights(list(tiny_state.items()), engine.policy_version + 1)
    original = engine.sequence_logprobs(PROMPT, RESPONSE)
    engine.load_weights(list(state.items()), engine.policy_version + 1)
    via_copy = engine.sequence_logprobs(PROMPT, RESPONSE)
    assert via_shared == via_copy and via_shared != original


def test_a_torn_shared_load_is_refused_and_the_engine_serves_nothing_until_a_whole_version(engine, tiny_state,
                                                                                           link):
    from peirce.rollout.engine import GenRequest, SamplingSpec, TornWeights

    base = engine.policy_version
    first = link.send(_scaled(tiny_state, 0.9), base + 1)
    link.send(_scaled(tiny_state, 0.95), base + 2)
    newest = link.send(_scaled(tiny_state, 1.05), base + 3)  # repacks the first version's file
    with pytest.raises(TornWeights, match="changed during the load"):
        engine.load_shared(first)
    request = GenRequest(request_id="r", prompt_token_ids=PROMPT, sampling=SamplingSpec(max_tokens=4))
    with pytest.raises(TornWeights, match="torn"):
        engine.generate([request])
    assert engine.policy_version == base
    engine.load_shared(newest)
    assert engine.policy_version == base + 3 and len(engine.generate([request])[0].response_token_ids) == 4
    engine.load_weights(list(tiny_state.items()), engine.policy_version + 1)


def test_an_in_process_engine_samples_what_a_separate_one_does_and_spawns_no_process(engine, tiny_dir, tiny_state):
    import psutil

    from peirce.rollout.engine import GenRequest, RolloutEngine, SamplingSpec

    engine.load_weights(list(tiny_state.items()), engine.policy_version + 1)
    request = GenRequest(request_id="r", prompt_token_ids=PROMPT,
                         sampling=SamplingSpec(n=2, max_tokens=12, temperature=1.0, seed=3, logprobs=True))
    expected = [r.response_token_ids for r in engine.generate([request])]
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with RolloutEngine(tiny_dir, dtype="bfloat16", max_model_len=512, seed=0, kv_cache_gib=1,
                       in_process=True) as inproc:
        assert {p.pid for p in psutil.Process().children(recursive=True)} <= before, "spawned a vLLM process"
        assert [r.response_token_ids for r in inproc.generate([request])] == expected
        before_load = inproc.sequence_logprobs(PROMPT, RESPONSE)
        inproc.load_weights(list(_scaled(tiny_state, 1.1).items()), 1)
        assert inproc.reload_breakdown()["path"] == "direct"
        after_load = inproc.sequence_logprobs(PROMPT, RESPONSE)
    engine.load_weights(list(_scaled(tiny_state, 1.1).items()), engine.policy_version + 1)
    assert after_load == engine.sequence_logprobs(PROMPT, RESPONSE) and after_load != before_load
    engine.load_weights(list(tiny_state.items()), engine.policy_version + 1)
    import gc

    import vllm.envs

    assert not vllm.envs._is_envs_cache_enabled(), "the in-process engine left vLLM's env cache on"
    assert not torch.distributed.is_initialized(), "the in-process engine left its torch.distributed group"
    assert gc.get_freeze_count() == 0, "the in-process engine left the gc heap frozen"
