"""The browser check itself (tests/browser.py) on pages made here: it must see a missing image, an
image that does not decode and a missing linked file, and pass a page whose image loads; then an
`hpcsr evaluate` report on real radar opens with every figure decoded. The KNMI window is mostly
dry, so the FSS is undefined at the higher thresholds: the FSS figure says so instead of crashing
on its log axis (issue 15, finding 2). (The demo's index and pair reports are opened the same way
in tests/test_demo.py.)"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import Browser, page_links  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KNMI = DATA / "knmi_20100826.nc"


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def _png(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)
    return path


def test_the_check_sees_missing_and_undecodable_images_and_passes_a_good_page(browser, tmp_path):
    _png(tmp_path / "fine.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "good.html").write_text("<html><body><img src='fine.png'><a href='fine.png'>f</a></body></html>")
    (tmp_path / "bad.html").write_text(
        "<html><body><img src='absent.png'><img src='broken.png'><a href='gone.html'>g</a></body></html>"
    )
    assert browser.check(tmp_path / "good.html", tmp_path / "good_shot.png") == []
    assert (tmp_path / "good_shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    failures = browser.check(tmp_path / "bad.html")
    assert any("absent.png" in f and "ERR_FILE_NOT_FOUND" in f for f in failures), failures
    assert any("broken.png" in f and "did not decode" in f for f in failures), failures
    missing = [p.name for p in page_links(tmp_path / "bad.html") if not p.is_file()]
    assert missing == ["absent.png", "gone.html"]


@pytest.mark.slow  # a whole evaluation and a browser
@pytest.mark.skipif(not KNMI.is_file(), reason=f"real data {KNMI} is absent")
def test_an_evaluation_report_on_real_radar_opens_with_every_figure(browser, tmp_path):
    from hpcsr.evaluate.cli import build_parser, run

    with xr.open_dataset(KNMI) as ds:
        truth = ds.isel(time=slice(0, 8), y=slice(100, 148), x=slice(100, 148)).load()
    rng = np.random.default_rng(0)
    members = np.clip(truth["precip"].values[None] * rng.lognormal(0, 0.3, (4,) + truth["precip"].shape), 0, None)
    ens = xr.Dataset(
        {"precip": (("member", "time", "y", "x"), members.astype(np.float32))},
        coords={"member": np.arange(4), "time": truth["time"], "y": truth["y"], "x": truth["x"]},
        attrs={"interval_minutes": 5},
    )
    truth.to_netcdf(tmp_path / "truth.nc")
    ens.to_netcdf(tmp_path / "ens.nc")
    out = tmp_path / "report"
    run(
        build_parser().parse_args(
            [
                "--truth",
                str(tmp_path / "truth.nc"),
                "--ensemble",
                str(tmp_path / "ens.nc"),
                "--out",
                str(out),
                "--s",
                "4",
                "--t",
                "2",
                "--quiet",
            ]
        )
    )
    page = out / "report.html"
    images = [p for p in page_links(page) if p.suffix == ".png"]
    assert len(images) >= 3 and all(p.is_file() for p in images)
    assert browser.check(page, tmp_path / "shot.png") == []
    # and the same page with one figure gone is caught
    shutil.copytree(out, tmp_path / "damaged")
    (tmp_path / "damaged" / images[0].name).unlink()
    assert any(images[0].name in f for f in browser.check(tmp_path / "damaged" / "report.html"))
