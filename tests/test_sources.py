"""Raw sources: importing byte for byte, and reading the idx, npz and folder layouts."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from granular.core.partition import TEST, TRAIN
from granular.modalities.images.clean import clean
from granular.modalities.images.fit import ImageFit
from granular.modalities.images.idx import write_idx
from granular.modalities.images.sources import SourceError, import_raw, load_raw

FIT = ImageFit((3, 2), min_side=1)  # what the folder tests bring pictures to: 3 rows of 2 pixels

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
    data = load_raw("idx", tmp_path / "raw", ["a", "b"], FIT)
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
    data = load_raw("npz", tmp_path / "raw", ["a", "b", "c"], FIT)
    np.testing.assert_array_equal(data.images, np.concatenate([x, x[:1]]))
    np.testing.assert_array_equal(data.labels, [1, 0, 2])
    np.testing.assert_array_equal(data.origin, [TRAIN, TRAIN, TEST])


def test_npz_missing_arrays_are_named(tmp_path):
    x = np.zeros((2, 3, 3), dtype=np.uint8)
    source = _write_npz(tmp_path / "data.npz", x_train=x, y_train=[1, 0], x_test=x)
    import_raw("npz", source, tmp_path / "raw")
    with pytest.raises(SourceError, match=r"missing arrays \['y_test'\]"):
        load_raw("npz", tmp_path / "raw", ["a", "b"], FIT)


def test_npz_images_must_be_three_dimensional_with_one_label_each(tmp_path):
    x = np.zeros((2, 3, 3), dtype=np.uint8)
    source = _write_npz(tmp_path / "data.npz", x_train=x, y_train=[1, 0, 1], x_test=x, y_test=[0, 0])
    import_raw("npz", source, tmp_path / "raw")
    with pytest.raises(SourceError, match=r"x_train must be \(N, H, W\) .* found shapes \(2, 3, 3\) and \(3,\)"):
        load_raw("npz", tmp_path / "raw", ["a", "b"], FIT)


def test_npz_source_that_is_not_a_file_is_refused(tmp_path):
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(SourceError, match="no such .npz file"):
        import_raw("npz", tmp_path / "folder.npz", tmp_path / "raw")


def test_folder_layout_reads_class_folders_as_labels(tmp_path):
    import_raw("folder", _write_folder_source(tmp_path / "src"), tmp_path / "raw")
    data = load_raw("folder", tmp_path / "raw", ["Coat", "Bag"], FIT)  # label = position in the taxonomy
    assert data.images.shape == (8, 3, 2)
    np.testing.assert_array_equal(data.origin, [TRAIN] * 4 + [TEST] * 4)
    # sorted folders: Bag (label 1) before Coat (label 0)
    np.testing.assert_array_equal(data.labels, [1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(data.images[:4, 0, 0], [0, 1, 10, 11])


def test_a_class_whose_name_no_folder_can_hold_is_read_from_its_path_safe_folder(tmp_path):
    _write_png(tmp_path / "src" / "train" / "T-shirt_top" / "0.png", 1)
    _write_png(tmp_path / "src" / "test" / "Bag" / "0.png", 2)
    data = load_raw("folder", tmp_path / "src", ["T-shirt/top", "Bag"], FIT)
    assert data.labels.tolist() == [0, 1]


def test_folder_with_unknown_class_name_is_refused(tmp_path):
    source = _write_folder_source(tmp_path / "src", classes=("Bag", "Hat"))
    with pytest.raises(SourceError, match=r"Hat: folder name is not a class of the taxonomy \(Bag, Coat\)"):
        load_raw("folder", source, ["Bag", "Coat"], FIT)


def test_folder_without_test_split_is_refused(tmp_path):
    _write_png(tmp_path / "src" / "train" / "Bag" / "0.png", 0)
    with pytest.raises(SourceError, match="no test/ folder of class folders"):
        import_raw("folder", tmp_path / "src", tmp_path / "raw")


def test_pictures_of_any_size_are_brought_to_the_one_size_by_the_policy(tmp_path):
    source = tmp_path / "src"
    wide = np.zeros((4, 8), dtype=np.uint8)
    wide[:, 2:6] = 200  # a bright middle between dark margins
    for origin in ("train", "test"):
        _write_png(source / origin / "Bag" / "0.png", 7)
        (source / origin / "Bag").mkdir(parents=True, exist_ok=True)
        Image.fromarray(wide, mode="L").save(source / origin / "Bag" / "wide.png")
    cropped = load_raw("folder", source, ["Bag"], ImageFit((4, 4), "crop", min_side=1))
    padded = load_raw("folder", source, ["Bag"], ImageFit((4, 4), "pad", min_side=1))
    stretched = load_raw("folder", source, ["Bag"], ImageFit((4, 4), "stretch", min_side=1))
    assert cropped.images.shape == padded.images.shape == stretched.images.shape == (4, 4, 4)
    assert stretched.images[1][:, [0, 3]].max() < 100 < stretched.images[1][:, 1:3].min()  # margins kept, narrowed
    assert cropped.images[1].min() > 100  # the middle 4x4 of the wide picture: bright
    np.testing.assert_array_equal(padded.images[1][[0, 3]], 0)  # 2x4 after scaling, black rows above and below
    assert padded.images[1][1:3].max() > 100
    assert cropped.problems.tolist() == [""] * 4
    assert cropped.files.tolist() == ["train/Bag/0.png", "train/Bag/wide.png", "test/Bag/0.png", "test/Bag/wide.png"]


def test_a_broken_or_tiny_picture_is_set_aside_with_its_file_and_reason(tmp_path):
    source = _write_folder_source(tmp_path / "src")
    (source / "train" / "Bag" / "broken.png").write_bytes(b"not a picture at all")
    noise = np.random.default_rng(0).integers(0, 256, (30, 20), dtype=np.uint8)
    Image.fromarray(noise, mode="L").save(tmp_path / "whole.png")
    (source / "test" / "Coat" / "truncated.png").write_bytes((tmp_path / "whole.png").read_bytes()[:300])
    _write_png(source / "test" / "Bag" / "tiny.png", 9, size=(1, 2))
    data = load_raw("folder", source, ["Bag", "Coat"], ImageFit((3, 2), min_side=2))
    result = clean(data, num_classes=2)
    assert result.report()["examined"] == 11 and result.report()["kept"] == 8
    set_aside = dict(zip(result.rejected.files.tolist(), result.reasons.tolist()))
    assert set_aside == {
        "train/Bag/broken.png": "cannot be read as an image (UnidentifiedImageError)",
        "test/Bag/tiny.png": "smaller than clean.min_side (2 pixels)",
        "test/Coat/truncated.png": "cannot be read as an image (OSError)",
    }


def test_official_splits_of_different_sizes_are_refused_naming_both(tmp_path):
    source = _write_npz(tmp_path / "src.npz", x_train=np.zeros((2, 3, 2)), y_train=[0, 1], x_test=np.zeros((2, 5, 5)),
                        y_test=[0, 1])
    import_raw("npz", source, tmp_path / "raw")
    with pytest.raises(SourceError, match=r"raw: the official splits' images differ in size: train 3x2, test 5x5"):
        load_raw("npz", tmp_path / "raw", ["a", "b"], FIT)

def test_the_messy_photos_script_writes_fashion_mnist_as_a_folder_the_pipeline_reads(tmp_path):
    import importlib.util

    from granular.core.taxonomy import load_taxonomy

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("messy_photos", repo / "scripts" / "messy_photos.py")
    photos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(photos)
    taxonomy_file = repo / "data" / "taxonomy.yaml"
    assert photos.export(photos.FASHION_MNIST, taxonomy_file, tmp_path / "photos", limit=300, seed=0) == {"train": 300, "test": 300}
    files = sorted(p for p in (tmp_path / "photos").rglob("*") if p.is_file())
    assert len(files) == 600 and {p.suffix for p in files} == {".jpg", ".png"}
    assert (tmp_path / "photos" / "train" / "T-shirt_top").is_dir()
    broken, sizes, modes = [], set(), set()
    for file in files:
        try:
            with Image.open(file) as picture:
                picture.load()
                sizes.update(picture.size)
                modes.add(picture.mode)
        except (OSError, SyntaxError):
            broken.append(file.relative_to(tmp_path / "photos").as_posix())
    assert 1 <= len(broken) <= 15 and modes == {"RGB"}
    assert photos.SIDES[0] <= min(sizes) and max(sizes) <= photos.SIDES[1] and len(sizes) > 20
    data = load_raw("folder", tmp_path / "photos", list(load_taxonomy(taxonomy_file).fine_names), ImageFit((28, 28)))
    assert sorted(data.files[data.problems != ""].tolist()) == sorted(broken)  # exactly the broken ones
