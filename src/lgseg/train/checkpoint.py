"""Checkpoints: one format for every run, written atomically; shape-matched loading for fine-tuning."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from lgseg.errors import DataError
from lgseg.fileio import atomic_file

log = logging.getLogger(__name__)
STRIPPED_PREFIXES = ("model.", "module.", "encoder.")


def save_checkpoint(path: str | Path, **content) -> None:
    """torch.save `content` (model, optimizer, scheduler, epoch, ...) to a temporary file, then rename."""
    with atomic_file(path) as tmp:
        torch.save(content, tmp)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise DataError(path, "checkpoint not found", "train the run first or fix the path") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise DataError(path, f"unreadable checkpoint ({err})", "delete it and re-run training") from None


def _strip(name: str) -> str:
    for prefix in STRIPPED_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def load_matching_weights(model: torch.nn.Module, state: dict) -> tuple[list[str], list[str]]:
    """Copy every parameter/buffer whose name (prefixes model./module./encoder. stripped) and shape match.

    Returns (loaded names, names of the model left as initialised, e.g. a new classification head).
    """
    own = model.state_dict()
    matched = {}
    for name, value in state.items():
        key = _strip(name)
        if key in own and own[key].shape == value.shape:
            matched[key] = value
    model.load_state_dict(matched, strict=False)
    kept = sorted(set(own) - set(matched))
    log.info("loaded %d tensors; %d left as initialised: %s", len(matched), len(kept), ", ".join(kept[:8]))
    return sorted(matched), kept
