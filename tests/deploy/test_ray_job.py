"""Ray job config, submit.sh and the KubeRay manifest; a real private Ray cluster runs the job."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]
RAY_DIR = REPO / "deploy" / "ray"
# RAY_OVERRIDE_JOB_RUNTIME_ENV: ensure_ray() passes env_vars to ray.init, which Ray refuses
# to merge with the job's own unless told to (found by the cluster test below).
REQUIRED_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_HOST_IP": "127.0.0.1",
                "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}


def _jobspec():
    spec = importlib.util.spec_from_file_location("peirce_deploy_jobspec", RAY_DIR / "jobspec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


jobspec = _jobspec()


def test_job_yaml_validates_and_runs_the_smoke_pipeline():
    spec = jobspec.load(RAY_DIR / "job.yaml")
    assert spec.entrypoint == ["python", "-m", "peirce.cli.main", "run", "configs/smoke.yaml"]
    assert yaml.safe_load((REPO / spec.entrypoint[4]).read_text())["profile"] == "smoke"
    env = spec.runtime_env.env_vars
    assert REQUIRED_ENV.items() <= env.items() and env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert ".venv/" in spec.runtime_env.excludes and ".git/" in spec.runtime_env.excludes


def test_submit_argv_resolves_paths_merges_env_and_keeps_argv_verbatim():
    spec = jobspec.load(RAY_DIR / "job.yaml")
    argv = jobspec.submit_argv(spec, address="http://h:1", env={"X": "y", "HF_HUB_OFFLINE": "1"},
                               submission_id="sid-1", no_wait=True)
    assert argv[:6] == ["job", "submit", "--address", "http://h:1", "--submission-id", "sid-1"]
    rte = json.loads(argv[argv.index("--runtime-env-json") + 1])
    assert rte["working_dir"] == str(REPO) and rte["env_vars"]["X"] == "y"
    assert "--no-wait" in argv
    entry = argv[argv.index("--") + 1:]
    assert entry == spec.entrypoint  # verbatim, no quoting layer
    custom = jobspec.submit_argv(spec, entrypoint=["python", "-c", "print(1)"])
    assert custom[custom.index("--") + 1:] == ["python", "-c", "print(1)"]
    assert custom[custom.index("--submission-id") + 1].startswith("peirce-")


@pytest.mark.parametrize("patch, field", [
    ({"entrypoint": []}, "entrypoint"),
    ({"entrypont": ["python"]}, "entrypont"),
    ({"runtime_env": {"env_vars": {"HF_HUB_OFFLINE": 1}}}, "env_vars"),
    ({"submission_id_prefix": "bad id"}, "submission_id_prefix"),
])
def test_bad_job_yaml_is_refused_naming_the_field(tmp_path, patch, field):
    data = {**yaml.safe_load((RAY_DIR / "job.yaml").read_text()), **patch}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit, match=field):
        jobspec.load(path)


def test_rayjob_manifest():
    docs = list(yaml.safe_load_all((RAY_DIR / "rayjob.yaml").read_text()))
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m peirce.cli.main ")
    rte = yaml.safe_load(spec["runtimeEnvYAML"])
    assert REQUIRED_ENV.items() <= rte["env_vars"].items()
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == importlib.metadata.version("ray")
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for g in groups:
        assert all(isinstance(v, str) for v in g["rayStartParams"].values()), "rayStartParams are strings"
        containers = g["template"]["spec"]["containers"]
        assert containers and all(c["image"] and c["name"] for c in containers)
        volumes = {v["name"] for v in g["template"]["spec"].get("volumes", [])}
        for c in containers:
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes
    workers = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {"gpu", "cpu"} <= workers.keys()
    for g in workers.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    gpu = workers["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpu == workers["gpu"]["rayStartParams"]["num-gpus"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert "peirce-prom-targets" in claims


def test_submit_sh_is_valid_bash_and_refuses_unknown_flags():
    import subprocess
    assert subprocess.run(["bash", "-n", str(RAY_DIR / "submit.sh")]).returncode == 0
    r = subprocess.run(["bash", str(RAY_DIR / "submit.sh"), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown argument '--bogus'" in r.stderr


# ------------------------------------------------------------------ the real thing
PROBE = ("import json, os, subprocess, sys, peirce; "
         "from peirce.actors.runtime import ensure_ray; ensure_ray(); import ray; "
         "print('PEIRCE_JOB ' + json.dumps(dict(peirce_file=peirce.__file__, cpus=ray.cluster_resources().get('CPU'), "
         "argv=sys.argv[1:], env={k: os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'VLLM_HOST_IP', "
         "'PEIRCE_PROM_TARGETS_DIR', 'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER')})), flush=True); "
         "sys.exit(subprocess.call([sys.executable, '-m', 'peirce.cli.main', 'doctor', '--json', '--no-torch']))")


def probe_entrypoint() -> list[str]:
    """Joins the cluster from the job, reports where peirce came from, prints `peirce doctor --json`."""
    return ["python", "-c", PROBE, "tasks.families=[uppercase]", "two words"]


def run_job(cluster, entrypoint: list[str] | None, env: dict[str, str], timeout: float = 600) -> tuple[str, str]:
    """Submit with deploy/ray/job.yaml (entrypoint None = the file's own) and wait; (status, logs)."""
    sid = cluster.submit(entrypoint, env=env)
    status = cluster.wait(sid, timeout=timeout)
    return status, cluster.logs(sid)


def _other_ray_pids() -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() in {"raylet", "gcs_server"}:
                out.add(int(entry.name))
        except OSError:
            pass
    return out


@pytest.mark.slow
def test_job_config_runs_on_a_private_cluster(tmp_path, promtool):
    from peirce.monitoring.promtest import PrometheusServer, render_config
    from ray_local import LocalRayCluster

    others = _other_ray_pids()
    targets = tmp_path / "targets"
    # The probe job always runs; then job.yaml's own entrypoint, the smoke pipeline
    # (PEIRCE_DEPLOY_JOB=probe skips it).
    own = os.environ.get("PEIRCE_DEPLOY_JOB", "config") == "config"
    # The pipeline's fractional actors need more logical CPUs than cores (as ensure_ray gives locally).
    cluster = LocalRayCluster(num_cpus=8)
    with cluster:
        status, logs = run_job(cluster, probe_entrypoint(), env={"PEIRCE_PROM_TARGETS_DIR": str(targets)})
        assert status == "SUCCEEDED", logs[-4000:]
        line = next(l for l in logs.splitlines() if l.startswith("PEIRCE_JOB "))
        report = json.loads(line.removeprefix("PEIRCE_JOB "))
        assert report["peirce_file"].startswith(str(cluster.temp_dir)), "working_dir was not uploaded"
        assert report["cpus"] == cluster.num_cpus  # joined *this* cluster, not a new local one
        assert report["argv"] == ["tasks.families=[uppercase]", "two words"]
        assert report["env"] == {"HF_HUB_OFFLINE": "1", "VLLM_HOST_IP": "127.0.0.1",
                                 "PEIRCE_PROM_TARGETS_DIR": str(targets),
                                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        doctor = json.loads(logs[logs.index("\n{", logs.index("PEIRCE_JOB")) + 1:])
        assert doctor["packages"]["ray"] == importlib.metadata.version("ray")
        # The shipped config's `ray` job, pointed at this cluster's discovery file.
        server = PrometheusServer(render_config(targets, ray_sd_file=cluster.ray_sd_file),
                                  workdir=tmp_path / "prom")
        with server:
            node = f"127.0.0.1:{cluster.ports['metrics']}"  # --metrics-export-port, found via Ray's file_sd
            server.wait_until(lambda: server.query(f'up{{job="ray", instance="{node}"}} == 1'), timeout=90,
                              what=f"ray node metrics {node} up (sd file: {cluster.ray_sd_file})")
            server.wait_until(lambda: server.query('{job="ray", __name__=~"ray_.+"}'), timeout=60,
                              what="ray_* series")
        if own:  # the whole recipe, submitted with the shipped job config
            status, logs = run_job(cluster, None, env={"PEIRCE_PROM_TARGETS_DIR": str(targets)}, timeout=2400)
            assert status == "SUCCEEDED", logs[-4000:]
            line = next(l for l in logs.splitlines() if l.startswith("peirce run: done; report at "))
            report = Path(line.removeprefix("peirce run: done; report at ").strip())
            if not report.is_absolute():
                report = next(Path(cluster.temp_dir).rglob(str(report)))
            assert "| domain-from-merged |" in report.read_text()
    assert cluster._our_pids() == [], "Ray processes of the test cluster survived"
    assert others <= _other_ray_pids(), "another Ray cluster on this machine was touched"
