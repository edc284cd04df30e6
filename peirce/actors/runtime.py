"""Start or join a Ray cluster with peirce's defaults (loopback, no usage stats, offline)."""

from __future__ import annotations

import os

ACTOR_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "PYTHONUNBUFFERED": "1",
    "VLLM_HOST_IP": "127.0.0.1",  # vLLM's internal queues on loopback, not the interface address
}
_PASS_THROUGH = ("VLLM_CPU_KVCACHE_SPACE", "DS_ACCELERATOR", "PEIRCE_HOME", "PEIRCE_PROM_TARGETS_DIR",
                 "PEIRCE_LOG_LEVEL", "TORCH_EXTENSIONS_DIR", "OMP_NUM_THREADS")


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
    env = {**ACTOR_ENV, **{k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}}
    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        # Inside `ray job submit` the job's runtime_env already carries our variables, and
        # Ray refuses to merge a second env_vars into it; elsewhere pass only what the
        # cluster cannot know.
        in_job = bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))
        kwargs = {} if in_job else {"runtime_env": {"env_vars": env}}
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=True, **kwargs)
        return
    cores = os.cpu_count() or 2
    ray.init(num_cpus=num_cpus or max(8, 2 * cores), include_dashboard=False, runtime_env={"env_vars": env},
             log_to_driver=True, _node_ip_address="127.0.0.1")
