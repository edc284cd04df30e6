"""Read deploy/ray/job.yaml and print the `ray job submit` argument vector (NUL-separated).

Used by submit.sh so the YAML is validated (unknown keys, wrong types and empty
entrypoints are refused, naming the field) and turned into flags in one place;
the tests import it too. Relative `working_dir` is resolved against the repository root.

    python deploy/ray/jobspec.py deploy/ray/job.yaml --address URL [--env K=V]... [-- ENTRYPOINT...]
"""

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO = Path(__file__).resolve().parents[2]


class RuntimeEnv(BaseModel):
    """The subset of Ray's runtime_env peirce uses; `extra` keys pass through to Ray unchanged."""

    model_config = ConfigDict(extra="allow")
    working_dir: str | None = Field(None, description="Uploaded to the cluster; relative = repo root.")
    excludes: list[str] = Field(default_factory=list, description="gitignore-style paths not uploaded.")
    env_vars: dict[str, str] = Field(default_factory=dict, description="Set for the driver and every actor.")

    @field_validator("env_vars", mode="before")
    @classmethod
    def _strings_only(cls, v: object) -> object:
        if isinstance(v, dict):
            bad = {k: val for k, val in v.items() if not isinstance(val, str)}
            if bad:
                raise ValueError(f"env_vars values must be quoted strings, got {bad}")
        return v


class JobSpec(BaseModel):
    """One Ray job: where to submit it, what to run, and in which environment."""

    model_config = ConfigDict(extra="forbid")
    address: str = Field("http://127.0.0.1:8265", description="Ray dashboard URL (jobs API).")
    submission_id_prefix: str = Field("peirce", pattern=r"^[A-Za-z0-9_-]+$")
    entrypoint: list[str] = Field(min_length=1, description="argv; joined and run by a shell on the head.")
    entrypoint_num_cpus: float | None = Field(None, ge=0)
    entrypoint_num_gpus: float | None = Field(None, ge=0)
    metadata: dict[str, str] = Field(default_factory=dict)
    runtime_env: RuntimeEnv = Field(default_factory=RuntimeEnv)


def load(path: str | Path) -> JobSpec:
    try:
        return JobSpec.model_validate(yaml.safe_load(Path(path).read_text()))
    except ValidationError as exc:
        raise SystemExit(f"{path}: invalid job spec:\n{exc}") from None


def submit_argv(spec: JobSpec, *, address: str | None = None, env: dict[str, str] | None = None,
                entrypoint: list[str] | None = None, submission_id: str | None = None,
                no_wait: bool = False) -> list[str]:
    """`ray job submit ...` as an argument vector (without the leading `ray`)."""
    rte = spec.runtime_env.model_dump(exclude_none=True)
    if rte.get("working_dir"):
        rte["working_dir"] = str((REPO / rte["working_dir"]).resolve())
    rte["env_vars"] = {**rte.get("env_vars", {}), **(env or {})}
    sid = submission_id or f"{spec.submission_id_prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    argv = ["job", "submit", "--address", address or spec.address, "--submission-id", sid,
            "--runtime-env-json", json.dumps(rte)]
    if spec.metadata:
        argv += ["--metadata-json", json.dumps(spec.metadata)]
    if spec.entrypoint_num_cpus is not None:
        argv += ["--entrypoint-num-cpus", str(spec.entrypoint_num_cpus)]
    if spec.entrypoint_num_gpus is not None:
        argv += ["--entrypoint-num-gpus", str(spec.entrypoint_num_gpus)]
    if no_wait:
        argv.append("--no-wait")
    # Verbatim: on POSIX `ray job submit` joins argv with shlex.join, so each token reaches
    # the entrypoint's argv unchanged (tests/deploy checks one with brackets and a space).
    return [*argv, "--", *(entrypoint or spec.entrypoint)]


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--env wants KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    entry = None
    if "--" in argv:
        i = argv.index("--")
        argv, entry = argv[:i], argv[i + 1:] or None
    p = argparse.ArgumentParser(prog="jobspec.py")
    p.add_argument("config")
    p.add_argument("--address")
    p.add_argument("--env", type=_env_pair, action="append", default=[])
    p.add_argument("--submission-id")
    p.add_argument("--no-wait", action="store_true")
    a = p.parse_args(argv)
    out = submit_argv(load(a.config), address=a.address, env=dict(a.env), entrypoint=entry,
                      submission_id=a.submission_id, no_wait=a.no_wait)
    sys.stdout.write("\0".join(out) + "\0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
