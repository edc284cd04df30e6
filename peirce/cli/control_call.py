"""Shared shape of the commands that talk to a live run's control socket."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable


def print_control_reply(command: str, request: Callable[[], dict[str, Any]]) -> int:
    """Run `request`; print the run's reply as JSON (exit 0) or the reason it failed (exit 1)."""
    from peirce.trainer.control import ControlError

    try:
        state = request()
    except ControlError as exc:
        print(f"peirce {command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(state, indent=2, sort_keys=True))
    return 0
