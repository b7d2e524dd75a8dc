"""The synthetic Comephore generator: real archives in the distributed format, deterministic, and
statistically like radar rainfall (mostly dry, heavy tail, power-law spectrum, advected and evolving)."""

import tarfile

import numpy as np
import pytest

from preprocessing import comephore
from preprocessing.geotiff import read_geotiff
from preprocessing.synth import RainField, SynthConfig, synthesize


@pytest.fixture(scope="module")
def three_days(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(days=3, size=128, seed=5, start="2021-06-30", missing_hours=4)
    paths = synthesize(out, cfg, progress=False)
    frames, stamps = [], {}
    for path in paths:
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                raw, grid, info = read_geotiff(tar.extractfile(m).read())
                frames.append(raw)
                stamps.setdefault(path.name, []).append(m.name)
    return cfg, paths, np.stack(frames), stamps, grid


def test_archives_are_in_the_distributed_format(three_days):
    cfg, paths, raw, stamps, grid = three_days
    assert [p.name for p in paths] == ["H_COMEPHORE_202106.tar", "H_COMEPHORE_202107.tar"]
    names = stamps["H_COMEPHORE_202106.tar"] + stamps["H_COMEPHORE_202107.tar"]
    assert len(names) == 72 - 4  # hours ending 2021-06-30 01:00 .. 2021-07-03 00:00, four left out
    assert names == sorted(names) and set(names) <= {comephore.member_name(1625011200 + 3600 * h) for h in range(1, 73)}
    # each archive holds the stamps of its month (the hour ending 00 UTC on 1 July is July's)
    assert all(n.startswith("202106") for n in stamps["H_COMEPHORE_202106.tar"])
    assert all(n.startswith("202107") for n in stamps["H_COMEPHORE_202107.tar"])
    assert raw.dtype == np.uint16 and raw.shape[1:] == (128, 128)
    offset = (1536 - 128) // 2
    assert grid.x0 == pytest.approx(comephore.FULL_UPPER_LEFT[0] + offset * 1000)
    assert grid.crs_proj4.startswith("+proj=stere +lat_0=90 +lat_ts=45")


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, three_days):
    cfg = SynthConfig(days=1, size=48, seed=1)
    a = synthesize(tmp_path / "a", cfg, progress=False)[0].read_bytes()
    b = synthesize(tmp_path / "b", cfg, progress=False)[0].read_bytes()
    c = synthesize(tmp_path / "c", SynthConfig(days=1, size=48, seed=2), progress=False)[0].read_bytes()
    assert a == b and a != c


def test_rainfall_statistics_are_radar_like(three_days):
    cfg, _, raw, _, _ = three_days
    covered = raw != comephore.MISSING
    assert covered[0].mean() == pytest.approx(cfg.coverage, abs=0.02)
    assert np.array_equal(covered[0], covered[-1])  # a fixed coverage region
    mm = raw[covered] / 10.0
    dry = np.mean(mm == 0)
    assert 0.8 <= dry <= 0.95
    wet = mm[mm > 0]
    # heavy right tail: the 99.9th percentile of wet values is many times the median
    assert np.quantile(wet, 0.999) > 10 * np.median(wet)
    assert 5.0 < mm.max() < 300.0
    per_hour = [(f[c] > 0).mean() for f, c in zip(raw, covered)]
    assert max(per_hour) > 2 * min(per_hour) + 0.01  # the weather regime varies


def _log_field(raw):
    return np.log1p(np.where(raw == comephore.MISSING, 0, raw) / 10.0)


def test_power_law_spectrum(three_days):
    _, _, raw, _, _ = three_days
    spectra = []
    for frame in raw[::6]:
        f = _log_field(frame)
        spectra.append(np.abs(np.fft.rfft2(f - f.mean())) ** 2)
    power = np.mean(spectra, axis=0)
    ky = np.fft.fftfreq(128)[:, None]
    kx = np.fft.rfftfreq(128)[None, :]
    k = np.hypot(ky, kx)
    edges = np.logspace(np.log10(2 / 128), np.log10(0.4), 12)
    centres = np.sqrt(edges[1:] * edges[:-1])
    radial = np.array([power[(k >= a) & (k < b)].mean() for a, b in zip(edges[:-1], edges[1:])])
    slope, intercept = np.polyfit(np.log(centres), np.log(radial), 1)
    residual = np.log(radial) - (slope * np.log(centres) + intercept)
    assert -4.5 < slope < -1.5  # radar rain fields: roughly k^-2 .. k^-3.5
    assert np.abs(residual).max() < 1.0  # straight on log-log axes


def test_cells_move_and_evolve(three_days):
    _, _, raw, stamps, _ = three_days
    names = stamps["H_COMEPHORE_202106.tar"] + stamps["H_COMEPHORE_202107.tar"]
    hour = {n: i for i, n in enumerate(names)}
    fields = [_log_field(f) for f in raw]

    def best_shift_corr(a, b):  # a later than b: the correlation of a(x + d) with b(x) where both are seen
        fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
        xc = np.real(np.fft.ifft2(fa * np.conj(fb)))
        shift = np.unravel_index(np.argmax(xc), xc.shape)  # the displacement, found periodically
        (dy, dx), n = ((d if d <= size // 2 else d - size) for d, size in zip(shift, a.shape)), a.shape
        seen_a = a[max(dy, 0) : n[0] + min(dy, 0), max(dx, 0) : n[1] + min(dx, 0)]
        seen_b = b[max(-dy, 0) : n[0] + min(-dy, 0), max(-dx, 0) : n[1] + min(-dx, 0)]
        with np.errstate(invalid="ignore", divide="ignore"):  # an all-dry window: NaN
            return np.corrcoef(seen_a.ravel(), seen_b.ravel())[0, 1], shift  # the window is not periodic

    def pairs(lag):  # indices of frames `lag` hours apart (skipping the hours left out)
        out = []
        for n, i in hour.items():
            later = comephore.member_name(
                int(np.datetime64(f"{n[:4]}-{n[4:6]}-{n[6:8]}T{n[8:10]}", "s").astype(int)) + 3600 * lag
            )
            if later in hour:
                out.append((i, hour[later]))
        return out[:40]

    lag1 = [best_shift_corr(fields[j], fields[i]) for i, j in pairs(1)]
    lag12 = [best_shift_corr(fields[j], fields[i])[0] for i, j in pairs(12)]
    assert np.isfinite([c for c, _ in lag1]).sum() >= 20  # undefined (NaN) only where a window is all dry
    c1 = np.nanmean([c for c, _ in lag1])
    assert c1 > 0.45  # consecutive hours: the same cells ...
    assert np.mean([s != (0, 0) for _, s in lag1]) > 0.5  # ... displaced (advection)
    assert np.nanmean(lag12) < c1 - 0.1  # ... and evolving


def test_rain_persists_from_hour_to_hour_like_radar():
    """At 4 km x 2 h blocks (the demo's s4_t2): the share of a wet block's mass in its wettest hour
    and the share of wet pixels in wet blocks. Real radar summed to hours (../shared/data: Comephore,
    KNMI, BoM, MeteoSwiss, OPERA): medians 0.67-0.98 and 0.73-0.97. A field as small as its grid gave
    1.0 and 0.56 (the rain crossed a 4 km cell within the hour and came round the periodic grid)."""
    s, t = 4, 2
    field = RainField(SynthConfig(size=96, days=3, seed=3, coverage=1.0), np.random.default_rng(3))
    rain = np.stack([field.step() for _ in range(72)]).astype(np.float64)
    rain = np.round(rain * 10) / 10  # the archives' tenths of mm
    cells = rain.reshape(72 // t, t, 96 // s, s, 96 // s, s)
    hourly = cells.mean(axis=(3, 5))  # (block, hour, cy, cx)
    wet_blocks = hourly.sum(axis=1) >= 0.5 * t
    assert wet_blocks.sum() > 100
    share = (hourly.max(axis=1) / np.where(wet_blocks, hourly.sum(axis=1), 1.0))[wet_blocks]
    wet_pixels = (cells > 0.1).mean(axis=(3, 5)).transpose(0, 2, 3, 1)[wet_blocks].mean()
    assert np.median(share) < 0.9
    assert wet_pixels > 0.7
