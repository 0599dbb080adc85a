"""Run a function over many jobs in worker processes (or inline for one worker) behind one progress bar."""

from __future__ import annotations

import multiprocessing
from typing import Callable, Iterator, Sequence

from tqdm import tqdm


def map_with_progress(func: Callable, jobs: Sequence, workers: int, desc: str, unit: str = "scene",
                      initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """Yield `func(job)` for every job, in completion order; `func` must be a module-level function."""
    with tqdm(total=len(jobs), desc=desc, unit=unit) as bar:
        if workers > 1 and len(jobs) > 1:
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(workers, len(jobs)), initializer, initargs) as pool:
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
