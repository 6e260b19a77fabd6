"""A carved field's stain is fitted on its carved white cells (card ``preprocessing.carved_stain_fit``).

Where a laboratory's red cells stain as magenta as the nuclei (BCCD), the white cell is carved out of the
red cells it touched, but the loose red cells stay in the stained mask. Fitted on all of that mask, the
stain statistics were the red cells' and the white cell came out a saturated blue no training cell has.
"""

import dataclasses

import numpy as np
import pytest

from edge.imaging import synthetic
from edge.imaging.decode import decode_file
from edge.imaging.pixels import rgb_to_lab
from edge.imaging.preprocess import PreprocessParams, preprocess, preprocess_file
from edge.inference.classifier import Classifier
from tests.field_support import merged_field, pale_field, touching_red_cells_field
from tests.shared_data import BCCD, HAVE_DATASET, NO_BCCD, real_images

# As the shipped card searches: the stain fitted on the stained cells' colour, both second searches on.
SEARCH = PreprocessParams(input_mode="cell", stain_fit="cells-chroma", carve_merged=True, pale_search=True)
OWN = dataclasses.replace(SEARCH, carved_stain_fit=True)

# BCCD fields whose one white cell is carved out of red cells (lymphocytes and a neutrophil), all four
# called malignant by card 3.9.0 with the whole mask's fit.
BCCD_CARVED = ("BloodImage_00021", "BloodImage_00076", "BloodImage_00077", "BloodImage_00120")


def test_a_carved_field_s_stain_is_fitted_on_the_carved_cell_not_on_the_red_cells_left_in_the_mask():
    field = merged_field()
    whole, own = preprocess(field, SEARCH), preprocess(field, OWN)
    assert [c.to_dict() for c in own.cells] == [c.to_dict() for c in whole.cells] and own.cells[0].carved
    assert np.array_equal(own.mask, whole.mask), "the same cell and the same pixels cropped"
    # The white cell is drawn from B -46 (nucleus) to -18 (its rim), the red cells at B +6: the fit's mean
    # B is the white cell's only when it is fitted on the carved cell.
    nucleus, rim = (float(rgb_to_lab(np.array([c], np.uint8))[0, 2]) for c in ((110, 60, 160), (200, 150, 200)))
    assert own.cell_lab is not None and whole.cell_lab is not None
    assert nucleus <= own.cell_lab[2] <= rim < whole.cell_lab[2]
    assert not np.array_equal(own.model_inputs[0], whole.model_inputs[0])


@pytest.mark.parametrize("field", ["smears", "pale", "touching"])
def test_a_field_with_no_carved_cell_is_normalised_exactly_as_before(field):
    # No Taleqani validation field is carved: the card's figures rest on fields this leaves alone.
    if field == "smears":
        fields = [decode_file(p).rgb for p in real_images(4)] if HAVE_DATASET else []
        fields = fields or [synthetic.smear(seed, n_wbc=2) for seed in range(6)]
    else:
        fields = [pale_field() if field == "pale" else touching_red_cells_field()]
    for rgb in fields:
        a, b = preprocess(rgb, SEARCH), preprocess(rgb, OWN)
        assert a.cells and not any(c.carved for c in a.cells)
        assert a.cell_lab == b.cell_lab and len(a.model_inputs) == len(b.model_inputs)
        assert all(np.array_equal(x, y) for x, y in zip(a.model_inputs, b.model_inputs))


@pytest.mark.skipif(not BCCD.is_dir(), reason=NO_BCCD)
def test_bccd_s_carved_white_cells_keep_their_own_colour_next_to_the_training_cells():
    clf = Classifier(num_threads=1)
    assert clf.preprocessing.carved_stain_fit, "the shipped card fits a carved field on its carved cells"
    params = clf.preprocessing
    ref = np.asarray(params.stain_reference[:3])
    for stem in BCCD_CARVED:
        path = BCCD / f"{stem}.jpg"
        own = preprocess_file(path, params)
        whole = preprocess_file(path, dataclasses.replace(params, carved_stain_fit=False))
        assert own.cells and all(c.carved for c in own.cells), stem
        assert own.cell_lab is not None and whole.cell_lab is not None
        # The colour the fit measured (A, B means): the carved cells' own is within 10 LAB units of the
        # training cells'; the whole mask's (mostly red cells) is 20 or more from it in B.
        assert np.abs(np.asarray(own.cell_lab[1:3]) - ref[1:]).max() < 10, (stem, own.cell_lab)
        assert abs(whole.cell_lab[2] - ref[2]) > 20, (stem, whole.cell_lab)
