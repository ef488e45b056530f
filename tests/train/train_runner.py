"""Run `furlora train` in a subprocess that kills itself (SIGKILL) at a chosen moment.

    python train_runner.py CONFIG [--kill-after-step K] [--kill-writing-step K]
                                  [--cli] [--announce-steps] [--slow-write-step K]

--kill-after-step K: SIGKILL right after optimizer step K (its checkpoint may still be being
written in the background). --kill-writing-step K: SIGKILL in the middle of writing checkpoint
K (half of state.safetensors is on disk in the temporary folder). --kill-while-writing K: the
background write of checkpoint K stops half-way (half of state.safetensors on disk) and stays in
flight while the training thread, having gone on, SIGKILLs the process. Used by
test_train_exact_resume.py.

For test_run_safety.py / test_train_distributed.py (signals sent from outside):
--cli: run through ``furlora train CONFIG`` (its printed lines and exit status) instead of
Trainer.fit(); also works as a torchrun entry point. --announce-steps: print
``furlora-test: rank R step N`` after every optimizer step, so a test knows training is under way.
--slow-write-step K: print ``furlora-test: writing checkpoint K`` and stall inside that write
(before its state file is on disk) for an hour.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
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
    parser.add_argument("--kill-while-writing", type=int)
    parser.add_argument("--cli", action="store_true")
    parser.add_argument("--announce-steps", action="store_true")
    parser.add_argument("--slow-write-step", type=int)
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
    if args.announce_steps:
        callbacks.append(lambda trainer: print(f"furlora-test: rank {trainer.run.rank} step {trainer.global_step}", flush=True))
    if args.slow_write_step is not None:
        real_write = checkpoint._write_file
        stalled = f".tmp-step-{args.slow_write_step:08d}"

        def slow_write(path: Path, data: bytes) -> None:
            if path.parent.name.startswith(stalled) and path.name == "state.safetensors":
                print(f"furlora-test: writing checkpoint {args.slow_write_step}", flush=True)
                time.sleep(3600)
            real_write(path, data)

        checkpoint._write_file = slow_write
    if args.kill_while_writing is not None:
        real_write = checkpoint._write_file
        stuck = f".tmp-step-{args.kill_while_writing:08d}"
        half_written = threading.Event()

        def stalled_write(path: Path, data: bytes) -> None:
            if path.parent.name.startswith(stuck) and path.name == "state.safetensors":
                with open(path, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                half_written.set()
                threading.Event().wait()  # the write never finishes: it is in flight at the kill
            real_write(path, data)

        checkpoint._write_file = stalled_write

        def kill_during_write(trainer: object) -> None:
            if trainer.global_step == args.kill_while_writing:
                if not half_written.wait(120) or not trainer.writer.in_flight:
                    print("the checkpoint write was not in flight", flush=True)
                    sys.exit(3)
                print(f"killing with checkpoint {args.kill_while_writing} in flight", flush=True)
                time.sleep(0.05)
                _die()

        callbacks.append(kill_during_write)
    if args.cli:
        from furlora.cli.main import main as cli_main
        from furlora.train import trainer as trainer_module

        class WithCallbacks(Trainer):
            def __init__(self, *a: object, **k: object) -> None:
                super().__init__(*a, callbacks=callbacks, **k)

        trainer_module.Trainer = WithCallbacks  # the CLI imports it when it runs
        return cli_main(["train", args.config])
    Trainer(load_config(args.config), resume="auto", callbacks=callbacks).fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
