"""The DeepSpeed learner: logprobs, reference logprobs, RL and SFT updates, checkpoints.

A plain class (no Ray) so it is tested directly; a Ray actor only wraps it. The same
code runs on CPU (gloo, the tests here) and GPU (nccl): DeepSpeed picks the accelerator.

Why these choices:
- Lean memory (a SmolLM2-135M step on 8 x 1024 tokens peaks at ~3.3 GiB RSS with activation
  checkpointing, see benchmarks/bench_learner.py):
  only the hidden states that predict response tokens go through the LM head, a few
  hundred tokens at a time with the logits recomputed in backward (`logprobs.head_logprobs`),
  so [tokens, vocab] logits are never materialised; micro-batches are cut by a token
  budget and packed padding-free (`packing`); bf16 grads are folded into DeepSpeed's fp32
  buffer as soon as each is ready (`immediate_grad_update`), and freed heap pages go back
  to the OS after every step (`memory.trim_heap`).
- Logits stay in the model dtype (bf16) and the log-softmax is taken in fp32, the usual
  compromise between memory and the precision the PPO ratio needs.
- A fused `torch.optim.AdamW` (a native torch kernel, no JIT-built DeepSpeed Adam) is handed to DeepSpeed.
- `managed_gradient_accumulation: false`: the engine, not DeepSpeed's micro-step
  counter, decides where an update ends, so a batch of any size and any number of
  token-budget micro-batches is exactly one optimizer step. Each micro-batch's loss is
  weighted by its share of the batch's response tokens (or rows) under the loss mask, so
  the accumulated gradient equals the gradient of the loss over the whole batch.
- `policy_version` lives here: every optimizer update (`train_step` or `sft_step`) adds 1,
  it is saved in the checkpoint manifest and restored by `load_checkpoint`; the Learner
  actor publishes weights under it and the orchestrator mirrors it from each step's
  metrics (`policy_version`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from peirce.learner import checkpoint as ckpt
from peirce.learner.batch import TrainBatch
from peirce.learner.dist_env import init_distributed
from peirce.learner.logprobs import DEFAULT_CHUNK_TOKENS, head_logprobs, token_logprobs
from peirce.learner.losses import sft_nll_loss
from peirce.learner.memory import MAX_MMAP_THRESHOLD, set_mmap_threshold, trim_heap
from peirce.learner.packing import PackedMicroBatch, packed_micro_batches
from peirce.learner.types import LossInputs

__all__ = ["LearnerConfig", "LearnerEngine", "LearnerError", "ResponseLogprobs", "deepspeed_config", "token_logprobs"]

log = logging.getLogger(__name__)

LossFn = Callable[[LossInputs], tuple[torch.Tensor, dict[str, Any]]]


class LearnerError(RuntimeError):
    pass


@dataclass(frozen=True)
class LearnerConfig:
    zero_stage: int = 0  # 0-3; 3 shards parameters too (gathered for sync/save)
    bf16: bool = True  # bf16 weights/activations, fp32 master weights in the optimizer
    lr: float = 1e-6
    weight_decay: float = 0.01  # not applied to 1-D parameters (norms, biases)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # global grad-norm clip; 0 disables
    warmup_steps: int = 0  # linear lr warmup over this many optimizer steps, then constant
    micro_batch_size: int = 4  # max rows per forward/backward (a packed row holds several sequences)
    # max tokens (rows x row width) per forward; None = rows only. Activations of SmolLM2-135M:
    # ~0.7 GiB per 1024 tokens, ~37 MiB with gradient_checkpointing (then 4096 fits in ~3.3 GiB RSS).
    max_tokens_per_micro: int | None = 4096
    pack_sequences: bool = True  # share rows between short sequences (False: one sequence per row)
    logits_chunk_tokens: int = DEFAULT_CHUNK_TOKENS  # tokens per LM-head chunk (peak ~2 x chunk x vocab x 4 B)
    sft_lr: float | None = None  # sft_step's learning rate when the call gives none; None = lr (no warmup)
    trim_heap: bool = True  # give freed heap pages back to the OS after each step (glibc malloc_trim)
    heap_mmap_threshold: int | None = 4 * 2**20  # fixed glibc mmap threshold, process-wide; None = glibc's
    grad_accum: int = 1  # DeepSpeed's nominal accumulation (batch-size bookkeeping only)
    micro_weighting: Literal["tokens", "samples"] = "tokens"  # how micro-batch losses are combined
    gradient_checkpointing: bool = False
    ref_model: bool = False  # keep a frozen copy of the initial policy for KL
    seed: int = 0
    sync_dtype: str = "bfloat16"  # dtype of tensors from named_parameters_for_sync
    ds_overrides: dict[str, Any] = field(default_factory=dict)  # deep-merged into the DS config

    def __post_init__(self) -> None:
        checks = [
            (self.zero_stage in (0, 1, 2, 3), "zero_stage", "must be 0, 1, 2 or 3", self.zero_stage),
            (self.lr > 0, "lr", "must be > 0", self.lr),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0", self.weight_decay),
            (all(0 <= b < 1 for b in self.betas) and len(self.betas) == 2, "betas", "must be two values in [0, 1)",
             self.betas),
            (self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables)", self.grad_clip),
            (self.warmup_steps >= 0, "warmup_steps", "must be >= 0", self.warmup_steps),
            (self.micro_batch_size >= 1, "micro_batch_size", "must be >= 1", self.micro_batch_size),
            (self.max_tokens_per_micro is None or self.max_tokens_per_micro >= 1, "max_tokens_per_micro",
             "must be >= 1 or None", self.max_tokens_per_micro),
            (self.logits_chunk_tokens >= 1, "logits_chunk_tokens", "must be >= 1", self.logits_chunk_tokens),
            (self.sft_lr is None or self.sft_lr > 0, "sft_lr", "must be > 0 or None", self.sft_lr),
            (self.grad_accum >= 1, "grad_accum", "must be >= 1", self.grad_accum),
            (self.heap_mmap_threshold is None or 0 < self.heap_mmap_threshold <= MAX_MMAP_THRESHOLD,
             "heap_mmap_threshold", f"must be in (0, {MAX_MMAP_THRESHOLD}] bytes or None", self.heap_mmap_threshold),
            (self.micro_weighting in ("tokens", "samples"), "micro_weighting", "must be 'tokens' or 'samples'",
             self.micro_weighting),
            (self.sync_dtype in ("bfloat16", "float16", "float32"), "sync_dtype",
             "must be bfloat16, float16 or float32", self.sync_dtype),
        ]
        for ok, key, rule, value in checks:
            if not ok:
                raise ValueError(f"learner.{key} {rule}, got {value!r}")


def deepspeed_config(cfg: LearnerConfig, world_size: int, on_cuda: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage in (1, 3) or not on_cuda:
        zero["overlap_comm"] = False  # unmanaged accumulation allows overlap only with stage 2
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.grad_clip,
        # immediate_grad_update: each bf16 grad is added to the fp32 buffer and freed as soon as
        # it is ready, instead of every parameter's grad living twice until the step.
        "bf16": {"enabled": cfg.bf16, "immediate_grad_update": True},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(conf, cfg.ds_overrides)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class ResponseLogprobs(nn.Module):
    """Causal LM whose forward returns fp32 logprobs (and entropy) of the packed targets only.

    The decoder runs on packed rows (`packing.PackedMicroBatch`: no attention mask, position
    ids restarting per sequence); only hidden states at `token_index` reach the LM head,
    chunk by chunk, so neither prompt logits nor [tokens, vocab] fp32 logits are built.
    """

    def __init__(self, hf_model: nn.Module, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> None:
        super().__init__()
        for key in ("final_logit_softcapping", "logit_scale"):
            if getattr(hf_model.config, key, None):
                raise LearnerError(f"model config sets {key}; ResponseLogprobs does not apply it")
        self.hf = hf_model
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids, position_ids, token_index, targets, with_entropy: bool = False):
        out = self.hf.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state  # [P, W, H]
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, token_index)  # [N, H]
        return head_logprobs(picked, self.hf.get_output_embeddings(), targets, chunk_tokens=self.chunk_tokens,
                             with_entropy=with_entropy)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _load_hf(model_dir: Path, cfg: LearnerConfig) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cfg.bf16 else torch.float32)


class LearnerEngine:
    def __init__(self, model_dir: str | Path, config: LearnerConfig | None = None) -> None:
        import deepspeed

        self.model_dir = Path(model_dir)
        self.config = cfg = config or LearnerConfig()
        if not (self.model_dir / "config.json").exists():
            raise LearnerError(f"model_dir {self.model_dir} is not a Hugging Face model folder (no config.json)")
        if cfg.heap_mmap_threshold is not None:
            set_mmap_threshold(cfg.heap_mmap_threshold)  # before the big allocations: see memory.py
        self.dist = init_distributed()
        _seed_everything(cfg.seed)
        hf = _load_hf(self.model_dir, cfg)
        if cfg.gradient_checkpointing:
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hf.config.use_cache = False
        module = ResponseLogprobs(hf, cfg.logits_chunk_tokens)
        # fused: one native pass per tensor (CPU and CUDA); the default for-loop AdamW builds two
        # temporaries the size of DeepSpeed's flat fp32 buffer (+1 GB on a 135M model) and is 6x slower.
        optimizer = torch.optim.AdamW(
            _param_groups(module, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True
        )
        warmup = cfg.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        lrs = [g["lr"] for g in optimizer.param_groups]
        for g in optimizer.param_groups:
            g["lr"] = 0.0  # DeepSpeed's state-allocating step (below) must not decay the weights
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=deepspeed_config(cfg, self.dist.world_size, torch.cuda.is_available()),
        )
        for g, lr in zip(optimizer.param_groups, lrs, strict=True):
            g["lr"] = lr
        _forget_allocation_step(optimizer)
        # fp32 without ZeRO: DeepSpeed steps the bare AdamW and reports no grad norm.
        self._bare_optimizer = self.optimizer is optimizer
        if cfg.zero_stage == 0 and self.dist.world_size == 1:
            # One rank, no ZeRO: the gradient all-reduce in step() is an identity (~4% of a step).
            self.engine.enable_backward_allreduce = False
        self.engine.train()
        self.device = self.engine.device
        self.ref: ResponseLogprobs | None = None
        if cfg.ref_model:
            ref = _load_hf(self.model_dir, cfg)
            self.ref = ResponseLogprobs(ref, cfg.logits_chunk_tokens).to(self.device).eval().requires_grad_(False)
        self.policy_version = 0
        self._grads_dirty = False

    # ---- forward passes -------------------------------------------------------------

    @property
    def hf_model(self) -> nn.Module:
        return self.engine.module.hf

    def _micro_batches(self, batch: TrainBatch) -> list[tuple[list[int], TrainBatch, PackedMicroBatch]]:
        cfg = self.config
        return packed_micro_batches(batch, max_rows=cfg.micro_batch_size, max_tokens=cfg.max_tokens_per_micro,
                                    pack=cfg.pack_sequences)

    def _forward(self, module: nn.Module, mb: TrainBatch, packed: PackedMicroBatch, with_entropy: bool):
        """(logprobs, entropy or None) of `mb`'s response tokens, [B, R] fp32, 0 on padding."""
        lp, ent = module(packed.input_ids, packed.position_ids, packed.token_index, packed.targets, with_entropy)
        shape = tuple(mb.response_mask.shape)
        return packed.scatter(lp, shape), (None if ent is None else packed.scatter(ent, shape))

    @torch.no_grad()
    def _no_grad_pass(self, batch: TrainBatch, module: nn.Module, with_entropy: bool):
        lp_out = torch.zeros(batch.response_mask.shape, dtype=torch.float32)
        ent_out = torch.zeros_like(lp_out) if with_entropy else None
        for samples, mb, packed in self._micro_batches(batch):
            lp, ent = self._forward(module, mb.to(self.device), packed.to(self.device), with_entropy)
            r = lp.shape[1]
            lp_out[samples, :r] = lp.cpu()
            if ent_out is not None:
                ent_out[samples, :r] = ent.cpu()
        self._trim()
        return lp_out, ent_out

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Current policy's response-token logprobs [B, R] (fp32, 0 on padding), no grad."""
        return self._no_grad_pass(batch, self.engine, False)[0]

    def logprobs_and_entropy(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        lp, ent = self._no_grad_pass(batch, self.engine, True)
        return lp, ent

    def ref_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Frozen initial policy's response-token logprobs [B, R]; needs `ref_model=True`."""
        if self.ref is None:
            raise LearnerError("ref_logprobs needs LearnerConfig(ref_model=True)")
        return self._no_grad_pass(batch, self.ref, False)[0]

    # ---- training -------------------------------------------------------------------

    def train_step(self, batch: TrainBatch, loss_fn: LossFn, *, with_entropy: bool = False) -> dict[str, float]:
        """One optimizer update over all micro-batches of `batch`; returns step metrics.

        `batch.old_logprobs` None means on-policy (ratio 1 against the detached current
        logprobs); `batch.ref_logprobs` None with a ref model means computed here.
        `logprob_gap_mean` (present when some row has rollout logprobs and was generated by
        the current policy version) is mean |learner - rollout logprob| over those rows'
        response tokens, from this step's own forward: how far the rollout engine's
        numerics drift from the learner's.
        """
        start = time.perf_counter()
        version = self.policy_version
        # Weights by what the loss covers, so masked-out rows (overlong filtering) change no
        # micro-batch's share. A batch with nothing under the loss is refused: a zero-gradient
        # AdamW step still moves every weight (momentum, decay) and bumps the version; the
        # planner filters such groups, so reaching here is a caller's bug.
        total_tokens, total_rows = batch.num_loss_tokens, batch.num_loss_rows
        if total_tokens == 0:
            raise LearnerError(f"train_step got a batch of {batch.size} rows with no token under the loss "
                               "(every response_mask row is zero); nothing to learn from, so no update was made")
        gap = torch.zeros(2, dtype=torch.float64)  # sum |diff|, tokens

        def micro_loss(mb: TrainBatch, packed: PackedMicroBatch, lp, ent):
            if self.ref is not None and mb.ref_logprobs is None:
                with torch.no_grad():
                    mb.ref_logprobs = self._forward(self.ref, mb, packed, False)[0]
            if mb.rollout_logprobs is not None:
                on_policy = (mb.policy_versions == version).to(lp.dtype)[:, None] * mb.response_mask
                gap[0] += float(((lp.detach() - mb.rollout_logprobs).abs() * on_policy).sum())
                gap[1] += float(on_policy.sum())
            inputs = LossInputs(
                logprobs=lp,
                old_logprobs=mb.old_logprobs if mb.old_logprobs is not None else lp.detach(),
                advantages=mb.advantages,
                mask=mb.response_mask,
                ref_logprobs=mb.ref_logprobs,
                rollout_logprobs=mb.rollout_logprobs,
                entropy=ent,
            )
            loss, metrics = loss_fn(inputs)
            if self.config.micro_weighting == "tokens":
                return loss, mb.num_loss_tokens / total_tokens, metrics
            return loss, mb.num_loss_rows / total_rows, metrics

        sums, padded, parts = self._backward_all(batch, with_entropy, micro_loss)
        out = {**sums, **self._update(batch, start, padded, parts)}
        if gap[1] > 0:
            out["logprob_gap_mean"] = float(gap[0] / gap[1])
        out["logprob_gap_tokens"] = float(gap[1])
        return out

    def sft_step(self, batch: TrainBatch, *, lr: float | None = None) -> dict[str, float]:
        """One optimizer update on the token-mean NLL of `batch`'s response tokens.

        Prompt tokens are context only (no loss, so no gradient through their logits);
        advantages and rollout logprobs are ignored (build batches with `collate_sft`).
        Same engine, micro-batching, optimizer state and checkpoint format as `train_step`,
        and like it adds 1 to `policy_version`. `lr` (default `sft_lr`, else `lr`) is set
        on the optimizer's param groups for this update only; the groups' lr and the lr
        scheduler's state are restored afterwards, so the RL lr and its warmup continue
        where they were. Adam's moments and step count are shared with RL updates.
        """
        lr = float(lr if lr is not None else (self.config.sft_lr or self.config.lr))
        if not (math.isfinite(lr) and lr > 0):
            raise LearnerError(f"sft_step lr must be a finite number > 0, got {lr!r}")
        start = time.perf_counter()
        total_tokens = batch.num_response_tokens

        def micro_loss(mb: TrainBatch, packed: PackedMicroBatch, lp, ent):
            return sft_nll_loss(lp, mb.response_mask), mb.num_response_tokens / total_tokens, {}

        groups = self.optimizer.param_groups
        saved_lrs = [g["lr"] for g in groups]
        saved_schedule = self.scheduler.state_dict() if self.scheduler is not None else None
        try:
            sums, padded, parts = self._backward_all(batch, False, micro_loss)
            for g in groups:
                g["lr"] = lr
            out = self._update(batch, start, padded, parts)
        finally:
            if saved_schedule is not None:
                self.scheduler.load_state_dict(saved_schedule)
            for g, old in zip(groups, saved_lrs):
                g["lr"] = old
        return {**sums, **out, "lr": lr, "sft_loss": sums["loss"]}

    def _backward_all(self, batch: TrainBatch, with_entropy: bool, micro_loss) -> tuple[dict[str, float], int, int]:
        """Forward + backward of every micro-batch, gradients accumulated, no step.

        `micro_loss(mb, packed, logprobs, entropy) -> (loss, weight, metrics)`; the backward
        runs on loss x weight, and metrics are the weighted sums. Returns (metric sums,
        tokens computed, micro-batches).
        """
        if self._grads_dirty:  # a previous step raised after some backward passes
            self.engine.zero_grad()
            self._grads_dirty = False
        sums: dict[str, float] = {}
        padded = 0
        parts = self._micro_batches(batch)
        for _, mb, packed in parts:
            mb, packed = mb.to(self.device), packed.to(self.device)
            padded += packed.num_tokens
            lp, ent = self._forward(self.engine, mb, packed, with_entropy)
            loss, weight, metrics = micro_loss(mb, packed, lp, ent)
            if loss.dim() != 0 or not torch.isfinite(loss):
                self._grads_dirty = True
                raise LearnerError(f"loss_fn must return a finite scalar, got shape {tuple(loss.shape)} value "
                                   f"{loss.detach().flatten()[:4].tolist()} (policy_version {self.policy_version})")
            self._grads_dirty = True
            self.engine.backward(loss * weight, scale_wrt_gas=False)
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + weight * float(v.detach() if torch.is_tensor(v) else v)
            del lp, ent, loss
        return sums, padded, len(parts)

    def _update(self, batch: TrainBatch, start: float, padded: int, parts: int) -> dict[str, float]:
        """The optimizer step closing a `_backward_all`; bumps `policy_version`."""
        lr = self.optimizer.param_groups[0]["lr"]
        own_norm = self._grad_norm() if self._bare_optimizer else None
        self.engine.step()
        self._grads_dirty = False
        self.policy_version += 1
        grad_norm = own_norm if own_norm is not None else self.engine.get_global_grad_norm()
        self._trim()
        seconds = time.perf_counter() - start
        return {
            "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
            "lr": float(lr),
            "tokens": float(batch.num_response_tokens),
            "padded_tokens": float(padded),
            "micro_batches": float(parts),
            "seconds": seconds,
            "tokens_per_s": float(batch.seq_lengths.sum()) / seconds,
            "policy_version": float(self.policy_version),
        }

    def _trim(self) -> None:
        if self.config.trim_heap:
            trim_heap()

    def _grad_norm(self) -> float:
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0

    # ---- weights out ----------------------------------------------------------------

    def named_parameters_for_sync(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) for every parameter, for broadcasting to rollout engines.

        Names are the HF checkpoint names the vLLM loader expects (tied embeddings appear
        once, as `model.embed_tokens.weight`). Under ZeRO-3 each tensor is gathered and
        copied; otherwise it may share storage with the live weight: copy it before the
        next `train_step` if it is kept.
        """
        import deepspeed

        dtype = dtype or getattr(torch, self.config.sync_dtype)
        for name, p in self.hf_model.named_parameters():
            if hasattr(p, "ds_id"):  # ZeRO-3 partitioned parameter
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    yield name, p.data.detach().to(dtype).clone()
            else:
                yield name, p.data.detach().to(dtype)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter, full and on CPU, in the training dtype (bf16 or fp32)."""
        dtype = torch.bfloat16 if self.config.bf16 else torch.float32
        return {n: t.to("cpu", copy=True) for n, t in self.named_parameters_for_sync(dtype)}

    # ---- checkpoints ----------------------------------------------------------------

    def save_checkpoint(self, directory: str | Path, extra_state: dict[str, Any] | None = None) -> Path:
        """Write an HF-loadable folder plus optimizer, scheduler, RNG and `extra_state`."""
        final = Path(directory)
        extra_state = dict(extra_state or {})
        rank = self.dist.rank
        if rank == 0:
            tmp = ckpt.begin(final)
            ckpt.write_extra_state(tmp, extra_state)  # validates before the expensive part
        self._barrier()
        tmp = ckpt.staging_dir(final)
        self.engine.save_checkpoint(
            str(tmp / ckpt.DS_SUBDIR), tag=ckpt.DS_TAG, client_state={"policy_version": self.policy_version},
            save_latest=False,
        )
        state = self.full_state_dict()  # collective under ZeRO-3: every rank gathers
        if rank == 0:
            ckpt.save_hf_weights(self.hf_model, state, tmp)
            ckpt.copy_tokenizer_files(self.model_dir, tmp)
            ckpt.Manifest(
                format=ckpt.FORMAT,
                policy_version=self.policy_version,
                zero_stage=self.config.zero_stage,
                world_size=self.dist.world_size,
                bf16=self.config.bf16,
                source_model_dir=str(self.model_dir),
            ).write(tmp)
        ckpt.save_rng(tmp, rank)
        self._barrier()
        if rank == 0:
            ckpt.commit(final)
        self._barrier()
        return final

    def load_checkpoint(self, directory: str | Path) -> dict[str, Any]:
        """Restore weights, optimizer, scheduler, RNG and version; return the saved extra_state."""
        directory = Path(directory)
        manifest = ckpt.Manifest.read(directory)
        manifest.check_compatible(zero_stage=self.config.zero_stage, world_size=self.dist.world_size)
        path, _ = self.engine.load_checkpoint(
            str(directory / ckpt.DS_SUBDIR), tag=ckpt.DS_TAG, load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise ckpt.CheckpointError(f"DeepSpeed found no state under {directory / ckpt.DS_SUBDIR}")
        ckpt.load_rng(directory, self.dist.rank)
        self.policy_version = manifest.policy_version
        self._grads_dirty = False
        return ckpt.read_extra_state(directory)

    def _barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()


def _forget_allocation_step(optimizer: torch.optim.Optimizer) -> None:
    """Undo the optimizer step DeepSpeed's bf16 and ZeRO optimizers take at initialization.

    They call `step()` once with zero gradients to allocate Adam's state (DeepSpeed PR
    #5104, open), which leaves every `step` counter at 1: the first real update then used
    step-2 bias correction (0.74x the size of AdamW's first step) and a resumed optimizer
    read one step ahead of the learner. Counters and moments go back to an unused optimizer's
    (the allocation is kept); the weights were not moved because the step ran at lr 0."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if key in ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq") and torch.is_tensor(value):
                value.zero_()
            elif key == "step":
                state[key] = 0


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
