"""Text anchors: encoders (tiny random CLIP, checkpoint loading, QuickGELU, MiniLM semantics) and the anchor cache."""

import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lgseg.cli import main
from lgseg.errors import ConfigError, DataError
from lgseg.scannet.labels import scannet200
from lgseg.text.anchors import build_text_anchors, load_text_anchors, nearest_classes
from lgseg.text.encoders import OpenClipEncoder, import_open_clip, make_encoder

NAMES = ["chair", "armchair", "ceiling", "bathroom stall door"]


def tiny_model(quick_gelu: bool, seed: int = 3):
    open_clip = import_open_clip()
    torch.manual_seed(seed)
    return open_clip.create_model("lgseg-tiny-clip", force_quick_gelu=quick_gelu, pretrained_text=False).eval()


def encode_with(model, names):
    open_clip = import_open_clip()
    with torch.no_grad():
        return model.encode_text(open_clip.get_tokenizer("lgseg-tiny-clip")(names)).numpy()


def test_tiny_random_encoder_is_deterministic(tmp_path):
    first = make_encoder("tiny-clip-random").encode(NAMES)
    second = make_encoder("tiny-clip-random").encode(NAMES)
    assert first.shape == (4, 32) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first[0], first[1])  # different names, different rows


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_loading_a_checkpoint_reproduces_the_model_exactly(tmp_path, suffix):
    model = tiny_model(quick_gelu=True)
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = OpenClipEncoder("tiny", "lgseg-tiny-clip", path, quick_gelu=True).encode(NAMES)
    np.testing.assert_array_equal(loaded, encode_with(model, NAMES))


def test_quick_gelu_is_selected_by_the_setting_and_matters(tmp_path):
    open_clip = import_open_clip()
    quick, plain = tiny_model(quick_gelu=True), tiny_model(quick_gelu=False)
    assert isinstance(quick.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert isinstance(plain.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(quick.transformer.resblocks[0].mlp.gelu(x), x * torch.sigmoid(1.702 * x))
    torch.save(quick.state_dict(), tmp_path / "openai_style.pt")
    as_quick = OpenClipEncoder("t", "lgseg-tiny-clip", tmp_path / "openai_style.pt", quick_gelu=True).encode(NAMES)
    as_plain = OpenClipEncoder("t", "lgseg-tiny-clip", tmp_path / "openai_style.pt", quick_gelu=False).encode(NAMES)
    np.testing.assert_array_equal(as_quick, encode_with(quick, NAMES))
    assert np.abs(as_plain - as_quick).max() > 1e-3  # same weights, wrong activation: other embeddings


def test_missing_corrupt_or_mismatched_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"missing\.pt: CLIP checkpoint not found .*text\.checkpoint"):
        make_encoder("clip-vit-b32", tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match=r"corrupt\.pt: cannot load it as ViT-B-32 weights"):
        make_encoder("clip-vit-b32", tmp_path / "corrupt.pt").encode(NAMES)
    torch.save(tiny_model(True).state_dict(), tmp_path / "tiny.pt")  # a real checkpoint of another model
    with pytest.raises(DataError, match=r"tiny\.pt: cannot load it as ViT-B-32 weights"):
        make_encoder("clip-vit-b32", tmp_path / "tiny.pt").encode(NAMES)
    with pytest.raises(ConfigError, match="text.checkpoint' is required"):
        make_encoder("clip-vit-b32", None)
    with pytest.raises(ConfigError, match="unknown encoder 'clip'"):
        make_encoder("clip")


def test_minilm_anchors_have_real_semantics():
    emb = make_encoder("minilm-l6").encode(["chair", "armchair", "ceiling"])
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_cache_is_reused_until_an_input_changes(tmp_path):
    weights = tmp_path / "tiny.pt"
    torch.save(tiny_model(True).state_dict(), weights)
    out = tmp_path / "text" / "tiny.npz"
    encoder = OpenClipEncoder("tiny", "lgseg-tiny-clip", weights, quick_gelu=True)
    assert build_text_anchors(encoder, out) is True
    anchors = load_text_anchors(out)
    classes = scannet200().class_names
    assert anchors.embeddings.shape == (200, 32) and anchors.embeddings.dtype == np.float32
    assert anchors.class_names == classes
    np.testing.assert_array_equal(anchors.embeddings, encode_with(tiny_model(True), list(classes)))
    np.testing.assert_allclose(np.linalg.norm(anchors.normalized, axis=1), 1, atol=1e-6)
    inputs = anchors.metadata["inputs"]
    assert inputs["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert inputs["template"] == "{}" and inputs["versions"]["open_clip_torch"]

    stamp = out.stat().st_mtime_ns
    assert build_text_anchors(OpenClipEncoder("tiny", "lgseg-tiny-clip", weights, quick_gelu=True), out) is False
    assert out.stat().st_mtime_ns == stamp
    assert build_text_anchors(encoder, out, template="a {} in a room") is True  # template changed
    np.testing.assert_array_equal(load_text_anchors(out).embeddings,
                                  encode_with(tiny_model(True), [f"a {c} in a room" for c in classes]))
    torch.save(tiny_model(True, seed=4).state_dict(), weights)  # weights changed
    assert build_text_anchors(encoder, out, template="a {} in a room") is True


def test_re_encoding_the_same_inputs_writes_the_same_bytes(tmp_path):
    """The rule re-runs when an unrelated setting changes (Snakemake deletes the output first): the new file must hash
    as the old one, or every run reading the anchors would retrain (its identity holds the file's sha256)."""
    first, second = tmp_path / "a" / "tiny.npz", tmp_path / "b" / "tiny.npz"
    build_text_anchors(make_encoder("tiny-clip-random"), first)
    time.sleep(2.1)  # np.savez's archive holds the write time (2 s resolution) and the old cache its duration
    build_text_anchors(make_encoder("tiny-clip-random"), second)
    assert first.read_bytes() == second.read_bytes()
    np.testing.assert_array_equal(load_text_anchors(second).embeddings, load_text_anchors(first).embeddings)


def test_anchor_cache_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="none.npz: text-anchor cache not found"):
        load_text_anchors(tmp_path / "none.npz")
    np.savez(tmp_path / "short.npz", embeddings=np.zeros((3, 4), np.float32), normalized=np.zeros((3, 4), np.float32),
             class_names=np.array(["a", "b", "c"]), metadata=np.array("{}"))
    with pytest.raises(DataError, match="short.npz: rows are not the 200 ScanNet200 classes"):
        load_text_anchors(tmp_path / "short.npz")


def test_report_lists_nearest_classes_and_draws_the_heat_map(tmp_path, capsys):
    out, png = tmp_path / "tiny.npz", tmp_path / "sim.png"
    assert main(["text-anchors", "--encoder", "tiny-clip-random", "--out", str(out), "--report", str(png)]) == 0
    anchors = load_text_anchors(out)
    unit = anchors.embeddings / np.linalg.norm(anchors.embeddings, axis=1, keepdims=True)
    chair = anchors.class_names.index("chair")
    cosine = [(float(unit[chair] @ unit[i]), name) for i, name in enumerate(anchors.class_names) if i != chair]
    expected = [name for _, name in sorted(cosine, reverse=True)[:5]]
    assert [name for name, _ in nearest_classes(anchors, "chair")] == expected
    assert f"chair    {expected[0]}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def test_open_clip_imports_in_a_fresh_interpreter():
    """torchvision wheels built for CUDA cannot load their ops next to a CPU torch; the import must still work."""
    code = ("from lgseg.text.encoders import import_open_clip; oc = import_open_clip(); "
            "import torch, torchvision.transforms as T; "
            "x = T.Normalize([0.5], [0.5])(torch.ones(1, 2, 2)); print(oc.__version__, float(x.sum()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[1] == "4.0"
