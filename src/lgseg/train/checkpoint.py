"""Checkpoints: one format for every run, written atomically; the authors' read into it; shape-matched loading for
fine-tuning."""

from __future__ import annotations

import logging
import pickle
import types
from pathlib import Path

import torch

from lgseg.errors import DataError
from lgseg.fileio import atomic_file
from lgseg.models.external import checkpoint_kind, from_authors

log = logging.getLogger(__name__)
STRIPPED_PREFIXES = ("model.", "module.", "encoder.")


def save_checkpoint(path: str | Path, **content) -> None:
    """torch.save `content` (model, optimizer, scheduler, epoch, ...) to a temporary file, then rename."""
    with atomic_file(path) as tmp:
        torch.save(content, tmp)


def load_checkpoint(path: str | Path, map_location="cpu", variant: str | None = None) -> dict:
    """The content of a checkpoint file. With `variant` (a Res16UNet variant) the file may also be one of the
    authors' (LGS's Lightning .ckpt, CSC's .pth; `lgseg.models.external`): it comes back in our format, {"model":
    state dict in our names, "model_args": {"num_classes", "feature_dim"}}; ours come back as they are."""
    try:
        content = torch.load(path, map_location=map_location, weights_only=False,
                             **({"pickle_module": _tolerant_pickle} if variant else {}))
    except FileNotFoundError:
        raise DataError(path, "checkpoint not found", "train the run first or fix the path") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise DataError(path, f"unreadable checkpoint ({err})",
                        "give a checkpoint of lgseg, LanguageGroundedSemseg (.ckpt) or ContrastiveSceneContexts "
                        "(.pth)" if variant else "delete it and re-run training") from None
    if variant is None or checkpoint_kind(content) == "lgseg":
        return content
    from lgseg.scannet.labels import scannet200

    return from_authors(content, path, variant, scannet200().num_classes)


class _Stub(dict):
    """Stands in for a class a checkpoint names that is not installed (e.g. pytorch_lightning's): keeps its state."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def append(self, item):
        self.setdefault("items", []).append(item)

    def extend(self, items):
        self.setdefault("items", []).extend(items)


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": f"missing.{module}"})


_tolerant_pickle = types.ModuleType("lgseg_tolerant_pickle")
_tolerant_pickle.Unpickler = _TolerantUnpickler
_tolerant_pickle.load = lambda file, **kwargs: _TolerantUnpickler(file, **kwargs).load()


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
