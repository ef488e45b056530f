"""LoRA + a learned fur token (pivotal tuning), then base / LoRA / token / LoRA+token side by side.

A short recipe that wires the library pieces by hand, so each step of pivotal tuning is visible:

1. check the tokens against the model's tokenizers (no weights read yet),
2. load SDXL, add the tokens to both tokenizers and text encoders, put LoRA on the UNet and
   both text encoders,
3. train both with one AdamW (the token vectors with their own learning rate, for the first
   ``tokens.train_fraction`` of the steps),
4. save the LoRA and the embedding file (``clip_l`` + ``clip_g``),
5. load both files into a fresh diffusers inpainting pipeline and repaint a held-out image
   four ways, written as one PNG.

Run (tiny model, CPU, about a minute)::

    python examples/lora_plus_token.py --config configs/tiny-cpu-lora-token.yaml --out runs/lora-token-demo
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from furlora.config import load_config  # noqa: E402
from furlora.data.buckets import BucketBatchSampler  # noqa: E402
from furlora.data.dataset import MaskedDataset, collate_samples  # noqa: E402
from furlora.lora.hooks import LoraHookManager  # noqa: E402
from furlora.models.sdxl import load_sdxl, resolve_model_path  # noqa: E402
from furlora.tokens import check_before_loading, load_into_pipeline, prepare_tokens  # noqa: E402
from furlora.train.encode import BatchEncoder  # noqa: E402
from furlora.train.noise import draw_step  # noqa: E402
from furlora.train.step import prepare_batch, training_loss  # noqa: E402


def train(config, out: Path) -> tuple[Path, Path, object]:
    """Train LoRA + tokens; return the LoRA file, the embedding file and the token object."""
    model_path = resolve_model_path(config.model.source)
    check_before_loading(config.tokens, model_path)  # bad tokens / words / files fail here, in seconds
    components = load_sdxl(model_path)
    # Tokens first, LoRA second (either order works: the token vectors live outside the encoders).
    tokens = prepare_tokens(components, config.tokens, seed=config.seed)
    modules = {"unet": components.unet, "text_encoder": components.text_encoder, "text_encoder_2": components.text_encoder_2}
    manager = LoraHookManager(modules, config.lora, seed=config.seed)
    manager.apply()
    lr = config.train.learning_rate
    groups = [{**g, "lr": g["lr"] or lr} for g in manager.parameter_groups(lr)] + tokens.parameter_groups(lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.train.weight_decay)
    parameters = [p for g in groups for p in g["params"]]

    dataset = MaskedDataset(config.data, seed=config.seed)
    collate = tokens.wrap_collate(collate_samples)  # captions get <spitz-fur> (expanded to its 2 tokens)
    sampler = BucketBatchSampler(dataset, config.train.batch_size, seed=config.seed)
    # No text cache: the token vectors change the text embeddings at every step.
    encoder = BatchEncoder(components, torch.device("cpu"), cache_text=False)
    scheduler = components.noise_scheduler
    prediction = scheduler.config.prediction_type
    batches = (batch for epoch in range(10**6) for batch in sampler.batches(epoch))
    max_steps = config.train.max_steps
    for module in modules.values():
        module.train()
    bar = tqdm(range(max_steps), desc="LoRA + token")
    for step in bar:
        training_tokens = tokens.set_training_step(step, max_steps)
        batch = collate([dataset.sample(i, 0) for i in next(batches)])
        shape = encoder.latent_shape(batch["pixel_values"].shape)
        draws = draw_step(config.seed, step, 0, 0, shape, scheduler.config.num_train_timesteps,
                          full_mask_fraction=config.train.full_mask_fraction if components.is_inpainting else 0.0)
        prepared = prepare_batch(batch, draws, encoder, components.is_inpainting, text_trainable=True)
        loss = training_loss(components.unet, prepared, draws, scheduler, prediction, config.train.loss).loss.total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.train.max_grad_norm or float("inf"))
        optimizer.step()
        tokens.after_optimizer_step()  # keeps both tables' new rows equal to the trained vectors
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", token="train" if training_tokens else "frozen")

    lora_file = manager.save(out / "lora.safetensors", format="diffusers")
    (embedding_file,) = tokens.save(out / "embeddings")
    return Path(lora_file or out / "lora.safetensors"), embedding_file, tokens


def compare(config, lora_file: Path, embedding_file: Path, tokens, out: Path) -> Path:
    """Repaint the first held-out image: base, LoRA, token, LoRA + token (same seed) -> one PNG."""
    from diffusers import StableDiffusionXLInpaintPipeline
    from PIL import Image

    pipe = StableDiffusionXLInpaintPipeline.from_pretrained(resolve_model_path(config.model.source))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_file), adapter_name="fur")
    load_into_pipeline(pipe, embedding_file)  # diffusers' load_textual_inversion, once per encoder

    heldout = MaskedDataset(config.data, root=Path(config.data.path).parent / "heldout", seed=config.seed)
    sample = heldout.sample(0, 0, augment=False)
    image = Image.fromarray(((sample["pixel_values"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
    region = (sample["mask"][0].numpy() > 0).astype(np.float32)  # the fur regions (1 = repaint)
    mask = Image.fromarray((region * 255).astype(np.uint8))
    plain = sample["caption"]
    with_token = tokens.caption_transform(plain)  # short form: the pipeline expands it itself
    columns = [image]
    for use_lora, prompt in ((False, plain), (True, plain), (False, with_token), (True, with_token)):
        if use_lora:
            pipe.enable_lora()
        else:
            pipe.disable_lora()
        result = pipe(prompt=prompt, image=image, mask_image=mask, height=image.height, width=image.width,
                      num_inference_steps=8, guidance_scale=1.0, strength=1.0,
                      generator=torch.Generator().manual_seed(config.seed)).images[0]
        # Keep the input outside the mask (the pipeline returns a fully decoded image).
        blended = np.asarray(image) * (1 - region[..., None]) + np.asarray(result.resize(image.size)) * region[..., None]
        columns.append(Image.fromarray(blended.round().astype(np.uint8)))
    grid = Image.new("RGB", (image.width * len(columns), image.height))
    for i, picture in enumerate(columns):
        grid.paste(picture, (i * image.width, 0))
    path = out / "variants_input_base_lora_token_lora+token.png"
    grid.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny-cpu-lora-token.yaml")
    parser.add_argument("--out", default="runs/lora-token-demo")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = load_config(args.config, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lora_file, embedding_file, tokens = train(config, out)
    grid = compare(config, lora_file, embedding_file, tokens, out)
    print(f"LoRA: {lora_file}\nembedding: {embedding_file}\nvariants: {grid}")


if __name__ == "__main__":
    main()
