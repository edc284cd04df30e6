"""Worked solutions for the MAA logic families: program-written reasoning traces.

Why: the embedded SmolLM2-135M never samples `...</think><answer>...</answer>` on its own,
so RL from it gets no reward signal; a supervised warm start on these completions teaches
the format and a plausible line of reasoning. Each family module turns the family's own
parser and solver output into steps; `phrasing` picks the wording and assembles the
completion.
"""
