"""Where SDXL's text encoders pool: at the first end-of-text token, as kohya, ComfyUI and A1111 do.

The public SDXL text-encoder configs carry ``eos_token_id: 2`` (a value from before
transformers fixed CLIP's configs). transformers keeps its old behaviour for that value and
pools at the *highest token id* of each prompt (``input_ids.argmax()``). With the stock
vocabulary the highest id is the end-of-text token, so nothing changes; but a learned token
added to the tokenizer gets a higher id, and the pooled embedding (text encoder 2's, which
feeds SDXL's added conditioning) is then taken at the new token. kohya's trainers, ComfyUI and
A1111, where furlora's embedding files are used, pool at the first end-of-text token.

:func:`pool_at_first_eos` makes a loaded encoder do the same, for every caller at once:
furlora's training encode, and diffusers pipelines built on the same modules (evaluation,
sample grids). The config on disk is left as it is.
"""

from __future__ import annotations

from typing import Any


def pool_at_first_eos(text_encoder: Any, tokenizer: Any) -> None:
    """Make the CLIP ``text_encoder`` pool at the first occurrence of ``tokenizer``'s
    end-of-text token (the tokenizer pads after it, with "!" or with more end tokens).

    Idempotent. Only the loaded module changes (``save_pretrained`` keeps the hub config).
    """
    # CLIPTextModelWithProjection wraps the pooling module as ``text_model``; in transformers 5
    # CLIPTextModel is that module itself (in 4.x it wraps one too).
    text_model = getattr(text_encoder, "text_model", text_encoder)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None or not isinstance(getattr(text_model, "eos_token_id", None), int):
        raise TypeError(
            f"pool_at_first_eos needs a transformers CLIP text encoder and its tokenizer, got "
            f"{type(text_encoder).__name__} and {type(tokenizer).__name__}"
        )
    # transformers pools at the first position equal to this id whenever it is not 2.
    text_model.eos_token_id = int(eos)

