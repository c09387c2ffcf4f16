"""Images on disk, read a batch of rows at a time, and networks trained from them."""
from __future__ import annotations

import numpy as np
import pytest

from granular.config import ImageView
from granular.modalities.images.views import seen, view_inputs
from granular.store.atomic import write_npz
from granular.store.image_file import ImageFile, ImageWriter, blocks_of


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)


def test_rows_are_read_in_the_order_asked_from_an_npy_and_from_an_npz_member(images, tmp_path):
    with ImageWriter(tmp_path / "images.npy", images.shape) as writer:
        for _, block in blocks_of(images, rows=70):
            writer.write(block)
        stored = writer.close()
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), images)  # a plain .npy
    write_npz(tmp_path / "clean.npz", labels=np.arange(300), images=stored)  # copied a block at a time
    member = ImageFile.npz_member(tmp_path / "clean.npz", "images")
    np.testing.assert_array_equal(np.load(tmp_path / "clean.npz")["images"], images)
    rows = np.random.default_rng(1).permutation(300)[:50]
    for file in (stored, member):
        np.testing.assert_array_equal(file[rows], images[rows])
        np.testing.assert_array_equal(file[10:250:7], images[10:250:7])
        np.testing.assert_array_equal(file[images[:, 0, 0, 0] > 128], images[images[:, 0, 0, 0] > 128])
        assert file[np.array([], dtype=np.int64)].shape == (0, 8, 8, 3)


def test_a_writer_refuses_a_file_of_fewer_rows_than_it_promised(images, tmp_path):
    with ImageWriter(tmp_path / "images.npy", images.shape) as writer:
        writer.write(images[:10])
        with pytest.raises(ValueError, match="10 images written of 300"):
            writer.close()
        with pytest.raises(ValueError, match=r"a block of images \(4, 4, 3\), the file holds \(8, 8, 3\)"):
            ImageWriter(tmp_path / "other.npy", images.shape).write(images[:2, :4, :4])


def test_a_split_over_the_memory_limit_stays_on_disk_and_reads_as_in_memory(images, tmp_path):
    write_npz(tmp_path / "clean.npz", images=images)
    stored = ImageFile.npz_member(tmp_path / "clean.npz", "images")
    rows = np.arange(0, 300, 2)
    view = ImageView(level="fine", resolution=4, color="grey")
    in_memory = view_inputs(stored, rows, view, in_memory_gib=1.0)
    on_disk = view_inputs(stored, rows, view, in_memory_gib=0.0)
    assert type(in_memory).__name__ == "Pixels" and type(on_disk).__name__ == "PixelsOnDisk"
    np.testing.assert_array_equal(in_memory.images, seen(images[rows], "grey", 4))
    np.testing.assert_array_equal(on_disk[5:9].read().images, in_memory.images[5:9])


def test_a_network_trains_from_disk_as_it_does_from_memory(tmp_path):
    torch = pytest.importorskip("torch")
    from granular.config import TrainConfig
    from granular.nn.device import select_runtime
    from granular.nn.train import fit

    rng = np.random.default_rng(0)
    labels = np.arange(400) % 2
    images = rng.integers(0, 60, (400, 8, 8)).astype(np.uint8)
    images[labels == 1, 2:6, 2:6] += 120  # class 1: a bright square
    write_npz(tmp_path / "clean.npz", images=images)
    stored = ImageFile.npz_member(tmp_path / "clean.npz", "images")
    view = ImageView(level="fine", resolution=8)
    train, val = np.arange(300), np.arange(300, 400)
    config = TrainConfig(epochs=2, width=4, batch_size=32, threads=1, precision="fp32")
    runtime = select_runtime(1, 0, "fp32")
    trained = {
        limit: fit(view_inputs(stored, train, view, limit), labels[train], view_inputs(stored, val, view, limit),
                   labels[val], 2, config, runtime, warn=lambda message: None)
        for limit in (1.0, 0.0)
    }
    assert trained[1.0].mean == pytest.approx(trained[0.0].mean, rel=1e-12)
    assert trained[1.0].std == pytest.approx(trained[0.0].std, rel=1e-9)
    np.testing.assert_allclose(trained[0.0].val_proba, trained[1.0].val_proba, atol=1e-4)
    assert (trained[0.0].val_proba.argmax(1) == labels[val]).mean() > 0.9
    with torch.no_grad():
        for name, weights in trained[1.0].model.state_dict().items():
            torch.testing.assert_close(trained[0.0].model.state_dict()[name], weights, rtol=1e-3, atol=1e-4)
