"""Learned placeholder tokens in both SDXL text encoders (textual inversion / pivotal tuning).

- :func:`prepare_tokens` adds the ``tokens:`` concepts to both tokenizers and encoders and
  returns a :class:`TokenEmbeddings` (the trainable rows, optimizer groups, caption insertion,
  checkpoint state and file export), or None when tokens are disabled.
- :func:`check_before_loading` runs every check that needs only the tokenizers and configs.
- :func:`save_embedding_file` / :func:`read_embedding_file` / :func:`load_into_pipeline`:
  the SDXL embedding file (``clip_l`` + ``clip_g``) that diffusers, A1111 and ComfyUI read.
"""

from furlora.tokens.captions import CaptionCollate, expand_prompt, insert_tokens
from furlora.tokens.embeddings import GrownEmbedding, TokenEmbeddings, prepare_tokens
from furlora.tokens.files import EmbeddingFile, load_into_pipeline, read_embedding_file, save_embedding_file
from furlora.tokens.settings import CaptionSettings, TokenConcept, TokenSettings
from furlora.tokens.vocab import check_before_loading, check_tokens

__all__ = [
    "CaptionCollate",
    "CaptionSettings",
    "EmbeddingFile",
    "GrownEmbedding",
    "TokenConcept",
    "TokenEmbeddings",
    "TokenSettings",
    "check_before_loading",
    "check_tokens",
    "expand_prompt",
    "insert_tokens",
    "load_into_pipeline",
    "prepare_tokens",
    "read_embedding_file",
    "save_embedding_file",
]
