"""furlora: train SDXL inpainting LoRAs for fur and fine texture."""

__version__ = "0.1.0"
