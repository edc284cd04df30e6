"""Chaos: processes SIGKILLed under a live run, and what the ledger says afterwards.

One real run (Ray, vLLM on CPU, DeepSpeed, ZeroMQ; the tiny random Llama on the toy task).
An operator thread SIGKILLs, at seeded random points, a rollout worker, a reward worker and
the vLLM engine-core process under a live rollout worker, twice each, waiting after each
kill until the pool has noticed the death and the replacement registered. Then the run
must still finish (DONE), and the ledger must show: no task trained twice, none in a batch
twice, every admitted task trained or dropped with a recorded reason (drops.jsonl), and
policy versions that only go up.

Bounded: the tiny model, one rollout and one reward worker, and every wait has a timeout;
about 3-5 minutes alone on a 2-core box, mostly four vLLM restarts.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from peirce.config import TrainConfig, load_config
from peirce.config.profiles import SMOKE_TRAIN, as_overrides
from peirce.trainer.control import ControlRequest, send_control
from peirce.trainer.orchestrator import Orchestrator
from peirce.trainer.run_dir import RunDir
from peirce.trainer.task_source import TaskSource

SEED = 20261202
KILLS = ("rollout", "reward", "engine") * 2
MAX_STEPS = 20
LAST_KILL_STEP = 11  # the run outruns a slow operator by a few steps after a reward restart


def _cfg(tmp_path, name: str, **extra) -> TrainConfig:
    values = {**SMOKE_TRAIN, "name": name, "run_dir": str(tmp_path / name), **extra}
    return load_config(TrainConfig, None, as_overrides(values))


def kill_plan(seed: int) -> list[tuple[int, str, float]]:
    """(at step, what, extra delay s): the six kills in a seeded order at seeded points, all
    by step LAST_KILL_STEP so the run is still going when each one lands and recovers."""
    rng = random.Random(seed)
    kinds = list(KILLS)
    rng.shuffle(kinds)
    steps = sorted(rng.sample(range(1, LAST_KILL_STEP + 1), len(kinds)))
    return [(s, k, rng.uniform(0.0, 1.5)) for s, k in zip(steps, kinds, strict=True)]


def _pid(handle, method: str = "pid"):
    import ray

    return ray.get(getattr(handle, method).remote(), timeout=30)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.vllm
def test_sigkilled_workers_and_engines_lose_and_duplicate_nothing(ray_runtime, tmp_path):
    cfg = _cfg(tmp_path, "chaos", **{"tasks.n_per_level": 400, "trainer.max_steps": MAX_STEPS,
                                      "async.max_staleness": 1, "rollout.max_tokens": 8,
                                      # the "engine" kills need vLLM's engine core in a process of its own
                                      "rollout.engine_in_process": False})
    orch = Orchestrator(cfg, progress=False)
    plan = kill_plan(SEED)
    done: list[dict] = []  # one entry per kill that landed
    seen: dict[str, object] = {}
    engine_pids: list[int] = []  # every engine core we saw under a worker we killed or whose engine we killed

    def status() -> dict:
        return send_control(cfg.run_dir, ControlRequest(op="status"))

    def wait_for(predicate, what: str, timeout_s: float = 240) -> dict:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            state = status()
            if predicate(state):
                return state
            time.sleep(0.2)
        raise TimeoutError(f"{what} (last status {state})")

    def operator():
        try:
            wait_for(lambda s: s["rollout_registered"] == 1 and s["reward_registered"] == 1, "workers registered")
            for at_step, what, delay in plan:
                before = wait_for(lambda s, n=at_step: s["step"] >= n, f"step {at_step}")
                time.sleep(delay)
                pool = orch.reward_pool if what == "reward" else orch.rollout_pool
                wid, handle = next(iter(list(pool.workers.items())))
                if what == "engine":
                    pids = _pid(handle, "engine_pids")
                    assert len(pids) == 1, f"{wid}: expected one vLLM engine-core child, found {pids}"
                    victim = pids[0]
                else:
                    victim = _pid(handle)
                if what != "reward":
                    engine_pids.extend(_pid(handle, "engine_pids"))
                os.kill(victim, signal.SIGKILL)
                done.append({"what": what, "worker": wid, "pid": victim, "step": status()["step"]})
                wait_for(lambda s, d=before["worker_deaths"]: s["worker_deaths"] > d, f"death of {wid} noticed")
                wait_for(lambda s: s["rollout_registered"] == 1 and s["reward_registered"] == 1,
                         f"replacement of {wid} registered")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            seen["error"] = repr(exc)
            try:
                send_control(cfg.run_dir, ControlRequest(op="stop"))
            except Exception:  # noqa: BLE001 - the run may have ended already
                pass

    t = threading.Thread(target=operator, daemon=True)
    t.start()
    orch.run()
    t.join(timeout=30)
    assert "error" not in seen, (seen, done, plan)
    assert [d["what"] for d in done] == [k for _, k, _ in plan]
    assert orch.rollout_pool.deaths == 4 and orch.reward_pool.deaths == 2, (orch.status(), done)
    assert orch.rollout_pool.oom_deaths == orch.reward_pool.oom_deaths == 0

    run_dir = Path(cfg.run_dir)
    assert (run_dir / "DONE").exists(), "the run did not finish"
    rows = RunDir(run_dir).read_metrics()
    assert [r["step"] for r in rows] == list(range(1, MAX_STEPS + 1))
    versions = [r["policy_version"] for r in rows]
    assert versions == sorted(versions) and len(set(versions)) == len(versions), versions

    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    by_step = collections.defaultdict(list)
    for e in ledger:
        by_step[e["step"]].append(e["task_id"])
    assert all(len(ids) == len(set(ids)) for ids in by_step.values()), "a task twice in one batch"
    trained = [e["task_id"] for e in ledger]
    dupes = [k for k, v in collections.Counter(trained).items() if v > 1]
    assert not dupes, f"trained twice: {dupes}"
    # Every admitted task trained once, or dropped with a recorded reason (drops.jsonl).
    drops = [json.loads(line) for line in (run_dir / "drops.jsonl").read_text().splitlines()] \
        if (run_dir / "drops.jsonl").exists() else []
    assert all(d["kind"] in ("failed", "stale", "filtered") and d["why"] for d in drops), drops
    assert len([d for d in drops if d["kind"] != "stale"]) == rows[-1]["dropped_groups"] + rows[-1]["failed_groups"]
    replay = TaskSource(cfg)
    admitted = [replay.next_task().id for _ in range(len(trained) + len(drops))]
    assert set(trained) <= set(admitted), "trained a task that was never admitted"
    assert set(admitted) - set(trained) == {d["task_id"] for d in drops}, "an admitted task was lost"

    # A SIGKILLed rollout worker must not leave its vLLM engine behind (1+ GiB each).
    deadline = time.time() + 30
    while any(_alive(p) for p in engine_pids) and time.time() < deadline:
        time.sleep(1)
    assert not [p for p in engine_pids if _alive(p)], "orphaned vLLM engine-core processes"


def test_kill_plan_is_seeded_and_covers_each_kind_twice():
    plan = kill_plan(SEED)
    assert plan == kill_plan(SEED) and plan != kill_plan(SEED + 1)
    assert collections.Counter(k for _, k, _ in plan) == {"rollout": 2, "reward": 2, "engine": 2}
    steps = [s for s, _, _ in plan]
    assert steps == sorted(steps) and max(steps) <= LAST_KILL_STEP < MAX_STEPS - 5


@pytest.mark.slow
@pytest.mark.vllm
def test_learner_killed_mid_run_resumes_from_its_last_checkpoint(ray_runtime, tmp_path):
    """The learner actor is killed at a seeded point of a run that checkpoints every step:
    the run fails with the actor's death (it does not hang, and its shutdown does not raise
    over a dead learner), and `resume` continues from the last checkpoint to DONE with the
    optimizer state restored, steps and versions contiguous and no task trained twice; and
    every step equals an uncrashed run's with the same seed, exactly: each group samples from
    its own seed (trainer.seed, task id, phase), batches keep admission order, the engines
    hold the learner's weights in their own dtype, and synchronous mode (max_staleness 0)
    makes each step's inputs independent of timing."""
    from ray.exceptions import RayActorError

    values = {"tasks.n_per_level": 400, "trainer.save_every": 1, "async.max_staleness": 0, "trainer.max_steps": 7}
    cfg = _cfg(tmp_path, "crash", **values)
    shm_before = _weight_files()
    orch = Orchestrator(cfg, progress=False)
    rng = random.Random(SEED)
    kill_at, delay = rng.randint(2, 4), rng.uniform(0.0, 1.0)
    seen: dict[str, object] = {}

    def operator():
        try:
            deadline = time.time() + 240
            while send_control(cfg.run_dir, ControlRequest(op="status"))["step"] < kill_at:
                if time.time() > deadline:
                    raise TimeoutError(f"step {kill_at}")
                time.sleep(0.1)
            time.sleep(delay)
            ray_runtime.kill(orch.learner)
            seen["killed"] = True
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            seen["error"] = repr(exc)

    t = threading.Thread(target=operator, daemon=True)
    t.start()
    with pytest.raises(RayActorError):
        orch.run()
    t.join(timeout=30)
    assert seen == {"killed": True}, seen
    run_dir = Path(cfg.run_dir)
    assert not (run_dir / "DONE").exists()

    resumed = Orchestrator(cfg, resume=True, progress=False)
    at = resumed.step
    assert kill_at <= at < cfg.trainer.max_steps and resumed.version == at
    # Restored, not a fresh optimizer: one Adam step per learner step (DeepSpeed's own
    # state-allocating step at init is forgotten, see LearnerEngine)
    assert ray_runtime.get(resumed.learner.optimizer_summary.remote())["step"] == at
    # A kill inside the save window leaves step at+1's ledger lines behind checkpoint `at`;
    # resuming drops them with the metrics lines (the step is redone), else its tasks count twice.
    assert not [e for e in _read_ledger(run_dir) if e["step"] > at]
    resumed.run()
    assert (run_dir / "DONE").exists()
    # The killed learner ran no finalizer: its weight arenas in /dev/shm were swept when the
    # resumed learner made its own (their liveness lock died with it), which it removed at close.
    assert _weight_files() - shm_before == set()
    rows = RunDir(run_dir).read_metrics()
    assert [r["step"] for r in rows] == list(range(1, cfg.trainer.max_steps + 1))
    assert [r["policy_version"] for r in rows] == list(range(1, cfg.trainer.max_steps + 1))
    trained = [e["task_id"] for e in _read_ledger(run_dir)]
    assert len(trained) == len(set(trained)) == cfg.trainer.max_steps * cfg.rollout.prompts_per_step

    ref_cfg = _cfg(tmp_path, "uncrashed", **values)
    Orchestrator(ref_cfg, progress=False).run()
    ref = RunDir(Path(ref_cfg.run_dir)).read_metrics()
    assert [e["task_id"] for e in _read_ledger(Path(ref_cfg.run_dir))] == trained
    assert all(rows[0].get(k) is not None for k in ("reward_mean", "response_tokens", "loss", "tokens"))
    for mine, theirs in zip(rows, ref, strict=True):
        assert {k: mine.get(k) for k in SAME_EVERY_RUN} == {k: theirs.get(k) for k in SAME_EVERY_RUN}, (
            f"step {mine['step']} (resumed after step {at}) differs from the uncrashed run")


#: What a step computes from its inputs (not timings): equal in every run with the same seed.
SAME_EVERY_RUN = ("reward_mean", "response_tokens", "response_length_mean", "loss", "grad_norm", "kl", "entropy", "pg_loss",
                  "clip_frac", "tis_mean", "tokens", "policy_version")


def _weight_files() -> set[str]:
    from peirce.transport.shm_files import OWNED_NAME, shm_dir

    return {name for name in os.listdir(shm_dir()) if OWNED_NAME.fullmatch(name)}


def _read_ledger(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
