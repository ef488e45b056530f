"""MultiPassInpainter on the tiny models: the outside-band guarantee, pass chaining, seeds,
crops, tiles, the refiner, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_helpers import box_mask, fast_settings, textured_image
from furlora.errors import EvaluationError
from furlora.eval.inpaint import MultiPassInpainter
from furlora.eval.latents import decode_latents
from furlora.eval.settings import PassSettings

THREE_PASSES = (
    PassSettings(strength=1.0, steps=3, feather=6),
    PassSettings(strength=0.7, steps=3, feather=8, grow=3),
    PassSettings(strength=0.7, steps=3, feather=4, grow=-2),
)


@pytest.fixture(params=["base", "inpaint"])
def components(request, base_components, inpaint_components):
    return base_components if request.param == "base" else inpaint_components


@pytest.mark.parametrize("passes", [THREE_PASSES[:1], THREE_PASSES], ids=["1-pass", "3-pass"])
def test_outside_the_band_is_bit_identical(components, passes):
    image = textured_image(72, 88)
    mask = box_mask(72, 88, 20, 24, 50, 60)
    inpainter = MultiPassInpainter(components, fast_settings(*passes))
    assert inpainter.is_inpainting == (components.unet.config.in_channels == 9)
    result = inpainter.inpaint(image, mask, seed=3)
    band = result.band
    assert result.image.dtype == np.uint8 and result.image.shape == image.shape
    assert np.array_equal(result.image[~band], image[~band])
    assert 0 < band.sum() < band.size
    # The band is the union of each pass's grown + feathered mask, and something changed inside.
    assert band[20:50, 24:60].all()
    assert (result.image[band] != image[band]).any()
    assert len(result.passes) == len(passes)


def test_same_seed_same_output_and_other_seed_differs(base_components):
    image, mask = textured_image(64, 64), box_mask(64, 64, 16, 16, 48, 48)
    inpainter = MultiPassInpainter(base_components, fast_settings(*THREE_PASSES[:2]))
    a = inpainter.inpaint(image, mask, seed=1).image
    b = inpainter.inpaint(image, mask, seed=1).image
    c = inpainter.inpaint(image, mask, seed=2).image
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pixel_chaining_pass_two_consumes_pass_one(inpaint_components):
    """(p1 then p2) on X equals p2 run alone on the result of p1: pass 2 starts from pass 1's output."""
    image, mask = textured_image(64, 64), box_mask(64, 64, 16, 16, 48, 48)
    p1 = PassSettings(strength=1.0, steps=3, feather=4, seed=11)
    p2 = PassSettings(strength=0.7, steps=3, feather=6, seed=22)
    inpainter = MultiPassInpainter(inpaint_components, fast_settings(p1, p2, chaining="pixel"))
    both = inpainter.inpaint(image, mask)
    first = inpainter.inpaint(image, mask, passes=[p1])
    second = inpainter.inpaint(first.rgb, mask, passes=[p2])
    assert np.array_equal(both.passes[0].image, first.rgb)
    assert np.array_equal(both.rgb, second.rgb)
    alone = inpainter.inpaint(image, mask, passes=[p2])  # pass 2 on the original input differs
    assert not np.array_equal(both.rgb, alone.rgb)


def test_latent_chaining_hands_pass_one_latents_to_pass_two(base_components, monkeypatch):
    image, mask = textured_image(64, 64), box_mask(64, 64, 16, 16, 48, 48)
    inpainter = MultiPassInpainter(base_components, fast_settings(*THREE_PASSES[:2], keep_pass_images=True))
    pipe_class = type(inpainter.pipeline)
    calls = []
    original_call = pipe_class.__call__

    def spy(self, *args, **kwargs):
        out = original_call(self, *args, **kwargs)
        calls.append((kwargs["image"].clone(), kwargs["mask_image"].clone(), out.images.clone()))
        return out

    monkeypatch.setattr(pipe_class, "__call__", spy)
    result = inpainter.inpaint(image, mask, seed=5)
    assert len(calls) == 2
    (in1, mask1, out1), (in2, _, _) = calls
    cells = mask1[:, :, ::8, ::8] > 0.5  # the pass-1 latent cells
    expected = torch.where(cells, out1, in1)
    assert torch.equal(in2, expected)  # pass 2 starts from pass 1's latents
    assert not torch.equal(in2, in1)
    # The kept pass-1 picture is the decode of those latents, blended into the input.
    decoded = decode_latents(inpainter.pipeline, expected)
    w = result.passes[0].weight
    inside = w == 1
    assert np.allclose(result.passes[0].image[inside], decoded[inside])


def test_grayscale_16_bit_and_rgba_inputs_keep_their_format(base_components):
    inpainter = MultiPassInpainter(base_components, fast_settings())
    mask = box_mask(64, 64, 20, 20, 44, 44)
    grey16 = (textured_image(64, 64)[..., 0].astype(np.uint16) * 257)
    result = inpainter.inpaint(grey16, mask)
    assert result.image.dtype == np.uint16 and result.image.shape == (64, 64)
    assert np.array_equal(result.image[~result.band], grey16[~result.band])
    assert (result.image[result.band] != grey16[result.band]).any()
    rgba = np.dstack([textured_image(64, 64), np.full((64, 64), 77, np.uint8)])
    result = inpainter.inpaint(rgba, mask)
    assert result.image.shape == (64, 64, 4)
    assert (result.image[..., 3] == 77).all()  # alpha carried through
    assert np.array_equal(result.image[~result.band], rgba[~result.band])


def test_crop_to_mask_runs_a_small_region_at_the_working_resolution(inpaint_components):
    image, mask = textured_image(120, 120), box_mask(120, 120, 70, 80, 86, 100)
    p = PassSettings(strength=1.0, steps=2, feather=4, crop_to_mask=True, crop_padding=8, working_resolution=64)
    result = MultiPassInpainter(inpaint_components, fast_settings(p)).inpaint(image, mask)
    record = result.passes[0]
    top, left, bottom, right = record.regions[0]
    # The band reaches feather - 1 = 3 px beyond the mask; the box adds crop_padding = 8 px.
    assert (top, left, bottom, right) == (70 - 3 - 8, 80 - 3 - 8, 86 + 3 + 8, 100 + 3 + 8)
    assert max(record.working_size) == 64
    assert np.array_equal(result.image[~result.band], image[~result.band])
    assert (result.image[result.band] != image[result.band]).any()


def test_large_image_needs_tiling_and_tiles_cover_the_band(base_components):
    image = textured_image(64, 288)  # wider than the tiny model's 256 px
    mask = box_mask(64, 288, 10, 20, 54, 270)
    inpainter = MultiPassInpainter(base_components, fast_settings(max_side_factor=1.0))
    with pytest.raises(EvaluationError, match=r"passes\[0\].*288x64 px.*tile: true"):
        inpainter.inpaint(image, mask)
    p = PassSettings(strength=1.0, steps=2, feather=4, tile=True, working_resolution=64, tile_overlap=16)
    result = inpainter.inpaint(image, mask, passes=[p])
    boxes = result.passes[0].regions
    assert len(boxes) >= 5 and len(set(result.passes[0].seeds)) == len(boxes)
    covered = np.zeros(mask.shape, bool)
    for top, left, bottom, right in boxes:
        covered[top:bottom, left:right] = True
    assert covered[result.band].all()
    assert np.array_equal(result.image[~result.band], image[~result.band])


def test_refiner_pass(base_components, tiny_refiner):
    from furlora.eval.refiner import load_refiner_pipeline

    image, mask = textured_image(64, 64), box_mask(64, 64, 16, 16, 48, 48)
    refiner = load_refiner_pipeline(tiny_refiner)
    assert refiner.text_encoder is None and refiner.unet.config.cross_attention_dim == 64
    passes = [PassSettings(strength=1.0, steps=2, feather=4), PassSettings(strength=0.5, steps=2, feather=4, refiner=True)]
    inpainter = MultiPassInpainter(base_components, fast_settings(*passes, refiner=str(tiny_refiner)), refiner=refiner)
    result = inpainter.inpaint(image, mask, seed=0)
    assert [r.engine for r in result.passes] == ["base", "refiner"]
    assert np.array_equal(result.image[~result.band], image[~result.band])
    base_only = inpainter.inpaint(image, mask, seed=0, passes=passes[:1])
    assert not np.array_equal(result.image, base_only.image)
    with pytest.raises(EvaluationError, match=r"passes\[1\] has refiner: true but no refiner"):
        MultiPassInpainter(base_components, fast_settings(*passes, refiner="x")).inpaint(image, mask)


def test_refiner_folder_is_checked(tmp_path, tiny_sdxl):
    from furlora.eval.refiner import check_refiner_folder

    with pytest.raises(EvaluationError, match="does not exist"):
        check_refiner_folder(tmp_path / "nope")
    with pytest.raises(EvaluationError, match="cross_attention_dim 96 != text_encoder_2 hidden size 64"):
        check_refiner_folder(tiny_sdxl)  # a base model is not a refiner


def test_empty_mask_returns_the_input_and_says_so(base_components, caplog):
    image = textured_image(64, 64)
    result = MultiPassInpainter(base_components, fast_settings()).inpaint(image, np.zeros((64, 64), np.uint8))
    assert result.skipped and "nothing to repaint" in result.skipped
    assert np.array_equal(result.image, image) and not result.band.any() and not result.passes
    assert "nothing to repaint" in caplog.text


def test_full_mask_repaints_everything_with_a_warning(base_components, caplog):
    image = textured_image(64, 64)
    result = MultiPassInpainter(base_components, fast_settings()).inpaint(image, np.full((64, 64), 255, np.uint8))
    assert result.band.all() and "covers the whole image" in caplog.text


def test_mask_size_mismatch_is_an_error_unless_resize_is_set(base_components):
    image, small_mask = textured_image(64, 64), box_mask(32, 32, 8, 8, 24, 24)
    with pytest.raises(EvaluationError, match=r"mask is 32x32 px but its image is 64x64 px.*eval.resize_mask"):
        MultiPassInpainter(base_components, fast_settings()).inpaint(image, small_mask)
    result = MultiPassInpainter(base_components, fast_settings(resize_mask=True)).inpaint(image, small_mask)
    assert result.mask[16:48, 16:48].all() and result.mask.sum() == 32 * 32


def test_bad_images_are_named(base_components, tmp_path):
    inpainter = MultiPassInpainter(base_components, fast_settings())
    mask = box_mask(64, 64, 8, 8, 24, 24)
    with pytest.raises(EvaluationError, match="does not exist"):
        inpainter.inpaint(tmp_path / "missing.png", mask)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(EvaluationError, match="broken.png: not a readable image"):
        inpainter.inpaint(tmp_path / "broken.png", mask)
    with pytest.raises(EvaluationError, match=r"float images must hold finite values in \[0, 1\]"):
        inpainter.inpaint(np.full((64, 64, 3), 2.0, np.float32), mask)
    with pytest.raises(EvaluationError, match="unsupported dtype int32"):
        inpainter.inpaint(np.zeros((64, 64, 3), np.int32), mask)
