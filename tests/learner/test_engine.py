"""LearnerEngine on real DeepSpeed (CPU, gloo) with the tiny random Llama."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from safetensors import safe_open

from peirce.learner.batch import Sample, collate
from peirce.learner.engine import LearnerConfig, LearnerEngine, LearnerError, token_logprobs
from peirce.learner.types import LossInputs
from peirce.model.tiny import build_tiny_llama
from peirce.testing import make_samples


def pg_loss(inp: LossInputs):
    """REINFORCE with a token mean: the simplest loss that carries a learning signal."""
    m = inp.mask
    loss = -(inp.advantages * inp.logprobs * m).sum() / m.sum()
    return loss, {"pg/mean_logprob": (inp.logprobs.detach() * m).sum() / m.sum()}


@pytest.fixture(scope="module")
def model_dir():
    return build_tiny_llama()


@pytest.fixture(scope="module")
def engine(model_dir):
    return LearnerEngine(model_dir, LearnerConfig(lr=5e-3, micro_batch_size=2, ref_model=True, seed=1))


def _plain_logprobs(model_dir, batch, dtype=torch.bfloat16):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = torch.zeros(batch.response_mask.shape)
    for i in range(batch.size):
        p, r = int(batch.prompt_lengths[i]), int(batch.response_lengths[i])
        tgt = batch.input_ids[i, p : p + r]
        out[i, :r] = logp[i, p - 1 : p + r - 1].gather(-1, tgt[:, None]).squeeze(-1)
    return out


def test_logprobs_match_plain_transformers(engine, model_dir):
    batch = collate(make_samples())
    ours = engine.logprobs(batch)
    ref = _plain_logprobs(model_dir, batch)
    assert ours.shape == batch.response_mask.shape
    assert (ours[batch.response_mask == 0] == 0).all()
    torch.testing.assert_close(ours, ref, atol=2e-2, rtol=0)
    # the frozen reference is the initial policy
    torch.testing.assert_close(engine.ref_logprobs(batch), ours, atol=1e-5, rtol=0)


def test_token_logprobs_and_entropy_against_naive():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g).to(torch.bfloat16)
    targets = torch.randint(0, 11, (2, 3), generator=g)
    lp, ent = token_logprobs(logits, targets, with_entropy=True)
    p = torch.softmax(logits.float(), -1)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, torch.log(p).gather(-1, targets[..., None]).squeeze(-1))
    torch.testing.assert_close(ent, -(p * torch.log(p)).sum(-1))


def test_train_steps_follow_the_advantage(engine):
    """Positive-advantage responses gain likelihood, negative ones lose it; ref stays put."""
    batch = collate(make_samples())
    pos = batch.advantages[:, 0] > 0
    before = engine.logprobs(batch)
    v0 = engine.policy_version
    metrics = [engine.train_step(batch, pg_loss) for _ in range(3)]
    after = engine.logprobs(batch)
    mask = batch.response_mask.bool()

    def mean_lp(lp, rows):
        return lp[rows][mask[rows]].mean().item()

    assert mean_lp(after, pos) > mean_lp(before, pos) + 0.05
    assert mean_lp(after, ~pos) < mean_lp(before, ~pos) - 0.05
    print("mean logprob +:", mean_lp(before, pos), "->", mean_lp(after, pos),
          " -:", mean_lp(before, ~pos), "->", mean_lp(after, ~pos))
    assert engine.policy_version == v0 + 3
    m = metrics[-1]
    assert m["tokens"] == batch.num_response_tokens and m["micro_batches"] == 3
    assert m["grad_norm"] > 0 and m["lr"] == pytest.approx(5e-3) and m["seconds"] > 0
    assert "pg/mean_logprob" in m and m["policy_version"] == engine.policy_version
    torch.testing.assert_close(engine.ref_logprobs(batch), before, atol=1e-5, rtol=0)


def test_logprobs_and_entropy_shapes(engine):
    batch = collate(make_samples(3))
    lp, ent = engine.logprobs_and_entropy(batch)
    torch.testing.assert_close(lp, engine.logprobs(batch))
    assert ((ent > 0) == batch.response_mask.bool()).all()


def test_sync_names_match_the_hf_checkpoint(engine, model_dir):
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        expected = {k: f.get_slice(k).get_shape() for k in f.keys()}
    got = {n: t for n, t in engine.named_parameters_for_sync()}
    assert set(got) == set(expected) - {"lm_head.weight"}  # tied: served by embed_tokens
    for name, t in got.items():
        assert list(t.shape) == expected[name] and t.dtype == torch.bfloat16, name


def test_bad_loss_is_a_clear_error_and_the_next_step_works(engine):
    batch = collate(make_samples(3))

    def nan_loss(inp):
        return inp.logprobs.sum() * float("nan"), {}

    version = engine.policy_version
    with pytest.raises(LearnerError, match="finite scalar"):
        engine.train_step(batch, nan_loss)
    assert engine.policy_version == version
    m = engine.train_step(batch, pg_loss)
    assert torch.isfinite(torch.tensor(m["grad_norm"])) and engine.policy_version == version + 1


def test_ref_logprobs_needs_ref_model(model_dir):
    # cheap: the config check fires before any DeepSpeed work
    with pytest.raises(ValueError, match="learner.zero_stage must be 0, 1, 2 or 3, got 4"):
        LearnerConfig(zero_stage=4)
    with pytest.raises(ValueError, match="learner.micro_weighting"):
        LearnerConfig(micro_weighting="rows")
    with pytest.raises(LearnerError, match="not a Hugging Face model folder"):
        LearnerEngine(model_dir / "nope")


def _step_once(model_dir, cfg, batch):
    eng = LearnerEngine(model_dir, cfg)
    return (eng, *_step_once_on(eng, batch))


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_each_zero_stage_takes_a_step(model_dir, stage):
    batch = collate(make_samples(4))
    # lr 1e-2: an Adam step then moves even norm weights (1.0) by more than one bf16 ulp
    cfg = LearnerConfig(zero_stage=stage, lr=1e-2, micro_batch_size=2)
    eng, m, before, after = _step_once(model_dir, cfg, batch)
    assert eng.policy_version == 1 and m["micro_batches"] == 2
    assert m["grad_norm"] > 0
    assert set(before) == set(after) and len(after) > 0
    changed = [n for n in after if not torch.equal(before[n], after[n])]
    assert len(changed) == len(after), f"unchanged: {set(after) - set(changed)}"
    # full (gathered) shapes under every stage
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        assert list(after["model.embed_tokens.weight"].shape) == f.get_slice("model.embed_tokens.weight").get_shape()


def test_gradient_accumulation_equals_one_big_batch(model_dir):
    """Token-weighted micro-batch losses give the gradient of the whole batch (fp32, no clip)."""
    batch = collate(make_samples(5))
    # eps >> |g| turns Adam's first step into plain SGD (update = lr * g / (|g| + eps)),
    # so equal parameters afterwards mean equal gradients, element by element.
    base = dict(bf16=False, lr=1.0, eps=1.0, weight_decay=0.0, grad_clip=0.0, seed=3)
    _, m_one, _, p_one = _step_once(model_dir, LearnerConfig(micro_batch_size=8, **base), batch)
    _, m_acc, _, p_acc = _step_once(model_dir, LearnerConfig(micro_batch_size=1, **base), batch)
    assert m_one["micro_batches"] == 1 and m_acc["micro_batches"] == 5
    assert m_acc["grad_norm"] == pytest.approx(m_one["grad_norm"], rel=1e-4)
    assert m_acc["loss"] == pytest.approx(m_one["loss"], rel=1e-5)
    for n in p_one:
        torch.testing.assert_close(p_acc[n], p_one[n], atol=1e-6, rtol=1e-5)


def test_rows_masked_out_of_the_loss_weigh_nothing(model_dir):
    """DAPO overlong filtering zeroes a row's response_mask: micro-batches are weighted by the
    tokens under the mask, so the update is the one on the kept rows alone, whatever the cut
    (here two of five single-row micro-batches carry nothing); a batch with nothing under the
    loss is refused and changes nothing (a zero-gradient AdamW step would still move weights)."""
    from dataclasses import replace

    from peirce.learner.losses import LossConfig, compute_loss

    loss_fn = partial(compute_loss, LossConfig(policy_loss="vanilla_pg"))
    batch = collate(make_samples(5))

    def masked(keep):
        k = torch.tensor(keep, dtype=torch.float32)[:, None]
        return replace(batch, response_mask=batch.response_mask * k, advantages=batch.advantages * k)

    def step(cfg, b):
        eng = LearnerEngine(model_dir, cfg)
        m = eng.train_step(b, loss_fn)
        return eng, m, {n: t.float().clone() for n, t in eng.named_parameters_for_sync(torch.float32)}

    base = dict(bf16=False, lr=1.0, eps=1.0, weight_decay=0.0, grad_clip=0.0, seed=3)  # Adam step = SGD, see above
    _, m_kept, p_kept = step(LearnerConfig(micro_batch_size=8, **base), batch.select([0, 2, 4]))
    _, m_mask, p_mask = step(LearnerConfig(micro_batch_size=1, **base), masked([1, 0, 1, 0, 1]))
    assert m_mask["micro_batches"] == 5 and m_mask["loss"] == pytest.approx(m_kept["loss"], rel=1e-5)
    for n in p_kept:
        torch.testing.assert_close(p_mask[n], p_kept[n], atol=1e-6, rtol=1e-5)
    eng = LearnerEngine(model_dir, LearnerConfig(micro_batch_size=2, **base))
    before = {n: t.float().clone() for n, t in eng.named_parameters_for_sync(torch.float32)}
    with pytest.raises(LearnerError, match="no token under the loss"):
        eng.train_step(masked([0] * 5), loss_fn)
    assert eng.policy_version == 0
    for n, t in eng.named_parameters_for_sync(torch.float32):
        assert torch.equal(t.float(), before[n])


def test_compute_loss_from_losses_module(engine):
    losses = pytest.importorskip("peirce.learner.losses")
    cfg = losses.LossConfig(policy_loss="ppo_clip", kl_coef=0.01, entropy_coef=0.001)
    batch = collate(make_samples(4))
    batch = batch.with_logprobs(old=engine.logprobs(batch))
    m = engine.train_step(batch, partial(losses.compute_loss, cfg), with_entropy=True)
    assert torch.isfinite(torch.tensor(m["loss"])) and m["grad_norm"] > 0
    json.dumps(m)  # metrics are plain floats, ready for logging


def test_gradient_checkpointing_gives_the_same_step(model_dir):
    """Recomputing activations (the memory saver `make run` uses) must not change the update."""
    batch = collate(make_samples())
    steps = {}
    for ckpt in (False, True):
        eng = LearnerEngine(model_dir, LearnerConfig(bf16=False, lr=5e-3, micro_batch_size=2, seed=1,
                                                     gradient_checkpointing=ckpt))
        assert eng.hf_model.is_gradient_checkpointing == ckpt
        m = eng.train_step(batch, pg_loss)
        steps[ckpt] = (m["grad_norm"], eng.logprobs(batch))
    assert steps[True][0] == pytest.approx(steps[False][0], rel=1e-4)
    torch.testing.assert_close(steps[True][1], steps[False][1], atol=1e-5, rtol=0)


def test_packed_rows_give_the_update_of_one_row_per_sequence(model_dir):
    """Sequences sharing rows (position ids restart, block mask) train exactly like separate rows."""
    g = torch.Generator().manual_seed(7)
    shapes = [(9, 7), (5, 4), (3, 4), (2, 3), (2, 1), (4, 4)]
    samples = [Sample(torch.randint(0, 2000, (p,), generator=g).tolist(), torch.randint(0, 2000, (r,), generator=g).tolist(),
                      float(torch.randn(1, generator=g))) for p, r in shapes]
    batch = collate(samples)
    base = dict(bf16=False, lr=1.0, eps=1.0, weight_decay=0.0, grad_clip=0.0, seed=3, micro_batch_size=8)
    _, m_pack, _, p_pack = _step_once(model_dir, LearnerConfig(pack_sequences=True, **base), batch)
    _, m_rows, _, p_rows = _step_once(model_dir, LearnerConfig(pack_sequences=False, **base), batch)
    assert m_pack["padded_tokens"] < m_rows["padded_tokens"]  # rows really were shared
    assert m_pack["loss"] == pytest.approx(m_rows["loss"], abs=1e-6)
    for n in p_pack:
        torch.testing.assert_close(p_pack[n], p_rows[n], atol=1e-6, rtol=1e-5)


def test_logprob_gap_covers_on_policy_rows_only(model_dir):
    """mean |learner - rollout| logprob over rows generated by the current version, from the step's forward."""
    eng = LearnerEngine(model_dir, LearnerConfig(bf16=False, lr=1e-3, micro_batch_size=2, seed=4))
    base = make_samples(4)
    first = eng.train_step(collate(base), pg_loss)
    assert "logprob_gap_mean" not in first and first["logprob_gap_tokens"] == 0  # no rollout logprobs
    lp = eng.logprobs(collate(base))  # policy version 1
    deltas, versions = [0.1, -0.3, 0.5, -0.7], [1, 1, 0, 0]  # rows 2, 3 are stale: ignored
    samples = [Sample(s.prompt_token_ids, s.response_token_ids, s.advantage,
                      (lp[i, : len(s.response_token_ids)] + deltas[i]).tolist(), policy_version=versions[i])
               for i, s in enumerate(base)]
    n0, n1 = len(base[0].response_token_ids), len(base[1].response_token_ids)
    m = eng.train_step(collate(samples), pg_loss)
    assert m["logprob_gap_tokens"] == n0 + n1
    assert m["logprob_gap_mean"] == pytest.approx((0.1 * n0 + 0.3 * n1) / (n0 + n1), abs=1e-5)
    stale = eng.train_step(collate(samples), pg_loss)  # learner now at version 2: nothing on-policy
    assert "logprob_gap_mean" not in stale and stale["logprob_gap_tokens"] == 0


def _opt_steps(eng) -> set[float]:
    return {float(v["step"]) for v in eng.optimizer.state.values() if "step" in v}


@pytest.mark.parametrize("cfg", [dict(bf16=False, zero_stage=0), dict(bf16=False, zero_stage=2),
                                 dict(bf16=True, zero_stage=0)], ids=["fp32", "fp32-zero2", "bf16"])
def test_the_first_update_is_adamws_first_step(model_dir, cfg):
    """DeepSpeed's bf16 and ZeRO optimizers allocate Adam's state with a zero-gradient step
    at start: left counted, the first real update used step-2 bias correction (0.74x) and a
    restored optimizer read one step ahead. AdamW's first step moves each weight with a
    gradient by lr (bias-corrected m / sqrt(v) = sign(g)), with counters at 1."""
    lr = 1e-2
    eng = LearnerEngine(model_dir, LearnerConfig(lr=lr, weight_decay=0.0, grad_clip=0.0, micro_batch_size=4, **cfg))
    assert _opt_steps(eng) <= {0.0}
    assert all(float(v["exp_avg"].abs().max()) == 0 for v in eng.optimizer.state.values() if "exp_avg" in v)
    _, before, after = _step_once_on(eng, collate(make_samples(4)))
    name = "model.layers.0.mlp.down_proj.weight"
    moved = (after[name] - before[name]).abs()
    moved = moved[moved > 0]
    assert moved.numel() > 0.5 * after[name].numel()
    assert float(moved.median()) == pytest.approx(lr, rel=0.05)
    assert _opt_steps(eng) == {1.0}


def _step_once_on(eng, batch):
    before = {n: t.float().clone() for n, t in eng.named_parameters_for_sync(torch.float32)}
    m = eng.train_step(batch, pg_loss)
    after = {n: t.float().clone() for n, t in eng.named_parameters_for_sync(torch.float32)}
    return m, before, after
