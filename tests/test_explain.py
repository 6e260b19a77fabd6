"""Occlusion maps on the device's int8 model: shape, locality and the PNG written."""

from __future__ import annotations

import dataclasses
import shutil

import cv2
import numpy as np
import pytest
from report_support import model_path, synthetic_smear, write_png

from edge.imaging.decode import decode_file
from edge.imaging.preprocess import preprocess
from edge.inference.classifier import Classifier, card_path_for
from edge.inference.explain import (
    MIN_PANEL_SIDE,
    explain_image,
    explain_many,
    explain_rgb,
    heat_overlay,
    occlusion_map,
    save_png,
)


@pytest.fixture(scope="session")
def cell_classifier():
    return Classifier(model_path())


@pytest.fixture(scope="session")
def classifier(cell_classifier, tmp_path_factory):
    """The test model reading whole fields. A cell model gets a copy whose card asks for raw input at its
    crop size: same weights, and the map properties tested below hold whatever the weights are."""
    clf = cell_classifier
    if clf.preprocessing.input_mode != "cell":
        return clf
    copy = tmp_path_factory.mktemp("whole-field") / clf.path.name
    shutil.copy(clf.path, copy)
    card = dataclasses.replace(
        clf.card,
        input_mode="raw",
        preprocessing=dataclasses.replace(
            clf.preprocessing,
            input_mode="raw",
            size=clf.preprocessing.input_size,
            field_scale="fixed",
            crop="center-square",
            stain_fit="background",
        ),
    )
    card.extra = {k: v for k, v in card.extra.items() if k not in ("ood", "granulocyte_check", "novelty")}
    card.save(card_path_for(copy))
    return Classifier(copy)


def test_a_cell_model_explains_the_cell_that_decided(cell_classifier):
    if cell_classifier.preprocessing.input_mode != "cell":
        pytest.skip("the model under test reads whole fields")
    e = explain_rgb(synthetic_smear(centers=[(60, 60), (150, 160)], radius=16), cell_classifier, grid=7)
    n = cell_classifier.preprocessing.input_size
    assert e.map.shape == (7, 7) and e.overlay.shape == (n, n, 3)
    with pytest.raises(Exception, match="no white cell"):
        explain_rgb(np.full((224, 224, 3), 235, np.uint8), cell_classifier)


@pytest.fixture(scope="session")
def segmented_classifier(classifier, tmp_path_factory):
    """The test model with segmented preprocessing. A raw-input model gets a copy whose card asks for
    segmented input: same weights, and what is tested below holds whatever the weights are."""
    if classifier.preprocessing.input_mode == "segmented":
        return classifier
    copy = tmp_path_factory.mktemp("segmented") / classifier.path.name
    shutil.copy(classifier.path, copy)
    dataclasses.replace(
        classifier.card, input_mode="segmented", preprocessing=classifier.preprocessing.with_mode("segmented")
    ).save(card_path_for(copy))
    return Classifier(copy)


def _cell_image():
    # One stained cell well inside grid cell (1, 1) of a 7x7 grid on a 224 input (32 px patches).
    return synthetic_smear(centers=[(48, 48)], radius=14)


@pytest.mark.parametrize("grid", [7, 5])
def test_map_has_grid_shape_and_overlay_matches_image(classifier, grid):
    e = explain_rgb(_cell_image(), classifier, grid=grid)
    size = classifier.preprocessing.input_size
    assert e.map.shape == (grid, grid)
    assert e.overlay.shape == (size, size, 3) and e.overlay.dtype == np.uint8
    assert e.prediction.label in classifier.labels


@pytest.mark.parametrize("target", ["predicted", "malignant"])
def test_occluding_the_cell_matters_more_than_empty_background(classifier, target):
    e = explain_rgb(_cell_image(), classifier, grid=7, target=target)
    cell = abs(float(e.map[1, 1]))
    # Far corners hold only background (the bottom-right is the scale-bar box, also blank).
    background = max(abs(float(e.map[r, c])) for r, c in [(5, 1), (1, 5), (4, 4), (5, 5), (3, 6)])
    assert cell > background, e.map


def test_map_values_are_the_score_drop(classifier):
    # Recompute one patch by hand: the map entry must be base score minus the occluded score.
    rgb = _cell_image()
    pre = preprocess(rgb, classifier.preprocessing)
    smap, base, pred = occlusion_map(classifier, pre.model_input, grid=7, target="malignant")
    occluded = pre.model_input.copy()
    p = classifier.preprocessing.input_size // 7
    occluded[p : 2 * p, p : 2 * p] = classifier.preprocessing.background
    p = classifier.probabilities(occluded)
    expected = base - (1.0 - float(p[classifier.labels.index("Benign")]))
    assert smap[1, 1] == pytest.approx(expected, abs=1e-6)
    assert base == pytest.approx(pred.malignant_score, abs=1e-5)


def test_overlay_colours_only_supporting_regions():
    rgb = np.full((224, 224, 3), 128, np.uint8)
    m = np.zeros((7, 7), np.float32)
    m[0, 0] = 1.0
    out = heat_overlay(rgb, m)
    assert not np.array_equal(out[10, 10], rgb[10, 10])
    assert np.array_equal(out[200, 200], rgb[200, 200])
    # A map with no positive entry leaves the image as it was.
    assert np.array_equal(heat_overlay(rgb, -m), rgb)
    # A weak map (a couple of int8 steps) stays faint instead of being stretched to full colour.
    weak = np.abs(heat_overlay(rgb, m * 0.008).astype(int) - rgb).sum()
    strong = np.abs(out.astype(int) - rgb).sum()
    assert 0 < weak < strong / 3


def test_explain_image_writes_a_png(classifier, tmp_path):
    src = write_png(tmp_path / "smear.png", _cell_image())
    e = explain_image(src, classifier, grid=7)
    out = save_png(e, tmp_path / "out" / "map.png")
    img = cv2.imread(str(out))
    size = classifier.preprocessing.size
    # A small model input is enlarged by a whole factor to be readable on a screen (MIN_PANEL_SIDE).
    size *= -(-MIN_PANEL_SIDE // size) if size < MIN_PANEL_SIDE else 1
    assert img is not None and img.shape[0] == size and img.shape[1] > 2 * size
    assert float(img.std()) > 0


def test_explain_many_reports_unreadable_files_and_goes_on(classifier, tmp_path):
    good = write_png(tmp_path / "a.png", _cell_image())
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not an image")
    results = list(explain_many([bad, tmp_path / "gone.png", good], classifier))
    assert [r[1] is not None for r in results] == [False, False, True]
    assert results[0][2] and results[1][2]


def test_bad_arguments_are_refused(classifier):
    x = np.zeros((224, 224, 3), np.uint8)
    with pytest.raises(ValueError):
        occlusion_map(classifier, x, grid=0)
    with pytest.raises(ValueError):
        occlusion_map(classifier, x, target="nonsense")


def _real_or_synthetic(tmp_path):
    from shared_data import real_images

    real = real_images(per_class=1)
    if real:
        return real
    return [write_png(tmp_path / f"s{k}.png", synthetic_smear(np.random.default_rng(k), n_cells=2)) for k in range(2)]


def test_only_patches_with_cells_can_move_a_segmented_model(segmented_classifier, tmp_path):
    """In segmented mode the model sees background colour wherever there is no cell, so hiding a patch
    without cell pixels is the identity: its map value must be exactly zero, on real smears too."""
    pre_params = segmented_classifier.preprocessing
    assert pre_params.input_mode == "segmented"
    edges = np.linspace(0, pre_params.size, 8).round().astype(int)
    for path in _real_or_synthetic(tmp_path):
        e = explain_image(path, segmented_classifier, grid=7, method="occlude")
        mask = preprocess(decode_file(path, target=pre_params.size).rgb, pre_params).mask
        for i in range(7):
            for j in range(7):
                if not mask[edges[i] : edges[i + 1], edges[j] : edges[j + 1]].any():
                    assert e.map[i, j] == 0.0, (path.name, i, j)
        assert np.isfinite(e.map).all()


class _Saturating:
    """A stand-in for Classifier whose call saturates: P(Pro-B) is 1 as soon as 300 purple pixels are
    seen, like a confident int8 model looking at several blasts. Hiding one of two cells changes nothing."""

    labels = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")

    def __init__(self, real: Classifier):
        self.preprocessing = real.preprocessing
        self._real = real

    def probabilities(self, x):
        purple = int(((x[..., 2].astype(int) - x[..., 1]) > 60).sum())
        p = min(1.0, purple / (300.0 * (x.shape[0] / 224) ** 2))
        return np.array([1 - p, 0.0, 0.0, p], np.float32)

    def decide(self, probs):
        return self._real.decide(probs)


def test_saturated_call_falls_back_to_the_keep_map(classifier):
    fake = _Saturating(classifier)
    # Two cells, each alone enough for the call, in grid cells (1, 1) and (5, 3).
    rgb = synthetic_smear(centers=[(48, 48), (112, 176)], radius=14)
    occl = explain_rgb(rgb, fake, grid=7, method="occlude")
    assert occl.prediction.label == "Pro-B" and not np.abs(occl.map).any()
    auto = explain_rgb(rgb, fake, grid=7)
    assert auto.method == "keep" and "several regions" in auto.describe()
    assert auto.map[1, 1] > 0.9 and auto.map[5, 3] > 0.9
    assert auto.map[5, 0] == 0 and auto.map[0, 6] == 0  # glass alone supports nothing
    assert not np.array_equal(auto.overlay, auto.resized)


def test_auto_keeps_an_informative_occlusion_map(classifier):
    e = explain_rgb(_cell_image(), classifier, grid=7)
    assert e.method == "occlude" and "occlusion map" in e.describe()
    with pytest.raises(ValueError):
        explain_rgb(_cell_image(), classifier, method="saliency")
