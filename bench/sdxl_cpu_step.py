"""Calibrate the memory planner: one LoRA training step of the REAL SDXL UNet on the CPU.

For each setting (resolution, gradient checkpointing) a fresh subprocess builds the real-size
SDXL UNet from its public config with random weights (fp32, about 10 GB), puts rank-4 LoRA on
the attention projections with peft, and runs one training step (forward, masked MSE loss,
backward, AdamW step) on random latents and text embeddings. It reports the peak resident set
size of the step (VmHWM, reset just before the step) and the wall time of forward and backward.
The parent prints these beside the planner's CPU-mode prediction for the same run (same model,
no CUDA context or allocator) and the ratio measured / predicted.

Settings run one after another, never two at once; before each the script waits until enough
memory is available. About 10-16 GB and one to three minutes per setting.

    python bench/sdxl_cpu_step.py                       # 512, 512+ckpt, 768+ckpt, 768 (if it fits)
    python bench/sdxl_cpu_step.py --settings 640c,512c-b2 --json results.json
    python bench/sdxl_cpu_step.py --held-out            # today's plan beside recorded whole runs

Held-out points (:data:`HELD_OUT`) are whole ``furlora train`` runs measured from outside (the
process's peak RSS), never used to fit a constant: the plan of the same config is printed
beside each, so a planner change shows whether it still predicts them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

GiB = 1 << 30

#: name -> (resolution, gradient checkpointing, batch size)
SETTINGS: dict[str, tuple[int, bool, int]] = {
    "512": (512, False, 1),
    "512c": (512, True, 1),
    "768c": (768, True, 1),
    "768": (768, False, 1),
    "640": (640, False, 1),
    "640c": (640, True, 1),
    "512c-b2": (512, True, 2),
}
DEFAULT = ("512", "512c", "768c", "768")
#: Run a setting only when this much memory beyond its prediction is available (other processes).
MARGIN = 4 * GiB

#: Whole training runs measured from outside: name -> (run config, measured peak RSS in bytes, how).
#: The config's model.source names the public architecture so planning needs no weights; the
#: runs used furlora.models.realsize's random-weight folder of that architecture (fp16 files).
HELD_OUT: dict[str, tuple[dict, int, str]] = {
    "issue12-realsize-inpaint-256-bf16": (
        {
            "model": {"source": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "dtype": "bf16", "vae_dtype": "fp32"},
            "data": {"path": "datasets/spitz-fur/train", "resolution": 256},
            "lora": {"unet": {"preset": "attn", "rank": 4, "alpha": 4.0},
                     "text_encoder": {"enabled": True, "preset": "attn", "rank": 4, "alpha": 4.0},
                     "text_encoder_2": {"enabled": True, "preset": "attn", "rank": 4, "alpha": 4.0}},
            "train": {"cpu": True, "batch_size": 1, "objective": "inpaint", "mixed_precision": "bf16",
                      "ema": {"enabled": True, "device": "cpu"},
                      "validation": {"path": "datasets/spitz-fur/heldout", "sample_images": True}},
        },
        int(10.19 * GiB),
        "furlora train, 2 CPU cores, EMA on the CPU, sample grid at step 0; peak while loading the UNet "
        "(fp16 file + bf16 copy), 134 s into the run (issue 12 reported 10.20 GiB for the same run)",
    ),
}


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


# ----------------------------------------------------------------------------- worker

def worker(resolution: int, checkpointing: bool, batch: int, rank: int) -> dict:
    """Build, step once, measure. Runs in its own process so each peak starts clean."""
    import gc

    import torch
    from peft import LoraConfig, inject_adapter_in_model

    from diffusers import UNet2DConditionModel  # noqa: F401  (imported before the baseline is read)

    from furlora.models.architecture import build_real_sdxl

    baseline = _status("VmRSS")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    unet = build_real_sdxl("unet", device="cpu")
    build_s = time.perf_counter() - t0
    unet.requires_grad_(False)
    unet = inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]), unet
    )
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    h = w = resolution // 8
    sample = torch.randn(batch, 4, h, w)
    target = torch.randn(batch, 4, h, w)
    weights = (torch.rand(batch, 1, h, w) > 0.5).float()
    embeds = torch.randn(batch, 77, 2048)
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32)
    added = {"text_embeds": torch.randn(batch, 1280), "time_ids": time_ids.repeat(batch, 1)}
    gc.collect()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    prediction = unet(sample, torch.full((batch,), 500), encoder_hidden_states=embeds, added_cond_kwargs=added).sample
    loss = (((prediction.float() - target) ** 2) * weights).sum() / weights.sum()
    forward_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss.backward()
    backward_s = time.perf_counter() - t0
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    peak = _status("VmHWM")
    return {
        "resolution": resolution, "checkpointing": checkpointing, "batch": batch, "rank": rank,
        "lora_parameters": sum(p.numel() for p in params),
        "baseline_rss": baseline, "rss_before_step": before, "peak_rss": peak,
        "build_s": round(build_s, 1), "forward_s": round(forward_s, 1), "backward_s": round(backward_s, 1),
        "loss_finite": bool(torch.isfinite(loss).item()), "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- parent

def predict(resolution: int, checkpointing: bool, batch: int, rank: int):  # noqa: ANN201
    """The planner's CPU-mode plan of exactly the run the worker performs."""
    from furlora.memory import LoraPlan, PlanInput, estimate

    return estimate(PlanInput(
        architecture="sdxl-meta", resolution=(resolution, resolution), batch_size=batch, weight_dtype="fp32",
        mixed_precision="no", lora={"unet": LoraPlan(rank=rank)}, gradient_checkpointing=checkpointing,
        attention="sdpa", optimizer="adamw", text_encoders_resident=False, vae_resident=False,
        encode_latents_per_step=False, encode_text_per_step=False, device="cpu",
    ))


def held_out() -> int:
    """Print the planner's CPU prediction beside every recorded whole-run peak."""
    from furlora.config import validate_config
    from furlora.memory import estimate, plan_input_from_config

    print(f"{'held-out run':<36} {'measured':>9} {'planned':>9} {'plan/meas':>9}  peak phase")
    for name, (config, measured, how) in HELD_OUT.items():
        plan = estimate(plan_input_from_config(validate_config(config, name)))
        print(f"{name:<36} {measured / GiB:>8.2f}G {plan.total_bytes / GiB:>8.2f}G "
              f"{plan.total_bytes / measured:>9.3f}  {plan.peak_phase}")
        print(f"  measured: {how}")
    return 0


def _wait_for_memory(needed: int, tries: int = 10) -> bool:
    for attempt in range(tries + 1):
        free = _available()
        if free >= needed:
            return True
        if attempt < tries:
            print(f"  waiting: {free / GiB:.1f} GiB available, {needed / GiB:.1f} GiB wanted (retry in 60 s)", flush=True)
            time.sleep(60)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default=",".join(DEFAULT), help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--held-out", action="store_true", help="print the plan beside the recorded whole runs")
    parser.add_argument("--worker", metavar="SETTING", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.held_out:
        return held_out()
    if args.worker:
        print(json.dumps(worker(*SETTINGS[args.worker], args.rank)), flush=True)
        return 0

    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    results = []
    for name in names:
        plan = predict(*SETTINGS[name], args.rank)
        print(f"[{name}] predicted peak {plan.total_bytes / GiB:.2f} GiB", flush=True)
        if not _wait_for_memory(plan.total_bytes + MARGIN):
            print(f"[{name}] skipped: not enough memory available", flush=True)
            continue
        env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", DIFFUSERS_VERBOSITY="error")
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--rank", str(args.rank)],
                              capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(f"[{name}] worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
            continue
        measured = json.loads(lines[-1])
        # What the step adds on top of the loaded model: activations, gradients, optimizer state
        # (created during the first step) and the freed heap malloc keeps.
        dynamic_measured = measured["peak_rss"] - measured["rss_before_step"]
        predicted_dynamic = plan.phases["train_step"].bytes + sum(
            i.bytes for i in [*plan.resident, *plan.overhead] if i.key in ("gradients", "optimizer", "heap"))
        row = {
            "setting": name, **measured,
            "predicted_peak": plan.total_bytes,
            "predicted_activations": plan.phases["train_step"].bytes,
            "predicted_step_growth": predicted_dynamic,
            "measured_step_growth": dynamic_measured,
            "ratio_peak": measured["peak_rss"] / plan.total_bytes,
        }
        results.append(row)
        print(f"[{name}] measured peak {measured['peak_rss'] / GiB:.2f} GiB, ratio {row['ratio_peak']:.3f}; "
              f"forward {measured['forward_s']} s, backward {measured['backward_s']} s", flush=True)

    print()
    print(f"{'setting':<8} {'px':>4} {'ckpt':>5} {'batch':>5} {'measured':>9} {'predicted':>9} {'ratio':>6}   "
          f"{'step growth meas/pred':>22} {'baseline':>8} {'fwd s':>6} {'bwd s':>6}")
    for r in results:
        print(f"{r['setting']:<8} {r['resolution']:>4} {str(r['checkpointing']):>5} {r['batch']:>5} "
              f"{r['peak_rss'] / GiB:>8.2f}G {r['predicted_peak'] / GiB:>8.2f}G {r['ratio_peak']:>6.3f}   "
              f"{r['measured_step_growth'] / GiB:>9.2f}G / {r['predicted_step_growth'] / GiB:>6.2f}G "
              f"{r['baseline_rss'] / GiB:>7.2f}G {r['forward_s']:>6} {r['backward_s']:>6}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
