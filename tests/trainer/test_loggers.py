"""Tracking backends, checked by reading what they wrote back from disk.

TensorBoard event files are parsed record by record (length + masked CRC32C framing,
then `Event` protobufs) and both CRCs verified, as TensorBoard's own reader does; the
wandb offline run's `.wandb` file is parsed as its LevelDB-log framing of `Record`
protobufs. Nothing reaches the network: wandb runs offline only.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import struct
from pathlib import Path

import pytest

from peirce.config import ConfigError, TrainConfig, load_config
from peirce.trainer import loggers
from peirce.trainer.loggers import TensorBoardLogger, WandbLogger, open_loggers, scalars
from peirce.trainer.run_dir import RunDir

REPO = Path(__file__).resolve().parents[2]
RECORDS = [{"step": s, "time": 1_700_000_000.0 + s, "reward_mean": -3.0 + s, "loss": 0.5 / s, "no_signal": s > 2,
            "no_signal_cause": "task_too_hard" if s > 2 else None, "logprob_gap_mean": None if s == 1 else 0.02 * s,
            "kl": float("nan"), "reward/deduction/L1": 1.0 * s} for s in (1, 2, 3)]
needs_tb = pytest.mark.skipif(importlib.util.find_spec("tensorboardX") is None,
                              reason="tensorboardX not installed (pip install 'peirce[tracking]')")
needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="wandb not installed (pip install 'peirce[tracking]')")


def test_scalars_keep_finite_numbers_only():
    assert scalars(RECORDS[2]) == {"reward_mean": 0.0, "loss": 0.5 / 3, "no_signal": 1.0, "logprob_gap_mean": 0.06,
                                   "reward/deduction/L1": 3.0}
    assert scalars({"a": float("inf"), "b": "x", "c": [1], "d": True, "step": 4}) == {"d": 1.0}


def test_jsonl_is_metrics_jsonl(tmp_path):
    run = RunDir.create(tmp_path)
    (lg,) = open_loggers(["jsonl"], run, name="r", config={})
    for r in RECORDS:
        lg.log(r["step"], r)
    lg.close()
    rows = run.read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["kl"] is None and rows[2]["no_signal"] is True


# ---------------------------------------------------------------- tensorboard
def _tf_records(path: Path) -> list[bytes]:
    from tensorboardX.crc32c import crc32c

    def masked(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked(header), f"bad length CRC in {path}"
        body = data[pos + 12:pos + 12 + length]
        assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked(body), "bad data CRC"
        out.append(body)
        pos += 16 + length
    return out


def read_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value}, applying TensorBoard's purge rule (a START session log at step s
    hides every earlier event with step >= s)."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    events = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):  # TensorBoard's order: by name, then in file
        for raw in _tf_records(path):
            ev = Event()
            ev.ParseFromString(raw)
            events.append(ev)
    out: dict[str, dict[int, float]] = {}
    for ev in events:
        if ev.HasField("session_log") and ev.session_log.status == SessionLog.START:
            out = {t: {s: v for s, v in vals.items() if s < ev.step} for t, vals in out.items()}
        for value in ev.summary.value:
            out.setdefault(value.tag, {})[ev.step] = value.simple_value
    return out


@needs_tb
def test_tensorboard_event_files_read_back(tmp_path):
    lg = TensorBoardLogger(tmp_path / "tb")
    for r in RECORDS:
        lg.log(r["step"], r)  # flushed every step: readable while the run goes on
    got = read_scalars(tmp_path / "tb")
    lg.close()
    assert got["reward_mean"] == {1: -2.0, 2: -1.0, 3: 0.0}
    assert got["no_signal"] == {1: 0.0, 2: 0.0, 3: 1.0}
    assert got["logprob_gap_mean"] == pytest.approx({2: 0.04, 3: 0.06})
    assert got["reward/deduction/L1"] == {1: 1.0, 2: 2.0, 3: 3.0}
    assert "kl" not in got and "no_signal_cause" not in got and "step" not in got


@needs_tb
def test_tensorboard_resume_purges_redone_steps(tmp_path):
    run = RunDir.create(tmp_path)
    (_, tb) = open_loggers(["jsonl", "tensorboard"], run, name="r", config={})
    for s in (1, 2, 3, 4):
        tb.log(s, {"step": s, "time": 1e9 + s, "loss": float(s)})
    tb.close()
    (_, tb) = open_loggers(["jsonl", "tensorboard"], run, name="r", config={}, first_step=3)  # resumed at step 2
    tb.log(3, {"step": 3, "time": 2e9, "loss": 30.0})
    tb.close()
    assert read_scalars(run.root / "tensorboard")["loss"] == {1: 1.0, 2: 2.0, 3: 30.0}


# ---------------------------------------------------------------- wandb (offline)
def _wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending, out = path.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B", data[:7]
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # FULL, FIRST
            pending = chunk
        elif kind in (3, 4):  # MIDDLE, LAST
            pending += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
    return out


@needs_wandb
def test_wandb_runs_offline_and_records_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")  # forced back to offline by the logger
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # even with a key, nothing may be sent
    lg = WandbLogger(tmp_path / "wandb", "deduction", {"trainer": {"max_steps": 3}})
    assert __import__("os").environ["WANDB_MODE"] == "offline"
    for r in RECORDS:
        lg.log(r["step"], r)
    lg.close()
    (run_file,) = glob.glob(str(tmp_path / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    history = {}
    for rec in _wandb_records(Path(run_file)):
        if rec.WhichOneof("record_type") == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
            history[items["_step"]] = items
    assert sorted(history) == [1, 2, 3]
    assert history[3]["reward_mean"] == 0.0 and history[3]["no_signal"] == 1.0
    assert "logprob_gap_mean" not in history[1] and history[2]["logprob_gap_mean"] == pytest.approx(0.04)
    assert not glob.glob(str(tmp_path / "wandb" / "wandb" / "run-*"))  # no online run folder


# ---------------------------------------------------------------- config
def test_config_names_the_install_command_for_a_missing_backend(monkeypatch):
    # Simulates an environment without wandb: the table points at a module that does not exist.
    monkeypatch.setitem(loggers.REQUIRES, "wandb", ("peirce_no_such_module", "pip install wandb"))
    with pytest.raises(ConfigError, match=r"trainer.loggers: 'wandb' needs the peirce_no_such_module package.*"
                                          r"pip install wandb"):
        load_config(TrainConfig, str(REPO / "configs" / "train-deduction.yaml"), ["trainer.loggers=[jsonl,wandb]"])


def test_config_requires_jsonl_and_known_unique_backends():
    path = str(REPO / "configs" / "train-deduction.yaml")
    assert load_config(TrainConfig, path, []).trainer.loggers == ["jsonl"]
    for bad, message in ((["trainer.loggers=[tensorboard]"], "must list 'jsonl'"),
                         (["trainer.loggers=[jsonl,jsonl]"], "no backend twice"),
                         (["trainer.loggers=[jsonl,mlflow]"], "trainer.loggers.1")):
        with pytest.raises(ConfigError, match=message):
            load_config(TrainConfig, path, bad)
