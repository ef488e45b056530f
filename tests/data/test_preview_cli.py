"""`furlora dataset check` / `furlora dataset preview` and the preview pictures."""

from __future__ import annotations

import numpy as np
from PIL import Image

from furlora.cli.main import main
from furlora.data.dataset import MaskedDataset
from furlora.data.preview import sample_panels, write_preview


def test_preview_files_show_the_masks(maker, make_settings, tmp_path):
    for k in range(3):
        maker.furlora_sample(f"img {k}", seed=k)
    ds = MaskedDataset(make_settings(), maker.root)
    files = write_preview(ds, tmp_path / "out")
    assert [f.name for f in files] == ["img_0.png", "img_1.png", "img_2.png", "contact_sheet.png"]
    panel = np.asarray(Image.open(files[0]))
    s = ds.sample(0, 0, augment=False)
    h, w = s["target_size"]
    assert panel.shape[1] == 4 * w + 12
    merged = panel[18:, w + 4 : 2 * w + 4].astype(int)  # second panel: merged mask in red
    inside = s["mask"][0].numpy() > 0.5
    redness = merged[..., 0] - merged[..., 1]
    assert redness[inside].mean() > redness[~inside].mean() + 80
    assert isinstance(sample_panels(s), Image.Image)


def test_cli_check_reports_and_exit_codes(maker, capsys):
    maker.furlora_sample("good")
    assert main(["dataset", "check", str(maker.root)]) == 0
    out = capsys.readouterr().out
    assert "layout: furlora" in out and "samples used: 1" in out and "OK" in out
    maker.bytes("bad file.png", b"junk")
    assert main(["dataset", "check", str(maker.root)]) == 1
    out = capsys.readouterr().out
    assert "bad file.png" in out and "not an image file" in out and "training would stop" in out
    assert main(["dataset", "check", str(maker.root / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_preview_writes_pngs(maker, tmp_path, capsys):
    maker.furlora_sample("a")
    maker.furlora_sample("b", seed=1)
    out = tmp_path / "prev"
    code = main(["dataset", "preview", str(maker.root), "--out", str(out), "--set", "data.resolution=64", "--augment", "--epoch", "2"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "contact_sheet.png"]
    assert "contact_sheet.png" in capsys.readouterr().out
