"""One trunk, a head per granularity (train.heads): an extra head learns a coarser taxonomy level
from the features halfway up, and the network predicts the heads' product."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.nn import functional as F

from granular.config import DistillConfig, TrainConfig
from granular.nn import predict, stages, train
from granular.nn.distill import student_config
from granular.nn.trained import load_checkpoint, save_checkpoint
from test_stages import RUNTIME, SMALL, TAXONOMY, _data, _staged

WITH_COARSE = TrainConfig(**SMALL, epochs=3, heads={"coarse": 0.5})


def test_the_extra_head_learns_the_coarse_level_and_the_network_predicts_the_heads_product(tmp_path):
    records = []
    trained = _staged(WITH_COARSE, records.append)
    model = trained.model.eval()
    assert set(model.level_heads) == {"coarse"} and model.config.level_heads == {"coarse": [0, 0, 1, 1]}
    # Each head is measured on its own labels every epoch (MLflow logs them per view).
    assert {"val_accuracy_head", "val_accuracy_head_coarse"} <= set(records[-1])
    assert records[-1]["val_accuracy_head_coarse"] > 0.9  # brightness tells the coarse class

    x_val = _data()[2]
    scaled = x_val.scaled(x_val.to_device(RUNTIME.device), trained.mean, trained.std)
    with torch.no_grad():
        own, by_level = model.logits_by_head(*scaled)
        expected = F.log_softmax(own, 1) + F.log_softmax(by_level["coarse"], 1)[:, [0, 0, 1, 1]]
        torch.testing.assert_close(F.log_softmax(model(*scaled), 1), F.log_softmax(expected, 1))

    save_checkpoint(tmp_path / "model.pt", trained)
    loaded = load_checkpoint(tmp_path / "model.pt", RUNTIME)
    np.testing.assert_allclose(predict.predict_proba(loaded, x_val, RUNTIME), predict.predict_proba(trained, x_val, RUNTIME),
                               rtol=1e-6)


def test_the_extra_heads_loss_trains_the_trunk():
    plain = _staged(WITH_COARSE.model_copy(update={"heads": {}}))
    shared = _staged(WITH_COARSE)
    assert not hasattr(plain.model, "level_heads")
    stem = "features.0.0.weight"  # same seed, same start: only the coarse head's gradient differs
    assert not torch.equal(plain.model.state_dict()[stem], shared.model.state_dict()[stem])


def test_a_head_must_be_of_a_strictly_coarser_known_level_and_weigh_something():
    for heads, message in [({"fine": 1.0}, "own head learns 'fine' already"),
                           ({"medium": 1.0}, r"train.heads 'medium' is not a taxonomy level")]:
        with pytest.raises(ValueError, match=message):
            stages.check_stages(TrainConfig(heads=heads), TAXONOMY, "fine")
    with pytest.raises(ValueError, match=r"train.heads: level 'fine' is not coarser than 'coarse'"):
        stages.check_stages(TrainConfig(heads={"fine": 1.0}), TAXONOMY, "coarse")
    with pytest.raises(ValidationError, match="greater than 0"):
        TrainConfig(heads={"coarse": 0})


def test_a_coarse_stage_has_no_head_of_its_own_level_and_the_fine_stage_starts_one(monkeypatch):
    heads_by_stage = []
    real_fit = train.fit

    def spy(*args, level_heads=None, **kwargs):
        heads_by_stage.append(level_heads)
        return real_fit(*args, level_heads=level_heads, **kwargs)

    monkeypatch.setattr(train, "fit", spy)
    config = TrainConfig(**SMALL, epochs=1, heads={"coarse": 0.5}, stages=[{"level": "coarse", "epochs": 1}])
    trained = _staged(config)
    assert heads_by_stage == [{}, {"coarse": [0, 0, 1, 1]}]
    assert set(trained.model.level_heads) == {"coarse"}


def test_the_student_learns_soft_targets_with_one_head():
    assert student_config(DistillConfig(), WITH_COARSE).heads == {}
    x, y, x_val, y_val = _data()
    soft = np.eye(4, dtype=np.float32)[y]
    with pytest.raises(ValueError, match="extra heads learn from class ids"):
        train.fit(x, soft, x_val, y_val, 4, WITH_COARSE, RUNTIME, level_heads={"coarse": [0, 0, 1, 1]})
