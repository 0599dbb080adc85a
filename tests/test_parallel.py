"""Worker pools: results for every job, and one compute thread in each worker process."""

import os

from lgseg.parallel import THREAD_VARIABLES, map_with_progress


def _threads_seen(job: int) -> tuple[int, int, tuple]:
    import torch

    return job, torch.get_num_threads(), tuple(os.environ.get(name) for name in THREAD_VARIABLES)


def test_workers_compute_with_one_thread_and_the_parent_keeps_its_settings(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    results = sorted(map_with_progress(_threads_seen, [0, 1, 2], workers=2, desc="test"))
    assert [job for job, _, _ in results] == [0, 1, 2]
    assert all(threads == 1 and env == ("1", "1", "1") for _, threads, env in results)
    assert os.environ["OMP_NUM_THREADS"] == "2" and "MKL_NUM_THREADS" not in os.environ
