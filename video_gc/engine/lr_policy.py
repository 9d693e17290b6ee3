"""Learning-rate schedules, evaluated at a fractional epoch.

The schedule is a pure function of the config and the fractional epoch
``epoch + iteration / iterations_per_epoch``, so a resumed run gets exactly
the values an uninterrupted run would have used.

Policies (PySlowFast semantics):

- ``cosine``: ``END + (BASE - END) * (1 + cos(pi * e / MAX_EPOCH)) / 2``; with
  ``SOLVER.COSINE_AFTER_WARMUP`` the cosine starts at the end of the warm-up.
- ``steps_with_relative_lrs``: ``BASE * LRS[i]`` where ``STEPS[i] <= e < STEPS[i+1]``
  (``MAX_EPOCH`` closes the last interval).
- ``constant``: ``BASE``.

During the first ``SOLVER.WARMUP_EPOCHS`` the rate rises linearly from
``SOLVER.WARMUP_START_LR`` to the policy's value at the end of the warm-up.
"""

from __future__ import annotations

import bisect
import math


def base_lr(cfg) -> float:
    """``SOLVER.BASE_LR``, times ``NUM_SHARDS`` when ``SOLVER.BASE_LR_SCALE_NUM_SHARDS`` is set."""
    scale = cfg.NUM_SHARDS if cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS else 1
    return cfg.SOLVER.BASE_LR * scale


def _cosine(cfg, epoch: float) -> float:
    solver = cfg.SOLVER
    start = solver.WARMUP_EPOCHS if solver.COSINE_AFTER_WARMUP else 0.0
    progress = (epoch - start) / max(solver.MAX_EPOCH - start, 1e-12)
    return solver.COSINE_END_LR + (base_lr(cfg) - solver.COSINE_END_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _steps_with_relative_lrs(cfg, epoch: float) -> float:
    steps = list(cfg.SOLVER.STEPS)
    # Index of the last step boundary <= epoch; epochs before STEPS[0] use the first rate.
    index = max(bisect.bisect_right(steps, epoch) - 1, 0)
    return base_lr(cfg) * cfg.SOLVER.LRS[index]


def _constant(cfg, epoch: float) -> float:
    return base_lr(cfg)


_POLICIES = {
    "cosine": _cosine,
    "steps_with_relative_lrs": _steps_with_relative_lrs,
    "constant": _constant,
}


def get_lr_at_epoch(cfg, epoch: float) -> float:
    """The learning rate at fractional ``epoch`` (warm-up included)."""
    policy = _POLICIES[cfg.SOLVER.LR_POLICY]
    warmup = cfg.SOLVER.WARMUP_EPOCHS
    if epoch < warmup:
        start, end = cfg.SOLVER.WARMUP_START_LR, policy(cfg, warmup)
        return start + (end - start) * epoch / warmup
    return policy(cfg, epoch)


def set_lr(optimizer, lr: float) -> None:
    """Write ``lr`` times the group's ``lr_mult`` (SOLVER.HEAD_LR_MULT for the head, else 1) into
    every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
