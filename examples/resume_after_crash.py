"""Kill a training run with SIGKILL, run the same command again, and get the very same LoRA.

1. Starts `furlora train` on the tiny model in a subprocess (a checkpoint after every step).
2. Kills it with SIGKILL (no clean-up, like a power cut or an OOM killer) once a few
   checkpoints exist, possibly in the middle of writing one.
3. Runs the same command again: it resumes from the newest *complete* checkpoint (a half-written
   one is ignored), at the exact batch, learning rate, optimizer state and random state.
4. Trains the same config straight through in another folder and compares: the LoRA weights are
   bit-identical.

Run (CPU, about a minute)::

    python examples/resume_after_crash.py --out runs/crash-demo
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def command(output: Path, steps: int) -> list[str]:
    sets = [f"output_dir={output}", f"train.max_steps={steps}", "train.lr_warmup_steps=0", "data.resolution=64",
            "train.checkpoint.every_n_steps=1", "train.validation.path=null", "train.log.progress_bar=false"]
    return [sys.executable, "-m", "furlora.cli.main", "train", str(ROOT / "configs" / "tiny-cpu.yaml"),
            *[x for s in sets for x in ("--set", s)]]


def complete(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("step-*") if (p / "COMPLETE.json").is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/crash-demo")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    crashed, straight = out / "crashed", out / "straight"

    print("1. training, to be killed ...")
    process = subprocess.Popen(command(crashed, args.steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not any(int(n[5:]) >= args.steps // 3 for n in complete(crashed / "checkpoints")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = sorted(p.name for p in (crashed / "checkpoints").iterdir())
    print(f"2. killed at step {args.steps // 3} or a little later; checkpoint folders left: {left}")

    print("3. the same command again (--resume auto is the default):")
    subprocess.run(command(crashed, args.steps), check=True)

    print("4. the same config straight through, for comparison ...")
    subprocess.run(command(straight, args.steps), check=True, stdout=subprocess.DEVNULL)

    from furlora.train.checkpoint import read_checkpoint

    name = f"step-{args.steps:08d}"
    a = read_checkpoint(crashed / "checkpoints" / name).lora
    b = read_checkpoint(straight / "checkpoints" / name).lora
    same = all(torch.equal(a[k], b[k]) for k in a)
    print(f"LoRA weights after kill + resume vs straight run: {'bit-identical' if same else 'DIFFERENT'} "
          f"({len(a)} tensors)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
