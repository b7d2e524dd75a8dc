"""The pipeline on real files: synthetic Comephore archives -> hr.h5 -> shards, checked against
independent recomputation (LR = coarsen of the stored HR, block sums, aligned blocks that never span
a gap, splits, train-only statistics), resumability and crash safety, and the CLI."""

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcsr.artifacts import file_sha256
from hpcsr.coarsen import coarsen
from hpcsr.data.store import HRStore, Shard
from hpcsr.factors import FactorPair
from preprocessing import cli
from preprocessing import shards as shards_mod
from preprocessing.ingest import IngestConfig, ingest
from preprocessing.parallel import Comm
from preprocessing.shards import ShardConfig, coarsen_blocks, make_shards
from preprocessing.splits import SplitSpec

REPO = Path(__file__).resolve().parents[1]


def shard_of(ds, pair) -> Shard:
    return Shard(ds["out"] / "shards" / f"{pair.name}.h5")


def test_store_holds_the_archives_losslessly(small_dataset):
    import tarfile

    from preprocessing.geotiff import read_geotiff

    store = HRStore(small_dataset["out"] / "hr.h5")
    assert store.shape == (70, 100, 100)  # 72 hours, 2 left out by the generator
    assert store.encoding == "uint16" and store.units_per_mm == 10
    assert len(store.gaps) >= 1
    archive = next(small_dataset["raw"].glob("H_COMEPHORE_*.tar"))
    with tarfile.open(archive) as tar:
        member = tar.getmember("2020010210_RR.gtif")
        raw, _, _ = read_geotiff(tar.extractfile(member).read())
    i = store.index_of(np.datetime64("2020-01-02T10:00"))
    np.testing.assert_array_equal(store.read_raw(i, i + 1)[0], raw)
    mm = store.read(i, i + 1)[0]
    assert np.array_equal(np.isnan(mm), raw == 65535) and np.allclose(mm[raw != 65535], raw[raw != 65535] / 10)


def test_lr_is_coarsen_of_the_stored_hr(small_dataset):
    store = HRStore(small_dataset["out"] / "hr.h5")
    for pair in small_dataset["pairs"]:
        shard = shard_of(small_dataset, pair)
        y0, y1, x0, x1 = shard.hr_window
        for i in range(0, len(shard), max(1, len(shard) // 5)):
            h = shard.hr_start[i]
            hr = store.read(h, h + pair.t, slice(y0, y1), slice(x0, x1))
            lr = coarsen(hr, pair.s, pair.t)[0]
            # same NaN pattern; values to float32 rounding (numpy's summation order depends on array shapes)
            assert np.array_equal(np.isnan(shard.lr[i]), np.isnan(lr))
            np.testing.assert_allclose(shard.lr[i], lr, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(hr, shard.read_hr_block(store, i))


def test_block_sum_identity_in_the_shards(small_dataset):
    store = HRStore(small_dataset["out"] / "hr.h5")
    for pair in small_dataset["pairs"]:
        shard = shard_of(small_dataset, pair)
        s, t = pair.s, pair.t
        i = len(shard) // 2
        hr = shard.read_hr_block(store, i).astype(np.float64)
        lr = shard.lr[i].astype(np.float64)
        sums = hr.reshape(t, lr.shape[0], s, lr.shape[1], s).sum(axis=(0, 2, 4))
        ok = ~np.isnan(lr)
        assert ok.any()
        np.testing.assert_allclose(sums[ok], s * s * t * lr[ok], rtol=1e-5, atol=1e-4)


def test_blocks_are_aligned_to_00utc_and_never_span_a_gap(small_dataset):
    store = HRStore(small_dataset["out"] / "hr.h5")
    present = set(store.time_s.tolist())
    first, last = int(store.time_s[0]), int(store.time_s[-1])
    for pair in small_dataset["pairs"]:
        t = pair.t
        shard = shard_of(small_dataset, pair)
        # brute force: every block of t hours starting at a multiple of t hours after the epoch
        # (00 UTC for t dividing 24) whose hours are all present
        expected = []
        start = (first - 3600) // (t * 3600) * (t * 3600)
        while start + t * 3600 <= last:
            ends = [start + 3600 * (k + 1) for k in range(t)]
            if all(e in present for e in ends):
                expected.append(ends[-1])
            start += t * 3600
        np.testing.assert_array_equal(shard.time_s, expected)
        assert np.all(store.time_s[shard.hr_start + t - 1] == shard.time_s)
        if 24 % t == 0:
            assert np.all(((shard.time_s - t * 3600) % 86400) % (t * 3600) == 0)


def test_domain_not_divisible_by_s_is_cropped(small_dataset):
    shard = shard_of(small_dataset, next(p for p in small_dataset["pairs"] if p.s == 3))
    assert shard.hr_window == (0, 99, 0, 99) and shard.lr.shape[1:] == (33, 33)
    x0, dx, _, y0, _, dy = shard.lr_transform
    store = shard.hr_store()
    assert (x0, y0) == (store.transform[0], store.transform[3])  # same corner, cells 3 times larger
    assert (dx, dy) == (3 * store.transform[1], 3 * store.transform[5])


def test_crop_is_logged(tmp_path, small_dataset, caplog):
    caplog.set_level("INFO")
    shutil.copy(small_dataset["out"] / "hr.h5", tmp_path / "hr.h5")
    make_shards(tmp_path, ShardConfig(pairs=("3x1",)), Comm(), progress=False)
    assert "s3_t1: grid 100 x 100 is not divisible by s=3: using rows 0..99 and columns 0..99" in caplog.text


def test_splits_are_disjoint_time_ranges(small_dataset):
    shard = shard_of(small_dataset, small_dataset["pairs"][0])
    tr, va, te = (shard.splits[k] for k in ("train", "val", "test"))
    assert tr[1] == va[0] and va[1] == te[0]
    # 3 days: boundaries at 0.8 and 0.9 of the span rounded to 6 h
    assert str(tr[1]) == "2020-01-03T12:00:00" and str(va[1]) == "2020-01-03T18:00:00"
    for pair in small_dataset["pairs"]:
        sh = shard_of(small_dataset, pair)
        ends = sh.times
        starts = ends - np.timedelta64(pair.t * 3600, "s")
        for name, code in (("train", 0), ("val", 1), ("test", 2)):
            a, b = sh.splits[name]
            inside = (starts >= a) & (ends <= b)
            np.testing.assert_array_equal(sh.split == code, inside)
    # a block straddling a boundary belongs to no split
    sh = shard_of(small_dataset, next(p for p in small_dataset["pairs"] if p.t == 5))
    starts = sh.times - np.timedelta64(5 * 3600, "s")
    crossing = (starts < va[0]) & (sh.times > va[0]) | (starts < te[0]) & (sh.times > te[0])
    assert crossing.any() and np.all(sh.split[crossing] == -1)


def test_statistics_come_from_the_train_split_only(small_dataset):
    store = HRStore(small_dataset["out"] / "hr.h5")
    for pair in small_dataset["pairs"]:
        shard = shard_of(small_dataset, pair)
        y0, y1, x0, x1 = shard.hr_window
        train = shard.indices("train")
        hr = np.concatenate([shard.read_hr_block(store, i).ravel() for i in train]).astype(np.float64)
        hr = hr[~np.isnan(hr)]
        lr = shard.lr[np.sort(train)].astype(np.float64).ravel()
        lr = lr[~np.isnan(lr)]
        s = shard.stats
        assert s["count_hr"] == hr.size and s["count_lr"] == lr.size
        assert s["hr_mean"] == pytest.approx(hr.mean(), rel=1e-9)
        assert s["hr_std"] == pytest.approx(hr.std(), rel=1e-7)
        assert s["hr_log1p_mean"] == pytest.approx(np.log1p(hr).mean(), rel=1e-9)
        assert s["dry_fraction"] == pytest.approx(np.mean(hr < 0.1), rel=1e-12)
        assert s["hr_max"] == pytest.approx(hr.max())
        assert s["quantiles_exact"] is True
        for q, v in s["hr_quantiles"].items():
            assert v == pytest.approx(np.quantile(hr, q, method="lower"), abs=1e-6)  # exact on tenths
        wet = hr[hr >= 0.1]
        for q, v in s["hr_wet_quantiles"].items():
            assert v == pytest.approx(np.quantile(wet, q, method="lower"), abs=1e-6)
        assert s["lr_mean"] == pytest.approx(lr.mean(), rel=1e-9)
        assert s["lr_std"] == pytest.approx(lr.std(), rel=1e-7)
        for q, v in s["lr_quantiles"].items():  # log bins of 0.001 in log1p(mm)
            assert abs(np.log1p(v) - np.log1p(np.quantile(lr, q, method="lower"))) <= 0.0011
        # the statistics differ from those of all blocks: val/test were not used
        everything = store.read(0, store.shape[0], slice(y0, y1), slice(x0, x1))
        assert s["count_hr"] < np.count_nonzero(~np.isnan(everything))


def test_reference_and_provenance(small_dataset):
    shard = shard_of(small_dataset, small_dataset["pairs"][1])
    with h5py.File(shard.path) as f:
        assert f.attrs["hr_store"] == "../hr.h5"
    assert shard.hr_store_sha256 == file_sha256(small_dataset["out"] / "hr.h5")
    shard.hr_store(verify=True)
    prov = shard.provenance
    assert prov["code_version"]["hpcsr"] and prov["config"]["min_valid"] == 1.0
    inputs = prov["hr_store_provenance"]["inputs"]
    assert [Path(i["path"]).name for i in inputs] == ["H_COMEPHORE_202001.tar"]
    manifest = json.loads((small_dataset["out"] / "manifest.json").read_text())["outputs"]
    for rel, entry in manifest.items():
        assert file_sha256(small_dataset["out"] / rel) == entry["sha256"]
    assert set(manifest) == {"hr.h5"} | {f"shards/{p.name}.h5" for p in small_dataset["pairs"]}


def test_strips_give_the_lr_of_one_call():
    rng = np.random.default_rng(0)
    hr = (rng.gamma(0.3, 2, (6, 300, 250)) * (rng.random((6, 300, 250)) < 0.3)).astype(np.float32)
    hr[rng.random(hr.shape) < 0.01] = np.nan
    for s, t in ((1, 3), (2, 2), (10, 1), (25, 6), (5, 3)):
        for min_valid in (1.0, 0.5):
            strips, whole = coarsen_blocks(hr, s, t, min_valid), coarsen(hr, s, t, min_valid)
            assert np.array_equal(np.isnan(strips), np.isnan(whole))
            np.testing.assert_allclose(strips, whole, rtol=1e-6, atol=1e-7)  # summation order may differ


def _mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.h5")}


def test_rerun_skips_completed_work(tmp_path, small_dataset, caplog):
    out = tmp_path / "out"
    cfg_in = IngestConfig(comephore=(str(small_dataset["raw"]),))
    cfg_sh = ShardConfig(pairs=("10x3", "25x6"))
    ingest(out, cfg_in, Comm(), progress=False)
    make_shards(out, cfg_sh, Comm(), progress=False)
    before = _mtimes(out)
    caplog.set_level("INFO")
    ingest(out, cfg_in, Comm(), progress=False)
    make_shards(out, cfg_sh, Comm(), progress=False)
    assert _mtimes(out) == before
    assert "nothing to ingest" in caplog.text and "2 already complete" in caplog.text
    # losing one unit's part and hr.h5's manifest entry redoes that unit only
    parts = sorted((out / "parts" / "hr").glob("*.h5"))
    parts[1].unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["outputs"]["hr.h5"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    ingest(out, cfg_in, Comm(), progress=False)
    after = _mtimes(out)
    assert after[parts[0]] == before[parts[0]] and after[parts[2]] == before[parts[2]]
    assert parts[1].exists()
    # the rebuilt store is the same file, so the shards still match it and are kept
    assert file_sha256(out / "hr.h5") == Shard(out / "shards" / "s10_t3.h5").hr_store_sha256
    make_shards(out, cfg_sh, Comm(), progress=False)
    assert _mtimes(out)[out / "shards" / "s10_t3.h5"] == before[out / "shards" / "s10_t3.h5"]


def test_a_failure_mid_shard_leaves_nothing_that_looks_complete(tmp_path, small_dataset, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(small_dataset["out"], out, ignore=shutil.ignore_patterns("shards", "parts"))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["outputs"] = {"hr.h5": manifest["outputs"]["hr.h5"]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    calls = {"n": 0}
    real = shards_mod.coarsen_blocks

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")  # what a SIGINT raises mid-write
        return real(*args)

    monkeypatch.setattr(shards_mod, "coarsen_blocks", dying)
    with pytest.raises(KeyboardInterrupt):
        make_shards(out, ShardConfig(pairs=("10x1",)), Comm(), progress=False)
    leftovers = [p.name for p in out.rglob("*") if p.is_file() and p.name not in ("hr.h5", "manifest.json")]
    assert leftovers == []  # no shard, no half-written part, no temporary file
    assert "shards/s10_t1.h5" not in json.loads((out / "manifest.json").read_text())["outputs"]
    # a temporary file left by a SIGKILL is never taken for a result
    (out / "shards").mkdir()
    (out / "shards" / ".s10_t1.h5.tmp-999").write_bytes(b"partial")
    monkeypatch.setattr(shards_mod, "coarsen_blocks", real)
    make_shards(out, ShardConfig(pairs=("10x1",)), Comm(), progress=False)
    fresh = Shard(out / "shards" / "s10_t1.h5")
    np.testing.assert_array_equal(
        fresh.lr[()], shard_of(small_dataset, next(p for p in small_dataset["pairs"] if p.name == "s10_t1")).lr[()]
    )


def test_a_changed_hr_store_invalidates_the_shards(tmp_path, small_dataset):
    out = tmp_path / "out"
    shutil.copytree(small_dataset["out"], out)
    with h5py.File(out / "hr.h5", "a") as f:
        f["precip"][0, 0, 0] = 5
    shard = Shard(out / "shards" / "s10_t3.h5")
    with pytest.raises(ValueError, match="changed since shard .* rerun `hpcsr-preprocess shards`"):
        shard.hr_store(verify=True)
    make_shards(out, ShardConfig(pairs=("10x3",)), Comm(), progress=False)  # rebuilt: the key holds the checksum
    assert Shard(out / "shards" / "s10_t3.h5").hr_store_sha256 == file_sha256(out / "hr.h5")


def test_explicit_split_bounds_and_bad_settings(tmp_path, small_dataset):
    out = tmp_path / "out"
    shutil.copytree(small_dataset["out"], out, ignore=shutil.ignore_patterns("shards", "parts"))
    make_shards(
        out, ShardConfig(pairs=("10x1",), splits=SplitSpec(bounds=("2020-01-02", "2020-01-03"))), Comm(), progress=False
    )
    shard = Shard(out / "shards" / "s10_t1.h5")
    assert str(shard.splits["val"][0]) == "2020-01-02T00:00:00"
    assert np.all(shard.times[shard.indices("train")] <= np.datetime64("2020-01-02T00:00"))
    with pytest.raises(ValueError, match="must be three non-negative shares summing to 1"):
        SplitSpec(fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="cannot read factor pair 'ten'"):
        ShardConfig(pairs=("ten",))
    with pytest.raises(ValueError, match="factor s=30 is outside 1..25"):
        ShardConfig(pairs=("30x1",))


def run_cli(*args, env=None, cwd=None):
    env = dict(env or os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "preprocessing", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_cli_all_on_synthetic_data(tmp_path, launch_env):
    r = run_cli(
        "all",
        "--out",
        str(tmp_path / "d"),
        "--days",
        "1",
        "--size",
        "40",
        "--pairs",
        "10x3,2x1",
        "--quiet",
        env=launch_env,
    )
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / "d" / "shards").iterdir()} == {"s10_t3.h5", "s2_t1.h5"}
    assert (tmp_path / "d" / "raw" / "H_COMEPHORE_202001.tar").exists()
    assert "done:" in r.stderr


def test_cli_errors_name_the_problem_and_the_fix(tmp_path, capsys):
    assert cli.main(["shards", "--out", str(tmp_path / "nothing"), "--pairs", "10x3"]) == 2
    assert "hr.h5 does not exist: run `hpcsr-preprocess ingest --out" in capsys.readouterr().err
    assert cli.main(["ingest", "--out", str(tmp_path / "e"), "--comephore", str(tmp_path / "missing.tar")]) == 2
    err = capsys.readouterr().err
    assert "missing.tar does not exist" in err and "Traceback" not in err
    assert cli.main(["all", "--out", str(tmp_path / "f"), "--pairs", "10x3", "--grid", "paper"]) == 2
    assert "give --pairs or --grid, not both" in capsys.readouterr().err
    assert cli.main(["synth", "--out", str(tmp_path / "g"), "--size", "4000"]) == 2
    assert "size=4000 must be in 16..1536" in capsys.readouterr().err
    grid = tmp_path / "grid.yaml"
    grid.write_text("kind: product\npairs: []\ns: [5, 25]\nt: [1, 3]\nparents: {}\n")
    assert cli.parse_pairs(None, str(grid)) == (
        FactorPair(5, 1),
        FactorPair(5, 3),
        FactorPair(25, 1),
        FactorPair(25, 3),
    )


def test_windows_never_cut_a_block_and_work_is_balanced():
    from preprocessing.blocks import block_starts, split_among, window_cuts
    from preprocessing.ingest import Unit, share_of_units

    rng = np.random.default_rng(4)
    hours = np.sort(rng.choice(np.arange(1, 400), size=300, replace=False))
    times = 1_600_000_000 // 3600 * 3600 + 3600 * hours
    starts = {t: block_starts(times, 3600, t) for t in range(1, 7)}
    windows = window_cuts(len(times), starts, target=12)
    assert windows[0][0] == 0 and windows[-1][1] == len(times)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    owner = np.zeros(len(times), int)
    for w, (a, b) in enumerate(windows):
        owner[a:b] = w
    for t, st in starts.items():
        assert np.all(owner[st] == owner[st + t - 1])
        assert np.all(times[st + t - 1] - times[st] == (t - 1) * 3600)
    assert sorted(r for k in range(3) for r in range(*split_among(10, 3, k))) == list(range(10))
    units = [Unit(f"u{i}", "c", (), n, "k") for i, n in enumerate([24, 24, 1, 23, 24, 5])]
    shares = share_of_units(units, 2)
    assert sorted(u.uid for s in shares for u in s) == sorted(u.uid for u in units)
    sizes = [u.n_frames for u in units]
    best = min(
        max(sum(sizes[i] for i in c), sum(sizes) - sum(sizes[i] for i in c))
        for k in range(len(sizes) + 1)
        for c in itertools.combinations(range(len(sizes)), k)
    )
    assert max(sum(u.n_frames for u in share) for share in shares) == best  # here the greedy split is optimal


def test_merging_parts_holds_one_part_open_at_a_time(tmp_path, monkeypatch):
    """Peak memory must not grow with the period: ingest's assembly of hr.h5 (one part per day, 365
    a year) and the shard merge read their parts one at a time, never all open at once (each open
    part keeps ~2 MB of HDF5 metadata, and 20 years of daily parts would pass 1024 open files)."""
    from preprocessing.synth import SynthConfig, synthesize

    raw, out = tmp_path / "raw", tmp_path / "out"
    synthesize(raw, SynthConfig(days=2, size=32, seed=1), progress=False)
    reading, peak = set(), [0]

    class Tracked(h5py.File):
        def __init__(self, name, mode="r", *args, **kwargs):
            super().__init__(name, mode, *args, **kwargs)
            self.part = mode == "r" and f"{os.sep}parts{os.sep}" in str(name)
            if self.part:
                reading.add(id(self))
                peak[0] = max(peak[0], len(reading))

        def close(self):
            reading.discard(id(self))
            super().close()

    monkeypatch.setattr(h5py, "File", Tracked)
    ingest(out, IngestConfig(comephore=(str(raw),), unit_frames=6), Comm(), progress=False)
    make_shards(out, ShardConfig(pairs=("4x2",)), Comm(), progress=False)
    assert len(list((out / "parts" / "hr").glob("*.h5"))) == 8 and peak[0] == 1
    assert len(HRStore(out / "hr.h5").times) == 48


def test_coarsening_keeps_hdf5_caches_bounded(tmp_path, monkeypatch):
    """Peak memory must not grow with the period: while coarsening, the HR store is read with a
    small metadata cache (its chunk index nodes piled up to 12+ MB in the default one) and the part
    files are written without a chunk cache and with the chunk index of HDF5's newest format (a
    B-tree grew with every frame written)."""
    from preprocessing.synth import SynthConfig, synthesize

    raw, out = tmp_path / "raw", tmp_path / "out"
    synthesize(raw, SynthConfig(days=2, size=32, seed=1), progress=False)
    ingest(out, IngestConfig(comephore=(str(raw),)), Comm(), progress=False)
    seen = {}

    def record(hr, *args, **kwargs):
        for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
            if out not in Path(fid.name.decode()).parents:  # files other tests of the session keep open
                continue
            name = Path(fid.name.decode()).name
            fapl = fid.get_access_plist()
            seen[name] = (fid.get_mdc_config().max_size, fapl.get_cache()[2], fapl.get_libver_bounds())
        return coarsen_blocks(hr, *args, **kwargs)

    monkeypatch.setattr(shards_mod, "coarsen_blocks", record)
    make_shards(out, ShardConfig(pairs=("4x2", "2x1")), Comm(), progress=False)
    assert seen.pop("hr.h5")[0] == shards_mod.METADATA_CACHE_BYTES
    assert len(seen) == 2  # one part per pair
    latest = (h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    assert all(rdcc == 0 and libver == latest for _, rdcc, libver in seen.values())


def test_run_preprocess_from_the_config_section_and_from_the_cli_flags(tmp_path):
    """The entry point of the preprocess stage and of `hpcsr-preprocess all`: the CLI's flags build
    the same PreprocessConfig as the config section; source=synthetic makes the archives under the
    output folder, and source=store builds further shards from that store without ingesting."""
    from preprocessing.config import PreprocessConfig, SyntheticConfig, from_mapping
    from preprocessing.run import run_preprocess

    out = tmp_path / "d"
    section = {"synthetic": {"days": 1, "size": 32, "seed": 2}, "split_fractions": [0.5, 0.25, 0.25]}
    cfg = from_mapping(section)
    flags = [
        "all",
        "--out",
        str(out),
        "--days",
        "1",
        "--size",
        "32",
        "--seed",
        "2",
        "--split-fractions",
        "0.5,0.25,0.25",
    ]
    assert cli._config(cli.build_parser().parse_args(flags)) == cfg
    assert cfg == PreprocessConfig(
        synthetic=SyntheticConfig(days=1, size=32, seed=2), split_fractions=(0.5, 0.25, 0.25)
    )

    result = run_preprocess(cfg, out, [FactorPair(4, 2), FactorPair(2, 1)], Comm(), progress=False)
    assert result.archives == (out / "raw" / "H_COMEPHORE_202001.tar",) and result.store == out / "hr.h5"
    assert result.shards == (out / "shards" / "s2_t1.h5", out / "shards" / "s4_t2.h5")
    assert len(HRStore(result.store).times) == 24 and all(Shard(p).splits["test"] for p in result.shards)

    parts = sorted((out / "parts" / "hr").iterdir())
    shutil.rmtree(out / "raw")  # nothing reads the source again
    more = run_preprocess(from_mapping({"source": "store"}), out, [FactorPair(8, 3)], Comm(), progress=False)
    assert more.archives == () and more.shards == (out / "shards" / "s8_t3.h5",) and more.shards[0].is_file()
    assert sorted((out / "parts" / "hr").iterdir()) == parts


def test_pixel_aggregation_is_a_netcdf_key_of_the_section_and_a_flag():
    from hpcsr.config import ConfigError
    from preprocessing.config import from_mapping

    flags = ["ingest", "--out", "o", "--netcdf", "a.nc", "--aggregate-pixels", "2"]
    cfg = cli._config(cli.build_parser().parse_args(flags))
    assert cfg == from_mapping({"source": "netcdf", "inputs": ["a.nc"], "aggregate_pixels": 2})
    assert cfg.ingest_config(cfg.inputs).aggregate_pixels == 2
    with pytest.raises(ConfigError, match=r"aggregate_pixels=2: >= 1, and 1 unless preprocess.source=netcdf"):
        from_mapping({"aggregate_pixels": 2})  # synthetic Comephore: its 1 km grid is kept
    with pytest.raises(ConfigError, match=r"aggregate_pixels=0"):
        from_mapping({"source": "netcdf", "inputs": ["a.nc"], "aggregate_pixels": 0})


def test_dequantisation_is_a_netcdf_key_of_the_section_and_a_flag():
    from hpcsr.config import ConfigError
    from preprocessing.config import from_mapping

    flags = ["ingest", "--out", "o", "--netcdf", "a.nc", "--dequantise", "0.05"]
    cfg = cli._config(cli.build_parser().parse_args(flags))
    assert cfg == from_mapping({"source": "netcdf", "inputs": ["a.nc"], "dequantise": 0.05})
    assert cfg.ingest_config(cfg.inputs).dequantise_mm == 0.05
    with pytest.raises(ConfigError, match=r"dequantise=0.1: >= 0 mm, and 0 unless preprocess.source=netcdf"):
        from_mapping({"dequantise": 0.1})  # synthetic Comephore
    with pytest.raises(ConfigError, match=r"dequantise=-1"):
        from_mapping({"source": "netcdf", "inputs": ["a.nc"], "dequantise": -1})
