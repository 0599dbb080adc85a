"""PLY reader: binary and ASCII give identical arrays; bad files give errors naming the file."""

import numpy as np
import pytest

from lgseg.errors import DataError
from lgseg.scannet.ply import mesh_colors, mesh_coords, read_ply, write_ply
from conftest import write_raw_scene

RNG = np.random.default_rng(7)
COORDS = RNG.normal(size=(50, 3)).astype(np.float32)
COLORS = RNG.integers(0, 256, size=(50, 3))
FACES = RNG.integers(0, 50, size=(80, 3))


def _mesh(tmp_path, ascii):
    folder = write_raw_scene(tmp_path / ("a" if ascii else "b"), "scene0000_00", COORDS, COLORS, labelled=False,
                             ascii=ascii, faces=FACES)
    return read_ply(folder / "scene0000_00_vh_clean_2.ply")


def test_binary_and_ascii_give_identical_arrays(tmp_path):
    binary, text = _mesh(tmp_path, False), _mesh(tmp_path, True)
    np.testing.assert_array_equal(mesh_coords(binary), COORDS.astype(np.float64))
    np.testing.assert_array_equal(mesh_coords(text), mesh_coords(binary))
    np.testing.assert_array_equal(mesh_colors(text), COLORS)
    np.testing.assert_array_equal(mesh_colors(binary), COLORS)
    np.testing.assert_array_equal(binary.faces, FACES)
    np.testing.assert_array_equal(text.faces, FACES)
    assert binary.vertices["alpha"].tolist() == [255] * 50


@pytest.mark.parametrize("ascii", [False, True])
def test_writer_round_trip(tmp_path, ascii):
    path = tmp_path / "m.ply"
    write_ply(path, COORDS, COLORS, FACES, ascii=ascii)
    mesh = read_ply(path)
    np.testing.assert_array_equal(mesh_coords(mesh), COORDS.astype(np.float64))
    np.testing.assert_array_equal(mesh_colors(mesh), COLORS)
    np.testing.assert_array_equal(mesh.faces, FACES)


def test_truncated_binary_file_is_reported(tmp_path):
    path = tmp_path / "m.ply"
    write_ply(path, COORDS, COLORS, FACES)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(DataError, match=r"m\.ply: file truncated: 80 faces"):
        read_ply(path)
    path.write_bytes(data[: data.index(b"end_header") + 11 + 100])
    with pytest.raises(DataError, match=r"m\.ply: file truncated: 50 vertex"):
        read_ply(path)


def test_truncated_ascii_file_is_reported(tmp_path):
    path = tmp_path / "m.ply"
    write_ply(path, COORDS, COLORS, FACES, ascii=True)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(DataError, match=r"m\.ply: file truncated"):
        read_ply(path)


@pytest.mark.parametrize("content, message", [
    (b"hello world", "not a PLY file"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
     b"property float z\nend_header\n", "vertex count 0"),
    (b"ply\nformat binary_weird 1.0\nend_header\n", "unsupported PLY format"),
])
def test_corrupt_files_are_reported(tmp_path, content, message):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"bad.ply: {message}"):
        read_ply(path)


def test_out_of_range_face_index_is_reported(tmp_path):
    path = tmp_path / "m.ply"
    write_ply(path, COORDS, COLORS, np.array([[0, 1, 50]]))
    with pytest.raises(DataError, match="face indices out of range"):
        read_ply(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(DataError, match="nothere.ply: file not found"):
        read_ply(tmp_path / "nothere.ply")
