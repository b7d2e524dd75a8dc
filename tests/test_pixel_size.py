"""The pixel size the networks are told (hpcsr.pixel_size, model.pixel_input): log2 of the HR pixel
side in km from a grid's sizes and units, and a clear refusal where the units are not lengths."""

import pytest

from hpcsr.pixel_size import in_metres, pixel_level


def test_levels_from_sizes_in_metres_or_km():
    assert pixel_level([500.0, 500.0], "m", "here") == pytest.approx(-1.0)
    assert pixel_level([1.0, 1.0], "km", "here") == pytest.approx(0.0)
    assert pixel_level([2000.0, 2000.0], "metres", "here") == pytest.approx(1.0)
    assert pixel_level([1000.0, 4000.0], "m", "here") == pytest.approx(1.0)  # the mean of the axes' levels
    assert in_metres(1.5, "Kilometers") == 1500.0 and in_metres(3.0, "degrees_east") is None


@pytest.mark.parametrize("sizes, units", [([0.01, 0.01], "degrees"), ([1.0, 1.0], None), ([0.0, 1000.0], "m")])
def test_grids_without_a_length_are_refused_naming_the_source(sizes, units):
    with pytest.raises(ValueError, match="shard x.h5: pixel size .* not a length"):
        pixel_level(sizes, units, "shard x.h5")
