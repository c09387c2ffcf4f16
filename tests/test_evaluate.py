"""Evaluation metrics on a small case computed by hand."""
import numpy as np
import pytest

from granular.evaluate import classification_metrics, confusion_matrix, macro_f1

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2])
# rows = true class, columns = predicted class
EXPECTED_MATRIX = [
    [2, 1, 0],  # true 0: predicted 0, 0, 1
    [0, 1, 1],  # true 1: predicted 1, 2
    [1, 0, 3],  # true 2: predicted 2, 2, 0, 2
]
# F1 = 2 TP / (predicted + actual): class 0: 4/6, class 1: 2/4, class 2: 6/8
EXPECTED_MACRO_F1 = (4 / 6 + 2 / 4 + 6 / 8) / 3  # = 23/36


def test_confusion_matrix_counts_true_by_predicted():
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, 3), EXPECTED_MATRIX)


def test_macro_f1_on_hand_computed_case():
    assert macro_f1(np.array(EXPECTED_MATRIX)) == pytest.approx(23 / 36)


def test_macro_f1_counts_an_absent_never_predicted_class_as_zero():
    matrix = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert matrix[3].sum() == 0 and matrix[:, 3].sum() == 0
    assert macro_f1(matrix) == pytest.approx(EXPECTED_MACRO_F1 * 3 / 4)


def test_macro_f1_of_a_perfect_prediction_is_one():
    assert macro_f1(confusion_matrix(Y_TRUE, Y_TRUE, 3)) == 1.0


def test_classification_metrics_from_probabilities():
    proba = np.full((len(Y_PRED), 3), 0.1)
    proba[np.arange(len(Y_PRED)), Y_PRED] = 0.8
    scores = classification_metrics(Y_TRUE, proba)
    assert scores["accuracy"] == pytest.approx(6 / 9)
    assert scores["macro_f1"] == pytest.approx(EXPECTED_MACRO_F1)
    assert scores["n"] == 9
    np.testing.assert_array_equal(scores["confusion"], EXPECTED_MATRIX)


def test_classification_metrics_on_empty_input_raises():
    with pytest.raises(ValueError, match="cannot evaluate on an empty test split"):
        classification_metrics(np.array([], dtype=np.int64), np.zeros((0, 3)))
