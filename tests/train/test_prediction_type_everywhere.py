"""A forced train.prediction_type reaches the inference scheduler too (sample grids denoise with it)."""

from __future__ import annotations

from train_helpers import tiny_config


def test_forced_prediction_type_reaches_the_sample_grid_scheduler(tmp_path):
    from furlora.train.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path, "train.prediction_type=v_prediction", "train.validation.path=null"))
    assert trainer.components.noise_scheduler.config.prediction_type == "v_prediction"
    # write_sample_grid builds its pipeline from components.pipeline_components(): this scheduler.
    assert trainer.components.pipeline_components()["scheduler"].config.prediction_type == "v_prediction"
