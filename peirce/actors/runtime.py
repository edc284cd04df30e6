"""Start or join a Ray cluster with peirce's defaults (loopback, no usage stats, offline),
and decide where output goes.

The console is for peirce's own lines: stage start and end, progress bars, warnings.
Library chatter (vLLM, Ray, DeepSpeed, transformers INFO/WARNING, C++ warnings, load
progress bars) goes to files in the run directory instead:

- each actor a run starts with `actor_log_options(run_dir, name)` writes its whole
  stdout/stderr, its subprocesses' included (vLLM's engine core and workers), to
  `<run>/logs/<name>.log`: a Ray worker setup hook swaps file descriptors 1 and 2
  before the actor is built. peirce WARNING+ lines still reach the console.
- the driver's library loggers go to `<run>/logs/driver.log` once the run directory
  is known (`LIBRARY_LOG.attach`); until then their records are held in memory.

`peirce train --verbose` / `peirce run --verbose` (PEIRCE_VERBOSE=1) turns both off.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

ACTOR_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "PYTHONUNBUFFERED": "1",
    "VLLM_HOST_IP": "127.0.0.1",  # vLLM's internal queues on loopback, not the interface address
}
# VLLM_CPU_NUM_OF_RESERVED_CPU / VLLM_CPU_OMP_THREADS_BIND: an operator's choice overrides the
# per-CPU-kind engine settings (peirce.rollout.cpu_settings) inside actors too
_PASS_THROUGH = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND",
                 "DS_ACCELERATOR", "PEIRCE_HOME", "PEIRCE_PROM_TARGETS_DIR", "PEIRCE_LOG_LEVEL", "TORCH_EXTENSIONS_DIR",
                 "OMP_NUM_THREADS", "PEIRCE_VERBOSE")
NODE_IP_ENV = "PEIRCE_NODE_IP"  # the driver's node address when joining RAY_ADDRESS (several nodes per machine)
VERBOSE_ENV = "PEIRCE_VERBOSE"  # "1": library output on the console too (--verbose)
ACTOR_LOG_ENV = "PEIRCE_ACTOR_LOG"  # per actor: the file its stdout/stderr go to
ROUTED_ENV = "PEIRCE_ACTOR_LOGS_ROUTED"  # "1": this cluster's workers run SETUP_HOOK
SETUP_HOOK = "peirce.actors.runtime.setup_worker_process"
LIBRARY_LOGGERS = ("ray", "vllm", "deepspeed", "DeepSpeed", "transformers", "torch", "accelerate", "urllib3",
                   "filelock", "huggingface_hub", "mergekit", "wandb", "py.warnings")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def ensure_ray(num_cpus: float | None = None) -> None:
    """Join `RAY_ADDRESS` when set (ray job submit, a cluster), else start a local runtime.

    On a small CPU box the logical CPU count is raised (default: max(8, 2 x cores)) so
    the fractional actors of a run can all be scheduled; they share the real cores.
    """
    import ray

    if ray.is_initialized():
        return
    for k, v in ACTOR_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    in_job = bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))
    if not in_job:
        os.environ[ROUTED_ENV] = "1"  # actors' output can go to run directories (the hook below)
    env = {**ACTOR_ENV, **{k: os.environ[k] for k in (*_PASS_THROUGH, ROUTED_ENV) if k in os.environ}}
    runtime_env = {"env_vars": env, "worker_process_setup_hook": SETUP_HOOK}
    route_library_loggers()  # `import ray` gave the "ray" logger its own console handler
    if os.environ.get("RAY_ADDRESS") or in_job:
        # Inside `ray job submit` the job's runtime_env already carries our variables, and
        # Ray refuses to merge a second env_vars into it; elsewhere pass only what the
        # cluster cannot know.
        kwargs: dict[str, Any] = {} if in_job else {"runtime_env": runtime_env}
        if os.environ.get(NODE_IP_ENV):  # several nodes on one machine: say which one the driver is on
            kwargs["_node_ip_address"] = os.environ[NODE_IP_ENV]
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=True, **kwargs)
        return
    cores = os.cpu_count() or 2
    ray.init(num_cpus=num_cpus or max(8, 2 * cores), include_dashboard=False, runtime_env=runtime_env,
             log_to_driver=True, _node_ip_address="127.0.0.1")


# ---------------------------------------------------------------- actors
def actor_log_options(run_dir: str | Path, name: str) -> dict[str, Any]:
    """`.options(**...)` that sends an actor's stdout/stderr to `<run_dir>/logs/<name>.log`
    ({} with --verbose, or where this cluster's workers do not run the setup hook)."""
    if verbose() or os.environ.get(ROUTED_ENV) != "1":
        return {}
    path = Path(run_dir).resolve() / "logs" / f"{name}.log"
    return {"runtime_env": {"env_vars": {ACTOR_LOG_ENV: str(path)}}}


def setup_worker_process() -> None:
    """Ray's worker_process_setup_hook: runs in every worker before its actor exists."""
    path = os.environ.get(ACTOR_LOG_ENV)
    if path:
        redirect_output(Path(path))


def redirect_output(path: Path) -> None:
    """Point fds 1 and 2 (this process and every child it starts) at `path`, appending;
    peirce WARNING+ records still go to the old stderr, which Ray forwards to the driver."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    console = os.fdopen(os.dup(2), "w", buffering=1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    handler = logging.StreamHandler(console)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("peirce").addHandler(handler)
    print(f"peirce: pid {os.getpid()} writes its output here; library output is kept off the console "
          f"(--verbose shows it), peirce warnings still go there", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the driver
class LibraryLog(logging.Handler):
    """The driver's library records: the last `capacity` are held until `attach(path)`
    names the run's log file, then everything is written there."""

    def __init__(self, capacity: int = 5000) -> None:
        super().__init__()
        self.pending: collections.deque[logging.LogRecord] = collections.deque(maxlen=capacity)
        self.file: logging.Handler | None = None
        self._io = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._io:
            if self.file is None:
                self.pending.append(record)
            else:
                self.file.emit(record)

    def attach(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        with self._io:
            if self.file is not None:
                self.file.close()
            self.file = handler
            while self.pending:
                handler.emit(self.pending.popleft())

    def close(self) -> None:
        with self._io:
            if self.file is not None:
                self.file.close()
        super().close()


LIBRARY_LOG = LibraryLog()


def route_library_loggers(names: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Send the named library loggers to LIBRARY_LOG instead of the console (not with --verbose).

    Libraries add console handlers when imported or first used (ray on import,
    transformers on first log), so this runs again at the points where they may have."""
    if verbose():
        return
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers[:] = [h for h in logger.handlers if not _is_console(h)]
        if LIBRARY_LOG not in logger.handlers:
            logger.addHandler(LIBRARY_LOG)
        logger.propagate = False


def attach_run_log(run_dir: str | Path) -> None:
    """Write the driver's library records (held so far, and from now on) to `<run_dir>/logs/driver.log`."""
    if verbose():
        return
    route_library_loggers()
    LIBRARY_LOG.attach(Path(run_dir) / "logs" / "driver.log")


def _is_console(handler: logging.Handler) -> bool:
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)) or \
        type(handler).__name__ == "PlainRayHandler"
