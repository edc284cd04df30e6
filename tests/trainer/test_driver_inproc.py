"""`Orchestrator.run()` end to end in one process: the real driver loop, planner, dispatchers
(ZeroMQ inproc), RolloutLoops, RewardWorkers and WorkerPools, on threads through
ThreadCalls instead of Ray. vLLM and DeepSpeed stand in (StandInEngine, StandInLearner in
tests/inproc_harness.py: both are far too slow to start in a unit test); the slow
tests/trainer/test_engine_e2e.py and test_masa_e2e.py run the real ones.

What a run must account for: every admitted group trained exactly once, or dropped with
a reason in drops.jsonl; no sample older than `max_staleness` policy versions when it is
trained; policy versions that only go up. The MASA run also takes an expert SFT step
after every RL step, versions that consume no RL batch: admission must not read them as
room for more groups (GroupPlanner.advance_version, the controller's RL clock).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from inproc_harness import InprocRun, StandInEngine, StandInLearner, alternating_case, inproc_topology
from peirce.config import TrainConfig, load_config
from peirce.config.profiles import SMOKE_TRAIN, as_overrides
from peirce.masa.ids import is_meta_group, solution_group_id
from peirce.rollout.sampling import GenRequest
from peirce.trainer.orchestrator import Orchestrator

MASA_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "masa-smoke.yaml"


def _check_accounts(driver: Orchestrator, run: InprocRun) -> tuple[list[dict], list[dict]]:
    """The run's books agree with what the learner got; returns (ledger, drops)."""
    rd, s = driver.run_dir, driver.cfg.async_.max_staleness
    ledger, drops, records = rd.read_jsonl(rd.ledger_path), rd.read_jsonl(rd.drops_path), rd.read_metrics()
    trained = [gid for _, batch in run.learner.batches
               for gid in dict.fromkeys(solution_group_id(x.sample.group_id) for x in batch)]
    assert [r["group_id"] for r in ledger] == trained  # the ledger is what the learner trained, in order
    admitted = {f"g{i:08d}" for i in range(driver.planner.seq)}
    base = [gid.split("r")[0] for gid in [*trained, *(d["group_id"] for d in drops), *driver.planner.groups]]
    assert sorted(base) == sorted(admitted)  # trained once, dropped with a reason, or still in flight at the end
    assert all(d["kind"] in ("failed", "stale", "filtered") and d["why"] for d in drops)
    for version, batch in run.learner.batches:
        assert all(0 <= version - x.sample.policy_version <= s for x in batch), version
    assert all(r["staleness_max"] <= s for r in records)
    versions = [r["policy_version"] for r in records]  # each RL step's; an SFT step may follow it
    assert versions == sorted(set(versions)) == [v for k, v in run.learner.steps if k == "rl"]
    assert [v for _, v in run.learner.steps] == list(range(1, run.learner.version + 1))
    for engine in run.engines.values():
        assert engine.loaded == sorted(set(engine.loaded))
    return ledger, drops


def _stopped(run: InprocRun) -> None:
    """After run(): the driver's shutdown drained every worker it ever started."""
    assert run.topology.rollout_pool.size == run.topology.reward_pool.size == 0
    assert not [wid for wid, w in run.workers.items() if w.thread.thread.is_alive()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("continuous", [False, True], ids=["batches", "continuous"])
def test_a_run_trains_each_admitted_group_once_within_the_staleness_bound(tmp_path, continuous):
    """Two workers per role, the curriculum exhausted (8 tasks, 2 per step), one request
    refused by an engine: that group is retried under a new id and still trained."""
    cfg = load_config(TrainConfig, None, as_overrides({
        **SMOKE_TRAIN, "name": "inproc", "run_dir": str(tmp_path / "run"), "rollout.workers": 2,
        "reward.workers": 2, "trainer.max_steps": 20, "async.max_staleness": 1, "rollout.continuous": continuous}))
    run = inproc_topology(cfg, StandInLearner(train_s=0.05),
                          engine=lambda wid: StandInEngine(refuse=frozenset({"g00000003"})))
    driver = Orchestrator(cfg, progress=False, topology=run.topology)
    assert driver.run()["step"] == 4
    ledger, drops = _check_accounts(driver, run)
    assert not drops and driver.planner.in_flight == 0
    assert len({r["task_id"] for r in ledger}) == 8 and "g00000003r1" in {r["group_id"] for r in ledger}
    assert [v for v, _ in run.learner.batches] == [0, 1, 2, 3]
    assert driver.run_dir.done_path.exists()
    summary = driver.run_dir.read_summary()  # 4 of 20 steps: the curriculum ran out, and the run says so
    assert summary["status"] == "done" and "ran out before trainer.max_steps=20: 4 of 20 steps trained" \
        in summary["ended_early"]
    saved = run.learner.saved[str(driver.run_dir.latest_checkpoint())]
    assert (saved["step"], saved["policy_version"], saved["in_flight"]) == (4, 4, [])
    assert sum(w.loop.scored_groups for wid, w in run.workers.items() if wid.startswith("reward")) == 8
    # where time went: the learner trained 0.05 s a step, the engines held items part of the time
    rows = driver.run_dir.read_metrics()
    for key in ("learner_idle_ratio", "rollout_idle_ratio"):
        assert all(0.0 <= r[key] <= 1.0 for r in rows), [r[key] for r in rows]
        assert min(r[key] for r in rows) < 1.0, key
    _stopped(run)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("continuous", [False, True], ids=["batches", "continuous"])
def test_a_run_with_partial_rollouts_loses_no_sample_and_bounds_the_oldest_part(tmp_path, continuous):
    """rollout.interrupt_on_new_weights: generation (8 decode steps of 20 ms) outlasts a
    learner step (10 ms), so new versions arrive mid-batch and batches are continued under
    them. The books still balance, each trained sample is whole, the staleness of its
    OLDEST token stays within max_staleness, and metrics.jsonl counts the continued ones.
    With rollout.continuous the groups stream through the engine instead of in batches."""
    cfg = load_config(TrainConfig, None, as_overrides({
        **SMOKE_TRAIN, "name": "partial", "run_dir": str(tmp_path / "run"), "trainer.max_steps": 20,
        "async.max_staleness": 1, "rollout.interrupt_on_new_weights": True, "rollout.max_interrupts": 2,
        "rollout.continuous": continuous}))
    run = inproc_topology(cfg, StandInLearner(train_s=0.01), engine=lambda wid: StandInEngine(step_s=0.02))
    driver = Orchestrator(cfg, progress=False, topology=run.topology)
    assert driver.run()["step"] == 4
    ledger, drops = _check_accounts(driver, run)  # includes: trained version - policy_version <= max_staleness
    assert not drops and len({r["task_id"] for r in ledger}) == 8
    samples = [x.sample for _, batch in run.learner.batches for x in batch]
    assert len(samples) == 8 * cfg.rollout.n_samples  # none lost
    for x in samples:
        assert len(x.response_token_ids) == cfg.rollout.max_tokens
        assert (x.response_token_ids - ord("a")).tolist() == x.token_versions().tolist()  # each token's version
    continued = [x for x in samples if x.version_segments]
    assert continued, "no batch was interrupted: generation should outlast a learner step"
    rows = driver.run_dir.read_metrics()
    assert sum(r["interrupted_samples"] for r in rows) == len(continued)
    assert max(r["version_span_max"] for r in rows) == max(x.version_segments[-1][1] - x.policy_version
                                                           for x in continued)
    _stopped(run)


def _masa_respond(request: GenRequest, i: int) -> str:
    """A meta rollout predicts one pass in two, as the alternating solutions deliver."""
    if is_meta_group(request.request_id):
        return '<meta>half</meta>{"notions": ["upper case"], "pass_rate": 1, "solution_length": 4}'
    return alternating_case(request, i)


class WordTokenizer:
    """Stand-in for the model's tokenizer in the driver's expert SFT step (loading the real
    one means preparing the SmolLM2 folder, too slow here): one id per word."""

    eos_token_id = 0
    bos_token = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> "_Encoded":
        return _Encoded([1 + zlib.crc32(w.encode()) % 30_000 for w in text.split()])


class _Encoded(dict):
    def __init__(self, ids: list[int]) -> None:
        super().__init__(input_ids=ids)
        self.input_ids = ids


@pytest.mark.timeout(90)
def test_sft_steps_between_rl_steps_do_not_widen_admission(tmp_path):
    """MASA with an expert SFT step after every RL step: each bumps the policy version
    without consuming RL samples. The planner must count groups in flight against RL
    steps only: at most (max_staleness + 1) x prompts_per_step, however many versions
    the SFT steps add; and no trained sample is older than max_staleness versions."""
    cfg = load_config(TrainConfig, MASA_CONFIG, [f"run_dir={tmp_path / 'run'}", "trainer.max_steps=5",
                                                  "tasks.n_per_level=32",
                                                  "algorithm.meta.expert.every=1",
                                                  "algorithm.meta.meta_max_tokens=96"])  # the whole prediction
    run = inproc_topology(cfg, StandInLearner(), engine=lambda wid: StandInEngine(respond=_masa_respond))
    driver = Orchestrator(cfg, progress=False, topology=run.topology)
    driver._tokenizer = WordTokenizer()
    in_flight: list[int] = []  # groups in flight after each admission (observed; admit runs as is)
    admit = driver.planner.admit

    def watched_admit(source):
        out = admit(source)
        in_flight.append(driver.planner.in_flight)
        return out

    driver.planner.admit = watched_admit
    assert driver.run()["step"] == 5
    kinds = [k for k, _ in run.learner.steps]
    assert kinds.count("sft") >= 3 and "sft" in kinds[:3], kinds  # SFT interleaved from the start
    assert driver.planner.idle_versions == kinds.count("sft")
    bound = (cfg.async_.max_staleness + 1) * cfg.rollout.prompts_per_step
    assert max(in_flight) <= bound, in_flight
    _, drops = _check_accounts(driver, run)
    # A group admitted one RL step ahead is 2 versions old once an SFT step lands in
    # between: with max_staleness 1 it is dropped, never trained.
    assert {d["kind"] for d in drops} <= {"stale"}
    records = driver.run_dir.read_metrics()
    assert [r.get("meta/sft_policy_version") is not None for r in records].count(True) == kinds.count("sft")
    _stopped(run)
