"""int8 tables (sdcore.quantize): symmetric, one float32 scale per row."""

from __future__ import annotations

import numpy as np
import pytest

from sdcore.quantize import QMAX, dequantize_rows, quantize_rows


def test_round_trip_error_is_at_most_half_a_step() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, size=(500, 64)).astype(np.float32) * rng.uniform(0.01, 10, size=(500, 1))
    codes, scales = quantize_rows(w)
    assert codes.dtype == np.int8 and codes.shape == w.shape
    assert scales.dtype == np.float32 and scales.shape == (500,)
    back = dequantize_rows(codes, scales)
    assert np.all(np.abs(back - w) <= scales[:, None] / 2 * (1 + 1e-5))
    np.testing.assert_allclose(scales, np.abs(w).max(axis=1) / QMAX, rtol=1e-6)


def test_codes_are_symmetric_and_each_rows_largest_value_is_kept() -> None:
    w = np.array([[1.0, -1.0, 0.5, -0.25], [-3.0, 0.0, 1.5, 3.0]], dtype=np.float32)
    codes, scales = quantize_rows(w)
    assert codes.min() >= -QMAX and codes.max() <= QMAX  # -128 is never used
    assert codes[0].tolist() == [127, -127, 64, -32]  # rint rounds half to even: 63.5 -> 64, -31.75 -> -32
    np.testing.assert_array_equal(quantize_rows(-w)[0], -codes)
    back = dequantize_rows(codes, scales)
    np.testing.assert_allclose(np.abs(back).max(axis=1), [1.0, 3.0], rtol=1e-6)


def test_zero_rows_and_empty_blocks() -> None:
    codes, scales = quantize_rows(np.zeros((3, 5), dtype=np.float32))
    assert not codes.any() and not scales.any()
    assert not dequantize_rows(codes, scales).any()
    codes, scales = quantize_rows(np.zeros((0, 5), dtype=np.float32))
    assert codes.shape == (0, 5) and scales.shape == (0,)


def test_bad_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="rows, dim"):
        quantize_rows(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="inf or NaN"):
        quantize_rows(np.array([[1.0, np.nan]], dtype=np.float32))
