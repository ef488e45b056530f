"""Pretraining of furlora's tiny SDXL-architecture models (a developer tool).

``corpus`` draws the procedural captioned pictures, ``loop`` holds the VAE and UNet training
loops, ``export_models`` writes the committed fp16 folders with their hash manifest, and
``python -m furlora.pretrain`` runs everything in one command. The results ship in
``furlora/models/pretrained`` and load through :mod:`furlora.models.pretrained`.
"""
