"""The training driver: run directory, control socket, task source, orchestrator loop."""
