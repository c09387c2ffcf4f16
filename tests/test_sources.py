"""Raw sources: importing byte for byte, and reading the idx, npz and folder layouts."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from granular.core.partition import TEST, TRAIN
from granular.modalities.images.idx import write_idx
from granular.modalities.images.sources import SourceError, import_raw, load_raw

IDX_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte",  # plain and gzipped files may be mixed
    "t10k-labels-idx1-ubyte",
]


def _write_idx_source(folder: Path, n_train=3, n_test=2) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_idx(folder / IDX_NAMES[0], rng.integers(0, 256, (n_train, 4, 4), dtype=np.uint8))
    write_idx(folder / IDX_NAMES[1], np.arange(n_train, dtype=np.uint8) % 2)
    write_idx(folder / IDX_NAMES[2], rng.integers(0, 256, (n_test, 4, 4), dtype=np.uint8))
    write_idx(folder / IDX_NAMES[3], np.ones(n_test, dtype=np.uint8))
    return folder


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _write_png(path: Path, value: int, size=(3, 2)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8), mode="L").save(path)


def _write_folder_source(root: Path, classes=("Bag", "Coat")) -> Path:
    for origin in ("train", "test"):
        for label, name in enumerate(classes):
            for copy in range(2):
                _write_png(root / origin / name / f"{copy}.png", value=10 * label + copy)
    return root


def test_import_raw_copies_the_four_idx_files_byte_for_byte(tmp_path):
    source = _write_idx_source(tmp_path / "src")
    copied = import_raw("idx", source, tmp_path / "raw")
    assert [p.name for p in copied] == sorted(IDX_NAMES)
    for name in IDX_NAMES:
        assert (tmp_path / "raw" / name).read_bytes() == (source / name).read_bytes()


def test_import_raw_replaces_the_raw_folder_as_a_whole(tmp_path):
    source = _write_idx_source(tmp_path / "src")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "stale.txt").write_text("from an earlier import")
    import_raw("idx", source, tmp_path / "raw")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(IDX_NAMES)


def test_missing_default_source_suggests_the_debian_package(tmp_path):
    default_like = Path("/usr/share/datasets/fashion-mnist/no-such-subfolder-for-tests")
    with pytest.raises(SourceError, match=r"raw data not found at .*sudo apt-get install dataset-fashion-mnist"):
        import_raw("idx", default_like, tmp_path / "raw")


def test_missing_own_source_has_no_apt_hint(tmp_path):
    with pytest.raises(SourceError, match=r"^raw data not found at .*nowhere\.$"):
        import_raw("idx", tmp_path / "nowhere", tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_idx_source_missing_one_file_is_named(tmp_path):
    source = _write_idx_source(tmp_path / "src")
    (source / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(SourceError, match=r"no t10k-labels-idx1-ubyte\[\.gz\] file"):
        import_raw("idx", source, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_load_raw_idx_stacks_train_then_test_with_ids(tmp_path):
    import_raw("idx", _write_idx_source(tmp_path / "src", n_train=3, n_test=2), tmp_path / "raw")
    data = load_raw("idx", tmp_path / "raw", ["a", "b"])
    assert len(data) == 5
    assert data.images.shape == (5, 4, 4)
    np.testing.assert_array_equal(data.origin, [TRAIN, TRAIN, TRAIN, TEST, TEST])
    np.testing.assert_array_equal(data.index, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(data.labels, [0, 1, 0, 1, 1])
    assert data.labels.dtype == np.int64


def test_npz_source_is_imported_and_loaded(tmp_path):
    x = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    source = _write_npz(tmp_path / "data.npz", x_train=x, y_train=[1, 0], x_test=x[:1], y_test=[2])
    import_raw("npz", source, tmp_path / "raw")
    data = load_raw("npz", tmp_path / "raw", ["a", "b", "c"])
    np.testing.assert_array_equal(data.images, np.concatenate([x, x[:1]]))
    np.testing.assert_array_equal(data.labels, [1, 0, 2])
    np.testing.assert_array_equal(data.origin, [TRAIN, TRAIN, TEST])


def test_npz_missing_arrays_are_named(tmp_path):
    x = np.zeros((2, 3, 3), dtype=np.uint8)
    source = _write_npz(tmp_path / "data.npz", x_train=x, y_train=[1, 0], x_test=x)
    import_raw("npz", source, tmp_path / "raw")
    with pytest.raises(SourceError, match=r"missing arrays \['y_test'\]"):
        load_raw("npz", tmp_path / "raw", ["a", "b"])


def test_npz_images_must_be_three_dimensional_with_one_label_each(tmp_path):
    x = np.zeros((2, 3, 3), dtype=np.uint8)
    source = _write_npz(tmp_path / "data.npz", x_train=x, y_train=[1, 0, 1], x_test=x, y_test=[0, 0])
    import_raw("npz", source, tmp_path / "raw")
    with pytest.raises(SourceError, match=r"x_train must be \(N, H, W\) .* found shapes \(2, 3, 3\) and \(3,\)"):
        load_raw("npz", tmp_path / "raw", ["a", "b"])


def test_npz_source_that_is_not_a_file_is_refused(tmp_path):
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(SourceError, match="no such .npz file"):
        import_raw("npz", tmp_path / "folder.npz", tmp_path / "raw")


def test_folder_layout_reads_class_folders_as_labels(tmp_path):
    import_raw("folder", _write_folder_source(tmp_path / "src"), tmp_path / "raw")
    data = load_raw("folder", tmp_path / "raw", ["Coat", "Bag"])  # label = position in the taxonomy
    assert data.images.shape == (8, 3, 2)
    np.testing.assert_array_equal(data.origin, [TRAIN] * 4 + [TEST] * 4)
    # sorted folders: Bag (label 1) before Coat (label 0)
    np.testing.assert_array_equal(data.labels, [1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(data.images[:4, 0, 0], [0, 1, 10, 11])


def test_folder_with_unknown_class_name_is_refused(tmp_path):
    source = _write_folder_source(tmp_path / "src", classes=("Bag", "Hat"))
    with pytest.raises(SourceError, match=r"Hat: folder name is not a class of the taxonomy \(Bag, Coat\)"):
        load_raw("folder", source, ["Bag", "Coat"])


def test_folder_without_test_split_is_refused(tmp_path):
    _write_png(tmp_path / "src" / "train" / "Bag" / "0.png", 0)
    with pytest.raises(SourceError, match="no test/ folder of class folders"):
        import_raw("folder", tmp_path / "src", tmp_path / "raw")


def test_folder_images_of_different_sizes_are_refused(tmp_path):
    source = _write_folder_source(tmp_path / "src")
    _write_png(source / "test" / "Bag" / "big.png", 0, size=(5, 5))
    with pytest.raises(SourceError, match=r"src/test: 1 image\(s\) differ from the size of the others \(3x2\): "
                                          r"Bag/big\.png \(5x5\)"):
        load_raw("folder", source, ["Bag", "Coat"])


def test_official_splits_of_different_sizes_are_refused_naming_both(tmp_path):
    """Every test image 5x5, every training image 3x2: no file is odd within its split."""
    source = _write_folder_source(tmp_path / "src")
    for file in (source / "test").rglob("*.png"):
        _write_png(file, 0, size=(5, 5))
    with pytest.raises(SourceError, match=r"src: the official splits' images differ in size: train 3x2, test 5x5"):
        load_raw("folder", source, ["Bag", "Coat"])
