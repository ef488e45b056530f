"""Benchmark: a 3-pass MultiPassInpainter run vs one diffusers pipeline call with the same total
number of denoising steps, measured side by side in one process (target: ratio <= 1.10).

    python bench/inpaint.py                       # tiny 9-channel model, 256 px
    python bench/inpaint.py --model tiny-sdxl --size 128 --repeats 5

The two runs alternate (A B A B ...) so that a busy machine slows both alike; the median of
each is reported. Both use the same pipeline object, image, mask, prompt and guidance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-sdxl-inpaint", help="model source (default: tiny-sdxl-inpaint)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--steps", type=int, default=30, help="scheduler steps of each pass (default 30, as eval.passes)")
    parser.add_argument("--strengths", default="1.0,0.5,0.25", help="pass strengths (default 1.0,0.5,0.25)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from furlora.eval.inpaint import MultiPassInpainter
    from furlora.eval.latents import encode_latents
    from furlora.eval.passes import total_denoising_steps
    from furlora.eval.settings import EvalSettings, PassSettings

    torch.set_num_threads(args.threads)
    strengths = [float(s) for s in args.strengths.split(",")]
    passes = [PassSettings(strength=s, steps=args.steps, feather=8) for s in strengths]
    settings = EvalSettings(passes=passes, progress=False, chaining="latent")
    inpainter = MultiPassInpainter.from_pretrained(args.model, settings)
    pipe = inpainter.pipeline
    total = total_denoising_steps(passes)

    rng = np.random.default_rng(0)
    image = rng.random((args.size, args.size, 3), dtype=np.float32)
    mask = np.zeros((args.size, args.size), np.float32)
    q = args.size // 4
    mask[q : 3 * q, q : 3 * q] = 1.0
    image_t = torch.from_numpy(image).permute(2, 0, 1)[None]
    mask_t = torch.from_numpy(mask)[None, None]

    def multi_pass() -> None:
        inpainter.inpaint(image, mask, seed=0)

    def single_call() -> None:
        pipe(prompt=settings.prompt, negative_prompt=settings.negative_prompt, image=image_t, mask_image=mask_t,
             height=args.size, width=args.size, strength=1.0, num_inference_steps=total,
             guidance_scale=passes[0].guidance_scale, generator=torch.Generator().manual_seed(0), output_type="np")

    multi_pass()  # warm-up (allocations, lazy imports)
    single_call()
    times: dict[str, list[float]] = {"multi": [], "single": []}
    for _ in range(args.repeats):
        for name, fn in (("multi", multi_pass), ("single", single_call)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    encode_times = []
    for _ in range(3):
        start = time.perf_counter()
        encode_latents(pipe, image)
        encode_times.append(time.perf_counter() - start)
    multi, single = statistics.median(times["multi"]), statistics.median(times["single"])
    # Each pair ran back to back: the median of the pair ratios is the least noisy estimate.
    ratio = statistics.median(m / s for m, s in zip(times["multi"], times["single"]))
    print(f"model {args.model} ({pipe.unet.config.in_channels}-channel UNet), {args.size}x{args.size} px, "
          f"torch threads {args.threads}, {args.repeats} timed runs each (median)")
    print(f"passes: strengths {strengths} x {args.steps} steps = {total} denoising steps in total")
    print(f"  {len(passes)}-pass MultiPassInpainter : {multi:8.3f} s   runs {['%.3f' % t for t in times['multi']]}")
    print(f"  one diffusers call, {total} steps  : {single:8.3f} s   runs {['%.3f' % t for t in times['single']]}")
    print(f"  one VAE encode (the multi-pass run's main extra work): {statistics.median(encode_times):.3f} s = "
          f"{statistics.median(encode_times) / single * total:.1f} denoising steps of this model")
    print(f"  ratio multi / single          : {ratio:8.3f}   (median of {args.repeats} back-to-back pairs; target <= 1.10)")


if __name__ == "__main__":
    main()
