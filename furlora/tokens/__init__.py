"""Learned placeholder tokens in both SDXL text encoders (textual inversion / pivotal tuning).

- :func:`prepare_tokens` adds the ``tokens:`` concepts to both tokenizers and encoders and
  returns a :class:`TokenEmbeddings` (the trainable rows, optimizer groups, caption insertion,
  checkpoint state and file export), or None when tokens are disabled.
- :func:`check_before_loading` runs every check that needs only the tokenizers and configs.
- :func:`save_embedding_file` / :func:`read_embedding_file` / :func:`load_into_pipeline`:
  the SDXL embedding file (``clip_l`` + ``clip_g``) that diffusers, A1111 and ComfyUI read.
"""

from furlora.lazy import lazy_exports

# Imported lazily: furlora.config imports furlora.tokens.settings and must not wait for torch.
_EXPORTS = {
    "CaptionCollate": "furlora.tokens.captions",
    "expand_prompt": "furlora.tokens.captions",
    "insert_tokens": "furlora.tokens.captions",
    "GrownEmbedding": "furlora.tokens.embeddings",
    "TokenEmbeddings": "furlora.tokens.embeddings",
    "prepare_tokens": "furlora.tokens.embeddings",
    "EmbeddingFile": "furlora.tokens.files",
    "load_into_pipeline": "furlora.tokens.files",
    "read_embedding_file": "furlora.tokens.files",
    "save_embedding_file": "furlora.tokens.files",
    "TokenCaptionSettings": "furlora.tokens.settings",
    "TokenConcept": "furlora.tokens.settings",
    "TokenSettings": "furlora.tokens.settings",
    "check_before_loading": "furlora.tokens.vocab",
    "check_tokens": "furlora.tokens.vocab",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("furlora.tokens", _EXPORTS)
