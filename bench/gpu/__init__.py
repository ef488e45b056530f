"""The prepared GPU check (``bench/gpu_check.py``): real-size SDXL presets, memory against the
planner, the comparison and a diffusers LoRA round trip, measured in one budgeted run."""
