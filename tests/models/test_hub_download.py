"""A hub download fetches one weight set: the fp16 variant for fp16 / bf16 weights when it exists, else fp32."""

from __future__ import annotations

import fnmatch

import pytest

#: The file list of a diffusers SDXL repository (both weight sets; the UNet sharded in fp32).
REPO_FILES = [
    "model_index.json", "README.md", "sd_xl_base_1.0.safetensors",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
    "text_encoder_2/config.json", "text_encoder_2/model.safetensors", "text_encoder_2/model.fp16.safetensors",
    "tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
    "tokenizer_2/merges.txt", "tokenizer_2/vocab.json", "tokenizer_2/tokenizer_config.json",
    "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.safetensors.index.json",
    "unet/diffusion_pytorch_model-00001-of-00002.safetensors", "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",  # no fp16 VAE in this repo
    "vae/diffusion_pytorch_model.bin",
]


def _fetched(patterns: list[str]) -> set[str]:
    return {f for f in REPO_FILES if any(fnmatch.fnmatch(f, p) for p in patterns)}


def _weights(files: set[str]) -> set[str]:
    return {f for f in files if ".safetensors" in f}


def test_half_precision_fetches_the_fp16_set_only():
    from furlora.models.sdxl import hub_download_patterns

    files = _fetched(hub_download_patterns(REPO_FILES, want_fp16=True))
    assert _weights(files) == {
        "text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors",  # the only VAE weights there are
    }
    assert {"model_index.json", "unet/config.json", "tokenizer_2/merges.txt", "scheduler/scheduler_config.json"} <= files
    assert "vae/diffusion_pytorch_model.bin" not in files and "sd_xl_base_1.0.safetensors" not in files


def test_full_precision_fetches_the_fp32_set_only():
    from furlora.models.sdxl import hub_download_patterns

    files = _fetched(hub_download_patterns(REPO_FILES, want_fp16=False))
    assert _weights(files) == {
        "text_encoder/model.safetensors", "text_encoder_2/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    }


@pytest.mark.parametrize(("dtype", "variant", "fp16"), [("bf16", None, True), ("fp16", None, True),
                                                         ("fp32", None, False), ("fp32", "fp16", True)])
def test_load_path_downloads_with_one_weight_set(monkeypatch, dtype, variant, fp16, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from furlora.models.sdxl import resolve_model_path

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_snapshot(repo_id, revision=None, allow_patterns=None, local_files_only=False):
        calls.append(allow_patterns)
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, revision=None: REPO_FILES)
    assert resolve_model_path("someone/sdxl", dtype=dtype, variant=variant) == tmp_path
    fetched = _weights(_fetched(calls[-1]))
    unet = {f for f in fetched if f.startswith("unet/")}
    if fp16:
        assert unet == {"unet/diffusion_pytorch_model.fp16.safetensors"}
    else:
        assert all(".fp16." not in f for f in fetched) and len(unet) == 3
