"""LearnerEngine.sft_step on real DeepSpeed (CPU) with the tiny random Llama."""

from __future__ import annotations

import math

import pytest
import torch

from peirce.learner.batch import BatchError, Sample, SFTExample, collate, collate_sft
from peirce.learner.engine import LearnerConfig, LearnerEngine, LearnerError

# eps >> |g| and no decay/clip: Adam's first update is lr * g / (|g| + eps), elementwise,
# so the parameters after one step tell the gradient exactly (see test_engine.py).
SGD_LIKE = dict(bf16=False, lr=1.0, eps=1.0, weight_decay=0.0, grad_clip=0.0, seed=5)


def make_examples(n: int = 5, seed: int = 0, vocab: int = 2000) -> list[SFTExample]:
    g = torch.Generator().manual_seed(seed)
    return [SFTExample(torch.randint(0, vocab, (3 + 2 * i,), generator=g).tolist(),
                       torch.randint(0, vocab, (2 + (5 * i) % 7,), generator=g).tolist()) for i in range(n)]


def naive_nll_and_grads(model_dir, examples, include_prompt=False):
    """Plain torch, one sequence at a time: token-mean NLL over all response tokens (fp32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    total, count = 0.0, 0
    per_seq = []
    for ex in examples:
        ids = torch.tensor([list(ex.prompt_token_ids) + list(ex.response_token_ids)])
        logp = torch.log_softmax(model(input_ids=ids).logits.float()[0, :-1], -1)
        token_lp = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)  # predicts ids[1:]
        first = 0 if include_prompt else len(ex.prompt_token_ids) - 1
        per_seq.append(-token_lp[first:])
        count += len(token_lp) - first
    for nll in per_seq:
        total = total + nll.sum()
    loss = total / count
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return float(loss.detach()), grads, params


def params_of(engine):
    return {n: t.float().clone() for n, t in engine.named_parameters_for_sync(torch.float32)}


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


def test_sft_loss_and_update_match_a_naive_loop(model_dir):
    """Token-mean NLL on response tokens only; micro-batched, packed, chunked head: same as the loop."""
    examples = make_examples()
    batch = collate_sft(examples)
    loss, grads, start = naive_nll_and_grads(model_dir, examples)
    _, grads_all, _ = naive_nll_and_grads(model_dir, examples, include_prompt=True)
    engine = LearnerEngine(model_dir, LearnerConfig(micro_batch_size=2, max_tokens_per_micro=24,
                                                    logits_chunk_tokens=3, **SGD_LIKE))
    out = engine.sft_step(batch)
    assert out["micro_batches"] > 1 and out["tokens"] == batch.num_response_tokens
    assert out["sft_loss"] == pytest.approx(loss, abs=1e-5) and out["loss"] == out["sft_loss"]
    after = params_of(engine)
    name = "model.embed_tokens.weight"  # tied with the LM head: gets both gradients
    for n in after:
        g = grads[n]
        expected = start[n] - g / (g.abs() + 1.0)
        torch.testing.assert_close(after[n], expected, atol=1e-5, rtol=1e-5, msg=lambda m, n=n: f"{n}: {m}")
    # prompt tokens carry no loss: the all-token gradient would have moved the weights elsewhere
    g_all = grads_all[name]
    assert (after[name] - (start[name] - g_all / (g_all.abs() + 1.0))).abs().max() > 1e-4


def test_sft_loss_decreases_on_a_fixed_example(model_dir):
    engine = LearnerEngine(model_dir, LearnerConfig(lr=1e-3, seed=1))
    batch = collate_sft(make_examples(2))
    v0 = engine.policy_version
    losses = [engine.sft_step(batch)["sft_loss"] for _ in range(5)]
    print("sft losses:", losses)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.1
    assert engine.policy_version == v0 + 5  # every SFT update is a new policy version


def test_lr_override_applies_and_the_rl_schedule_is_untouched(model_dir):
    """sft lr is used for that update only; the RL lr and warmup continue as if it had not run."""
    base = dict(bf16=False, lr=1e-3, warmup_steps=4, weight_decay=0.0, grad_clip=0.0, seed=2)
    batch = collate_sft(make_examples(3))
    deltas = {}
    for lr in (1e-4, 2e-4):
        engine = LearnerEngine(model_dir, LearnerConfig(**base))
        before = params_of(engine)
        out = engine.sft_step(batch, lr=lr)
        assert out["lr"] == lr
        deltas[lr] = {n: t - before[n] for n, t in params_of(engine).items()}
        # RL schedule: warmup step 1 of 4 still pending, lr base * 1/4, untouched by the SFT step
        assert [g["lr"] for g in engine.optimizer.param_groups] == pytest.approx([base["lr"] / 4] * 2)
        assert engine.scheduler.last_epoch == 0
    # Adam's first update is proportional to lr: twice the lr, twice the move
    for n, d in deltas[1e-4].items():
        torch.testing.assert_close(deltas[2e-4][n], 2 * d, atol=1e-7, rtol=1e-3)

    rl = collate([Sample(list(e.prompt_token_ids), list(e.response_token_ids), 1.0) for e in make_examples(3)])

    def pg(inp):
        return -(inp.logprobs * inp.mask).sum() / inp.mask.sum(), {}

    lrs = [engine.train_step(rl, pg)["lr"] for _ in range(3)]
    assert lrs == pytest.approx([base["lr"] / 4, base["lr"] / 2, 3 * base["lr"] / 4])
    assert engine.policy_version == 4  # 1 SFT + 3 RL updates
    m = engine.sft_step(batch)  # default: sft_lr None -> lr, without the warmup
    assert m["lr"] == base["lr"] and engine.optimizer.param_groups[0]["lr"] == pytest.approx(base["lr"])


def test_sft_rejects_bad_inputs(model_dir):
    with pytest.raises(ValueError, match="learner.sft_lr must be > 0 or None, got -1"):
        LearnerConfig(sft_lr=-1.0)
    with pytest.raises(BatchError, match="example 1: expected SFTExample, got Sample"):
        collate_sft([SFTExample([1], [2]), Sample([1], [2], 1.0)])
    with pytest.raises(BatchError, match="sample 0: response_token_ids must be in"):
        collate_sft([SFTExample([1], [2, 99])], vocab_size=50)
    with pytest.raises(BatchError, match="sample 0: response_token_ids is empty"):
        collate_sft([SFTExample([1], [])])
    engine = LearnerEngine(model_dir, LearnerConfig(lr=1e-3))
    batch = collate_sft(make_examples(2))
    for bad in (0.0, -1e-3, math.nan, math.inf):
        with pytest.raises(LearnerError, match="sft_step lr must be a finite number > 0"):
            engine.sft_step(batch, lr=bad)
    assert engine.policy_version == 0
    assert engine.sft_step(batch)["policy_version"] == 1


def test_learner_actor_sft_verb_bumps_and_publishes(model_dir):
    """The Ray actor's plain class: `sft` trains, adds one policy version and publishes under it."""
    from peirce.actors.learner import Learner

    learner = Learner(str(model_dir), {"model": {"path": "tiny"}, "learner": {"lr": 1e-3, "precision": "fp32"}},
                      "sft-test")
    try:
        out = learner.sft(make_examples(3), lr=5e-4)
        assert out["policy_version"] == 1 == learner.policy_version()
        assert out["lr"] == 5e-4 and math.isfinite(out["sft_loss"]) and out["weight_sync_mb"] > 0
        with pytest.raises(BatchError, match="expected SFTExample"):
            learner.sft([(1, 2)])
        assert learner.policy_version() == 1
    finally:
        learner.close()
