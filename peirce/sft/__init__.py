"""Supervised fine-tuning on worked solutions: the warm start RL needs when a model never
produces the answer format (config -> examples -> loop; `peirce sft`, stage-A warm-up)."""
