"""How fast one data worker makes training samples, next to what an SDXL step consumes.

Runs MaskedDataset on the bundled spitz-fur training split at 1024 px with three regions
(face, chest, tail) and augmentation on (flip, rotation, zoom, crop around the mask, colour
jitter, random inpainting holes), in one process with one thread (= one DataLoader worker).
An SDXL LoRA step at 1024 px, batch 1, takes about 0.25 s on an H100, i.e. it consumes about
4 samples/s; the target is >= 10 samples/s per worker so data loading never starves the GPU.

    python bench/dataset.py [--samples 48] [--resolution 1024]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import torch  # noqa: E402

from furlora.data.dataset import MaskedDataset  # noqa: E402
from furlora.data.settings import DataSettings  # noqa: E402

H100_SDXL_SAMPLES_PER_S = 4.0
TARGET_PER_WORKER = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=48, help="samples to time (after 3 warm-up samples)")
    parser.add_argument("--resolution", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker = one core: no intra-op threads in torch or OpenCV
    cv2.setNumThreads(1)
    settings = DataSettings(
        resolution=args.resolution,
        regions=["face", "chest", "tail"],
        region_weights={"chest": 0.7, "tail": 0.5},
        augment={"hflip": 0.5, "rotate_deg": 8.0, "zoom": (1.0, 1.3), "crop": "around_mask", "brightness": 0.1, "contrast": 0.1},
        masks={"feather_px": 4},
        ignored_regions=["paws"],
    )
    ds = MaskedDataset(settings, seed=0)
    for i in range(3):  # warm-up: imports, first-call allocations
        ds.sample(i, 0)
    n = len(ds)
    # CPU time of this process as well as wall time: on a shared machine the wall clock also
    # counts time other processes held the core; CPU seconds are what one dedicated worker needs.
    wall, cpu = time.perf_counter(), time.process_time()
    for k in range(args.samples):
        ds.load_arrays(k % n)
    decode_wall, decode_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    for k in range(args.samples):
        s = ds.sample(k % n, k // n)
    full_wall, full_cpu = time.perf_counter() - wall, time.process_time() - cpu
    rate_wall, rate_cpu = args.samples / full_wall, args.samples / full_cpu
    h, w = s["target_size"]
    print(f"dataset: bundled spitz-fur train ({n} samples used), regions {ds.region_names}, buckets e.g. {h}x{w}")
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("                                                  wall clock     per CPU-second")
    print(f"decode only (image + masks, no augmentation):  {args.samples / decode_wall:7.1f}/s       {args.samples / decode_cpu:7.1f}/s")
    print(f"full samples at {args.resolution} px, augmentation on:   {rate_wall:7.1f}/s       {rate_cpu:7.1f}/s   ({1000 / rate_cpu:.0f} ms CPU/sample)")
    print(f"SDXL step on an H100 at 1024 px, batch 1, consumes ~{H100_SDXL_SAMPLES_PER_S:.0f} samples/s")
    best = max(rate_wall, rate_cpu)
    verdict = "met" if rate_cpu >= TARGET_PER_WORKER else "NOT met"
    print(f"one worker / H100 consumption: {rate_wall / H100_SDXL_SAMPLES_PER_S:.1f}x wall, {rate_cpu / H100_SDXL_SAMPLES_PER_S:.1f}x per CPU-second")
    print(f"target >= {TARGET_PER_WORKER:.0f} samples/s per worker (dedicated core): {verdict} ({best:.1f}/s)")

if __name__ == "__main__":
    main()
