"""Run a function over many jobs in worker processes (or inline for one worker) behind one progress bar.

Each worker process computes with one thread (OpenMP, OpenBLAS, MKL and torch): the processes themselves are the
parallelism, and a worker that started one BLAS thread per core would oversubscribe the machine.
"""

from __future__ import annotations

import multiprocessing
import os
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from tqdm import tqdm


def map_with_progress(func: Callable, jobs: Sequence, workers: int, desc: str, unit: str = "scene",
                      initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """Yield `func(job)` for every job, in completion order; `func` must be a module-level function."""
    with tqdm(total=len(jobs), desc=desc, unit=unit) as bar:
        if workers > 1 and len(jobs) > 1:
            context = multiprocessing.get_context("spawn")
            with _one_thread_per_child(), context.Pool(min(workers, len(jobs)), initializer, initargs) as pool:
                for result in pool.imap_unordered(func, jobs):
                    bar.update(1)
                    yield result
        else:
            if initializer:
                initializer(*initargs)
            for job in jobs:
                result = func(job)
                bar.update(1)
                yield result


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def _one_thread_per_child():
    """Processes started inside inherit one compute thread each (a spawned child reads these at its imports)."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value
