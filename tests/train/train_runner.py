"""Run `furlora train` in a subprocess that kills itself (SIGKILL) at a chosen moment.

    python train_runner.py CONFIG [--kill-after-step K] [--kill-writing-step K]

--kill-after-step K: SIGKILL right after optimizer step K (its checkpoint may still be being
written in the background). --kill-writing-step K: SIGKILL in the middle of writing checkpoint
K (half of state.safetensors is on disk in the temporary folder). Used by test_train_exact_resume.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--kill-writing-step", type=int)
    args = parser.parse_args()

    from furlora.config import load_config
    from furlora.train import checkpoint
    from furlora.train.trainer import Trainer

    callbacks = []
    if args.kill_after_step is not None:
        callbacks.append(lambda trainer: _die() if trainer.global_step == args.kill_after_step else None)
    if args.kill_writing_step is not None:
        real = checkpoint._write_file
        folder = f".tmp-step-{args.kill_writing_step:08d}"

        def dying_write(path: Path, data: bytes) -> None:
            if path.parent.name.startswith(folder) and path.name == "state.safetensors":
                with open(path, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                _die()
            real(path, data)

        checkpoint._write_file = dying_write
    Trainer(load_config(args.config), resume="auto", callbacks=callbacks).fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
