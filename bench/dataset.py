"""How fast one data worker makes training samples, next to what an SDXL step consumes.

Runs MaskedDataset on the bundled spitz-fur training split at 1024 px with three regions
(face, chest, tail) and augmentation on (flip, rotation, zoom, crop around the mask, colour
jitter, random inpainting holes), in one process with one thread (= one DataLoader worker).
An SDXL LoRA step at 1024 px, batch 1, takes about 0.25 s on an H100, i.e. it consumes about
4 samples/s; the target is >= 10 samples/s per worker so data loading never starves the GPU.

    python bench/dataset.py [--samples 48] [--resolution 1024]

``--mode cache``: the latent cache at 1024 px for both objectives (tiny-sdxl: 4-channel,
tiny-sdxl-inpaint: 9-channel, around_mask crops): a first epoch that fills the cache (the caching
pass) vs a second epoch that reads it (each sample through ``prepare_batch``, as a training step),
with the VAE's ``encode`` calls counted (the second epoch must make none).

    python bench/dataset.py --mode cache [--stems dog_000,dog_001,dog_017] [--variants 1] [--holes 1]
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


def bench_cache(args: argparse.Namespace) -> None:
    """First epoch filling the latent cache vs a second reading it, both objectives, VAE calls counted."""
    import shutil
    import tempfile
    from pathlib import Path

    from furlora.config import load_config
    from furlora.data.buckets import BucketBatchSampler
    from furlora.data.dataset import collate_samples
    from furlora.models.sdxl import load_sdxl
    from furlora.train.cache_pass import fill_latent_cache
    from furlora.train.encode import BatchEncoder
    from furlora.train.noise import draw_step
    from furlora.train.setup import build_dataset
    from furlora.train.step import prepare_batch
    from furlora.train.stream import BatchStream

    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="furlora-bench-cache-"))
    data = work / "data"
    data.mkdir()
    stems = args.stems.split(",")
    for stem in stems:  # a few dogs of the bundled set; dog_017 (384x256) has crop slack at 1024 px
        for file in (root / "datasets" / "spitz-fur" / "train").glob(f"{stem}.*"):
            shutil.copy(file, data / file.name)
    print(f"bundled images {', '.join(stems)} at {args.resolution} px, data.cache.variants={args.variants}, data.cache.holes={args.holes}, "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
    for model, inpaint in (("tiny-sdxl", False), ("tiny-sdxl-inpaint", True)):
        config = load_config(None, [
            f"model.source={model}", f"data.path={data}", f"data.resolution={args.resolution}", "data.augment.crop=around_mask",
            f"data.cache.variants={args.variants}", f"data.cache.holes={args.holes}", "train.batch_size=1",
            f"train.full_mask_fraction={0.1 if inpaint else 0.0}", f"output_dir={work / model}",
        ])
        components = load_sdxl(model)
        real_encode, calls = components.vae.encode, [0]

        def counting(*a, _real=real_encode, **k):
            calls[0] += 1
            return _real(*a, **k)

        components.vae.encode = counting
        dataset = build_dataset(config)
        encoder = BatchEncoder(components, torch.device("cpu"), cache_dir=work / model / "cache")
        start = time.perf_counter()
        report = fill_latent_cache(dataset, encoder, inpaint, full_mask=inpaint, progress=False)
        first, first_calls = time.perf_counter() - start, calls[0]
        stream = BatchStream(dataset, BucketBatchSampler(dataset, 1, 0), collate_samples, prefetch=False)
        stream.load_state_dict({"epoch": 1, "position": 0})
        start, steps = time.perf_counter(), 0
        while True:
            batch = stream.next()
            if stream.epoch != 1:
                break
            draws = draw_step(0, steps, 0, 0, encoder.latent_shape(batch["pixel_values"].shape), 1000, 0.0, 0.1 if inpaint else 0.0)
            prepare_batch(batch, draws, encoder, inpaint, False)
            steps += 1
        second, second_calls = time.perf_counter() - start, calls[0] - first_calls
        kind = "9-channel" if inpaint else "4-channel"
        print(f"{model} ({kind}): epoch 1 fills the cache: {first:6.1f} s, {first_calls} VAE encodes ({report.entries} entries); "
              f"epoch 2 reads it: {second:6.1f} s for {steps} samples, {second_calls} VAE encodes; "
              f"epoch 2 / epoch 1: {second / first:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["samples", "cache"], default="samples")
    parser.add_argument("--samples", type=int, default=48, help="samples to time (after 3 warm-up samples)")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--stems", default="dog_000,dog_001,dog_017", help="cache: bundled images to use")
    parser.add_argument("--variants", type=int, default=1, help="cache: data.cache.variants")
    parser.add_argument("--holes", type=int, default=1, help="cache: data.cache.holes")
    parser.add_argument("--threads", type=int, default=1, help="cache: torch threads")
    args = parser.parse_args()
    if args.mode == "cache":
        bench_cache(args)
        return
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
