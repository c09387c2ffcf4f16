"""IDX reader and writer: round trips and every malformed-file message."""
import gzip

import numpy as np
import pytest

from granular.modalities.images.idx import IdxError, read_idx, read_images_and_labels, write_idx


def _images(n=3, height=4, width=5):
    return np.arange(n * height * width, dtype=np.uint8).reshape(n, height, width)


def _raw_idx(path, header: bytes, payload: bytes = b""):
    path.write_bytes(header + payload)
    return path


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_uint8_images_round_trip(tmp_path, name):
    images = _images()
    write_idx(tmp_path / name, images)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8
    assert back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, images)


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "labels-idx1-ubyte.gz"])
def test_uint8_labels_round_trip(tmp_path, name):
    labels = np.array([9, 0, 3, 255, 1], dtype=np.uint8)
    write_idx(tmp_path / name, labels)
    back = read_idx(tmp_path / name)
    assert back.shape == (5,)
    np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_wider_types_round_trip_in_native_byte_order(tmp_path, dtype):
    array = np.array([[-2, 0], [1, 300 if dtype != np.int8 else 100]], dtype=dtype)
    write_idx(tmp_path / "a.idx", array)
    back = read_idx(tmp_path / "a.idx")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


def test_gz_name_writes_gzip_and_plain_name_does_not(tmp_path):
    write_idx(tmp_path / "a.gz", _images())
    write_idx(tmp_path / "a", _images())
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "a").read_bytes()[:4] == b"\x00\x00\x08\x03"
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == (tmp_path / "a").read_bytes()


def test_writer_refuses_a_dtype_without_type_code(tmp_path):
    with pytest.raises(IdxError, match="dtype int64 has no IDX type code"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.int64))


def test_bad_magic_number_is_refused(tmp_path):
    path = _raw_idx(tmp_path / "bad", b"\x01\x00\x08\x01" + (2).to_bytes(4, "big"), b"\x00\x01")
    with pytest.raises(IdxError, match=r"bad magic number 0x01000801 \(not an IDX file\)"):
        read_idx(path)


def test_unknown_type_code_is_refused_as_bad_magic(tmp_path):
    path = _raw_idx(tmp_path / "bad", b"\x00\x00\x07\x01" + (2).to_bytes(4, "big"), b"\x00\x01")
    with pytest.raises(IdxError, match="bad magic number 0x00000701"):
        read_idx(path)


def test_file_shorter_than_a_header_is_refused(tmp_path):
    path = _raw_idx(tmp_path / "short", b"\x00\x00")
    with pytest.raises(IdxError, match="2 bytes is too short for an IDX header"):
        read_idx(path)


def test_zero_dimensions_are_refused(tmp_path):
    path = _raw_idx(tmp_path / "zero", b"\x00\x00\x08\x00")
    with pytest.raises(IdxError, match="declares zero dimensions"):
        read_idx(path)


def test_truncated_header_is_refused(tmp_path):
    # three dimensions declared, only two sizes present
    path = _raw_idx(tmp_path / "hdr", b"\x00\x00\x08\x03" + (1).to_bytes(4, "big") * 2)
    with pytest.raises(IdxError, match=r"truncated header \(12 of 16 bytes\)"):
        read_idx(path)


def test_truncated_data_is_refused_with_sizes(tmp_path):
    path = tmp_path / "images"
    write_idx(path, _images())
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IdxError, match=r"truncated: shape \(3, 4, 5\) of uint8 needs 60 data bytes, found 59"):
        read_idx(path)


def test_trailing_bytes_are_refused(tmp_path):
    path = tmp_path / "images"
    write_idx(path, _images())
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(IdxError, match="has trailing bytes: .* needs 60 data bytes, found 62"):
        read_idx(path)


def test_truncated_gzip_file_is_refused(tmp_path):
    path = tmp_path / "images.gz"
    write_idx(path, _images())
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(IdxError, match="images.gz: cannot be read as gzip"):
        read_idx(path)


def test_gz_name_on_a_plain_file_is_refused(tmp_path):
    path = tmp_path / "images.gz"
    write_idx(tmp_path / "plain", _images())
    path.write_bytes((tmp_path / "plain").read_bytes())
    with pytest.raises(IdxError, match="cannot be read as gzip"):
        read_idx(path)


def test_missing_file_is_reported_as_idx_error(tmp_path):
    with pytest.raises(IdxError, match="nowhere: cannot be read as a file"):
        read_idx(tmp_path / "nowhere")


def test_images_and_labels_are_read_as_a_pair(tmp_path):
    write_idx(tmp_path / "x.gz", _images(n=3))
    write_idx(tmp_path / "y", np.array([2, 0, 1], dtype=np.uint8))
    images, labels = read_images_and_labels(tmp_path / "x.gz", tmp_path / "y")
    assert images.shape == (3, 4, 5)
    np.testing.assert_array_equal(labels, [2, 0, 1])


def test_image_and_label_count_mismatch_is_refused(tmp_path):
    write_idx(tmp_path / "x", _images(n=3))
    write_idx(tmp_path / "y", np.array([2, 0], dtype=np.uint8))
    with pytest.raises(IdxError, match=r"x holds 3 images but .*y holds 2 labels"):
        read_images_and_labels(tmp_path / "x", tmp_path / "y")


def test_images_must_be_three_dimensional(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 4), dtype=np.uint8))
    write_idx(tmp_path / "y", np.zeros(3, dtype=np.uint8))
    with pytest.raises(IdxError, match=r"declares 2 dimension\(s\), the shape of neither images nor labels, "
                                       r"where images \(N, H, W\) belong"):
        read_images_and_labels(tmp_path / "x", tmp_path / "y")


def test_labels_must_be_one_dimensional(tmp_path):
    write_idx(tmp_path / "x", _images(n=3))
    write_idx(tmp_path / "y", np.zeros((3, 1), dtype=np.uint8))
    with pytest.raises(IdxError, match=r"declares 2 dimension\(s\), the shape of neither images nor labels, "
                                       r"where labels \(N,\) belong"):
        read_images_and_labels(tmp_path / "x", tmp_path / "y")


def test_a_label_header_where_images_belong_is_named_as_such_not_as_trailing_bytes(tmp_path):
    """A file with the label magic (one dimension) but a body of images: the header is what is wrong."""
    images = _images(n=3)
    _raw_idx(tmp_path / "x", b"\x00\x00\x08\x01" + (3).to_bytes(4, "big"), images.tobytes())
    write_idx(tmp_path / "y", np.zeros(3, dtype=np.uint8))
    with pytest.raises(IdxError, match=r"x: its header \(magic 0x00000801\) declares 1 dimension\(s\), the shape of "
                                       r"labels \(N,\), where images \(N, H, W\) belong: is it the other file"):
        read_images_and_labels(tmp_path / "x", tmp_path / "y")
