"""FeatureEncoder: learned on the training rows only, saved and loaded with the model."""
import numpy as np
import pandas as pd
import pytest

from granular.config import TableConfig
from granular.modalities.tables.features import FeatureEncoder
from granular.modalities.tables.schema import infer_schema
from granular.nn.inputs import UNKNOWN

CONFIG = TableConfig(target="label")
TRAIN = pd.DataFrame({
    "label": ["a", "b", "a", "b"],
    "price": np.array([1.0, np.nan, 3.0, 10.0], dtype=np.float32),
    "empty": np.array([np.nan] * 4, dtype=np.float32),
    "region": ["south", "north", None, "south"],
    "size": ["s", "m", "l", "m"],
})
NEW = pd.DataFrame({
    "label": ["a", "a"],
    "price": np.array([np.nan, 5.0], dtype=np.float32),
    "empty": np.array([np.nan, 2.0], dtype=np.float32),
    "region": ["east", None],
    "size": ["m", "s"],
})


@pytest.fixture
def encoder():
    return FeatureEncoder().fit(TRAIN, infer_schema(TRAIN, CONFIG))


def test_missing_numbers_become_the_training_median_and_an_empty_column_zero(encoder):
    arrays = encoder.transform(NEW)
    assert arrays.numeric.dtype == np.float32
    np.testing.assert_array_equal(arrays.numeric, [[3.0, 0.0], [5.0, 2.0]])  # median of 1, 3, 10
    assert encoder.warnings_ == ["column empty: no value in the training rows; missing values become 0"]


def test_categories_are_coded_by_the_sorted_training_vocabulary_and_unseen_or_missing_are_unknown(encoder):
    arrays = encoder.transform(NEW)
    assert arrays.cardinalities == (2, 3)  # region: north, south; size: l, m, s
    assert arrays.codes.dtype == np.int64
    np.testing.assert_array_equal(arrays.codes, [[UNKNOWN, 1], [UNKNOWN, 2]])
    np.testing.assert_array_equal(encoder.transform(TRAIN).codes[:, 0], [1, 0, UNKNOWN, 1])


def test_a_feature_group_selects_its_columns_in_fitted_order(encoder):
    arrays = encoder.transform(NEW, columns=["size", "price"])
    np.testing.assert_array_equal(arrays.numeric, [[3.0], [5.0]])
    np.testing.assert_array_equal(arrays.codes, [[1], [2]])
    assert arrays.cardinalities == (3,)
    with pytest.raises(ValueError, match=r"\['colour'\] were not fitted"):
        encoder.transform(NEW, columns=["colour"])
    with pytest.raises(ValueError, match=r"\['size'\] are not in the table"):
        encoder.transform(NEW.drop(columns="size"))


def test_a_second_fit_forgets_the_first(encoder):
    refit = encoder.fit(NEW, infer_schema(NEW, CONFIG))
    assert refit.medians_["empty"] == 2.0 and refit.warnings_ == []
    assert refit.vocabularies_["region"] == ["east"]


def test_save_and_load_give_the_same_arrays(encoder, tmp_path):
    encoder.save(tmp_path / "encoder.json")
    loaded = FeatureEncoder.load(tmp_path / "encoder.json")
    assert loaded.to_dict() == encoder.to_dict()
    before, after = encoder.transform(NEW), loaded.transform(NEW)
    np.testing.assert_array_equal(before.numeric, after.numeric)
    np.testing.assert_array_equal(before.codes, after.codes)
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


def test_a_document_that_is_no_encoder_is_refused():
    with pytest.raises(ValueError, match="not a saved FeatureEncoder"):
        FeatureEncoder.from_dict({"numeric": [{"name": "price"}], "categorical": []})
