"""LoRA + a learned fur token (pivotal tuning), then base / LoRA / token / LoRA+token side by side.

A short recipe on top of the library:

1. ``Trainer`` trains the LoRA (UNet + both text encoders) and the token ``<spitz-fur>`` in both
   text encoders (its vectors for the first ``tokens.train_fraction`` of the steps); checkpoints
   hold the vectors, so a killed run resumes exactly (run the script again);
2. the run exports the LoRA files and ``embeddings/spitz-fur.safetensors`` (``clip_l`` + ``clip_g``);
3. ``run_comparison`` repaints the held-out images four ways (the embedding file loaded with
   diffusers' ``load_textual_inversion``, the token put into the prompts by the config's caption
   rule) and writes the report (``report/index.html``, ``metrics.csv``, ``metrics.json``, grids);
4. the first image's four results are also written as one strip (input + four variants).

Run (tiny model, CPU, about a minute)::

    python examples/lora_plus_token.py --config configs/tiny-cpu-lora-token.yaml --out runs/lora-token-demo

The same with the CLI: ``furlora train configs/tiny-cpu-lora-token.yaml``, then
``furlora compare ... --lora LORA --embeddings EMBEDDING`` (see the config's header), or
``furlora demo --set tokens.enabled=true`` (the demo's report then shows the four variants too).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from furlora.config import load_config  # noqa: E402
from furlora.eval.compare import run_comparison  # noqa: E402
from furlora.eval.samples import resolve_samples  # noqa: E402
from furlora.train.trainer import Trainer  # noqa: E402

VARIANTS = ("off", "{lora}@1", "token", "{lora}@1+token")


def train(config, out: Path) -> tuple[Path, Path, object]:
    """Train LoRA + tokens into ``out``; return the LoRA file, the embedding file and the tokens
    (:class:`furlora.tokens.TokenEmbeddings`). Running it again resumes from the newest checkpoint."""
    config = config.model_copy(update={"output_dir": str(out)})
    trainer = Trainer(config, resume="auto")
    summary = trainer.fit()
    lora_file = Path(summary["lora_files"].get("diffusers") or next(iter(summary["lora_files"].values())))
    (embedding_file,) = summary["embedding_files"].values()
    return lora_file, Path(embedding_file), trainer.tokens


def heldout_folder(config) -> Path:
    """The held-out images: ``train.validation.path``, else ``heldout`` beside the training folder."""
    return Path(config.train.validation.path or Path(config.data.path).parent / "heldout")


def compare(config, lora_file: Path, embedding_file: Path, tokens, out: Path) -> Path:
    """The four-variant report in ``out/report``; returns a PNG strip of the first held-out image:
    input | base | LoRA | token | LoRA + token (same seed, the token in the prompt of the last two)."""
    from PIL import Image

    settings = config.eval.model_copy(update={"max_images": config.eval.max_images or 2,
                                              "lora_scales": [1.0], "include_off": True})
    heldout = heldout_folder(config)
    result = run_comparison(config.model.source, [lora_file], heldout, out / "report", settings,
                            data_settings=config.data, dtype=config.model.dtype, embeddings=[embedding_file],
                            token_settings=tokens.settings if tokens is not None else config.tokens)
    first = resolve_samples(str(heldout), settings, config.data)[0]
    seed = settings.seeds[0]
    adapter = next(v for v in result.variants if v not in ("off", "token") and not v.endswith("+token")).split("@")[0]
    columns = [np.asarray(first.image)[..., :3]]
    for name in VARIANTS:
        columns.append(np.asarray(Image.open(result.outputs[(first.key, seed, name.format(lora=adapter))]))[..., :3])
    strip = np.concatenate([c.astype(np.uint8) for c in columns], axis=1)
    path = out / "variants_input_base_lora_token_lora+token.png"
    Image.fromarray(strip).save(path)
    print(f"report: {result.html}")
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
    strip = compare(config, lora_file, embedding_file, tokens, out)
    print(f"LoRA: {lora_file}\nembedding: {embedding_file}\nvariants: {strip}")


if __name__ == "__main__":
    main()
