"""``ssb compare``'s defaults, in one place: the command (``cli.py``), the Python API
(``ssb.compare``, ``api.py``), :class:`comparison.arms.Compare` and ``bench/compare.py`` read them, so a
comparison started from any of them runs the same. Standard library only: ``ssb compare --help``
shows them without loading pydantic."""

from __future__ import annotations

ARMS = "base,ssb,sft,rft,grpo,sdft"  # every arm a single run trains, and the base model
REPLICATES = 3  # three or more: the pooled interval resamples replicates, and two give it three outcomes
N = 400  # held-out problems, the same for every model
SEED = 20261122  # the held-out draw
GRPO_POINTS = 4  # GRPO adapters saved along its budget (the compute-accuracy curve)
CURVES = True  # per-epoch, half-pairs and GRPO-point evaluations besides the final adapters
K_MAX = 10  # K of the K-sensitivity rollout pass (0: none)
K_VALUES = (2, 10)  # the Ks SSB is trained at in that pass

# What each trainable arm is, for ``Compare`` and ``--tune`` alike (an ``ssb:...`` ablation is an ``ssb``):
TRAINED_BY = {"ssb": "distill", "sft": "sft", "rft": "rft", "grpo": "grpo", "sdft": "sdft"}  # the stage that trains it
ADAPTERS = {"ssb": "student", "sft": "sft", "rft": "rft", "grpo": "grpo", "sdft": "sdft"}  # its adapter directory
LR_KEYS = {"ssb": "distill.lr", "sft": "baselines.sft_lr", "rft": "baselines.rft_lr", "grpo": "grpo.lr",
           "sdft": "sdft.lr"}  # its learning rate
OVERRIDE_SEP = r"\+(?=[A-Za-z_][\w.]*=)"  # joins an ssb:key=value+key=value arm's overrides (a regex)
BUDGETED = ("grpo", "sdft")  # held to SSB's FLOPs; adapters saved at points of the budget (<arm>_points/)
