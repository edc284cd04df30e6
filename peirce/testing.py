"""Helpers for testing reward functions, task families and the learner (yours or peirce's).

A test of a verifier needs the three canonical responses to a puzzle: the gold answer
as a model would give it after the pre-filled `<think>`, a well-formed wrong answer and
an answer without tags. They live here so every test (and a user's own family) builds
them the same way.
"""

from __future__ import annotations


def wrap_response(answer: str, thought: str = "reasoning") -> str:
    """The whole assistant turn answering `answer` (a closed `<think>` then `<answer>`)."""
    return f"<think>{thought}</think>\n<answer>\n{answer}</answer>"


def wrong_answer(gold: str) -> str:
    """A well-formed, wrong answer: every judgement flipped (consistently when a goal
    repeats), or one added to an integer."""
    g = gold.strip()
    if g.lstrip("-").isdigit():
        return str(int(g) + 1)
    flipped = g.replace("unreachable", "\0").replace("reachable", "unreachable").replace("\0", "reachable")
    flipped = flipped.replace("True", "\0").replace("False", "True").replace("\0", "False")
    if flipped == g:
        raise ValueError(f"cannot make a wrong answer from {gold!r}: no integer, True/False or reachable")
    return flipped


def make_samples(n: int = 6, seed: int = 0, vocab: int = 2000) -> list:
    """`n` seeded learner Samples of varying prompt/response lengths, advantages +1/-1 in
    turn: a batch that exercises padding and both gradient signs."""
    import torch

    from peirce.learner.batch import Sample

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(0, vocab, (4 + i,), generator=g).tolist()
        response = torch.randint(0, vocab, (3 + (i * 3) % 7,), generator=g).tolist()
        out.append(Sample(prompt, response, 1.0 if i % 2 == 0 else -1.0, policy_version=0))
    return out


def toy_task(i: int, family: str = "uppercase"):
    """The i-th of a stream of distinct level-1 train tasks for planner and driver tests."""
    from peirce.tasks.base import Task

    return Task(id=f"t{i:04d}", family=family, level=1, split="train", puzzle={"i": i},
                puzzle_text=f"spell word {i} in capitals", solution_text="X")


class ListFeed:
    """A curriculum for the planner's admission (its TaskFeed): `tasks` in order (or that
    many `toy_task`s), then done. `given` is what admission has taken so far."""

    def __init__(self, tasks) -> None:
        self.tasks = [toy_task(i) for i in range(tasks)] if isinstance(tasks, int) else list(tasks)
        self.given: list = []

    @property
    def done(self) -> bool:
        return len(self.given) == len(self.tasks)

    def next_task(self):
        if self.done:
            return None
        self.given.append(self.tasks[len(self.given)])
        return self.given[-1]
