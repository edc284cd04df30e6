"""MASA: meta-awareness via self-alignment (arXiv 2510.03259), the driver-independent core.

Beside each problem's G solution rollouts the policy makes M *meta* rollouts that predict,
before solving, which notions a solution needs, how many of K attempts would succeed and
how long a correct solution is. The meta rollouts are rewarded by how well the solutions
bear the predictions out (`reward`), and the predictions can steer the solving: skip
prompts predicted to give zero-variance groups (`gating`), cap the response length
(`cutoff`), hint the notions (`prompt`). `plan` is the per-prompt state machine a driver
calls; `expert` keeps the best meta trajectories for behaviour cloning.

Everything here is pure Python (no torch, no Ray) so a driver, the CLI (`peirce
meta-score`) and tests share it. Nothing is imported here: `peirce.config.schema` imports
`peirce.masa.config`, which must stay import-cheap and free of cycles.
"""
