"""PLY triangle-mesh reader and writer (binary little/big endian and ASCII), vectorised with numpy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgseg.errors import DataError
from lgseg.fileio import atomic_file

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "ascii"}
_FIX = "re-download the scene (or re-run the download rule)"


@dataclass
class Mesh:
    """Vertices as a structured array (one field per PLY property) and triangle faces (M x 3)."""

    vertices: np.ndarray
    faces: np.ndarray


@dataclass
class _Element:
    name: str
    count: int
    properties: list  # (name, dtype) or (name, count_dtype, index_dtype) for lists


def _parse_header(path: Path, data: bytes) -> tuple[str, list[_Element], int]:
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise DataError(path, "not a PLY file (missing 'ply' magic or 'end_header')", _FIX)
    body_start = data.index(b"\n", end) + 1
    fmt = None
    elements: list[_Element] = []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _FORMATS:
                raise DataError(path, f"unsupported PLY format line '{line}'", _FIX)
            fmt = _FORMATS[words[1]]
        elif words[0] == "element":
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            try:
                if words[1] == "list":
                    elements[-1].properties.append((words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
                else:
                    elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
            except (KeyError, IndexError):
                raise DataError(path, f"unreadable PLY property line '{line}'", _FIX) from None
        else:
            raise DataError(path, f"unexpected PLY header line '{line}'", _FIX)
    if fmt is None:
        raise DataError(path, "PLY header has no format line", _FIX)
    return fmt, elements, body_start


def _scalar_dtype(path: Path, element: _Element, endian: str) -> np.dtype:
    if any(len(p) != 2 for p in element.properties):
        raise DataError(path, f"list property in element '{element.name}' is not supported", _FIX)
    return np.dtype([(name, endian + dt) for name, dt in element.properties])


def read_ply(path: str | Path) -> Mesh:
    """Read a triangle mesh; raises DataError naming the file when it is truncated or corrupt."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found", _FIX) from None
    fmt, elements, offset = _parse_header(path, data)
    names = [e.name for e in elements]
    if "vertex" not in names:
        raise DataError(path, "PLY has no vertex element", _FIX)
    vertices = faces = None
    tokens = None
    if fmt == "ascii":
        tokens = data[offset:].split()
        token_pos = 0
    for element in elements:
        if element.name == "face":
            if len(element.properties) != 1 or len(element.properties[0]) != 3:
                raise DataError(path, "face element must have exactly one list property", _FIX)
            _, count_dt, index_dt = element.properties[0]
            if fmt == "ascii":
                need = element.count * 4
                flat = np.asarray(tokens[token_pos:token_pos + need], dtype=np.int64)
                if flat.size < need:
                    raise DataError(path, f"file truncated: {element.count} faces declared, data ends early", _FIX)
                table = flat.reshape(-1, 4)
                counts, faces = table[:, 0], table[:, 1:].astype(np.int32)
                token_pos += need
            else:
                dtype = np.dtype([("n", fmt + count_dt), ("v", fmt + index_dt, (3,))])
                need = element.count * dtype.itemsize
                if len(data) - offset < need:
                    raise DataError(path, f"file truncated: {element.count} faces declared, "
                                          f"only {len(data) - offset} of {need} bytes present", _FIX)
                table = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
                counts, faces = table["n"], table["v"].astype(np.int32)
                offset += need
            if element.count and not np.all(counts == 3):
                raise DataError(path, "only triangle faces are supported (found a face with "
                                      f"{int(counts[counts != 3][0])} corners) — corrupt file?", _FIX)
        else:
            dtype = _scalar_dtype(path, element, "<" if fmt == "ascii" else fmt)
            if fmt == "ascii":
                width = len(element.properties)
                need = element.count * width
                flat = np.asarray(tokens[token_pos:token_pos + need], dtype=np.float64)
                if flat.size < need:
                    raise DataError(path, f"file truncated: {element.count} {element.name} entries declared, "
                                          "data ends early", _FIX)
                table = flat.reshape(-1, width)
                array = np.empty(element.count, dtype=dtype)
                for column, name in enumerate(dtype.names):
                    array[name] = table[:, column]
                token_pos += need
            else:
                need = element.count * dtype.itemsize
                if len(data) - offset < need:
                    raise DataError(path, f"file truncated: {element.count} {element.name} entries declared, "
                                          f"only {len(data) - offset} of {need} bytes present", _FIX)
                array = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
                offset += need
            if element.name == "vertex":
                vertices = array
    if vertices is None or len(vertices) == 0:
        raise DataError(path, "vertex count 0 — file truncated?", _FIX)
    for field in ("x", "y", "z"):
        if field not in vertices.dtype.names:
            raise DataError(path, f"vertex element has no '{field}' property", _FIX)
    if faces is None:
        faces = np.zeros((0, 3), dtype=np.int32)
    elif faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise DataError(path, f"face indices out of range 0..{len(vertices) - 1} — corrupt file?", _FIX)
    return Mesh(vertices=vertices, faces=faces)


def mesh_coords(mesh: Mesh) -> np.ndarray:
    """N x 3 float64 vertex positions."""
    v = mesh.vertices
    return np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)


def mesh_colors(mesh: Mesh, path: str | Path = "") -> np.ndarray:
    """N x 3 uint8 vertex colours."""
    v = mesh.vertices
    for field in ("red", "green", "blue"):
        if field not in v.dtype.names:
            raise DataError(path, f"vertex element has no '{field}' property", _FIX)
    return np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)


def write_ply(path: str | Path, coords: np.ndarray, colors: np.ndarray, faces: np.ndarray,
              ascii: bool = False) -> None:
    """Write a ScanNet-style mesh: float x,y,z, uchar red,green,blue,alpha, uchar/int triangle list."""
    n = len(coords)
    vertices = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"),
                                  ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    vertices["x"], vertices["y"], vertices["z"] = coords[:, 0], coords[:, 1], coords[:, 2]
    vertices["red"], vertices["green"], vertices["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    vertices["alpha"] = 255
    face_table = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_table["n"] = 3
    face_table["v"] = faces
    header = (
        "ply\n"
        f"format {'ascii' if ascii else 'binary_little_endian'} 1.0\n"
        "comment written by lgseg\n"
        f"element vertex {n}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        f"element face {len(faces)}\n"
        "property list uchar int vertex_indices\n"
        "end_header\n"
    )
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        if ascii:
            table = np.column_stack([coords.astype(np.float32).astype(np.float64), colors, np.full(n, 255)])
            np.savetxt(f, table, fmt=["%.9g"] * 3 + ["%d"] * 4)
            np.savetxt(f, np.column_stack([np.full(len(faces), 3), faces]), fmt="%d")
        else:
            f.write(vertices.tobytes())
            f.write(face_table.tobytes())
