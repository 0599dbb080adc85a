"""Learning-rate schedules, stepped once per epoch, by name (`train.scheduler`). Each declares the `train.*` keys
it reads, so only those are part of a run's identity (a milestone change does not re-train an exponential run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Schedule:
    reads: tuple[str, ...]
    build: Callable  # (optimizer, train settings, optimiser steps per epoch) -> torch LR scheduler


def _multistep(optimizer, train: dict, steps_per_epoch: int):
    import torch

    return torch.optim.lr_scheduler.MultiStepLR(optimizer, train["milestones"], train["gamma"])


def _exponential(optimizer, train: dict, steps_per_epoch: int):
    """lr x gamma per `decay_steps` optimiser steps (CSC's ExpLR), applied at the end of each epoch with the
    number of steps of the first epoch's batching (later epochs may pack a few more or fewer batches)."""
    import torch

    return torch.optim.lr_scheduler.ExponentialLR(optimizer, train["gamma"] ** (steps_per_epoch / train["decay_steps"]))


SCHEDULES = {"multistep": Schedule(("milestones", "gamma"), _multistep),
             "exponential": Schedule(("gamma", "decay_steps"), _exponential)}
