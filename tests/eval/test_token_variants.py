"""Comparisons with an embedding file of learned tokens: base / LoRA / token / LoRA + token."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from eval_helpers import box_mask, textured_image
from furlora.cli.main import main
from furlora.errors import EvaluationError
from furlora.eval.token_variants import check_embedding_files, load_embeddings, token_prompt
from furlora.tokens import TokenSettings, save_embedding_file

WIDTHS = {"text_encoder": 32, "text_encoder_2": 64}  # the tiny SDXL's two encoders


def embedding(path, seed=0, vectors=2, token="<spitz-fur>", widths=(32, 64)):
    g = torch.Generator().manual_seed(seed)
    return save_embedding_file(path, torch.randn(vectors, widths[0], generator=g),
                               torch.randn(vectors, widths[1], generator=g), token=token)


def test_compare_cli_with_an_embedding_file_reports_the_four_variants(tmp_path, tiny_sdxl, lora_files, capsys):
    image, mask = tmp_path / "dog.png", tmp_path / "dog_mask.png"
    Image.fromarray(textured_image(64, 64)).save(image)
    Image.fromarray(box_mask(64, 64, 16, 16, 48, 48)).save(mask)
    file = embedding(tmp_path / "emb" / "spitz-fur.safetensors")
    code = main(["compare", "--model", str(tiny_sdxl), "--lora", str(lora_files["diffusers"]),
                 "--embeddings", str(file), "--image", str(image), "--mask", str(mask), "--prompt", "white fur",
                 "--out", str(tmp_path / "rep"), "--scales", "1", "--seeds", "0",
                 "--set=eval.passes=[{strength: 1.0, steps: 2, feather: 4, guidance_scale: 1.0}]", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "fur_diffusers@1+token" in printed
    four = ["off", "fur_diffusers@1", "token", "fur_diffusers@1+token"]
    payload = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert [r["variant"] for r in payload["rows"]] == four
    assert payload["variants"] == four and payload["tokens"] == ["<spitz-fur>"]
    assert payload["embeddings"] == [str(file)]
    with (tmp_path / "rep" / "metrics.csv").open() as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    assert list(rows) == four
    # The token changes the prompt embedding, so the token columns are other pictures.
    assert rows["token"]["psnr"] != rows["off"]["psnr"]
    assert rows["fur_diffusers@1+token"]["psnr"] != rows["fur_diffusers@1"]["psnr"]
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "spitz-fur.safetensors" in page and "fur_diffusers@1+token" in page


def test_token_prompt_uses_the_runs_caption_rule_else_a_prefix():
    assert token_prompt("white fur", ["<spitz-fur>"]) == "<spitz-fur>, white fur"
    assert token_prompt(None, ["<spitz-fur>"]) == "<spitz-fur>"
    assert token_prompt("<spitz-fur> fur", ["<spitz-fur>"]) == "<spitz-fur> fur"
    replace = TokenSettings(enabled=True, caption={"mode": "replace"})
    assert token_prompt("a dog with white fur", ["<spitz-fur>"], replace) == "a dog with white <spitz-fur>"
    regions = TokenSettings(enabled=True, caption={"mode": "regions", "region_phrases": {"chest": "{token} chest"}})
    assert token_prompt("a dog", ["<spitz-fur>"], regions, ["chest"]) == "a dog, <spitz-fur> chest"
    assert token_prompt("a dog", ["<spitz-fur>"], regions, []) == "<spitz-fur>, a dog"  # never without the token


def test_bad_embedding_files_are_reported_together(tmp_path):
    wide = embedding(tmp_path / "sdxl.safetensors", widths=(768, 1280))
    first = embedding(tmp_path / "a.safetensors")
    twin = embedding(tmp_path / "b.safetensors", seed=1)  # the same token name again
    with pytest.raises(EvaluationError) as info:
        check_embedding_files([wide, first, twin, tmp_path / "missing.safetensors"], WIDTHS)
    text = str(info.value)
    assert "made for another model" in text and "both define the token '<spitz-fur>'" in text
    assert "missing.safetensors does not exist" in text
    assert [i.token for i in check_embedding_files([first], WIDTHS)] == ["<spitz-fur>"]


def test_a_token_already_in_the_pipeline_is_reused_only_with_the_same_vectors(tmp_path, tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, variant="fp16", torch_dtype=torch.float32)
    file = embedding(tmp_path / "one" / "spitz-fur.safetensors")
    (info,) = load_embeddings(pipe, [file])
    assert info.token_names() == ["<spitz-fur>", "<spitz-fur>_1"]
    saved = load_file(file)
    for tokenizer, encoder, key in ((pipe.tokenizer, pipe.text_encoder, "clip_l"),
                                    (pipe.tokenizer_2, pipe.text_encoder_2, "clip_g")):
        row = tokenizer.get_vocab()["<spitz-fur>_1"]
        assert torch.equal(encoder.get_input_embeddings().weight[row].detach(), saved[key][1])
    load_embeddings(pipe, [file])  # same vectors: kept, no diffusers "already in vocabulary" error
    other = embedding(tmp_path / "two" / "spitz-fur.safetensors", seed=5)
    with pytest.raises(EvaluationError, match="already has the token '<spitz-fur>' with other vectors"):
        load_embeddings(pipe, [other])
