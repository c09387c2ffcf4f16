"""Data granularity: clusters learned on training images, size checks, and routing to experts."""
import numpy as np
import pytest
import torch

from granular.config import ClusterSegments
from granular.core.partition import TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT, PartitionError
from granular.modalities.experts import predict_routed
from granular.modalities.images.segments import ClusterSegmenter, check_segment_sizes, fit_segmenter
from granular.nn.device import select_runtime
from granular.nn.inputs import Pixels
from granular.nn.models import CNNConfig, ResidualCNN
from granular.nn.trained import TrainedModel


def _blobs(sizes=(60, 40, 20), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose mean brightness sits in one of len(sizes) clearly separate bands."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(sizes)), sizes)
    levels = np.array([20, 120, 220])[group]
    images = np.clip(levels[:, None, None] + rng.normal(0, 8, (len(group), 8, 8)), 0, 255).astype(np.uint8)
    return images, group


def test_clusters_recover_separate_groups_numbered_largest_first():
    images, group = _blobs(sizes=(20, 60, 40))
    segmenter = fit_segmenter(images, ClusterSegments(count=3, feature_resolution=4), seed=0)
    segment = segmenter.assign(images)
    # group 1 is the largest, so it is segment 0; group 2 next, segment 1; group 0 last
    np.testing.assert_array_equal(segment, np.array([2, 0, 1])[group])


def test_same_seed_gives_the_same_segmenter_and_it_survives_a_round_trip(tmp_path):
    images, _ = _blobs()
    spec = ClusterSegments(count=3, feature_resolution=2)
    first, second = fit_segmenter(images, spec, seed=5), fit_segmenter(images, spec, seed=5)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    first.save(tmp_path / "segmenter.npz")
    loaded = ClusterSegmenter.load(tmp_path / "segmenter.npz")
    assert loaded.feature_resolution == 2
    np.testing.assert_array_equal(loaded.assign(images), first.assign(images))


def test_unseen_images_are_routed_to_the_nearest_cluster():
    images, _ = _blobs()
    segmenter = fit_segmenter(images, ClusterSegments(count=3, feature_resolution=4), seed=0)
    dark, bright = np.full((1, 8, 8), 10, np.uint8), np.full((1, 8, 8), 240, np.uint8)
    assert segmenter.assign(dark)[0] == segmenter.assign(images[:1])[0]  # the first blob is dark
    assert segmenter.assign(bright)[0] == segmenter.assign(images[-1:])[0]  # the last is bright


def test_a_segment_below_the_minimum_size_is_refused_with_its_size():
    segment = np.array([0] * 30 + [1] * 8 + [0, 1])
    split = np.array([TRAIN_SPLIT] * 38 + [VAL_SPLIT] * 2)
    with pytest.raises(PartitionError, match=r"view v: segment\(s\) \{1: 8\} have fewer than 10 train examples"):
        check_segment_sizes(segment, split, count=2, min_size=10, where="view v")
    check_segment_sizes(segment, split, count=2, min_size=8, where="view v")


def test_a_segment_without_validation_examples_is_refused():
    segment = np.array([0] * 10 + [1] * 10 + [0])
    split = np.array([TRAIN_SPLIT] * 20 + [VAL_SPLIT])
    with pytest.raises(PartitionError, match=r"\{1: 0\} have fewer than 1 val examples"):
        check_segment_sizes(segment, split, count=2, min_size=5, where="view v")



def test_a_segment_may_be_missing_from_the_test_split():
    segment = np.array([0] * 10 + [1] * 10 + [0, 1] + [0] * 5)
    split = np.array([TRAIN_SPLIT] * 20 + [VAL_SPLIT] * 2 + [TEST_SPLIT] * 5)
    check_segment_sizes(segment, split, count=2, min_size=10, where="view v")  # nothing is chosen on test


def _constant_expert(predicts: int, num_classes: int = 3) -> TrainedModel:
    """A network whose output ignores its input and always favours one class."""
    model = ResidualCNN(CNNConfig(in_channels=1, num_classes=num_classes, width=4, stem_pool=1))
    linear = model.head[-1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.nn.functional.one_hot(torch.tensor(predicts), num_classes) * 10.0)
    return TrainedModel(model=model, mean=0.0, std=1.0)


def test_each_example_is_predicted_by_the_expert_of_its_segment():
    experts = [_constant_expert(2), _constant_expert(0), _constant_expert(1)]
    segment = np.array([1, 0, 2, 2, 1])
    images = Pixels(np.zeros((5, 8, 8), dtype=np.uint8))
    proba = predict_routed(experts, segment, images, select_runtime(threads=1, precision="fp32"))
    assert proba.argmax(axis=1).tolist() == [0, 2, 1, 1, 0]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
