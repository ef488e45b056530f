"""chaining: latent with the 9-channel UNet: a later, smaller pass sees the current image, not the segment start.

Pixels repainted by an earlier pass of the chain lie outside a smaller later hole; the 9-channel
UNet gets them through ``masked_image_latents``, which must hold what is there now.
"""

from __future__ import annotations

import numpy as np
import torch

from eval_helpers import box_mask, fast_settings, textured_image
from furlora.eval.settings import PassSettings


def test_smaller_later_pass_sees_the_repainted_ring(inpaint_components, monkeypatch):
    from furlora.eval.blend import expand_cells
    from furlora.eval.inpaint import MultiPassInpainter
    from furlora.eval.latents import decode_latents, encode_latents

    passes = [PassSettings(strength=1.0, steps=2, grow=8, feather=8), PassSettings(strength=0.5, steps=2, feather=0)]
    inpainter = MultiPassInpainter(inpaint_components, fast_settings(*passes, chaining="latent"))
    pipe = inpainter.pipeline
    calls = []
    real_call = type(pipe).__call__

    def recording_call(self, **kwargs):
        out = real_call(self, **kwargs)
        calls.append({**kwargs, "out": out.images.clone()})
        return out

    monkeypatch.setattr(type(pipe), "__call__", recording_call)
    image = textured_image(64, 64)
    x0 = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    inpainter.inpaint(image, box_mask(64, 64, 24, 24, 40, 40), prompt="fur", seed=3)
    assert len(calls) == 2  # one latent chain, two pipeline calls

    cells = [c["mask_image"][0, 0, ::8, ::8].numpy() > 0 for c in calls]
    ring = cells[0] & ~cells[1]
    assert ring.any()  # the first pass repainted cells the second pass keeps
    start = encode_latents(pipe, x0)
    now = torch.where(torch.from_numpy(cells[0])[None, None], calls[0]["out"].to(start), start)
    repainted = expand_cells(cells[0], 8)[..., None] > 0
    current = np.where(repainted, decode_latents(pipe, now), x0)
    hole = expand_cells(cells[1], 8)[..., None]
    expected = encode_latents(pipe, current * (1.0 - hole) + 0.5 * hole)
    stale = encode_latents(pipe, x0 * (1.0 - hole) + 0.5 * hole)
    got = calls[1]["masked_image_latents"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (got - stale).abs().max() > 1e-3  # the segment start would differ in the ring
