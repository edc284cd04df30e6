"""Where output goes: library chatter to <run>/logs/, peirce's own lines to the console.

Logging state is process-global, so each case runs in a fresh interpreter and reads
back both what it printed and the files it wrote. The last test starts a real Ray
runtime and checks that an actor's output, its child processes' included, lands in
its log file through the worker setup hook.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from peirce.actors.runtime import ACTOR_ENV, ACTOR_LOG_ENV, ROUTED_ENV, VERBOSE_ENV, actor_log_options


def run_py(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in (VERBOSE_ENV, ROUTED_ENV, ACTOR_LOG_ENV)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**full_env, **env})


DRIVER = """
    import logging, sys
    from peirce.cli.main import configure_logging
    from peirce.actors.runtime import attach_run_log, route_library_loggers
    configure_logging()
    import ray  # gives the "ray" logger its own console handler, as in a real run
    route_library_loggers()
    logging.getLogger("ray").warning("ray-before-attach")
    logging.getLogger("vllm.engine").warning("vllm-warning")  # levels stay the libraries own
    logging.getLogger("DeepSpeed").warning("deepspeed-warning")
    logging.getLogger("peirce.trainer.health").warning("peirce-warning")
    logging.getLogger("peirce.trainer.worker_pool").info("peirce-info")
    attach_run_log("run")
    logging.getLogger("transformers.modeling_utils").warning("transformers-after-attach")
    logging.getLogger("ray.data").info("ray-after-attach")
"""
LIBRARY_LINES = ("ray-before-attach", "vllm-warning", "deepspeed-warning", "transformers-after-attach",
                 "ray-after-attach")


def test_driver_library_logs_go_to_the_run_log_and_peirce_lines_to_the_console(tmp_path):
    r = run_py(DRIVER, tmp_path)
    assert r.returncode == 0, r.stderr
    console = r.stdout + r.stderr
    for line in LIBRARY_LINES:
        assert line not in console, console
    assert "WARNING peirce.trainer.health: peirce-warning" in r.stderr
    assert "peirce.trainer.worker_pool: peirce-info" in r.stderr and "INFO" not in r.stderr
    log = (tmp_path / "run" / "logs" / "driver.log").read_text()
    for line in LIBRARY_LINES:  # held before attach_run_log, written after it
        assert line in log, log
    assert "WARNING DeepSpeed: deepspeed-warning" in log and "peirce-" not in log


def test_console_lines_follow_a_replaced_stderr(tmp_path):
    # pytest's capture swaps sys.stderr per test and closes the old one; a handler that kept
    # the first stream raised "I/O operation on closed file" in a later test's log line.
    code = """
        import io, logging, sys
        import tqdm
        from peirce.cli.main import configure_logging
        configure_logging()
        first = sys.stderr = io.StringIO()
        logging.getLogger("peirce.x").info("first-line")
        first.close()
        second = sys.stderr = io.StringIO()
        logging.getLogger("peirce.x").info("second-line")
        sys.__stderr__.write(repr((first.closed, second.getvalue())))
    """
    r = run_py(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Logging error" not in r.stderr and "second-line" in r.stderr.splitlines()[-1], r.stderr


def test_verbose_keeps_library_logs_on_the_console(tmp_path):
    r = run_py(DRIVER, tmp_path, **{VERBOSE_ENV: "1"})
    assert r.returncode == 0, r.stderr
    assert "ray-before-attach" in r.stderr and "deepspeed-warning" in r.stderr
    assert not (tmp_path / "run" / "logs").exists()


def test_redirected_process_keeps_only_peirce_warnings_on_the_console(tmp_path):
    code = """
        import logging, os, subprocess, sys
        from pathlib import Path
        from peirce.actors.runtime import redirect_output
        redirect_output(Path("logs/rollout-0.log"))
        logging.basicConfig(level=logging.INFO)  # what actor_setup does
        print("python-stdout")
        os.write(2, b"c-level-stderr\\n")
        subprocess.run([sys.executable, "-c", "print('child-process-stdout')"], check=True)
        logging.getLogger("vllm").warning("Failed to load weights")
        logging.getLogger("peirce.rollout.engine").info("peirce-info")
        logging.getLogger("peirce.transport.weight_sync").warning("peirce-warning")
    """
    r = run_py(code, tmp_path)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "logs" / "rollout-0.log").read_text()
    for line in ("python-stdout", "c-level-stderr", "child-process-stdout", "Failed to load weights", "peirce-info",
                 "peirce-warning", "--verbose shows it"):
        assert line in log, log
    assert r.stdout == ""
    assert r.stderr.strip() == "WARNING peirce.transport.weight_sync: peirce-warning"


def test_actor_log_options(tmp_path, monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    monkeypatch.delenv(ROUTED_ENV, raising=False)
    assert actor_log_options(tmp_path, "rollout-0") == {}  # workers without the hook (ray job submit)
    monkeypatch.setenv(ROUTED_ENV, "1")
    assert actor_log_options(tmp_path, "rollout-0") == {
        "runtime_env": {"env_vars": {ACTOR_LOG_ENV: str(tmp_path.resolve() / "logs" / "rollout-0.log")}}}
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert actor_log_options(tmp_path, "rollout-0") == {}


def test_verbose_flag_on_train_and_run(monkeypatch):
    from peirce.cli.main import build_parser

    # setenv first so that teardown restores the variable's absence: --verbose sets it in
    # os.environ, and a leaked PEIRCE_VERBOSE=1 turned on library chatter in every later
    # subprocess of the suite (the smoke pipeline's console check caught it)
    monkeypatch.setenv(VERBOSE_ENV, "0")
    monkeypatch.delenv(VERBOSE_ENV)
    assert build_parser().parse_args(["train", "c.yaml"]).verbose is False
    assert VERBOSE_ENV not in os.environ
    assert build_parser().parse_args(["run", "c.yaml", "--verbose"]).verbose is True
    assert os.environ[VERBOSE_ENV] == "1"


@pytest.mark.slow
def test_actor_output_lands_in_its_run_log_through_real_ray(tmp_path):
    code = f"""
        import subprocess, sys, ray
        from peirce.actors.runtime import actor_log_options, ensure_ray

        @ray.remote(num_cpus=0)
        class Talker:
            def talk(self):
                import logging
                logging.basicConfig()  # as peirce.actors.common.actor_setup does
                print("actor-stdout", flush=True)
                subprocess.run([sys.executable, "-c", "print('actor-child-stdout')"], check=True)
                logging.getLogger("peirce.x").warning("actor-peirce-warning")
                return 1

        ensure_ray(num_cpus=2)
        a = Talker.options(**actor_log_options({str(tmp_path)!r}, "talker")).remote()
        assert ray.get(a.talk.remote()) == 1
        import time; time.sleep(2)  # let Ray's log monitor forward what reaches the console
        ray.shutdown()
    """
    r = run_py(code, tmp_path, RAY_ADDRESS="")
    assert r.returncode == 0, r.stderr[-3000:]
    log = (tmp_path / "logs" / "talker.log").read_text()
    assert "actor-stdout" in log and "actor-child-stdout" in log and "actor-peirce-warning" in log
    console = r.stdout + r.stderr
    assert "actor-stdout" not in console and "actor-child-stdout" not in console
    assert "actor-peirce-warning" in console


def test_actor_env_defaults_fill_only_what_is_unset(tmp_path):
    # One table: what ensure_ray puts in every actor's runtime_env is what an actor started
    # some other way (ray job submit, a test's ray.init) falls back to.
    code = """
        import os
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ["DS_ACCELERATOR"] = "cuda"
        from peirce.actors.common import apply_env_defaults
        from peirce.actors.runtime import ACTOR_ENV
        apply_env_defaults()
        assert all(os.environ[k] == v for k, v in ACTOR_ENV.items() if k != "DS_ACCELERATOR"), os.environ
        print(os.environ["HF_HUB_OFFLINE"], os.environ["DS_ACCELERATOR"])
    """
    env = {k: v for k, v in os.environ.items() if k not in ACTOR_ENV}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "cuda"]
