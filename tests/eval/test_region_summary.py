"""The base-vs-LoRA region table: means per region and variant, wins counted per image."""

from __future__ import annotations

import math

import pytest

from furlora.eval.region_summary import region_html, region_lines, region_table, wins


def _rows():
    rows = []
    for sample, (base, lora) in {"dog_a": (14.0, 16.0), "dog_b": (15.0, 14.5), "dog_c": (12.0, 13.0)}.items():
        for variant, psnr in (("off", base), ("lora@1", lora)):
            rows.append({"sample": sample, "seed": 0, "variant": variant, "psnr": psnr, "ssim": 0.3,
                         "colour_error": 10.0 if variant == "off" else 4.0, "delta_e": 20.0,
                         "region/face/psnr": psnr + 1.0, "region/tail/psnr": float("nan")})
    return rows


def test_region_table_means_per_region_and_variant():
    table = region_table(_rows())
    assert list(table) == ["all", "face"]  # tail has no finite value: left out
    assert table["all"]["psnr"] == pytest.approx({"off": 41.0 / 3, "lora@1": 43.5 / 3})
    assert table["face"]["psnr"]["lora@1"] == pytest.approx(43.5 / 3 + 1.0)
    assert table["all"]["colour_error"] == {"off": 10.0, "lora@1": 4.0}
    assert "colour_error" not in table["face"]


def test_wins_count_images_in_the_metric_direction():
    rows = _rows()
    assert wins(rows, "lora@1", "psnr") == (2, 3)
    assert wins(rows, "lora@1", "colour_error") == (3, 3)  # lower is better
    assert wins(rows, "lora@1", "delta_e") == (0, 3)  # a tie is not a win


def test_lines_and_html_show_base_and_lora_side_by_side():
    lines = region_lines(_rows())
    assert lines[0] == "all   PSNR dB: off 13.67, lora@1 14.5 (+0.833)"
    assert "face  PSNR dB: off 14.67, lora@1 15.5 (+0.833)" in lines
    assert any(line.startswith("all   colour error") and "lora@1 4 (-6)" in line for line in lines)
    page = region_html(_rows())
    assert "<th>off</th><th>lora@1</th>" in page and "lora@1 better than off (PSNR) on 2 of 3 images" in page
    assert not math.isnan(region_table(_rows())["all"]["ssim"]["off"])
