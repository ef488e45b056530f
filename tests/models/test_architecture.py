"""The real SDXL architecture on the meta device (no weights)."""

from __future__ import annotations

from furlora.models.architecture import build_real_sdxl, count_parameters


def test_real_sdxl_unet_parameter_count():
    unet = build_real_sdxl("unet")
    assert next(unet.parameters()).is_meta
    assert count_parameters(unet) == 2_567_463_684


def test_real_sdxl_inpainting_unet_has_nine_channels():
    unet = build_real_sdxl("unet_inpainting")
    assert unet.config.in_channels == 9
    assert count_parameters(unet) == 2_567_463_684 + 14_400


def test_real_text_encoders_are_not_swapped():
    te1, te2 = build_real_sdxl("text_encoder"), build_real_sdxl("text_encoder_2")
    assert te1.config.hidden_size == 768 and type(te1).__name__ == "CLIPTextModel"
    assert te2.config.hidden_size == 1280 and type(te2).__name__ == "CLIPTextModelWithProjection"
    assert count_parameters(te1) == 123_060_480
    assert count_parameters(te2) == 694_659_840


def test_real_unet_transformer_block_layout():
    unet = build_real_sdxl("unet")
    blocks = [n for n, m in unet.named_modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert len(blocks) == 70
    assert not any(n.startswith(("down_blocks.0.", "up_blocks.2.")) for n in blocks)
