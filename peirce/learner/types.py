"""Typed inputs shared by the loss functions and the learner engine.

All tensors are [batch, response_len] and aligned on response tokens; `mask` is 1 on
real response tokens and 0 on padding, so every reduction is explicit about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossInputs:
    logprobs: torch.Tensor  # current policy log pi_theta(a_t | s_t), requires grad
    old_logprobs: torch.Tensor  # policy that the PPO ratio is taken against (learner-side recompute)
    advantages: torch.Tensor  # per-token advantages
    mask: torch.Tensor  # float/bool, 1 = response token
    ref_logprobs: torch.Tensor | None = None  # frozen reference policy, for the KL term
    rollout_logprobs: torch.Tensor | None = None  # behaviour policy (the rollout engine), for TIS
    entropy: torch.Tensor | None = None  # per-token entropy of the current policy
