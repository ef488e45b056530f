"""The prepared GPU check: real-size SDXL presets on an accelerator, measured in one budgeted run.

    python bench/gpu_check.py --out results/            # on a GPU machine (see docs/gpu.md)
    python bench/gpu_check.py --device cpu --size tiny --out /tmp/check --presets sdxl-inpainting --steps 2

Builds random-weight SDXL models in memory on the device, runs the real trainer for each preset
(sdxl-inpainting, sdxl-12gb, sdxl-16gb, sdxl-24gb, paper-table1) at its own resolution, and
records s/step after warm-up, peak CUDA memory against the planner, time in caching and time
blocked in checkpoints; then the comparison on held-out images and a diffusers round trip of the
exported LoRA. Writes gpu_check.json and gpu_check.md to --out and prints the table.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

_BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(_BENCH))  # the check's modules: bench/gpu/
sys.path.insert(1, str(_BENCH.parent))  # furlora itself, also when it is not installed (GPU machine)
os.chdir(_BENCH.parent)  # the presets name the bundled dataset relative to the repository

from gpu.check import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
