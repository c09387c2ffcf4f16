"""TableArrays: the checks that keep malformed tables away from the networks."""
import numpy as np
import pytest

from granular.nn.inputs import TableArrays


def _table(n: int = 4) -> TableArrays:
    return TableArrays(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.int64), (3,))


def test_rows_are_selected_from_both_parts_together():
    table = TableArrays(np.arange(8, dtype=np.float32).reshape(4, 2), np.arange(4).reshape(4, 1), (4,))
    picked = table[np.array([False, True, False, True])]
    assert len(picked) == 2 and picked.cardinalities == (4,)
    np.testing.assert_array_equal(picked.numeric[:, 0], [2, 6])
    np.testing.assert_array_equal(picked.codes[:, 0], [1, 3])


def test_a_missing_value_is_named_by_column_and_row():
    numeric = np.zeros((4, 2), np.float32)
    numeric[2, 1] = np.inf
    with pytest.raises(ValueError, match="numeric column 1 holds inf at row 2"):
        TableArrays(numeric, np.zeros((4, 1), np.int64), (3,))


@pytest.mark.parametrize(
    "numeric, codes, cardinalities, message",
    [
        (np.zeros((4, 2)), np.zeros((3, 1), np.int64), (3,), "4 rows of numeric features but 3"),
        (np.zeros((4, 2)), np.zeros((4, 2), np.int64), (3,), "2 categorical columns but 1 cardinalities"),
        (np.zeros((4, 0)), np.zeros((4, 0), np.int64), (), "at least one feature column"),
        (np.zeros((4, 2)), np.zeros((4, 1)), (3,), "codes must be integers"),
        (np.zeros(4), np.zeros((4, 1), np.int64), (3,), "must be 2-d"),
    ],
)
def test_malformed_tables_are_refused(numeric, codes, cardinalities, message):
    with pytest.raises(ValueError, match=message):
        TableArrays(numeric, codes, cardinalities)


def test_a_well_formed_table_has_its_length():
    assert len(_table(5)) == 5
