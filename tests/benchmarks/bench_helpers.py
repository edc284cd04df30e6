"""Shared pieces of the benchmark tests."""

from __future__ import annotations

from peirce.tasks.base import Task


class ListFeed:
    """A TaskFeed of n toy tasks, handed out in order."""

    def __init__(self, n: int) -> None:
        self.tasks = [Task(id=f"t{i}", family="uppercase", level=1, split="train", puzzle={"i": i},
                           puzzle_text=f"p{i}", solution_text="X") for i in range(n)]
        self.given = 0

    @property
    def done(self) -> bool:
        return self.given == len(self.tasks)

    def next_task(self) -> Task:
        self.given += 1
        return self.tasks[self.given - 1]
