"""run_comparison and the report folder: grid, tables and HTML; the CLI commands."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from eval_helpers import box_mask, fast_settings, textured_image
from furlora.cli.main import main
from furlora.eval.compare import run_comparison
from furlora.eval.settings import PassSettings
from furlora.eval.samples import EvalSample

PASSES = (PassSettings(strength=1.0, steps=2, feather=4), PassSettings(strength=0.5, steps=2, feather=6))


def write_sample(folder, stem, seed, regions):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured_image(80, 96, seed)).save(folder / f"{stem}.png")
    for name, box in regions.items():
        Image.fromarray(box_mask(80, 96, *box)).save(folder / f"{stem}.{name}.png")
    (folder / f"{stem}.txt").write_text("a photo of a spitz dog, white fur")


def test_comparison_report_folder(base_components, lora_files, tmp_path):
    samples = [
        EvalSample("a", textured_image(64, 80, 1), box_mask(64, 80, 16, 20, 44, 60), "white fur",
                   regions={"face": box_mask(64, 80, 16, 20, 30, 60) / 255.0}),
        EvalSample("b", textured_image(64, 64, 2), box_mask(64, 64, 8, 8, 40, 30)),
    ]
    settings = fast_settings(*PASSES, lora_scales=[0.0, 1.0], seeds=[0, 1])
    result = run_comparison(base_components, [lora_files["diffusers"]], samples, tmp_path / "report", settings)
    assert result.variants == ["off", "fur_diffusers@0", "fur_diffusers@1"]
    assert len(result.rows) == 2 * 2 * 3
    # Files: a grid per image and seed, the tables, the page, every output.
    assert sorted(p.name for p in result.grids) == ["a_s0.png", "a_s1.png", "b_s0.png", "b_s1.png"]
    grid = np.asarray(Image.open(result.grids[0]))
    assert grid.shape[1] > 5 * 64 and grid.std() > 10  # five columns with real pictures
    with result.table_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and {"sample", "seed", "variant", "psnr", "seam_error", "detail_ratio"} <= set(rows[0])
    assert "region/face/psnr" in rows[0]
    payload = json.loads(result.table_json.read_text())
    assert set(payload["summary"]) == set(result.variants) and len(payload["passes"]) == 2
    page = result.html.read_text()
    assert "grids/a_s0.png" in page and "fur_diffusers@1" in page and "metrics.csv" in page
    assert len(result.outputs) == 12 and all(p.is_file() for p in result.outputs.values())
    # Nothing moved outside the band, and scale 0 is exactly "off".
    assert all(float(r["drift_max"]) == 0.0 for r in rows)
    by = {(r["sample"], r["seed"], r["variant"]): r for r in result.rows}
    for key in ("a", "b"):
        assert by[(key, 0, "off")]["psnr"] == by[(key, 0, "fur_diffusers@0")]["psnr"]
        assert by[(key, 0, "off")]["psnr"] != by[(key, 0, "fur_diffusers@1")]["psnr"]
    off = np.asarray(Image.open(result.outputs[("a", 0, "off")]))
    zero = np.asarray(Image.open(result.outputs[("a", 0, "fur_diffusers@0")]))
    assert np.array_equal(off, zero)
    from peft.tuners.tuners_utils import BaseTunerLayer

    # The LoRA files were unloaded again: the shared model is the base model.
    assert not any(isinstance(m, BaseTunerLayer) for m in base_components.unet.modules())


def test_comparison_on_a_dataset_folder_uses_regions_and_captions(base_components, tmp_path):
    data = tmp_path / "data"
    write_sample(data, "dog_a", 0, {"face": (10, 10, 40, 40), "tail": (50, 60, 70, 90)})
    write_sample(data, "dog_b", 1, {"face": (20, 30, 60, 70)})
    settings = fast_settings(PASSES[0], repaint_regions=["face"])
    result = run_comparison(base_components, [], str(data), tmp_path / "out", settings)
    assert result.variants == ["off"] and [r["sample"] for r in result.rows] == ["dog_a", "dog_b"]
    # Only the face was repainted: the tail region kept its pixels.
    out = np.asarray(Image.open(result.outputs[("dog_a", 0, "off")]))
    source = textured_image(80, 96, 0)
    assert np.array_equal(out[52:68, 62:88], source[52:68, 62:88])
    assert "region/tail/drift_max" not in result.rows[0] and "region/tail/psnr" in result.rows[0]


def test_an_empty_mask_is_reported_as_skipped(base_components, tmp_path):
    samples = [EvalSample("empty", textured_image(64, 64), np.zeros((64, 64), np.uint8))]
    result = run_comparison(base_components, [], samples, tmp_path / "out", fast_settings())
    assert result.rows == [] and "nothing to repaint" in result.skipped[0]
    assert result.html.is_file()


def test_cli_inpaint_and_compare(tmp_path, tiny_sdxl, lora_files, capsys):
    image, mask = tmp_path / "dog.png", tmp_path / "dog_mask.png"
    Image.fromarray(textured_image(64, 64)).save(image)
    Image.fromarray(box_mask(64, 64, 16, 16, 48, 48)).save(mask)
    passes = "--set=eval.passes=[{strength: 1.0, steps: 2, feather: 4}]"
    code = main(["inpaint", "--model", str(tiny_sdxl), "--image", str(image), "--mask", str(mask),
                 "--prompt", "white fur", "--out", str(tmp_path / "out.png"), "--lora", str(lora_files["kohya"]),
                 passes, "--no-progress"])
    assert code == 0 and "every other pixel is unchanged" in capsys.readouterr().out
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (64, 64, 3) and np.array_equal(out[:8], textured_image(64, 64)[:8])

    code = main(["compare", "--model", str(tiny_sdxl), "--lora", f"{lora_files['diffusers']},{lora_files['other']}",
                 "--image", str(image), "--mask", str(mask), "--out", str(tmp_path / "rep"), "--scales", "1",
                 passes, "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "fur_diffusers@1" in printed and "other@1" in printed and "index.html" in printed
    assert (tmp_path / "rep" / "grids" / "dog_s0.png").is_file()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--mask", "{mask}", "--out", "{out}.png"], "does not exist"),  # missing image
        (["--out", "{out}.jpg"], "use a .png name"),
        (["--lora", "{tmp}/nope.safetensors", "--out", "{out}.png"], "LoRA file"),
        (["--set", "eval.passes=[{strength: 0.01, steps: 5}]", "--out", "{out}.png"], "leaves 0 denoising steps"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, tiny_sdxl, capsys, extra, expected):
    image, mask = tmp_path / "dog.png", tmp_path / "dog_mask.png"
    Image.fromarray(textured_image(64, 64)).save(image)
    Image.fromarray(box_mask(64, 64, 16, 16, 48, 48)).save(mask)
    fill = {"mask": str(mask), "out": str(tmp_path / "o"), "tmp": str(tmp_path)}
    args = [a.format(**fill) if "{" in a and "strength" not in a else a for a in extra]
    source = ["--image", str(tmp_path / "missing.png")] if "--mask" in args else ["--image", str(image), "--mask", str(mask)]
    code = main(["inpaint", "--model", str(tiny_sdxl), *source, *args, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err


def test_demo_comparison_uses_the_runs_lora_and_heldout_images(tiny_sdxl, lora_files, tmp_path):
    from furlora.config import validate_config
    from furlora.eval.compare import demo_comparison

    data = tmp_path / "heldout"
    write_sample(data, "dog_a", 0, {"face": (10, 10, 40, 40)})
    config = validate_config({
        "model": {"source": str(tiny_sdxl)},
        "train": {"validation": {"path": str(data)}},
        "eval": {"passes": [{"strength": 1.0, "steps": 2}], "progress": False},
    })
    assert demo_comparison(config, {"lora_files": {}}, tmp_path / "none") is None
    from types import SimpleNamespace  # a typed run summary: attributes instead of keys

    assert demo_comparison(config, SimpleNamespace(lora_files={}, embedding_files={}), tmp_path / "none") is None
    page = demo_comparison(config, {"lora_files": {"diffusers": str(lora_files["diffusers"])}}, tmp_path / "cmp")
    assert page.name == "index.html" and "fur_diffusers@1" in page.read_text()
    assert (tmp_path / "cmp" / "grids" / "dog_a_s0.png").is_file()
    # the per-region base vs LoRA table, with the Lab colour error next to PSNR / SSIM
    text = page.read_text()
    assert "<h2>Base vs LoRA, per region</h2>" in text and "<td>face</td><td>PSNR dB</td>" in text
    assert "<td>all</td><td>colour error (deltaE of mean Lab)</td>" in text
    assert "better than off (PSNR) on " in text and " of 1 images" in text
