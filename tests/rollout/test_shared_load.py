"""A rollout engine loading straight from the learner's shared-memory file
(`weight_sync.strategy: shm`), and an engine running in-process; real vLLM, tiny model.

The shared load must serve exactly what a copying load of the same tensors serves, hold the
learner's file against a repack while vLLM's worker reads it, and refuse a version whose
file was already repacked without touching the served weights."""

from __future__ import annotations

import fcntl
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


def test_the_learners_file_cannot_be_repacked_while_the_worker_reads_it(engine, tiny_state, link, monkeypatch):
    shared = link.send(_scaled(tiny_state, 1.02), engine.policy_version + 1)
    rpc, blocked = engine._llm.collective_rpc, []

    def watched(method, *args, **kwargs):
        if method == "peirce_reload_raw":  # what the learner's next pack would try now
            with open(shared.path, "rb") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    blocked.append(False)
                except BlockingIOError:
                    blocked.append(True)
        return rpc(method, *args, **kwargs)

    monkeypatch.setattr(engine._llm, "collective_rpc", watched)
    engine.load_shared(shared)
    monkeypatch.undo()
    assert blocked == [True]
    with open(shared.path, "rb") as fh:  # and released once the load returned
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    engine.load_weights(list(tiny_state.items()), engine.policy_version + 1)


def test_a_superseded_shared_version_is_refused_and_the_engine_keeps_serving_its_own(engine, tiny_state, link):
    from peirce.rollout.engine import GenRequest, SamplingSpec
    from peirce.transport.shm_sync import VersionSuperseded

    base = engine.policy_version
    served = engine.sequence_logprobs(PROMPT, RESPONSE)
    first = link.send(_scaled(tiny_state, 0.9), base + 1)
    link.send(_scaled(tiny_state, 0.95), base + 2)
    newest = link.send(_scaled(tiny_state, 1.05), base + 3)  # repacks the first version's file
    with pytest.raises(VersionSuperseded, match="now holds version"):
        engine.load_shared(first)
    assert engine.policy_version == base and engine.sequence_logprobs(PROMPT, RESPONSE) == served
    request = GenRequest(request_id="r", prompt_token_ids=PROMPT, sampling=SamplingSpec(max_tokens=4))
    assert len(engine.generate([request])[0].response_token_ids) == 4
    engine.load_shared(newest)
    assert engine.policy_version == base + 3 and engine.sequence_logprobs(PROMPT, RESPONSE) != served
    engine.load_weights(list(tiny_state.items()), engine.policy_version + 1)


IN_PROCESS_CHECK = """
import gc, json, sys
import psutil, torch
from safetensors.torch import load_file
from peirce.rollout.engine import GenRequest, RolloutEngine, SamplingSpec

if __name__ == "__main__":
    tiny_dir, prompt, response = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    state = load_file(tiny_dir + "/model.safetensors")
    request = GenRequest(request_id="r", prompt_token_ids=prompt,
                         sampling=SamplingSpec(n=2, max_tokens=12, temperature=1.0, seed=3, logprobs=True))
    with RolloutEngine(tiny_dir, dtype="bfloat16", max_model_len=512, seed=0, kv_cache_gib=1,
                       in_process=None) as eng:  # auto, as the pipeline's evaluation: CPU, no group here
        spawned = [p.pid for p in psutil.Process().children(recursive=True)]
        chosen = eng.in_process
        tokens = [r.response_token_ids for r in eng.generate([request])]
        eng.load_weights(list(state.items()), 1)
        before = eng.sequence_logprobs(prompt, response)
        eng.load_weights([(k, (v.float() * 1.1).to(v.dtype)) for k, v in state.items()], 2)
        path = eng.reload_breakdown()["path"]
        after = eng.sequence_logprobs(prompt, response)
    import vllm.envs
    print(json.dumps({"chosen": chosen, "spawned": spawned, "tokens": tokens, "before": before, "after": after, "path": path,
                      "env_cache": vllm.envs._is_envs_cache_enabled(), "dist": torch.distributed.is_initialized(),
                      "frozen": gc.get_freeze_count()}))
"""


def test_an_in_process_engine_samples_what_a_separate_one_does_and_spawns_no_process(engine, tiny_dir, tiny_state,
                                                                                    tmp_path):
    """In a fresh process (as in a rollout worker actor): this test process may hold a DeepSpeed
    learner's torch.distributed group, which an in-process engine refuses to share."""
    import json
    import subprocess
    import sys

    from peirce.rollout.engine import GenRequest, SamplingSpec

    script = tmp_path / "in_process_check.py"
    script.write_text(IN_PROCESS_CHECK)
    run = subprocess.run([sys.executable, str(script), str(tiny_dir), json.dumps(PROMPT), json.dumps(RESPONSE)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["chosen"] is True and got["spawned"] == [], "an in-process engine spawned vLLM processes"
    request = GenRequest(request_id="r", prompt_token_ids=PROMPT,
                         sampling=SamplingSpec(n=2, max_tokens=12, temperature=1.0, seed=3, logprobs=True))
    engine.load_weights(list(tiny_state.items()), engine.policy_version + 1)
    assert got["tokens"] == [r.response_token_ids for r in engine.generate([request])]
    engine.load_weights([(k, (v.float() * 1.1).to(v.dtype)) for k, v in tiny_state.items()],
                        engine.policy_version + 1)
    assert got["path"] == "direct" and got["after"] == engine.sequence_logprobs(PROMPT, RESPONSE)
    assert got["after"] != got["before"]
    assert not got["env_cache"] and not got["dist"] and got["frozen"] == 0, "closing left vLLM's state behind"
    engine.load_weights(list(tiny_state.items()), engine.policy_version + 1)


def test_an_in_process_engine_is_refused_beside_an_existing_torch_distributed_group_and_auto_stays_out(tiny_dir, tmp_path):
    import torch.distributed as dist

    from peirce.rollout.engine import RolloutEngine

    ours = not dist.is_initialized()
    if ours:  # a one-rank gloo group, as a DeepSpeed learner in this process would have
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="already has a torch.distributed group"):
            RolloutEngine(tiny_dir, dtype="bfloat16", max_model_len=512, kv_cache_gib=1, in_process=True)
        with RolloutEngine(tiny_dir, dtype="bfloat16", max_model_len=512, kv_cache_gib=1, in_process=None) as eng:
            assert not eng.in_process  # auto: vLLM's own processes beside the group, which stays
        assert dist.is_initialized()
    finally:
        if ours:
            dist.destroy_process_group()
