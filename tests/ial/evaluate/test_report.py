"""Report figures: the masks' colour scale is not clipped at 1."""

import numpy as np

from ial.evaluate.report import Example, mask_colour_max, plot_example


def test_mask_colour_max_is_one_for_a_mask_in_unit_range():
    assert mask_colour_max(np.random.default_rng(0).uniform(0, 1, (2, 8, 8))) == 1.0


def test_mask_colour_max_reaches_an_unbounded_mask():
    assert mask_colour_max(np.full((2, 8, 8), 1.7)) == 1.7


def test_plot_example_writes_a_figure_with_masks_above_one(tmp_path):
    rng = np.random.default_rng(1)
    refs = rng.normal(size=(2, 11025)).astype(np.float32)
    ex = Example(0, ("a", "b"), ("c0", "c1"), refs.sum(0), refs, {"model": refs * 0.9},
                 {"model": np.full((2, 256, 64), 1.6), "oracle_irm": np.full((2, 256, 64), 0.4)})
    path = tmp_path / "example.png"
    plot_example(str(path), ex)
    assert path.stat().st_size > 1000
