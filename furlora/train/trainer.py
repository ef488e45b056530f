"""The training loop on accelerate: accumulation, NaN guard, checkpoints, validation, export.

Exact resume by construction: every random draw of step N comes from generators seeded by
(seed, N, rank); the data position, optimizer, LR schedule, grad scaler, EMA and counters are
checkpointed after whole optimizer steps. Training N steps straight and training with a kill at
any moment plus ``--resume auto`` give bit-identical LoRA weights on the CPU.

Distributed runs (``torchrun`` / ``accelerate launch``): each process takes its own micro-batch
(:class:`~furlora.train.stream.BatchStream`), LoRA gradients are averaged with one all-reduce
per optimizer step, the main process writes checkpoints, logs and files.

Learned tokens (``tokens.enabled``, pivotal tuning): the new rows of both text encoders are
added before LoRA injection (:func:`furlora.tokens.prepare_tokens`), trained in their own
optimizer group for the first ``tokens.train_fraction`` of the steps, stored in every
checkpoint (``training["tokens"]``) and exported as ``embeddings/<name>.safetensors``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from furlora.config import RunConfig
from furlora.data.buckets import BucketBatchSampler
from furlora.data.dataset import MaskedDataset
from furlora.lora.adapters import LoraAdapters
from furlora.models.sdxl import SDXLComponents
from furlora.run_lock import RunLock, acquire_run_lock, hold_run_folder, process_rank
from furlora.tokens.embeddings import TokenEmbeddings
from furlora.train.cache_pass import fill_latent_cache
from furlora.train.checkpoint import CheckpointState, CheckpointWriter, clean_stale, latest_complete_name
from furlora.train.distributed import average_gradients
from furlora.train.export import export_lora
from furlora.train.loss_log import LossLog
from furlora.train.noise import draw_step
from furlora.train.resume import check_compatible, select_checkpoint
from furlora.train.rng import capture_rng_state, derive_seed, restore_rng_state, seed_global_rngs
from furlora.train.schedule import resolution_at
from furlora.train.setup import Collate, build_dataset, out_of_memory, setup_run
from furlora.train.step import prepare_batch, training_loss
from furlora.train.state import RunSummary, TrainState
from furlora.train.stop import StopControl, StopDecision, format_duration
from furlora.train.stream import BatchStream
from furlora.train.tracking import RunTracker, memory_mib
from furlora.train.validation import validation_loss

if TYPE_CHECKING:  # accelerate is slow to import: the annotations only
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

Callback = Callable[["Trainer"], None]
#: Keys of :attr:`Trainer.files` that name embedding files (``embedding:spitz-fur``).
EMBEDDING_PREFIX = "embedding:"


class Trainer:
    """Trains the LoRA of one :class:`~furlora.config.RunConfig`.

    ``resume``: "auto" (newest complete checkpoint, if any), "never", or a checkpoint path.
    ``components`` / ``dataset`` / ``val_dataset`` / ``accelerator`` may be given to reuse
    objects (tests, notebooks); otherwise they are built from the config. ``callbacks`` run
    after every optimizer step with the trainer (e.g. custom logging, sampling). What is built before
    the first step is :attr:`run` (:func:`~furlora.train.setup.setup_run`); the trainer holds the loop's state.

    The run folder is locked (:mod:`furlora.run_lock`) from construction to the end of
    :meth:`fit`: a second process on the same ``output_dir`` fails before loading anything.
    SIGTERM / Ctrl-C during :meth:`fit` and ``train.max_wall_time`` stop after the current step
    with a checkpoint (:mod:`furlora.train.stop`); ``summary["ended"]`` says how the run ended.
    """

    def __init__(self, config: RunConfig, *, resume: str = "auto", components: SDXLComponents | None = None,
                 dataset: MaskedDataset | None = None, val_dataset: MaskedDataset | None = None,
                 accelerator: Accelerator | None = None, callbacks: Sequence[Callback] = (), collate: Collate | None = None) -> None:
        started = time.monotonic()  # train.max_wall_time counts from here, weight loading included
        # One writer per run folder, checked before anything is read, written or loaded (rank 0 only).
        main = accelerator.is_main_process if accelerator is not None else process_rank() == 0
        self.run_lock: RunLock | None = acquire_run_lock(config.output_dir) if main else None
        try:
            self.run = setup_run(config, components=components, dataset=dataset, val_dataset=val_dataset, accelerator=accelerator, collate=collate)
        except BaseException:
            self.release_run_lock()
            raise
        run, settings = self.run, config.train
        self.resume_mode = resume
        self.callbacks = list(callbacks)
        self.writer = CheckpointWriter(run.checkpoint_dir, settings.checkpoint.keep_last, settings.checkpoint.asynchronous)
        self.state = TrainState(resolution=config.data.resolution)  # checkpointed counters
        self.dataset = run.pre.dataset  # the current resolution phase's (a new phase builds its own)
        self.stream: BatchStream | None = None
        self.loss_log = LossLog()  # region / hole figures, summed on the device between logging steps
        # This process's run (not checkpointed): where it resumed, its last metrics, its files.
        self.resumed_from: str | None = None
        self.last_metrics: dict[str, float] = {}
        self.run_seconds = 0.0
        self.steps_this_run = 0
        self.files: dict[str, str] = {}
        self._segment_start: float | None = None
        self._last_saved_step = -1
        self.stop = StopControl(settings.max_wall_time, started, world=run.world, device=run.device, keeps_clock=run.is_main)
        self.ended: StopDecision | None = None

    def release_run_lock(self) -> None:
        """Unlock the run folder now (:meth:`fit` does this when it returns or fails)."""
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None

    @property
    def global_step(self) -> int:
        """Optimizer steps done (:attr:`state`.global_step)."""
        return self.state.global_step

    # What callbacks read (furlora.eval.validation_images, examples/); the rest is under ``run``.
    @property
    def components(self) -> SDXLComponents:
        return self.run.components

    @property
    def manager(self) -> LoraAdapters:
        return self.run.manager

    @property
    def tokens(self) -> TokenEmbeddings | None:
        return self.run.tokens

    @property
    def is_main(self) -> bool:
        return self.run.is_main

    @property
    def output_dir(self) -> Path:
        return self.run.pre.output_dir

    def elapsed_seconds(self) -> float:
        """Wall time of the training loop over every run of this training (resumes included)."""
        running = time.perf_counter() - self._segment_start if self._segment_start is not None else 0.0
        return self.state.train_seconds + running

    # ------------------------------------------------------------------ data
    def _ensure_phase(self) -> None:
        """Switch dataset / stream when the resolution schedule enters a new phase."""
        run, settings = self.run, self.run.settings
        phase, resolution = resolution_at(self.global_step, settings.resolution_schedule, run.config.data.resolution)
        if phase == self.state.phase and self.stream is not None:
            return
        if settings.resolution_schedule and resolution != self.dataset.settings.resolution:
            self.dataset = build_dataset(run.config, resolution)
            logger.info("resolution schedule: step %d, training at %d px", self.global_step, resolution)
        dataset = self.dataset
        if self.stream is not None:
            self.stream.close()
        if settings.cache_latents and dataset.cache_latents and self._prefill_pays_off(dataset):
            # Every latent this phase can use, before its first step: no step runs the VAE.
            fill_latent_cache(
                dataset, run.encoder, run.pre.inpaint, full_mask=settings.full_mask_fraction > 0,
                rank=run.rank, world=run.world, progress=settings.log.progress_bar and run.is_main,
            )
            run.accelerator.wait_for_everyone()
        sampler = BucketBatchSampler(dataset, settings.batch_size, derive_seed(run.config.seed, "sampler", phase))
        self.stream = BatchStream(dataset, sampler, run.collate, run.world, run.rank)
        self.state.phase, self.state.resolution = phase, resolution

    def _prefill_pays_off(self, dataset: MaskedDataset) -> bool:
        """Whether the caching pass encodes fewer images than the rest of the run would draw.

        A short run (a smoke test, a few steps on a large set) draws fewer samples than the cache
        holds entries; pre-filling would then run the VAE more often than training does. Such a run
        fills the cache as it goes instead (the same entries, on disk for the next run).
        """
        s = self.run.settings
        per_variant = 1 + (dataset.hole_count() if self.run.pre.inpaint else 0)
        entries = len(dataset) * dataset.settings.cache.variants * per_variant
        draws = (s.max_steps - self.global_step) * s.batch_size * s.gradient_accumulation_steps * self.run.world
        if draws >= entries:
            return True
        logger.info(
            "latent cache: %d samples left to draw < %d cache entries: filling the cache during training "
            "instead of a caching pass first (`furlora cache` fills it ahead)", draws, entries,
        )
        return False

    # ------------------------------------------------------------------ one step
    def _train_step(self) -> dict[str, float]:
        run, settings = self.run, self.run.settings
        step = self.global_step
        accumulation = settings.gradient_accumulation_steps
        seed_global_rngs(run.config.seed, step, run.rank)
        text_trainable = run.text_lora
        if run.tokens is not None:
            # Also right after a resume: requires_grad of the vectors follows the step number.
            text_trainable = run.tokens.set_training_step(step, settings.max_steps) or text_trainable
        for name in run.trained:
            getattr(run.components, name).train()
        loss_sum = torch.zeros((), dtype=torch.float32)
        terms: dict[str, float] = {}
        for micro in range(accumulation):
            batch = self.stream.next()
            shape = run.encoder.latent_shape(batch["pixel_values"].shape)
            draws = draw_step(
                run.config.seed, step, run.rank, micro, shape,
                run.components.noise_scheduler.config.num_train_timesteps,
                settings.loss.noise_offset,
                settings.full_mask_fraction if run.pre.inpaint else 0.0,
            )
            prepared = prepare_batch(batch, draws, run.encoder, run.pre.inpaint, text_trainable)
            out = training_loss(
                run.components.unet, prepared, draws, run.components.noise_scheduler, run.prediction_type, settings.loss,
                base_unet=run.manager.disabled, autocast=run.autocast,
            )
            loss = out.loss.total / accumulation
            (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
            loss_sum += out.loss.total.detach().float().cpu()
            for name in ("detail", "prior"):
                value = getattr(out.loss, name)
                if value is not None:
                    terms[name] = terms.get(name, 0.0) + float(value) / accumulation
            self.loss_log.add(out.regions, out.hole_share)  # no host sync: read at logging steps
        local_loss = float(loss_sum) / accumulation
        if run.world > 1:
            average_gradients(run.parameters, run.world)
        if run.scaler is not None:
            run.scaler.unscale_(run.optimizer)
        max_norm = settings.max_grad_norm if settings.max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(run.parameters, max_norm))
        # The stop votes (signal, time budget) ride along in this all-reduce: no extra collective.
        loss_value = self.stop.exchange_loss(local_loss)
        # fp16: inf gradients are the scaler's business (it skips and lowers the scale).
        grads_ok = math.isfinite(grad_norm) or run.scaler is not None
        updated = False
        # A background checkpoint copies the state during this step's forward and backward passes;
        # the update below must not start before that copy is done.
        self.writer.before_update()
        if run.guard.record(loss_value, grads_ok):
            if run.scaler is not None:
                run.scaler.step(run.optimizer)
                run.scaler.update()
            else:
                run.optimizer.step()
            if run.tokens is not None:
                run.tokens.after_optimizer_step()  # copy the vectors into both tables' new rows
            updated = True
            if run.ema is not None and (step + 1) % settings.ema.every_n_steps == 0:
                run.ema.update(run.manager.lora_state_dict().items())
        else:
            if run.scaler is not None:
                run.scaler.update()
            logger.warning("step %d: non-finite loss or gradient (loss %s, grad norm %s); update skipped", step, loss_value, grad_norm)
        run.optimizer.zero_grad(set_to_none=True)
        lr = run.lr_scheduler.get_last_lr()
        run.lr_scheduler.step()
        self.state.global_step += 1
        metrics = {
            "loss": loss_value,
            "grad_norm": grad_norm,
            "lr": float(lr[0]),
            "skipped_steps": float(run.guard.total),
            "updated": float(updated),
            "memory_mib": memory_mib(run.device),
            "resolution": float(self.state.resolution),
        }
        for group, value in zip(run.optimizer.param_groups, lr):
            if "name" in group:
                metrics[f"lr/{group['name']}"] = float(value)
        metrics.update({f"loss/{name}": value for name, value in terms.items()})
        if self.global_step % settings.log.every_n_steps == 0 or self.global_step >= settings.max_steps:
            metrics.update(self.loss_log.read())  # loss/region/<name>, loss/hole_weight_share
        if run.scaler is not None:
            metrics["grad_scale"] = float(run.scaler.get_scale())
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> CheckpointState:
        """Everything needed to continue exactly from here (live tensors: the writer copies them)."""
        training: dict[str, Any] = {
            "optimizer": self.run.optimizer.state_dict(),
            "lr_scheduler": self.run.lr_scheduler.state_dict(),
            "rng": capture_rng_state(),
        }
        if self.run.scaler is not None:
            training["scaler"] = self.run.scaler.state_dict()
        if self.tokens is not None:
            training["tokens"] = dict(self.tokens.state_dict())  # live: the writer's pack() copies them
        meta = {
            **self.state.checkpoint_meta(),
            "train_seconds": self.elapsed_seconds(),  # the loop's running segment included
            "stream": {"phase": self.state.phase, **self.stream.state_dict()},
            "guard": self.run.guard.state_dict(),
            "ema_updates": self.run.ema.updates if self.run.ema is not None else 0,
            "config": self.run.config_dict,
            "config_hash": self.run.config_hash,
        }
        return CheckpointState(
            step=self.global_step,
            lora=self.manager.named_lora_parameters(),  # live: the writer's pack() copies them
            training=training,
            meta=json.loads(json.dumps(meta)),
            ema=self.run.ema.state_dict() if self.run.ema is not None else None,
        )

    def save_checkpoint(self) -> None:
        """Write a checkpoint of the current step (main process; asynchronous if configured)."""
        if self.is_main and self._last_saved_step != self.global_step:
            self.writer.save(self.checkpoint_state())
        self._last_saved_step = self.global_step

    def _resume(self) -> None:
        state = None
        if self.is_main:
            clean_stale(self.run.checkpoint_dir)
            state, skipped = select_checkpoint(self.resume_mode, self.run.checkpoint_dir)
            for note in skipped:
                logger.warning("skipping damaged checkpoint: %s", note)
            if skipped and state is not None:
                logger.warning("resuming from the previous complete checkpoint %s instead", state.path.name)
        if self.run.world > 1:
            from accelerate.utils import broadcast_object_list

            path = [str(state.path) if state is not None else None]
            broadcast_object_list(path, from_process=0)
            if not self.is_main and path[0] is not None:
                state, _ = select_checkpoint(path[0], self.run.checkpoint_dir)
        if state is None:
            return
        check_compatible(state, self.run.config_dict)
        # check_compatible made sure the checkpoint has the same tokens, scaler (fp16) and EMA settings.
        self.manager.load_lora_state_dict(state.lora)
        if self.tokens is not None:
            self.tokens.load_state_dict(state.training["tokens"])
        self.run.optimizer.load_state_dict(state.training["optimizer"])
        self.run.lr_scheduler.load_state_dict(state.training["lr_scheduler"])
        if self.run.scaler is not None:
            self.run.scaler.load_state_dict(state.training["scaler"])
        restore_rng_state(state.training["rng"])
        if self.run.ema is not None:
            self.run.ema.load_state_dict(state.ema, state.meta["ema_updates"])
        self.run.guard.load_state_dict(state.meta["guard"])
        self.state.restore(state.meta)
        stream_state = state.meta["stream"]
        self._ensure_phase()
        if stream_state.get("phase") == self.state.phase:
            self.stream.load_state_dict(stream_state)
        self._last_saved_step = self.global_step
        self.resumed_from = str(state.path)
        logger.info("resumed from %s at step %d", state.path, self.global_step)

    # ------------------------------------------------------------------ validation
    def validate(self, base: bool = False) -> float | None:
        """The deterministic masked validation loss (with the adapter, or of the base model)."""
        dataset = self.run.pre.val_dataset
        if dataset is None:
            return None
        v = self.run.settings.validation
        unet = self.components.unet
        was_training = unet.training
        unet.eval()
        context = self.manager.disabled() if base else contextlib.nullcontext()
        try:
            with context:
                return validation_loss(
                    unet, self.run.encoder, dataset, self.run.collate, self.components.noise_scheduler, self.run.prediction_type,
                    self.run.pre.inpaint, self.run.config.seed, v.timesteps, v.max_samples, self.run.autocast,
                )
        finally:
            unet.train(was_training)

    def _run_validation(self, tracker: RunTracker, final: bool = False) -> None:
        if self.run.pre.val_dataset is None:
            return
        if self.is_main:
            entry = {"step": self.global_step, "val_loss": self.validate()}
            if final:
                entry["val_loss_base"] = self.validate(base=True)
            self.state.validations.append(entry)
            v = self.run.settings.validation
            if v.sample_images:
                from furlora.train.sample_grid import write_sample_grid

                write_sample_grid(
                    self.components, self.run.pre.val_dataset, self.output_dir / "samples" / f"step-{self.global_step:08d}.png",
                    num_images=v.num_images, steps=v.image_steps, seed=self.run.config.seed, disabled=self.manager.disabled,
                    prompt_transform=self.tokens.caption_transform if self.tokens is not None else None,
                )
            tracker.log(self.global_step, {f"val/{k.removeprefix('val_')}": v for k, v in entry.items() if k != "step"})
        self.run.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> RunSummary:
        """Train to ``train.max_steps``; returns (and writes) the run summary."""
        run, settings = self.run, self.run.settings
        try:
            self._resume()
            self._ensure_phase()
            tracker = RunTracker(
                run.accelerator, settings.max_steps, self.global_step, settings.log.every_n_steps,
                settings.log.progress_bar, settings.log.tensorboard, run.config.name, run.config_dict,
            )
            try:
                self._loop(tracker)
            finally:
                tracker.close()
        except (KeyboardInterrupt, Exception) as exc:
            try:  # let a checkpoint being written complete
                self.writer.wait()
            except Exception as error:  # noqa: BLE001 - the original error matters more
                logger.error("checkpoint writer: %s", error)
            oom = out_of_memory(exc, settings, self.state.resolution)
            if oom is not None:
                raise oom from exc
            raise
        finally:
            self.stop.uninstall()
            if self.stream is not None:
                self.stream.close()
            self.release_run_lock()
        return self.summary

    def _loop(self, tracker: RunTracker) -> None:
        run, settings = self.run, self.run.settings
        every_ckpt = settings.checkpoint.every_n_steps
        every_val = settings.validation.every_n_steps
        if self.global_step == 0:
            self._run_validation(tracker)
        self._segment_start = started = time.perf_counter()
        start_step = self.global_step
        self.stop.install()  # SIGTERM / Ctrl-C from here on: finish the step, checkpoint, return
        while self.global_step < settings.max_steps:
            iteration_start = time.perf_counter()
            self._ensure_phase()
            metrics = self._train_step()
            self.last_metrics = metrics
            if run.is_main:
                tracker.step(self.global_step, metrics)
            self.writer.poll()  # a failed background write (disk full) stops training here
            if run.guard.consecutive:
                self.writer.wait()
                run.guard.check(self.global_step, latest_complete_name(run.checkpoint_dir))
            elif every_ckpt and self.global_step % every_ckpt == 0:
                saving_since = time.perf_counter()
                self.save_checkpoint()
                if self.stop.needs_checkpoint_timing:  # once, for train.max_wall_time: wait and time it
                    self.writer.wait()
                    self.stop.record_checkpoint(time.perf_counter() - saving_since)
            if every_val and self.global_step % every_val == 0 and self.global_step < settings.max_steps:
                self._run_validation(tracker)
            for callback in self.callbacks:
                callback(self)
            self.stop.record_iteration(time.perf_counter() - iteration_start)
            self.ended = self.stop.decision()  # the same on every process
            if self.ended is not None:
                break
        self.run_seconds = time.perf_counter() - started
        self.state.train_seconds += self.run_seconds
        self._segment_start = None
        self.steps_this_run = self.global_step - start_step
        if self.ended is not None:
            self._stop_early()
            return
        if run.guard.consecutive == 0:
            self.save_checkpoint()
        self.writer.wait()
        self._run_validation(tracker, final=True)
        if run.is_main:
            self.export()
            self.write_summary()
        run.accelerator.wait_for_everyone()

    def _stop_early(self) -> None:
        """Checkpoint the current step and return without final validation and export."""
        self.stop.saving()
        if self.run.guard.consecutive == 0:
            self.save_checkpoint()
        self.writer.wait()
        self.stop.saved()
        if self.is_main:
            self.write_summary()
            logger.warning("%s", self.stop_message())
        # Every rank waits for the checkpoint: a rank exiting early would make the launcher
        # (torchrun) kill the main process in the middle of its write.
        self.run.accelerator.wait_for_everyone()

    def stop_message(self) -> str:
        """One line: why the run stopped early, at which step, and the checkpoint to resume from."""
        decision = self.ended
        if decision is None:
            return ""
        checkpoint = latest_complete_name(self.run.checkpoint_dir) or "no checkpoint"
        where = f"after step {self.global_step} of {self.run.settings.max_steps}"
        if decision.reason == "time_budget":
            budget = self.run.settings.max_wall_time or 0.0
            why = (
                f"time budget: stopped {where}, {format_duration(self.stop.elapsed())} of train.max_wall_time "
                f"{format_duration(budget)} used (another step and a checkpoint would not fit)"
            )
        else:
            why = f"stopped by {decision.signal_name} {where}"
        return f"{why}; checkpoint {checkpoint} in {self.run.checkpoint_dir}; training continues from it when run again"

    # ------------------------------------------------------------------ outputs
    def export(self) -> dict[str, str]:
        """Write the LoRA in every configured format (and the EMA weights, if any), and with
        tokens one embedding file per concept (keys ``embedding:<stem>``).

        Called on its own (after :meth:`fit`), it takes the run folder's lock like a run does.
        """
        config = self.run.config
        metadata = {
            "furlora_run": config.name,
            "furlora_step": str(self.global_step),
            "furlora_base_model": str(config.model.source),
            "furlora_objective": self.run.pre.objective,
        }
        with hold_run_folder(self.output_dir, main_process=self.is_main):
            self.files = export_lora(self.manager, self.run.ema, list(config.lora.save_formats), self.output_dir / "lora",
                                     config.name, metadata)
            if self.tokens is not None:
                for path in self.tokens.save(self.output_dir / "embeddings", metadata=metadata):
                    self.files[f"{EMBEDDING_PREFIX}{path.stem}"] = str(path)
        return self.files

    @property
    def summary(self) -> RunSummary:
        """The run summary (also written as ``train_summary.json``)."""
        state = self.state
        final = state.validations[-1] if state.validations else {}
        steps = self.steps_this_run
        return RunSummary(
            name=self.run.config.name,
            global_step=state.global_step,
            max_steps=self.run.settings.max_steps,
            objective=self.run.pre.objective,
            prediction_type=self.run.prediction_type,
            resumed_from=self.resumed_from,
            skipped_steps=self.run.guard.total,
            final_loss=self.last_metrics.get("loss"),
            val_loss=final.get("val_loss"),
            val_loss_base=final.get("val_loss_base"),
            validations=state.validations,
            train_seconds=state.train_seconds,
            seconds_per_step_this_run=(self.run_seconds / steps) if steps else None,
            trainable_parameters=sum(p.numel() for p in self.run.parameters),
            processes=self.run.world,
            lora_files={k: v for k, v in self.files.items() if not k.startswith(EMBEDDING_PREFIX)},
            embedding_files={k[len(EMBEDDING_PREFIX):]: v for k, v in self.files.items() if k.startswith(EMBEDDING_PREFIX)},
            tokens=self.tokens.tokens if self.tokens is not None else [],
            checkpoint=latest_complete_name(self.run.checkpoint_dir),
            checkpoint_dir=str(self.run.checkpoint_dir),
            config_hash=self.run.config_hash,
            ended=self.ended.reason if self.ended is not None else "completed",
            stop_signal=self.ended.signal_name if self.ended is not None else None,
        )

    def write_summary(self) -> Path:
        path = self.output_dir / "train_summary.json"
        path.write_text(json.dumps(self.summary.to_dict(), indent=2) + "\n")
        return path
