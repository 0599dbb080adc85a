"""Download the raw ScanNet files the pipeline needs from a TOS-granted server: parallel, resumable, verified.

ScanNet is released only to users who accept its Terms of Use; they receive a download script whose `BASE_URL`
is passed here as `base_url`. Nothing is downloaded without `accept_tos`.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lgseg.errors import DataError
from lgseg.fileio import write_json
from lgseg.scannet.labels import LABEL_TSV_NAME
from lgseg.scannet.raw import LABELLED_SUFFIXES, UNLABELLED_SUFFIXES
from lgseg.scannet.splits import official_split

log = logging.getLogger(__name__)

TOS_HELP = (
    "ScanNet is licence-gated. To get access, fill in the ScanNet Terms of Use (linked from the ScanNet project "
    "page) and send it to the ScanNet team; they reply with a download script. Then either set "
    "scannet.download.accept_tos: true and scannet.download.base_url to the BASE_URL of that script, or download "
    "with their script and point scannet.raw_dir at the folder holding scans/ and scans_test/."
)
TEST_SCAN_TYPES = {".sens", ".txt", "_vh_clean.ply", "_vh_clean_2.ply"}  # the only types test scans have
PERMANENT_HTTP_ERRORS = {400, 401, 403, 404, 410}
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileJob:
    url: str
    dest: Path


class PermanentError(Exception):
    """The server refused the file (e.g. 404): retrying will not help."""


class TransientError(Exception):
    """The transfer broke off or the file came out the wrong size: retry (and resume)."""


def plan_downloads(base_url: str, out_dir: str | Path, scenes: list[str], extra_types: tuple[str, ...] = ()) -> list[FileJob]:
    """Files the pipeline needs, in the official script's layout: train/val in scans/, test in scans_test/."""
    base = base_url.rstrip("/") + "/v2"
    out_dir = Path(out_dir)
    jobs = [FileJob(f"{base}/tasks/{LABEL_TSV_NAME}", out_dir / LABEL_TSV_NAME)]
    for scene in scenes:
        test = official_split(scene) == "test"
        types = list(UNLABELLED_SUFFIXES if test else LABELLED_SUFFIXES)
        types += [t for t in extra_types if t not in types and (not test or t in TEST_SCAN_TYPES)]
        folder = out_dir / ("scans_test" if test else "scans") / scene
        jobs += [FileJob(f"{base}/scans/{scene}/{scene}{suffix}", folder / f"{scene}{suffix}") for suffix in types]
    return jobs


class _Progress:
    """One bar over bytes; the description counts finished files. Shared by the worker threads."""

    def __init__(self, num_files: int):
        self.lock = threading.Lock()
        self.done = 0
        self.num_files = num_files
        self.bar = tqdm(desc=self._desc(), unit="B", unit_scale=True, unit_divisor=1024)

    def _desc(self) -> str:
        return f"download {self.done}/{self.num_files} files"

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.bar.update(n)

    def file_done(self) -> None:
        with self.lock:
            self.done += 1
            self.bar.set_description(self._desc())


def _transfer(job: FileJob, part: Path, timeout: float, progress: _Progress) -> None:
    """One attempt: resume `part` with an HTTP Range request, or restart it when the server sends everything."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(job.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # our partial file is not a prefix the server can continue: start over
            part.unlink(missing_ok=True)
            raise TransientError("range not satisfiable; restarting the file") from None
        if err.code in PERMANENT_HTTP_ERRORS:
            raise PermanentError(f"HTTP {err.code} {err.reason}") from None
        raise TransientError(f"HTTP {err.code} {err.reason}") from None
    with response:
        if response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink(missing_ok=True)
                raise TransientError("server resumed at the wrong offset; restarting the file")
            total, mode = int(match.group(2)), "ab"
        else:
            length = response.headers.get("Content-Length")
            total, mode = (int(length) if length is not None else None), "wb"
        with open(part, mode) as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                progress.add_bytes(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise TransientError(f"got {size} of {total} bytes")


def download_file(job: FileJob, progress: _Progress, retries: int, backoff: float, timeout: float) -> bool:
    """Fetch one file into `<dest>.part` and rename it when complete; False if it was already there."""
    if job.dest.exists():
        progress.file_done()
        return False
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    part = job.dest.with_name(job.dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(job, part, timeout, progress)
            os.replace(part, job.dest)
            progress.file_done()
            return True
        except (TransientError, urllib.error.URLError, http.client.HTTPException, ConnectionError,
                socket.timeout, TimeoutError) as err:
            if attempt == retries:
                raise TransientError(f"gave up after {retries + 1} attempts: {err}") from None
            wait = backoff * 2 ** attempt
            log.warning("%s: %s; retrying in %.1f s", job.url, err, wait)
            time.sleep(wait)
    return False  # not reached: the last attempt returns or raises


def download(base_url: str, out_dir: str | Path, scenes: list[str], accept_tos: bool, extra_types=(),
             workers: int = 4, retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
             manifest: str | Path | None = None) -> list[FileJob]:
    """Download everything `scenes` need; report every failure at the end and raise if any file is missing."""
    if not accept_tos:
        raise DataError(out_dir, "refusing to download ScanNet without accepting its Terms of Use", TOS_HELP)
    if not base_url:
        raise DataError(out_dir, "no download base_url given", TOS_HELP)
    jobs = plan_downloads(base_url, out_dir, scenes, tuple(extra_types))
    progress = _Progress(len(jobs))
    failures = []

    def run(job: FileJob) -> None:
        try:
            download_file(job, progress, retries, backoff, timeout)
        except (PermanentError, TransientError) as err:
            failures.append(f"{job.dest}: {err} ({job.url})")
            progress.file_done()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(run, jobs))
    progress.bar.close()
    if failures:
        raise DataError(out_dir, f"{len(failures)} of {len(jobs)} files could not be downloaded:\n  "
                        + "\n  ".join(sorted(failures)), "re-run to retry; completed files are kept")
    if manifest:
        write_json(manifest, {"raw_dir": str(out_dir), "files": [str(job.dest) for job in jobs]})
    return jobs
