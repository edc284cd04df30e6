"""The life of a prompt group, as pure bookkeeping: admit -> rollouts -> rewards -> batch.

The driver (peirce.trainer.orchestrator) only moves bytes: it hands this planner decoded
worker results (`read_result`) and carries out the typed decisions it gets back
(`Submit` work to a queue, count a `Rejected` result, log a `Drop`). No Ray, no sockets,
no clocks, so every rule below is unit-tested (tests/trainer/test_planner.py).

Each group in the book has one `Phase`; a phase is where its next result must come
from, so a result for a group in another phase (a late duplicate, an id we retried or
dropped) is ignored.

MASA (`algorithm.meta.enabled`, peirce.masa): a prompt also gets M meta rollouts, driven
by a per-prompt `MetaPlanner` state (`Group.meta`). Its meta TaskMsg goes out under the
group id `<gid>.meta` (peirce.masa.ids), so a meta result finds its prompt and the
learner normalises the meta samples as a group of their own. Parallel mode sends both
requests at admission; sequential mode starts in Phase.META and sends the solutions
(max_tokens from the cutoff, notion hint) only once the predictions are in, or skips the
prompt when gated. The meta reward is computed here (pure, cheap) once the prompt's
solutions are scored; the prompt's batch entry is its solution samples followed by its
meta samples. With dynamic sampling each half is kept only when its rewards vary (a
zero-variance group has all-zero advantages), so an entry may hold the meta samples
alone (all solved or all failed: what the pass-rate prediction learns from) or the
solutions alone; a prompt with neither is filtered. A prompt is one admission either
way: a gated prompt leaves the book like a filtered one (`on_rejected`), a failure of
either half retries the whole prompt.

Why every result is checked here: workers are peers, and one bad answer (undecodable
frames, the wrong message type, samples of another group, the wrong count, a non-UTF-8
error reason) must cost at most a retry of that group, never the run. Each is counted
by (queue, reason) and the group is retried up to `max_attempts` times, then dropped.

Staleness: `StalenessController` (peirce.rollout.staleness) admits and gates in
"RL steps". A policy version that advances without consuming RL samples (an
interleaved SFT step: `advance_version`) is not an RL step, so the controller's clock is
`version - idle_versions`; without this, each such bump would admit one batch too many.
The bound itself is in real policy versions: a ready group older than `max_staleness`
versions is discarded before a batch is cut (with RL-only training it never is: the
controller already keeps every group within the bound).
"""

from __future__ import annotations

import base64
import collections
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union

import msgspec
import torch

from peirce.learner.advantages import dynamic_sampling_filter
from peirce.learner.overlong import all_overlong
from peirce.masa import cutoff
from peirce.masa.config import MetaConfig
from peirce.masa.expert import ExpertBuffer, ExpertExample
from peirce.masa.gating import GatingStats
from peirce.masa.ids import is_meta_group, meta_group_id, solution_group_id
from peirce.masa.plan import MetaPlanner, MetaRequest, PromptResult, PromptState, SolutionRequest, Transition
from peirce.masa.prompt import with_hint
from peirce.masa.types import Solution
from peirce.rollout.staleness import StalenessController
from peirce.seeding import group_seed
from peirce.tasks.base import Task
from peirce.transport.frames import Frame, FrameError
from peirce.transport.groups import pack_messages, unpack_messages
from peirce.transport.wire import Message, Msg, RequestSampling, RolloutSample, ScoredSample, TaskMsg, WorkerFault

if TYPE_CHECKING:
    from peirce.config import TrainConfig

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3

Queue = Literal["rollout", "reward"]


# ---------------------------------------------------------------- results, as the driver decodes them


@dataclass(frozen=True)
class Delivered:
    """A result that decoded into messages of the expected type."""

    messages: list[Any]


@dataclass(frozen=True)
class WorkerError:
    """The worker answered a WorkerFault: it could not serve the item."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Malformed:
    """A result that is not a valid answer; `reason` is a short counter key."""

    reason: str
    detail: str


Result = Union[Delivered, WorkerError, Malformed]


def read_result(payload: Sequence[Frame], expect: type[Msg]) -> Result:
    """Decode one worker result; never raises. `expect`: the message type every item must
    have; a result that is exactly one WorkerFault is the worker's refusal."""
    try:
        messages: list[Message] = unpack_messages(payload)
    except FrameError as err:
        return Malformed(err.reason, err.detail)
    except Exception as exc:  # noqa: BLE001 - a frame without the buffer protocol, or a decoder bug
        return Malformed("malformed", f"{type(exc).__name__}: {exc}"[:200])
    if len(messages) == 1 and isinstance(messages[0], WorkerFault):
        return WorkerError(messages[0].reason, messages[0].detail)
    wrong = [type(m).__name__ for m in messages if not isinstance(m, expect)]
    if wrong:
        return Malformed("type", f"expected only {expect.__name__} (or one WorkerFault), got {sorted(set(wrong))}")
    return Delivered(messages)


# ---------------------------------------------------------------- decisions the driver carries out


@dataclass(frozen=True)
class Submit:
    """Send `messages` (one work item) to `queue` under `gid`."""

    queue: Queue
    gid: str
    messages: tuple[Msg, ...]


@dataclass(frozen=True)
class Retry:
    """`old_gid` failed (`why`); its task goes out again as `submit` (attempt + 1)."""

    old_gid: str
    why: str
    submit: Submit


@dataclass(frozen=True)
class Drop:
    """`gid` leaves the book without training: `failed` (out of attempts) or `stale`."""

    gid: str
    task_id: str
    kind: Literal["failed", "stale"]
    why: str


@dataclass(frozen=True)
class Rejected:
    """A result from `queue` for `gid` was malformed: count it by `reason`."""

    queue: Queue
    gid: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Accepted:
    gid: str


@dataclass(frozen=True)
class Filtered:
    """A group that would add no gradient (zero reward variance under dynamic sampling, or
    every sample masked by overlong filtering), so it makes room for another group."""

    gid: str
    task_id: str = ""
    why: str = "zero reward variance (dynamic sampling)"  # FILTER_NO_VARIANCE


@dataclass(frozen=True)
class Ignored:
    """A result for a group not in the book or not in that phase (retried, dropped, late)."""

    gid: str
    queue: Queue


@dataclass(frozen=True)
class Gated:
    """MASA sequential mode: the meta predictions agreed on a zero-variance group, so the
    prompt's solutions are skipped (it leaves the book, making room for another; the
    driver logs it in drops.jsonl, so ledger and drops still account for every task)."""

    gid: str
    task_id: str = ""


Decision = Union[Submit, Retry, Drop, Rejected, Accepted, Filtered, Ignored, Gated]


# ---------------------------------------------------------------- the book


class Phase(enum.Enum):
    META = "meta"  # MASA sequential: only the meta rollouts are out; solutions wait for predictions
    ROLLOUT = "rollout"  # TaskMsg out to a rollout worker
    REWARD = "reward"  # its samples out to a reward worker
    SCORED = "scored"  # MASA parallel: solutions scored, the meta rollouts still out
    READY = "ready"  # scored and accepted, waiting for a batch
    TRAINING = "training"  # in the batch the learner is training on


@dataclass
class Group:
    msg: TaskMsg
    phase: Phase
    key: int  # the controller's clock at admission (== msg.policy_version_at_dispatch without SFT bumps)
    samples: list[RolloutSample] = field(default_factory=list)
    scored: list[ScoredSample] = field(default_factory=list)
    meta: MetaTrack | None = None  # MASA only


@dataclass
class MetaTrack:
    """A MASA prompt's meta half. `msg`: the meta TaskMsg while its rollouts are out."""

    state: PromptState
    msg: TaskMsg | None = None
    samples: list[RolloutSample] = field(default_factory=list)
    result: PromptResult | None = None


@dataclass
class MetaCounters:
    """MASA numbers since the last learner step (`GroupPlanner.take_meta_counters`).

    Token savings are *budgets* (max_tokens x rollouts), an upper bound on the tokens a
    solution would have generated: gating saves G x the prompt's would-be cap. (The
    cutoff's saving belongs to the groups a step trains: `cutoff_savings`.)"""

    gated: int = 0  # prompts whose solutions were skipped
    audited: int = 0  # gated prompts solved anyway
    saved_by_gating: int = 0


class TaskFeed(Protocol):
    """What admission reads from the curriculum (peirce.trainer.task_source.TaskSource)."""

    @property
    def done(self) -> bool: ...

    def next_task(self) -> Task | None: ...


@dataclass(frozen=True)
class PlanConfig:
    max_staleness: int
    prompts_per_step: int
    n_samples: int
    sampling: RequestSampling
    dynamic_sampling: bool = False
    overlong_filter: bool = False  # algorithm.overlong_filter: a group whose every solution was cut off is filtered
    max_attempts: int = MAX_ATTEMPTS
    meta: MetaConfig | None = None  # MASA, when algorithm.meta.enabled (n_samples is then meta.solution_rollouts)
    seed: int = 0  # trainer.seed: fixes group sampling seeds and (MASA) which gated prompts are audited
    seeded: bool = True  # give every group its own sampling seed (rollout.seeded)

    @classmethod
    def from_train_config(cls, cfg: TrainConfig) -> PlanConfig:
        rc, meta = cfg.rollout, cfg.algorithm.meta
        return cls(max_staleness=cfg.async_.max_staleness, prompts_per_step=rc.prompts_per_step,
                   n_samples=meta.solution_rollouts if meta.enabled else rc.n_samples,
                   dynamic_sampling=cfg.algorithm.dynamic_sampling,
                   overlong_filter=cfg.algorithm.overlong_filter,
                   sampling=RequestSampling(temperature=rc.temperature, top_p=rc.top_p, top_k=rc.top_k,
                                            max_tokens=rc.max_tokens),
                   meta=meta if meta.enabled else None, seed=cfg.trainer.seed, seeded=rc.seeded)


class _RLClock:
    def __init__(self, planner: GroupPlanner) -> None:
        self._planner = planner

    def get_version(self) -> int:
        return self._planner.version - self._planner.idle_versions


class GroupPlanner:
    """The in-flight book of one run and every decision about its groups."""

    def __init__(self, cfg: PlanConfig, version: int = 0) -> None:
        self.cfg = cfg
        self.version = version  # the learner's policy version
        self.idle_versions = 0  # versions that consumed no RL batch (interleaved SFT steps)
        self.staleness = StalenessController(cfg.max_staleness, cfg.prompts_per_step, _RLClock(self))
        self.groups: dict[str, Group] = {}  # admitted, not yet trained (insertion = checkpoint order)
        self.ready: collections.deque[str] = collections.deque()  # accepted gids, in acceptance order
        self.seq = 0
        self.dropped_groups = 0  # zero-variance (dynamic sampling)
        self.failed_groups = 0  # out of attempts
        self.stale_groups = 0  # older than max_staleness before a batch took them
        self.rejected: collections.Counter[tuple[str, str]] = collections.Counter()  # (queue, reason)
        self.meta_planner: MetaPlanner | None = None
        if cfg.meta is not None:
            if cfg.sampling.max_tokens is None:
                raise ValueError("PlanConfig.sampling.max_tokens: MASA needs the run's response limit, got None")
            self.meta_planner = MetaPlanner(cfg.meta, seed=cfg.seed, default_max_tokens=cfg.sampling.max_tokens)
        self.gating = GatingStats()  # cumulative over the run (checkpointed)
        self.meta_counters = MetaCounters()
        self.expert = ExpertBuffer(cfg.meta.expert) if cfg.meta is not None else None
        self._resumed: dict[str, tuple[PromptState, list[RolloutSample]]] = {}  # task id -> mid-sequence state
        self.resumed_meta_restarted = 0  # resumed prompts whose checkpointed meta samples were too stale

    # -- admission ----------------------------------------------------------------------
    def admit(self, source: TaskFeed) -> list[Submit]:
        """As many new groups as the staleness controller allows now."""
        out: list[Submit] = []
        while not source.done and self.staleness.try_admit(1):
            task = source.next_task()
            if task is None:
                self.staleness.on_rejected(self._clock())
                break
            gid = f"g{self.seq:08d}"
            self.seq += 1
            msg = TaskMsg(task=task, group_id=gid, n_samples=self.cfg.n_samples,
                          sampling=self._sampling(task, "solve"), policy_version_at_dispatch=self.version)
            group = Group(msg=msg, phase=Phase.ROLLOUT, key=self._clock())
            self.groups[gid] = group
            if self.meta_planner is None:
                out.append(Submit("rollout", gid, (msg,)))
            else:
                out.extend(self._start_meta(gid, group))
        return out

    def _sampling(self, task: Task, phase: str, max_tokens: int | None = None) -> RequestSampling:
        """The run's sampling settings for one request of `task`'s `phase`, with its own seed."""
        base = self.cfg.sampling
        return msgspec.structs.replace(
            base, max_tokens=base.max_tokens if max_tokens is None else max_tokens,
            seed=group_seed(self.cfg.seed, task.id, phase) if self.cfg.seeded else None)

    # -- MASA ---------------------------------------------------------------------------
    def _start_meta(self, gid: str, group: Group, step: int | None = None) -> list[Decision]:
        """A fresh MetaPlanner state for `group` (or the checkpointed one of its task)."""
        assert self.meta_planner is not None
        resumed = self._resumed.pop(group.msg.task.id, None)
        if resumed is not None and resumed[1]:
            # The checkpointed meta samples keep the versions that generated them: too old
            # for max_staleness now, they are dropped and the meta phase runs again; else the
            # group is dated by its oldest sample, so `_drop_stale` bounds it from there.
            oldest = min(s.policy_version for s in resumed[1])
            if oldest < self.version - self.cfg.max_staleness:
                self.resumed_meta_restarted += 1
                log.info("resumed prompt %s: its meta samples (policy version %d) are older than "
                         "max_staleness %d allows at version %d; making them again", group.msg.task.id,
                         oldest, self.cfg.max_staleness, self.version)
                resumed = None
            else:
                group.msg = msgspec.structs.replace(
                    group.msg, policy_version_at_dispatch=min(oldest, group.msg.policy_version_at_dispatch))
        if resumed is not None:
            state = msgspec.structs.replace(resumed[0], prompt_id=gid)
            group.meta = MetaTrack(state=state, samples=[msgspec.structs.replace(s, group_id=meta_group_id(gid))
                                                         for s in resumed[1]])
            transition = Transition(state=state, requests=self.meta_planner.requests(state))
        else:
            step = self._clock() if step is None else step
            transition = self.meta_planner.start(gid, group.msg.task.puzzle_text, step)
            group.meta = MetaTrack(state=transition.state)
        group.phase = Phase.META
        return self._meta_transition(gid, group, transition)

    def _meta_transition(self, gid: str, group: Group, t: Transition) -> list[Decision]:
        """Carry one MetaPlanner transition into the book: send its requests, finish or gate."""
        meta = group.meta
        assert meta is not None and self.meta_planner is not None
        meta.state = t.state
        out: list[Decision] = []
        task = group.msg.task
        for req in t.requests:
            if isinstance(req, MetaRequest):
                meta.msg = TaskMsg(task=task, group_id=meta_group_id(gid), n_samples=req.n,
                                   sampling=self._sampling(task, "meta", req.max_tokens), phase="meta",
                                   prompt=req.prompt, attempt=group.msg.attempt,
                                   policy_version_at_dispatch=group.msg.policy_version_at_dispatch)
                out.append(Submit("rollout", meta.msg.group_id, (meta.msg,)))
            elif isinstance(req, SolutionRequest):
                group.msg = msgspec.structs.replace(
                    group.msg, n_samples=req.n, sampling=self._sampling(task, "solve", req.max_tokens),
                    prompt=with_hint(group.msg.task.puzzle_text, req.hint) if req.hint else None)
                group.phase = Phase.ROLLOUT
                out.append(Submit("rollout", gid, (group.msg,)))
        if t.result is not None:
            out.extend(self._meta_finished(gid, group, t.result))
        return out

    def _meta_finished(self, gid: str, group: Group, result: PromptResult) -> list[Decision]:
        meta, mcfg = group.meta, self.cfg.meta
        assert meta is not None and mcfg is not None and result.gate is not None
        state = meta.state
        if not result.groups:  # gated and not audited: the solutions are never made
            self.gating = self.gating.record(True, None)
            assert state.predictions is not None and self.meta_planner is not None
            cap = cutoff.solution_max_tokens([p.solution_length for p in state.predictions], mcfg.cutoff,
                                             self.meta_planner.default_max_tokens)
            self.meta_counters.gated += 1
            self.meta_counters.saved_by_gating += mcfg.solution_rollouts * cap
            del self.groups[gid]
            self.staleness.on_rejected(group.key)
            return [Gated(gid, group.msg.task.id)]
        if result.gate.enforced and result.gate.gated:  # audited
            self.meta_counters.gated += 1
            self.meta_counters.audited += 1
        self.gating = self.gating.record(result.gate.gated, result.gate.zero_var)
        if self.expert is not None:
            self.expert.add(result.expert)
        meta.result = result
        meta_group = next(g for g in result.groups if g.kind == "meta")
        truth = sum(bool(s.correct) for s in group.scored) / len(group.scored)
        assert state.predictions is not None
        def abs_error(pass_rate: int | None) -> float | None:
            return None if pass_rate is None else abs(pass_rate / mcfg.k - truth)

        meta_scored = [
            ScoredSample(sample=s, reward=reward, correct=False, format_ok=p.found,
                         reward_details={"kind": "meta", "length": r.length, "pass_rate": r.pass_rate,
                                         "notions": r.notions,
                                         "abs_error": abs_error(p.pass_rate)})
            for s, reward, r, p in zip(meta.samples, meta_group.rewards, result.meta_rewards, state.predictions)]
        # Per GRPO group: a half that would add no gradient (no reward variance under
        # dynamic sampling, or every solution cut off under overlong filtering) leaves the
        # batch; its solutions have still scored the meta rollouts.
        reasons = [self._filter_reason(h) for h in (group.scored, meta_scored)]
        scored = [s for h, why in zip((group.scored, meta_scored), reasons) if not why for s in h]
        if not scored:
            del self.groups[gid]
            self.staleness.on_rejected(group.key)
            self.dropped_groups += 1
            return [Filtered(gid, group.msg.task.id, "; ".join(dict.fromkeys(reasons)))]
        group.scored, group.phase = scored, Phase.READY
        self.staleness.on_accepted(group.key)
        self.ready.append(gid)
        return [Accepted(gid)]

    def _on_meta_rollouts(self, meta_gid: str, result: Result) -> list[Decision]:
        gid = solution_group_id(meta_gid)
        group = self.groups.get(gid)
        if group is None or group.meta is None or group.meta.msg is None or group.meta.msg.group_id != meta_gid:
            return [Ignored(meta_gid, "rollout")]
        if not isinstance(result, Delivered):
            return self._failed(gid, "rollout", result)
        problem = _check_samples(group.meta.msg, result.messages)
        if problem:
            return self._failed(gid, "rollout", Malformed("group", problem))
        assert self.meta_planner is not None
        group.meta.samples = sorted(result.messages, key=lambda s: s.sample_index)
        group.meta.msg = None
        t = self.meta_planner.on_meta(group.meta.state, [s.completion for s in group.meta.samples])
        return self._meta_transition(gid, group, t)

    def _on_meta_solutions(self, gid: str, group: Group) -> list[Decision]:
        assert group.meta is not None and self.meta_planner is not None
        solutions = [Solution(response=s.sample.completion, correct=bool(s.correct),
                              length=len(s.sample.response_token_ids)) for s in group.scored]
        t = self.meta_planner.on_solutions(group.meta.state, solutions, [s.reward for s in group.scored])
        if t.result is None:
            group.phase = Phase.SCORED  # parallel: the meta rollouts are still out
        return self._meta_transition(gid, group, t)

    def take_meta_counters(self) -> MetaCounters:
        """The MASA counters since the last call (one learner step's worth)."""
        out, self.meta_counters = self.meta_counters, MetaCounters()
        return out

    def solution_caps(self, batch: list[list[ScoredSample]]) -> list[int]:
        """max_tokens of each solution request in `batch` (call before on_trained)."""
        return [cap for cap, _ in self._caps_and_sizes(batch)]

    def cutoff_savings(self, batch: list[list[ScoredSample]]) -> int:
        """The token budget the length cutoff took off `batch`'s solution requests:
        n x (rollout.max_tokens - cap) per group (call before on_trained). Counted per
        trained group, not per finished prompt, so a step's figure describes the same
        groups as its `meta/solution_max_tokens_*` whatever order results arrived in."""
        if self.meta_planner is None:
            return 0
        full = self.meta_planner.default_max_tokens
        return sum(n * max(0, full - cap) for cap, n in self._caps_and_sizes(batch))

    def _caps_and_sizes(self, batch: list[list[ScoredSample]]) -> list[tuple[int, int]]:
        out = []
        for group in batch:
            g = self.groups.get(solution_group_id(group[0].sample.group_id))
            if g is not None and g.msg.sampling.max_tokens is not None:
                out.append((g.msg.sampling.max_tokens, g.msg.n_samples))
        return out

    # -- results ------------------------------------------------------------------------
    def on_rollout_result(self, gid: str, result: Result) -> list[Decision]:
        if self.meta_planner is not None and is_meta_group(gid):
            return self._on_meta_rollouts(gid, result)
        group = self.groups.get(gid)
        if group is None or group.phase is not Phase.ROLLOUT:
            return [Ignored(gid, "rollout")]
        if not isinstance(result, Delivered):
            return self._failed(gid, "rollout", result)
        problem = _check_samples(group.msg, result.messages)
        if problem:
            return self._failed(gid, "rollout", Malformed("group", problem))
        group.samples = sorted(result.messages, key=lambda s: s.sample_index)
        group.phase = Phase.REWARD
        return [Submit("reward", gid, (group.msg, *group.samples))]

    def _filter_reason(self, scored: Sequence[ScoredSample]) -> str:
        """Why a scored group would add no gradient ('' when it would)."""
        if self.cfg.overlong_filter and all_overlong(scored):
            return FILTER_ALL_OVERLONG
        if self.cfg.dynamic_sampling and not has_signal(scored):
            return FILTER_NO_VARIANCE
        return ""

    def on_reward_result(self, gid: str, result: Result) -> list[Decision]:
        group = self.groups.get(gid)
        if group is None or group.phase is not Phase.REWARD:
            return [Ignored(gid, "reward")]
        if not isinstance(result, Delivered):
            return self._failed(gid, "reward", result)
        problem = _check_samples(group.msg, [s.sample for s in result.messages])
        if problem:
            return self._failed(gid, "reward", Malformed("group", problem))
        scored = list(result.messages)
        if group.meta is not None:
            group.scored = sorted(scored, key=lambda s: s.sample.sample_index)
            return self._on_meta_solutions(gid, group)
        why = self._filter_reason(scored)
        if why:
            del self.groups[gid]
            self.staleness.on_rejected(group.key)
            self.dropped_groups += 1
            return [Filtered(gid, group.msg.task.id, why)]
        group.scored, group.phase = scored, Phase.READY
        self.staleness.on_accepted(group.key)
        self.ready.append(gid)
        return [Accepted(gid)]

    def _failed(self, gid: str, queue: Queue, result: WorkerError | Malformed) -> list[Decision]:
        out: list[Decision] = []
        if isinstance(result, Malformed):
            self.rejected[(queue, result.reason)] += 1
            out.append(Rejected(queue, gid, result.reason, result.detail))
            why = f"{queue} result {result.reason}: {result.detail}"
        else:
            why = f"{queue} worker: {result.reason}" + (f": {result.detail}" if result.detail else "")
        out.extend(self._retry_or_drop(gid, why))
        return out

    def _retry_or_drop(self, gid: str, why: str) -> list[Decision]:
        group = self.groups.pop(gid)
        msg = group.msg
        if msg.attempt + 1 >= self.cfg.max_attempts:
            self.staleness.on_rejected(group.key)
            self.failed_groups += 1
            return [Drop(gid, msg.task.id, "failed", f"failed {self.cfg.max_attempts} times, last: {why}")]
        new_gid = f"{gid}r{msg.attempt + 1}"
        if group.meta is not None:  # MASA: the whole prompt again, in the mode it was admitted in
            retry = TaskMsg(task=msg.task, group_id=new_gid, n_samples=self.cfg.n_samples,
                            sampling=self._sampling(msg.task, "solve"),
                            attempt=msg.attempt + 1, policy_version_at_dispatch=msg.policy_version_at_dispatch)
            fresh = Group(msg=retry, phase=Phase.ROLLOUT, key=group.key)
            self.groups[new_gid] = fresh
            submits = self._start_meta(new_gid, fresh, step=group.meta.state.step)
            first = next(d for d in submits if isinstance(d, Submit))
            return [Retry(gid, why, first), *[d for d in submits if d is not first]]
        retry = msgspec.structs.replace(msg, attempt=msg.attempt + 1, group_id=new_gid)
        self.groups[new_gid] = Group(msg=retry, phase=Phase.ROLLOUT, key=group.key)
        return [Retry(gid, why, Submit("rollout", new_gid, (retry,)))]

    # -- training -----------------------------------------------------------------------
    def next_batch(self, finishing: bool) -> tuple[list[list[ScoredSample]], list[Drop]]:
        """(the batch to train now, or [] if none may start; stale groups dropped on the way).

        Call only while no batch is training. `finishing`: nothing more will be admitted,
        so a last partial batch trains once every group in the book is ready."""
        drops = self._drop_stale()
        last_partial = finishing and bool(self.ready) and all(g.phase is Phase.READY for g in self.groups.values())
        if not (self.staleness.may_train() or last_partial):
            return [], drops
        return self._take_batch(), drops

    @staticmethod
    def _oldest_version(group: Group) -> int:
        """The oldest policy version in a ready group: its admission version, or an older
        first token (a sample's `policy_version` is the version of its first token, the
        oldest part of a partial rollout continued under newer weights)."""
        return min([group.msg.policy_version_at_dispatch, *(s.sample.policy_version for s in group.scored)])

    def _drop_stale(self) -> list[Drop]:
        floor = self.version - self.cfg.max_staleness
        oldest = {gid: self._oldest_version(self.groups[gid]) for gid in self.ready}
        stale = [gid for gid in self.ready if oldest[gid] < floor]
        out = []
        for gid in stale:
            self.ready.remove(gid)
            group = self.groups.pop(gid)
            self.staleness.on_discarded(group.key)
            self.stale_groups += 1
            out.append(Drop(gid, group.msg.task.id, "stale", f"oldest policy version {oldest[gid]} (admitted at "
                            f"{group.msg.policy_version_at_dispatch}), learner is at {self.version} "
                            f"(max_staleness {self.cfg.max_staleness})"))
        return out

    def _take_batch(self) -> list[list[ScoredSample]]:
        """The B oldest accepted groups (by admission), as the controller's gate assumed, in
        admission order: not the order results happened to arrive in, so the same groups make
        the same batch (and the same floating-point sums) in a rerun or a resumed run. Group
        ids are zero-padded admission numbers (a retry's suffix sorts right after its own)."""
        taken = sorted(self.ready, key=lambda gid: (self.groups[gid].key, gid))[: self.cfg.prompts_per_step]
        picked = set(taken)
        self.ready = collections.deque(gid for gid in self.ready if gid not in picked)
        for gid in taken:
            self.groups[gid].phase = Phase.TRAINING
        self.staleness.on_consumed(len(taken), versions=[self.groups[gid].key for gid in taken])
        return [self.groups[gid].scored for gid in taken]

    def on_trained(self, batch: list[list[ScoredSample]], policy_version: int) -> None:
        """The learner trained `batch` and now serves `policy_version`."""
        for group in batch:
            del self.groups[solution_group_id(group[0].sample.group_id)]  # MASA: an entry may be meta only
        self.version = policy_version

    def advance_version(self, policy_version: int) -> None:
        """The policy moved to `policy_version` without an RL batch (e.g. an SFT step)."""
        if policy_version < self.version:
            raise ValueError(f"policy_version: {policy_version} < current {self.version}; versions only go up")
        self.idle_versions += policy_version - self.version
        self.version = policy_version

    # -- introspection, checkpoints -----------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self.groups)

    def _clock(self) -> int:
        return self.version - self.idle_versions

    def state_dict(self) -> dict[str, Any]:
        """The driver checkpoint's planner keys: seq, staleness, in_flight (tasks to regenerate)."""
        state: dict[str, Any] = {"seq": self.seq, "staleness": self.staleness.state_dict(),
                                 "in_flight": [msgspec.to_builtins(g.msg.task) for g in self.groups.values()]}
        if self.idle_versions:
            state["idle_versions"] = self.idle_versions
        if self.meta_planner is not None:
            state["meta"] = self._meta_state_dict()
        return state

    def _meta_state_dict(self) -> dict[str, Any]:
        """MASA: gating stats, the expert buffer, and each prompt whose predictions are in
        but whose solutions are not (its PromptState and meta samples, so a resumed run
        asks for exactly the solutions it would have: same cutoff, hint and audit)."""
        mid: list[dict[str, Any]] = []
        for g in self.groups.values():
            m = g.meta
            if m is not None and m.state.predictions is not None and m.state.solutions is None and m.samples:
                frames = pack_messages(m.samples)
                mid.append({"task_id": g.msg.task.id, "state": msgspec.to_builtins(m.state),
                            "samples": [base64.b64encode(bytes(memoryview(f))).decode() for f in frames]})
        expert = self.expert.snapshot() if self.expert is not None else ()
        return {"gating": msgspec.to_builtins(self.gating), "expert": msgspec.to_builtins(expert), "mid_sequence": mid}

    def _load_meta_state(self, state: dict[str, Any]) -> None:
        if self.meta_planner is None or not state:
            return
        self.gating = msgspec.convert(state.get("gating", {}), GatingStats)
        if self.expert is not None:
            assert self.cfg.meta is not None
            self.expert = ExpertBuffer(self.cfg.meta.expert, msgspec.convert(state.get("expert", []),
                                                                             list[ExpertExample]))
        self._resumed.clear()
        for entry in state.get("mid_sequence", []):
            prompt = msgspec.convert(entry["state"], PromptState)
            samples = [m for m in unpack_messages([base64.b64decode(f) for f in entry["samples"]])
                       if isinstance(m, RolloutSample)]
            self._resumed[str(entry["task_id"])] = (prompt, samples)

    def load_state_dict(self, state: dict[str, Any]) -> list[Task]:
        """Restore from a driver checkpoint; returns the in-flight tasks to regenerate first.

        Running rollouts do not survive a restart (the controller counts them rejected);
        scored-but-untrained groups are not checkpointed either, so their accepted counts go."""
        self.seq = int(state["seq"])
        self.version = int(state.get("policy_version", self.version))
        self.idle_versions = int(state.get("idle_versions", 0))
        self.staleness.load_state_dict(state["staleness"])
        for version, count in state["staleness"].get("accepted", {}).items():
            if count:
                self.staleness.on_discarded(int(version), int(count))
        self.groups.clear()
        self.ready.clear()
        self._load_meta_state(state.get("meta", {}))
        return [msgspec.convert(t, Task) for t in state.get("in_flight", [])]


FILTER_NO_VARIANCE = "zero reward variance (dynamic sampling)"
FILTER_ALL_OVERLONG = "every sample stopped at max_tokens (overlong filtering leaves nothing under the loss)"


def has_signal(scored: Sequence[ScoredSample]) -> bool:
    """True unless the group's rewards all agree (DAPO dynamic sampling, the learner's own filter)."""
    rewards = torch.tensor([s.reward for s in scored], dtype=torch.float64)
    keep = dynamic_sampling_filter(rewards, torch.zeros(len(scored), dtype=torch.long))
    return bool(keep.any())


def _check_samples(msg: TaskMsg, samples: Sequence[RolloutSample]) -> str:
    """Why `samples` are not the answer to `msg` ('' when they are)."""
    if len(samples) != msg.n_samples:
        return f"{len(samples)} samples, the task asked for n_samples={msg.n_samples}"
    for s in samples:
        if s.group_id != msg.group_id:
            return f"sample group_id {s.group_id[:40]!r} != {msg.group_id!r}"
        if s.task_id != msg.task.id:
            return f"sample task_id {s.task_id[:40]!r} != {msg.task.id!r}"
    indices = sorted(s.sample_index for s in samples)
    if indices != list(range(msg.n_samples)):
        return f"sample_index values {indices[:8]} are not 0..{msg.n_samples - 1}"
    return ""
