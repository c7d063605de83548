"""Frequency domain enhancement (FDE): the FFT form (reference) and the exportable matrix form.

``F_k = x + real(IFFT_T(mask * FFT_T(x)))`` along the time axis. The masked inverse transform is
linear in ``x``, so the whole operation collapses into one constant real ``T x T`` matrix
``K = I + real(IDFT diag(mask) DFT)``; ``F_k = K @ x`` exports as a single MatMul, which ONNX
Runtime and every TensorRT version run (TensorRT's parser has no ``DFT``, and the TorchScript
exporter cannot export ``torch.fft``). ``K`` is computed in float64 and cast to float32.
"""

from __future__ import annotations

import numpy as np
import torch


def frequency_mask(window: int, cutoff: int) -> np.ndarray:
    """1 for frequency bins with |k| >= cutoff (k as in numpy.fft.fftfreq * T), else 0.  # (T,)"""
    k = np.abs(np.fft.fftfreq(window) * window)
    return (k >= cutoff).astype(np.float64)


def fde_matrix(window: int, cutoff: int) -> np.ndarray:
    """The float64 ``T x T`` matrix ``K`` with ``F_k = K @ x`` along time."""
    mask = frequency_mask(window, cutoff)
    eye = np.eye(window)
    high_pass = np.fft.ifft(mask[:, None] * np.fft.fft(eye, axis=0), axis=0)
    return eye + high_pass.real


def fde_numpy(x: np.ndarray, cutoff: int, axis: int = 1) -> np.ndarray:
    """The definition, with numpy.fft (the independent oracle for tests)."""
    window = x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = window
    mask = frequency_mask(window, cutoff).reshape(shape)
    return x + np.fft.ifft(mask * np.fft.fft(x, axis=axis), axis=axis).real


class FrequencyEnhancement(torch.nn.Module):
    """Non-parametric FDE over the time axis of ``(B, T, C)`` inputs."""

    def __init__(self, window: int, cutoff: int, mode: str = "fft") -> None:
        super().__init__()
        self.window, self.cutoff, self.mode = window, cutoff, mode
        self.register_buffer("mask", torch.from_numpy(frequency_mask(window, cutoff)).float(), persistent=False)
        self.register_buffer("matrix", torch.from_numpy(fde_matrix(window, cutoff)).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        if self.mode == "matrix":
            return torch.matmul(self.matrix, x)  # (T, T) @ (B, T, C)
        spectrum = torch.fft.fft(x, dim=1)  # complex (B, T, C)
        return x + torch.fft.ifft(spectrum * self.mask[None, :, None], dim=1).real
