"""Evaluation: suites of tasks, vLLM sampling, per-family rewards, unbiased pass@k, tables.

passk (pure math) -> suites/loaders (tasks) -> runner (`evaluate`) -> report (tables).
`peirce eval` (peirce/cli/eval.py) is the command-line front end.
"""

from peirce.eval.passk import avg_correct, mean_pass_at_k, pass_at_k, summarize

__all__ = ["avg_correct", "mean_pass_at_k", "pass_at_k", "summarize"]
