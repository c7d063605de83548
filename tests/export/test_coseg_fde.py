"""FDE: the FFT form (reference) and the matrix form (export) equal each other and numpy.fft."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmr_trt.export.models.coseg.fde import FrequencyEnhancement, fde_matrix, fde_numpy, frequency_mask


@pytest.mark.parametrize("window", [8, 16, 32])
def test_both_forms_equal_numpy_fft(window: int) -> None:
    x = np.random.default_rng(window).standard_normal((3, window, 40))  # unit variance
    oracle = fde_numpy(x, cutoff=2)
    xt = torch.from_numpy(x.astype(np.float32))
    for mode in ("fft", "matrix"):
        got = FrequencyEnhancement(window, 2, mode)(xt).numpy()
        assert np.abs(got - oracle).max() < 1e-5, mode


@pytest.mark.parametrize("window", [8, 16, 32])
def test_matrix_equals_fft_float32(window: int) -> None:
    x = torch.randn(4, window, 64, generator=torch.Generator().manual_seed(1))
    fft = FrequencyEnhancement(window, 2, "fft")(x)
    mat = FrequencyEnhancement(window, 2, "matrix")(x)
    assert (fft - mat).abs().max().item() < 1e-5


def test_mask_removes_dc_and_first_harmonic() -> None:
    mask = frequency_mask(16, 2)
    assert mask[0] == 0 and mask[1] == 0 and mask[15] == 0  # DC, +1, -1
    assert mask[2] == 1 and mask[14] == 1 and mask[8] == 1
    # a constant and a slow sinusoid pass through unchanged (x + 0); a fast one is doubled
    t = np.arange(16)
    slow = np.cos(2 * np.pi * t / 16)[None, :, None]
    fast = np.cos(2 * np.pi * 4 * t / 16)[None, :, None]
    assert np.allclose(fde_numpy(slow + 3.0, 2), slow + 3.0)
    assert np.allclose(fde_numpy(fast, 2), 2 * fast)


def test_matrix_is_real_and_float64() -> None:
    k = fde_matrix(16, 2)
    assert k.dtype == np.float64 and k.shape == (16, 16)
    assert np.allclose(k @ np.ones(16), np.ones(16))  # DC removed from the high-pass part
