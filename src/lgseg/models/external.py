"""The authors' checkpoints in our parameter names: LanguageGroundedSemseg's (LGS) and ContrastiveSceneContexts' (CSC).

Both build the Res16UNet of SpatioTemporalSegmentation with MinkowskiEngine (LGS: models/res16unet.py and
models/clip_models.py, ME 0.5.4; CSC: pretrain/contrastive_scene_contexts/model/res16unet.py and
downstream/semseg/models/res16unet.py, ME 0.4.3). Their tensors equal ours in shape and layout, so a checkpoint
maps by renaming alone: ME's convolution kernel is [kernel volume, in, out] ([in, out] for a 1x1x1 kernel of
stride 1), the volume index running x fastest in both ME versions, as our torch backend; MinkowskiBatchNorm keeps
a torch BatchNorm1d as `.bn`, as ours. The renaming, per module (everything below a module keeps its name, e.g.
`block3.2.norm1.bn.running_mean` -> `down_blocks.2.2.norm1.bn.running_mean`):

    conv0p1s1, bn0, final                                   -> the same
    conv{k}p{2^(k-1)}s2, bn{k}, block{k}        (k = 1..4)  -> down_convs.{k-1}, down_norms.{k-1}, down_blocks.{k-1}
    convtr{k}p{2^(8-k)}s2, bntr{k}              (k = 4..7)  -> up_convs.{k-4}, up_norms.{k-4}
    block{k}                                    (k = 5..8)  -> up_blocks.{k-5}

`final` (PLANES[7] -> classes, kernel [in, out], bias [1, out]) becomes our class head only when it has
ScanNet200's 200 outputs on the variant's last plane; any other head (CSC's 32-d contrastive projection, a
ScanNet20 head) is left out, as is LGS's `projection_layer` (it maps the text anchors, not the 3D features).
One difference is not a name: our last block has no ReLU, as LGS's Res16UNet34D / Res16UNet34CR; LGS's
Res16UNet34C and every CSC network end with one, so their own predictions are not reproduced exactly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch

from lgseg.errors import DataError
from lgseg.models.res16unet import VARIANTS, Res16UNet

log = logging.getLogger(__name__)

LIGHTNING_PREFIX = "model."  # LGS's LightningModule keeps the network as `self.model`
MULTI_GPU_PREFIXES = ("module.", "encoder.")  # stripped by CSC's and LGS's own loaders
HEAD = ("final.kernel", "final.bias")
SOURCES = {"lgs": "LanguageGroundedSemseg", "csc": "ContrastiveSceneContexts"}
# LGS classes whose last block has no ReLU (NoReluBlock), as ours; every other LGS/CSC Res16UNet ends with one
LGS_WITHOUT_LAST_RELU = {"Res16UNet34D", "Res16UNet34Dv2", "Res16UNet34Dv3", "Res16UNet34CR", "Res16UNet34CR_Proj",
                         "Res16UNet34C_P"}
_RULES = [(re.compile(r"^conv([1-4])p(\d+)s2\.(.+)$"), lambda k, p: p == 2 ** (k - 1), "down_convs", 1),
          (re.compile(r"^bn([1-4])\.(.+)$"), None, "down_norms", 1),
          (re.compile(r"^block([1-4])\.(.+)$"), None, "down_blocks", 1),
          (re.compile(r"^convtr([4-7])p(\d+)s2\.(.+)$"), lambda k, p: p == 2 ** (8 - k), "up_convs", 4),
          (re.compile(r"^bntr([4-7])\.(.+)$"), None, "up_norms", 4),
          (re.compile(r"^block([5-8])\.(.+)$"), None, "up_blocks", 5)]


def authors_to_ours(name: str) -> str | None:
    """Our name of one of the authors' Res16UNet tensors, or None if it has no counterpart."""
    if name.startswith(("conv0p1s1.", "bn0.", "final.")):
        return name
    for pattern, check, module, first in _RULES:
        match = pattern.match(name)
        if match:
            k = int(match.group(1))
            if check is not None and not check(k, int(match.group(2))):
                return None
            return f"{module}.{k - first}.{match.groups()[-1]}"
    return None


def checkpoint_kind(content) -> str | None:
    """'lgseg' (ours), 'lgs' (a PyTorch-Lightning .ckpt of LGS), 'csc' (a MinkowskiEngine state dict, as CSC saves
    it, possibly under 'state_dict' or 'model') or None."""
    if not isinstance(content, Mapping):
        return None
    if isinstance(content.get("model"), Mapping) and isinstance(content.get("model_args"), Mapping):
        return "lgseg"
    state = content.get("state_dict")
    if isinstance(state, Mapping) and any(str(k).startswith(LIGHTNING_PREFIX + "conv0p1s1.") for k in state):
        return "lgs"
    for candidate in (state, content.get("model"), content):
        if isinstance(candidate, Mapping) and "conv0p1s1.kernel" in {_strip(str(k)) for k in candidate}:
            return "csc"
    return None


def _strip(name: str) -> str:
    for prefix in MULTI_GPU_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


@lru_cache(maxsize=None)
def _shapes(variant: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: nothing allocated
        from lgseg.sparse import get_backend

        net = Res16UNet(get_backend("torch"), variant, num_classes=num_classes)
    return {name: tuple(value.shape) for name, value in net.state_dict().items()}


def _fit(renamed: dict, variant: str, num_classes: int) -> tuple[dict, list[str], list[str]]:
    """(backbone tensors that fit `variant`, its backbone names absent from `renamed`, names of another shape)."""
    expected = {k: v for k, v in _shapes(variant, num_classes).items() if k not in HEAD}
    fitting, other = {}, []
    for name, value in renamed.items():
        if name in HEAD:
            continue
        if name in expected and tuple(value.shape) == expected[name]:
            fitting[name] = value
        else:
            other.append(name)
    missing = [k for k in expected if k not in fitting and not k.endswith("num_batches_tracked")]
    return fitting, missing, other


def from_authors(content: Mapping, path: str | Path, variant: str, num_classes: int = 200) -> dict:
    """Our checkpoint {"model": state dict in our names, "model_args": {...}} from an LGS or CSC checkpoint's content
    for the Res16UNet `variant`; DataError if it is neither or holds another variant."""
    kind = checkpoint_kind(content)
    if kind not in ("lgs", "csc"):
        raise DataError(path, "is not a Res16UNet checkpoint of lgseg, LanguageGroundedSemseg (.ckpt) or "
                              "ContrastiveSceneContexts (.pth)", "give one of those files")
    ignored: list[str] = []
    if kind == "lgs":
        state = content["state_dict"]
        network = {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
        ignored += [k for k in state if not k.startswith(LIGHTNING_PREFIX)]
    else:
        state = next(c for c in (content.get("state_dict"), content.get("model"), content)
                     if isinstance(c, Mapping) and "conv0p1s1.kernel" in {_strip(str(k)) for k in c})
        network = {_strip(str(k)): v for k, v in state.items()}
    renamed = {}
    for name, value in network.items():
        ours = authors_to_ours(name) if isinstance(value, torch.Tensor) else None
        if ours is None:
            ignored.append(name)
        else:
            renamed[ours] = value
    fitting, missing, other = _fit(renamed, variant, num_classes)
    if missing or other:
        fits = [v for v in VARIANTS if v != variant and not any(_fit(renamed, v, num_classes)[1:])]
        raise DataError(path, f"holds a {SOURCES[kind]} network, but not a {variant}: {len(fitting)} of its "
                              f"{len(fitting) + len(missing)} backbone tensors fit, missing: "
                              f"{', '.join(missing[:4]) or 'none'}; of another shape or not in {variant}: "
                              f"{', '.join(other[:4]) or 'none'}",
                        f"set model.variant: {fits[0]}" if fits else
                        f"use a checkpoint of one of {', '.join(VARIANTS)}")
    model = dict(fitting)
    for name, shape in _shapes(variant, num_classes).items():  # a file without batch-norm step counters
        if name.endswith("num_batches_tracked") and name not in model:
            model[name] = torch.zeros(shape, dtype=torch.long)
    head = {k: renamed[k] for k in HEAD if k in renamed}
    expected = _shapes(variant, num_classes)
    if head and all(k in head and tuple(head[k].shape) == expected[k] for k in HEAD):
        model.update(head)
    else:
        ignored += [f"{k} {list(v.shape)}" for k, v in head.items()]
    model_args = {"num_classes": num_classes if "final.kernel" in model else None, "feature_dim": None}
    described = content.get("hyper_parameters") if kind == "lgs" else content  # CSC's downstream saves "arch"
    trained_as = described.get("model" if kind == "lgs" else "arch") if isinstance(described, Mapping) else None
    trained_as = trained_as if isinstance(trained_as, str) else None
    log.info("%s: %s checkpoint%s: %d backbone tensors matched %s, %s; %d keys ignored: %s", path, SOURCES[kind],
             f" of {trained_as}" if trained_as else "", len(fitting), variant,
             f"with its {num_classes}-class head" if model_args["num_classes"] else "no class head", len(ignored),
             ", ".join(ignored[:12]) + (" ..." if len(ignored) > 12 else ""))
    if kind == "csc" or trained_as not in LGS_WITHOUT_LAST_RELU:
        network_name = trained_as or ("the network (unless a Res16UNet34D)" if kind == "lgs" else "CSC's network")
        log.warning("%s: %s ends its last block with a ReLU, ours does not: fine-tuning starts from the same "
                    "weights, but the network's own outputs differ from the authors'", path, network_name)
    return {"model": model, "model_args": model_args}
