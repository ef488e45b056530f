"""Compare inpainting with and without a LoRA, through the Python API.

    python examples/inpaint_compare.py                    # tiny model, a throw-away LoRA, bundled images
    python examples/inpaint_compare.py --model stabilityai/stable-diffusion-xl-base-1.0 \
        --lora runs/my-run/lora.safetensors --dataset datasets/spitz-fur/heldout --out runs/compare

Writes OUT/index.html (open it in a browser), OUT/metrics.csv, OUT/metrics.json and the grids.
Without --lora the example makes a small random LoRA for the tiny model, so that the whole path
(files, variants, report) runs in a minute on a CPU; its pictures are noise, like the tiny model's.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

HERE = Path(__file__).resolve().parent


def random_lora(model: str, path: Path) -> Path:
    """A random attention LoRA for the model's UNet, saved in the diffusers format."""
    import torch

    from furlora.lora.formats import save_diffusers_lora
    from furlora.lora.weights import LoraWeights
    from furlora.models.sdxl import load_sdxl

    unet = load_sdxl(model).unet
    generator = torch.Generator().manual_seed(0)
    tensors, alphas = {}, {}
    for name, layer in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_v")):
            out_features, in_features = layer.weight.shape
            tensors[f"unet.{name}.lora_A.weight"] = torch.randn(4, in_features, generator=generator) * 0.5
            tensors[f"unet.{name}.lora_B.weight"] = torch.randn(out_features, 4, generator=generator) * 0.5
            alphas[f"unet.{name}"] = 4.0
    return save_diffusers_lora(path, LoraWeights(tensors, alphas))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-sdxl-inpaint")
    parser.add_argument("--lora", action="append", help="LoRA file (repeatable); default: a random one")
    parser.add_argument("--dataset", default=str(HERE.parent / "datasets" / "spitz-fur" / "heldout"))
    parser.add_argument("--out", default="runs/inpaint-compare")
    parser.add_argument("--images", type=int, default=2, help="how many dataset images")
    args = parser.parse_args()

    from furlora.eval import EvalSettings, PassSettings, run_comparison

    out = Path(args.out)
    loras = args.lora or [random_lora(args.model, out / "random-lora.safetensors")]
    settings = EvalSettings(
        passes=[
            PassSettings(strength=1.0, steps=12, feather=8),  # repaint
            PassSettings(strength=0.5, steps=12, feather=12),  # refine from the first result
            PassSettings(strength=0.3, steps=12, feather=16, grow=-2),  # polish, a little inside the mask
        ],
        lora_scales=[0.5, 1.0],
        seeds=[0],
        max_images=args.images,
    )
    result = run_comparison(args.model, loras, args.dataset, out, settings)
    for variant, means in result.summary.items():
        print(f"{variant:>24}: PSNR {means['psnr']:.2f} dB, seam {means['seam_error']:.3f}, "
              f"detail {means['detail_ratio']:.3f}, drift {means['drift_max']:.1f}")
    print(f"report: {result.html}")


if __name__ == "__main__":
    main()
