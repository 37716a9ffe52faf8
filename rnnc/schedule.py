"""Learning-rate schedules, evaluated by the trainer and fed to the train model's `lr` input
(so a schedule never needs a recompile). `step` counts updates made before this one.

    exponential(decay, every):  lr · decay^(step / every)          (continuous, TF's default)
    step(gamma, every):         lr · gamma^floor(step / every)
    cosine(total, min_lr=0):    min_lr + (lr − min_lr) · (1 + cos(π · min(step, total) / total)) / 2
"""
from __future__ import annotations

import math


def learning_rate(base: float, schedule: str | None, args: dict, step: int) -> float:
    if schedule is None:
        return base
    if schedule == "exponential":
        return base * args["decay"] ** (step / args["every"])
    if schedule == "step":
        return base * args["gamma"] ** (step // args["every"])
    if schedule == "cosine":
        total, lo = args["total"], args.get("min_lr", 0.0)
        return lo + (base - lo) * (1 + math.cos(math.pi * min(step, total) / total)) / 2
    raise ValueError(f"unknown schedule {schedule!r}")
