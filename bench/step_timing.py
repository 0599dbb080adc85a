"""The training step the benchmarks time: forward + cross-entropy + backward + SGD, shared by bench/loader.py,
bench/training_step.py (with any commit's lgseg on the path) and bench/gpu_check.py."""

from __future__ import annotations

import time

import torch


def step_times(model: torch.nn.Module, batches: list[dict], device: torch.device = torch.device("cpu")) -> list[float]:
    """Seconds of one SGD step per batch; the first batch is stepped once more before, as a warm-up not counted."""
    from lgseg.scannet.labels import IGNORE_INDEX

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    times = []
    for batch in batches[:1] + batches:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        coords, features = batch["coords"].to(device), batch["features"].to(device)
        logits = model.backend.features(model(model.backend.input_tensor(coords, features)))
        loss = criterion(logits, batch["labels"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[1:]
