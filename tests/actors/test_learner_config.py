"""The learner actor's settings from a TrainConfig (no Ray: the mapping is a pure function)."""

from __future__ import annotations

import pytest

from peirce.actors.learner import learner_config
from peirce.config import TrainConfig, load_config
from peirce.model.precision import bf16_is_native


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "auto"])
def test_weights_sync_in_the_dtype_the_engines_serve(dtype):
    """An engine must hold the learner's weights rounded once, to its own dtype: bf16 tensors
    into an fp32 engine would serve a coarser policy than the learner trains."""
    cfg = load_config(TrainConfig, None, [f"model.dtype={dtype}", "model.path=tiny", "trainer.seed=9"])
    want = {"float32": "float32", "bfloat16": "bfloat16",
            "auto": "bfloat16" if bf16_is_native() else "float32"}[dtype]
    lc = learner_config(cfg)
    assert lc.sync_dtype == want and lc.seed == 9
