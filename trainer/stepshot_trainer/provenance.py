"""Where a number was measured: device, CPU, threads, torch (results depend on all four)."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def threads_per_core() -> int | None:
    """Hardware threads per physical core (2: hyper-threads share a core), from /proc/cpuinfo."""
    try:
        info = {key.strip(): value for key, value in (line.split(":", 1) for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(("siblings", "cpu cores")))}
        return int(info["siblings"]) // int(info["cpu cores"])
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return None


def provenance(device: torch.device) -> dict:
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__}
