"""The downloader against a real HTTP server on 127.0.0.1 serving synthetic scenes in the ScanNet server layout."""

import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lgseg.config import validate_config
from lgseg.errors import ConfigError, DataError
from lgseg.scannet.demo import DemoSettings, demo_scene_ids, write_demo_dataset
from lgseg.scannet.download import download
from conftest import REPO

SETTINGS = DemoSettings(seed=5, num_train=2, num_val=1, num_test=1, vertex_spacing=0.2)


class ScanNetServer:
    """Serves `<root>/v2/...` with HTTP Range support and injectable faults; records every request."""

    def __init__(self, root: Path, honour_range: bool = True):
        self.root = root
        self.honour_range = honour_range
        self.drop_once: set[str] = set()  # paths whose first response breaks off half-way
        self.missing: set[str] = set()  # paths answered with 404
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("/", 2)[2]  # strip the '/x/' prefix of the base URL
                server.requests.append((path, self.headers.get("Range")))
                file = server.root / path
                if path in server.missing or not file.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = file.read_bytes()
                start = 0
                if self.headers.get("Range") and server.honour_range:
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if path in server.drop_once:
                    server.drop_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/x/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def served_tree(tmp_path_factory):
    """Synthetic scenes laid out as on the ScanNet server: v2/scans/<id>/..., v2/tasks/<tsv>."""
    raw = tmp_path_factory.mktemp("raw")
    write_demo_dataset(raw, SETTINGS)
    tree = tmp_path_factory.mktemp("server")
    (tree / "v2" / "tasks").mkdir(parents=True)
    shutil.copy(raw / "scannetv2-labels.combined.tsv", tree / "v2" / "tasks")
    for sub in ("scans", "scans_test"):
        for folder in (raw / sub).iterdir():
            shutil.copytree(folder, tree / "v2" / "scans" / folder.name)
    return raw, tree


@pytest.fixture
def server(served_tree):
    srv = ScanNetServer(served_tree[1])
    yield srv
    srv.close()


def _scenes():
    return [s for scenes in demo_scene_ids(SETTINGS).values() for s in scenes]


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def test_full_download_then_second_run_downloads_nothing(tmp_path, server, served_tree):
    out = tmp_path / "ScanNet"
    jobs = download(server.base_url, out, _scenes(), accept_tos=True, workers=3, manifest=tmp_path / "m.json")
    assert len(jobs) == 1 + 3 * 4 + 1 * 2  # tsv + 4 files per train/val scan + 2 per test scan
    assert _same_tree(out, served_tree[0])  # same layout and bytes as the source: scans/, scans_test/, tsv
    assert not list(out.rglob("*.part")) and (tmp_path / "m.json").exists()
    count = len(server.requests)
    download(server.base_url, out, _scenes(), accept_tos=True)
    assert len(server.requests) == count  # complete files are skipped without asking the server


@pytest.mark.parametrize("honour_range", [True, False])
def test_resume_after_the_server_drops_the_connection(tmp_path, served_tree, honour_range):
    srv = ScanNetServer(served_tree[1], honour_range=honour_range)
    scene = demo_scene_ids(SETTINGS)["train"][0]
    ply = f"v2/scans/{scene}/{scene}_vh_clean_2.ply"
    srv.drop_once.add(ply)
    try:
        download(srv.base_url, tmp_path / "ScanNet", [scene], accept_tos=True, backoff=0.01)
    finally:
        srv.close()
    dest = tmp_path / "ScanNet" / "scans" / scene / f"{scene}_vh_clean_2.ply"
    assert dest.read_bytes() == (served_tree[1] / ply).read_bytes()
    ranges = [r for path, r in srv.requests if path == ply]
    assert ranges[0] is None and len(ranges) == 2
    half = (served_tree[1] / ply).stat().st_size // 2
    assert ranges[1] == f"bytes={half}-"  # the retry asked only for the rest (a server without Range restarts)


def test_missing_file_is_reported_others_complete_exit_nonzero(tmp_path, server, served_tree):
    scene = demo_scene_ids(SETTINGS)["val"][0]
    server.missing.add(f"v2/scans/{scene}/{scene}.aggregation.json")
    out = tmp_path / "ScanNet"
    result = subprocess.run([sys.executable, "-m", "lgseg", "download", "--accept-tos", "--base-url", server.base_url,
                             "--out", str(out), "--scenes", *_scenes(), "--backoff", "0.01",
                             "--manifest", str(tmp_path / "m.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "1 of 15 files could not be downloaded" in result.stderr
    assert f"{scene}.aggregation.json: HTTP 404" in result.stderr
    assert "download 15/15 files" in result.stderr  # one progress bar over files and bytes
    assert len([p for p in out.rglob("*") if p.is_file()]) == 14 and not (tmp_path / "m.json").exists()
    assert sum(path.endswith(".aggregation.json") and scene in path for path, _ in server.requests) == 1  # no retry


def test_refuses_without_accepting_the_terms(tmp_path, server):
    result = subprocess.run([sys.executable, "-m", "lgseg", "download", "--base-url", server.base_url,
                             "--out", str(tmp_path / "ScanNet"), "--scenes", "scene0191_00"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Terms of Use" in result.stderr and "scannet.raw_dir" in result.stderr
    assert server.requests == [] and not (tmp_path / "ScanNet").exists()
    with pytest.raises(DataError, match="no download base_url"):
        download("", tmp_path, ["scene0191_00"], accept_tos=True)


def test_config_requires_tos_and_url_when_download_is_enabled():
    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    base = {"dataset": {"source": "scannet"}, "scannet": {"raw_dir": "/data/ScanNet"}}
    with pytest.raises(ConfigError, match="'scannet.download.accept_tos' must be set.*Terms of Use"):
        validate_config({**base, "scannet": {"raw_dir": "/d", "download": {"enabled": True}}}, schema)
    with pytest.raises(ConfigError, match="'scannet.download.base_url' must be set"):
        validate_config({**base, "scannet": {"raw_dir": "/d", "download": {"enabled": True, "accept_tos": True}}},
                        schema)
    assert validate_config(base, schema)["scannet"]["download"]["base_url"] is None  # no URL is shipped
