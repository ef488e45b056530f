"""The LoRA + token example runs end to end (slow: trains, then renders four variants)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_lora_plus_token_example(tmp_path, model_cache):
    from PIL import Image

    from furlora.config import load_config
    from furlora.tokens import read_embedding_file

    spec = importlib.util.spec_from_file_location("lora_plus_token", ROOT / "examples" / "lora_plus_token.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    config = load_config(
        ROOT / "configs" / "tiny-cpu-lora-token.yaml",
        [f"data.path={ROOT / 'datasets' / 'spitz-fur' / 'train'}", "train.max_steps=2", "data.resolution=64"],
    )
    lora_file, embedding_file, tokens = example.train(config, tmp_path)
    assert lora_file.is_file()
    data = read_embedding_file(embedding_file, {"text_encoder": 32, "text_encoder_2": 64})
    assert data.token == "<spitz-fur>" and data.num_vectors == 2
    grid = example.compare(config, lora_file, embedding_file, tokens, tmp_path)
    image = Image.open(grid)
    assert image.width == 5 * image.height  # input + base / LoRA / token / LoRA + token
