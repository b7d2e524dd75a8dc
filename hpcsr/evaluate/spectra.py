"""Radially averaged power spectrum of 2-D fields, the log-spectral distance between spectra and
their ratio over the super-resolved band.

Wavenumbers are physical frequencies in cycles per pixel, so non-square fields are handled: the
frequency of FFT bin (ky, kx) is |f| = sqrt((ky/Y)^2 + (kx/X)^2). Rings have width
dk = 1/min(Y, X) and are centred on multiples of dk, from dk up to the Nyquist frequency 0.5
(the corners beyond 0.5 and the mean, k = 0, are left out). A field with n full cycles across
a square domain of side N has all its power in ring n.

Power is |FFT|^2 / (Y X)^2, averaged over the FFT bins in each ring, so a cosine of amplitude A
contributes A^2 / 2 (its variance) summed over its bins.
"""

from __future__ import annotations

import numpy as np

WINDOWS = ("hann", None)


def radial_bins(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ring index of every FFT bin (ny, nx), ring centres k in cycles/pixel, bins per ring)."""
    dk = 1.0 / min(ny, nx)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(ny), np.fft.fftfreq(nx), indexing="ij"))
    ring = np.rint(radius / dk).astype(np.int64)
    n_rings = min(ny, nx) // 2
    ring[ring > n_rings] = 0  # beyond Nyquist: dropped together with the mean
    counts = np.bincount(ring.ravel(), minlength=n_rings + 1)[1:]
    return ring, dk * np.arange(1, n_rings + 1), counts


def radial_power_spectrum(field: np.ndarray, window: str | None = "hann") -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of `field` (..., Y, X), finite values only.

    Returns (k, power) with k (n_rings,) in cycles per pixel and power (..., n_rings).
    `window='hann'` removes each field's mean and tapers it with a 2-D Hann window (rescaled to keep
    the mean power), which stops the jump between opposite edges of a non-periodic radar field (and
    the tapered mean) from leaking power into every wavenumber; `window=None` uses the field as it
    is (exact for periodic fields).
    """
    if window not in WINDOWS:
        raise ValueError(f"spectrum window {window!r} unknown: use one of {WINDOWS}")
    field = np.asarray(field, dtype=np.float64)
    ny, nx = field.shape[-2:]
    if min(ny, nx) < 4:
        raise ValueError(f"field {ny} x {nx} is too small for a spectrum: need at least 4 x 4 pixels")
    if not np.all(np.isfinite(field)):
        raise ValueError("field has NaN or inf: fill or mask missing values before taking a spectrum")
    if window == "hann":
        taper = np.outer(np.hanning(ny), np.hanning(nx))
        field = field - field.mean(axis=(-2, -1), keepdims=True)
        field = field * (taper / np.sqrt(np.mean(taper**2)))
    power = np.abs(np.fft.fft2(field)) ** 2 / float(ny * nx) ** 2
    ring, k, counts = radial_bins(ny, nx)
    lead = power.shape[:-2]
    flat = power.reshape(-1, ny * nx)
    sums = np.stack([np.bincount(ring.ravel(), weights=row, minlength=k.size + 1)[1:] for row in flat])
    return k, (sums / counts).reshape(*lead, k.size)


def log_spectral_distance(reference: np.ndarray, other: np.ndarray) -> float:
    """sqrt(mean_k (10 log10(P_other(k) / P_reference(k)))^2) in dB, over rings where both are > 0."""
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise ValueError(f"spectra have different lengths {reference.shape} and {other.shape}")
    usable = (reference > 0) & (other > 0) & np.isfinite(reference) & np.isfinite(other)
    if not usable.any():
        return float("nan")
    ratio_db = 10.0 * np.log10(other[usable] / reference[usable])
    return float(np.sqrt(np.mean(ratio_db**2)))


def spectral_ratio(k: np.ndarray, reference: np.ndarray, other: np.ndarray, s: int) -> dict | None:
    """P_other(k) / P_reference(k) at every ring whose wavelength 1/k lies between 2 HR pixels and
    the LR cell (s pixels), inclusive: the scales the super-resolution must create. Returns
    {'wavelengths_px', 'ratio' (NaN where P_reference is 0), 'min', 'max'}, or None when no ring lies
    in the band (s = 1, or a grid too small to resolve s pixels)."""
    k, reference, other = (np.asarray(v, dtype=np.float64) for v in (k, reference, other))
    wavelength = 1.0 / k
    band = (wavelength >= 2.0 - 1e-9) & (wavelength <= s + 1e-9)
    if not band.any():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(reference[band] > 0, other[band] / reference[band], np.nan)
    usable = np.isfinite(ratio)
    return {
        "wavelengths_px": wavelength[band].tolist(),
        "ratio": ratio.tolist(),
        "min": float(ratio[usable].min()) if usable.any() else float("nan"),
        "max": float(ratio[usable].max()) if usable.any() else float("nan"),
    }
