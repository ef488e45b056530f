"""The objectives' inputs on the tiny models: 9-channel layout, full-mask steps, micro-conditioning, targets."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from train_helpers import make_batch
from furlora.errors import ConfigError
from furlora.train.encode import BatchEncoder
from furlora.train.noise import draw_step
from furlora.train.settings import LossSettings
from furlora.train.step import prepare_batch, prediction_target, resolve_objective, training_loss, unet_input


def _capture(unet: Any) -> tuple[dict[str, Any], Any]:
    seen: dict[str, Any] = {}

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        seen["sample"] = args[0].detach().clone()
        seen["timesteps"] = args[1]
        seen["encoder_hidden_states"] = kwargs["encoder_hidden_states"]
        seen["time_ids"] = kwargs["added_cond_kwargs"]["time_ids"].clone()
        seen["text_embeds"] = kwargs["added_cond_kwargs"]["text_embeds"]

    return seen, unet.register_forward_pre_hook(hook, with_kwargs=True)


def test_unet_input_layout() -> None:
    noisy = torch.full((1, 4, 2, 2), 1.0)
    mask = torch.full((1, 1, 2, 2), 2.0)
    masked = torch.full((1, 4, 2, 2), 3.0)
    x = unet_input(noisy, mask, masked)
    assert x.shape == (1, 9, 2, 2)
    assert x[0, :, 0, 0].tolist() == [1.0] * 4 + [2.0] + [3.0] * 4
    assert unet_input(noisy, None, None) is noisy
    with pytest.raises(ValueError, match="masked_latents"):
        unet_input(noisy, mask, None)


def test_inpainting_objective_feeds_noisy_mask_and_masked_image_latents(inpaint_components: Any) -> None:
    comps = inpaint_components
    encoder = BatchEncoder(comps, torch.device("cpu"))
    batch = make_batch(batch=2, size=32)
    draws = draw_step(7, 3, 0, 0, encoder.latent_shape(batch["pixel_values"].shape), 1000)
    draws.full_mask = torch.tensor([False, True])  # sample 1: a full-mask (text-to-image) step
    prepared = prepare_batch(batch, draws, encoder, inpaint=True, text_trainable=False)
    seen, handle = _capture(comps.unet)
    try:
        out = training_loss(comps.unet, prepared, draws, comps.noise_scheduler, "epsilon", LossSettings())
    finally:
        handle.remove()
    sample = seen["sample"]
    assert sample.shape == (2, 9, 4, 4)
    expected_noisy = comps.noise_scheduler.add_noise(prepared.latents, draws.noise, draws.timesteps)
    assert torch.equal(sample[:, :4], expected_noisy)
    # Channel 4: the hole at latent size (nearest): top-left quarter for sample 0, all ones for the full mask.
    hole = torch.zeros(4, 4)
    hole[:2, :2] = 1.0
    assert torch.equal(sample[0, 4], hole)
    assert torch.equal(sample[1, 4], torch.ones(4, 4))
    # Channels 5-8: VAE latents (posterior mean x scaling factor) of the masked image / a black image.
    with torch.no_grad():
        vae = comps.vae
        masked0 = vae.encode(batch["masked_pixel_values"][:1]).latent_dist.mean * vae.config.scaling_factor
        zeros = vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean * vae.config.scaling_factor
    torch.testing.assert_close(sample[0, 5:], masked0[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(sample[1, 5:], zeros[0], rtol=0, atol=1e-6)
    assert torch.isfinite(out.loss.total) and out.loss.total.item() > 0
    assert set(out.regions) == {"face", "chest"}
    assert out.regions["face"].shape == (2,)  # (error sum, area), kept on the device for the log


def _off_region_batch() -> dict[str, Any]:
    """Two 32-px samples (latent 4x4): region weight 2 on the top-right quadrant, the hole a box
    on the bottom-left quadrant, off every region (as random boxes / strokes / ellipses are)."""
    batch = make_batch(batch=2, size=32)
    weights = torch.zeros(2, 1, 32, 32)
    weights[:, :, :16, 16:] = 2.0
    hole = torch.zeros(2, 1, 32, 32)
    hole[:, :, 16:, :16] = 1.0
    batch.update(mask=weights, inpaint_mask=hole, masked_pixel_values=batch["pixel_values"] * (1 - hole))
    return batch


def _expected_weights(floor: float) -> torch.Tensor:
    """Sample 0: 1 in the hole (max(1, 0)), the floor elsewhere (also on the weight-2 region the UNet
    sees). Sample 1 is a full-mask step: max(1, region weight) everywhere."""
    w = torch.full((2, 1, 4, 4), floor)
    w[0, :, 2:, :2] = 1.0
    w[1] = 1.0
    w[1, :, :2, 2:] = 2.0
    return w


def test_inpaint_loss_weights_the_hole_not_the_region_mask(inpaint_components: Any) -> None:
    comps = inpaint_components
    encoder = BatchEncoder(comps, torch.device("cpu"))
    batch = _off_region_batch()
    draws = draw_step(3, 1, 0, 0, encoder.latent_shape(batch["pixel_values"].shape), 1000)
    draws.full_mask = torch.tensor([False, True])
    prepared = prepare_batch(batch, draws, encoder, inpaint=True, text_trainable=False)
    seen: list[torch.Tensor] = []
    handle = comps.unet.register_forward_hook(lambda m, a, out: seen.append(out[0].detach()))  # returns None: output kept
    try:
        out = training_loss(comps.unet, prepared, draws, comps.noise_scheduler, "epsilon", LossSettings(floor_weight=0.1))
    finally:
        handle.remove()
    weights = _expected_weights(0.1)
    assert len(seen) == 1
    error = (seen[0] - draws.noise).pow(2).mean(dim=1, keepdim=True)
    expected = ((error * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)).mean()
    assert out.loss.total.item() == pytest.approx(expected.item(), rel=1e-5)
    # Share of the loss weight inside the hole: 4 cells x 1 of 4 + 12 x 0.1; the full-mask step: all.
    assert out.hole_share.tolist() == pytest.approx([4 / 5.2, 1.0])
    # Region logs count the region inside the hole only: face (top half) misses sample 0's hole.
    assert out.regions["face"][1].item() == 8.0 and out.regions["chest"][1].item() == 4.0 + 8.0
    face_error = error[1, 0, :2].sum()
    assert out.regions["face"][0].item() == pytest.approx(face_error.item(), rel=1e-5)


def test_validation_scores_the_hole_like_training_without_the_floor(inpaint_components: Any) -> None:
    from furlora.data.dataset import collate_samples
    from furlora.train.noise import validation_draws
    from furlora.train.validation import validation_loss

    comps = inpaint_components
    encoder = BatchEncoder(comps, torch.device("cpu"))
    full = _off_region_batch()
    sample = {k: (v[0] if isinstance(v, (torch.Tensor, list)) else v) for k, v in full.items()}
    predictions: list[torch.Tensor] = []
    handle = comps.unet.register_forward_hook(lambda m, a, out: predictions.append(out[0].detach()))
    try:
        score = validation_loss(
            comps.unet, encoder, [sample], collate_samples, comps.noise_scheduler, "epsilon",
            inpaint=True, seed=11, timesteps=[100, 700], max_samples=1,
        )
    finally:
        handle.remove()
    noise = torch.stack([n for _, n in validation_draws(11, sample["key"], [100, 700], (4, 4, 4))])
    error = (predictions[0] - noise).pow(2).mean(dim=1, keepdim=True)
    # floor 0: only the hole counts, weight max(1, 0) = 1 -> the plain mean error over the hole
    assert score == pytest.approx(error[:, 0, 2:, :2].mean().item(), rel=1e-5)


def test_micro_conditioning_comes_from_the_batch(inpaint_components: Any) -> None:
    comps = inpaint_components
    encoder = BatchEncoder(comps, torch.device("cpu"))
    batch = make_batch(batch=2, size=32)
    draws = draw_step(1, 0, 0, 0, encoder.latent_shape(batch["pixel_values"].shape), 1000)
    prepared = prepare_batch(batch, draws, encoder, inpaint=True, text_trainable=False)
    seen, handle = _capture(comps.unet)
    try:
        training_loss(comps.unet, prepared, draws, comps.noise_scheduler, "epsilon", LossSettings())
    finally:
        handle.remove()
    assert seen["time_ids"].tolist() == [[96.0, 64.0, 5.0, 7.0, 32.0, 32.0], [96.0, 65.0, 5.0, 8.0, 32.0, 32.0]]
    te1, te2 = comps.text_encoder.config.hidden_size, comps.text_encoder_2.config.hidden_size
    assert seen["encoder_hidden_states"].shape == (2, 77, te1 + te2)
    assert seen["text_embeds"].shape == (2, comps.text_encoder_2.config.projection_dim)


def test_base_objective_uses_four_channels(base_components: Any) -> None:
    comps = base_components
    encoder = BatchEncoder(comps, torch.device("cpu"))
    batch = make_batch(batch=1, size=32)
    draws = draw_step(1, 0, 0, 0, encoder.latent_shape(batch["pixel_values"].shape), 1000)
    prepared = prepare_batch(batch, draws, encoder, inpaint=False, text_trainable=False)
    assert prepared.inpaint_mask is None and prepared.masked_latents is None
    seen, handle = _capture(comps.unet)
    try:
        training_loss(comps.unet, prepared, draws, comps.noise_scheduler, "epsilon", LossSettings())
    finally:
        handle.remove()
    assert seen["sample"].shape == (1, 4, 4, 4)


def test_prediction_targets(inpaint_components: Any) -> None:
    sched = inpaint_components.noise_scheduler
    latents = torch.randn(2, 4, 2, 2)
    noise = torch.randn(2, 4, 2, 2)
    t = torch.tensor([10, 900])
    assert prediction_target(sched, latents, noise, t, "epsilon") is noise
    v = prediction_target(sched, latents, noise, t, "v_prediction")
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, abar.sqrt() * noise - (1 - abar).sqrt() * latents)


def test_cached_latents_equal_fresh_ones(inpaint_components: Any) -> None:
    encoder = BatchEncoder(inpaint_components, torch.device("cpu"), cache_latents=True)
    pixels = make_batch(batch=2, size=32)["pixel_values"]
    first = encoder.latents(pixels)
    assert len(encoder.latent_cache) == 2
    again = encoder.latents(pixels[1:])  # a hit, and from another batch size
    assert torch.equal(again[0], first[1])
    assert encoder.latent_cache.hits == 1


def test_objective_must_match_the_unet() -> None:
    assert resolve_objective("auto", 9) is True
    assert resolve_objective("auto", 4) is False
    with pytest.raises(ConfigError, match="needs a 9-channel inpainting UNet"):
        resolve_objective("inpaint", 4, "model.source 'tiny-sdxl'")
    with pytest.raises(ConfigError, match="use train.objective=inpaint"):
        resolve_objective("masked", 9)


def test_trainer_reads_region_losses_and_hole_share_only_at_logging_steps(tmp_path: Any) -> None:
    from train_helpers import tiny_config
    from furlora.train.trainer import Trainer

    seen: dict[int, dict[str, float]] = {}
    config = tiny_config(tmp_path, "train.max_steps=3", "train.log.every_n_steps=2", "train.checkpoint.every_n_steps=0")
    trainer = Trainer(config, callbacks=[lambda t: seen.__setitem__(t.global_step, dict(t.last_metrics))])
    trainer.fit()

    def logged(step: int) -> list[str]:
        return sorted(k for k in seen[step] if k.startswith("loss/region/") or k == "loss/hole_weight_share")

    assert logged(1) == []  # not a logging step: the sums stay on the device
    for step in (2, 3):  # a logging step, and the last step
        assert "loss/hole_weight_share" in logged(step) and any(k.startswith("loss/region/") for k in logged(step))
        assert 0.0 < seen[step]["loss/hole_weight_share"] <= 1.0
