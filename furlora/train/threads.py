"""CPU threads: how many cores this process may really use, and torch threads per thread.

``os.cpu_count()`` counts the machine's cores; a container or a ``taskset`` may allow fewer
(affinity mask, cgroup ``cpu.max`` quota). More torch threads than usable cores makes OpenMP
threads wait for each other, which is many times slower than one thread.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
from pathlib import Path

import torch

_OPENMP_NAMES = re.compile(r"lib(gomp|omp|iomp5)[^/]*\.so")
_CGROUP_FILES = (Path("/sys/fs/cgroup/cpu.max"), Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))


def _cgroup_limit() -> float | None:
    """The cgroup CPU quota in cores (v2 ``cpu.max``, or v1 quota / period), None when unlimited."""
    try:
        v2 = _CGROUP_FILES[0]
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = _CGROUP_FILES[1]
        if v1.is_file():
            quota = int(v1.read_text())
            period = int((v1.parent / "cpu.cfs_period_us").read_text())
            return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None
    return None


def available_cpus() -> int:
    """Cores this process may use: the affinity mask, capped by a cgroup quota (at least 1)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_limit()
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch loaded (libgomp / libomp / libiomp5), or None (not found, not Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if _OPENMP_NAMES.search(line)})
    except OSError:
        return None
    # Other wheels bundle their own copy (albumentations' simsimd ships a libgomp): setting the thread
    # count in that copy leaves torch's untouched, so torch's own runtime comes first.
    torch_dir = os.path.dirname(torch.__file__) + os.sep
    paths.sort(key=lambda path: not path.startswith(torch_dir))
    for path in paths:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def single_threaded_torch() -> None:
    """Run in a helper thread (data loading) so that its torch ops start no OpenMP team of their own.

    OpenMP keeps the thread count per thread: a new thread's first parallel torch op starts a
    second pool as large as the training thread's, and on a small machine both pools then spin
    on the same cores (measured: 2 threads 2.7x slower than 1 on 2 cores). ``torch.set_num_threads``
    cannot help here: it also changes the process-wide default the training thread reads. So torch
    initialises this thread first, then the OpenMP runtime's own per-thread setting goes to 1.
    """
    torch.get_num_threads()  # torch's lazy per-thread initialisation, which would undo the next line
    runtime = _openmp_runtime()
    if runtime is not None:
        runtime.omp_set_num_threads(1)
