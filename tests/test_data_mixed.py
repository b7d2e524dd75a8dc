"""Training on several shards of one pair (hpcsr.data.mixed, data.extra_shards): two real stores
written by the preprocessing writers from two different synthetic archives (other grid sizes, other
days), mixed by the dataset and by a real one-rank training run."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hpcsr.data.mixed import MixedPatches
from hpcsr.data.normalise import Normaliser
from hpcsr.data.patches import PatchDataset, PatchSpec
from hpcsr.data.store import Shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_dist import COMMON, train_one_rank  # noqa: E402

SPEC = PatchSpec(context=2, patch=24)


@pytest.fixture(scope="module")
def other_store(tmp_path_factory):
    """A second store: 2 days of a 56 x 56 px synthetic archive (another seed) with pairs (4, 3), (2, 1)."""
    from preprocessing.ingest import IngestConfig, ingest
    from preprocessing.parallel import Comm
    from preprocessing.shards import ShardConfig, make_shards
    from preprocessing.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("other_store")
    raw, out = root / "raw", root / "out"
    synthesize(raw, SynthConfig(days=2, size=56, seed=11, start="2012-03-01"), progress=False)
    ingest(out, IngestConfig(comephore=(str(raw),)), Comm(), progress=False)
    make_shards(out, ShardConfig(pairs=("4x3", "2x1")), Comm(), progress=False)
    return out


def parts(paths, seed=5):
    with Shard(paths[0]) as shard:
        norm = Normaliser.from_stats(shard.stats, "log1p")
    return [PatchDataset(p, SPEC, "train", norm, seed, 1.0, "train", wet_bias=0.3) for p in paths]


def test_items_come_from_each_part_in_proportion_to_its_distinct_patches(train_dataset, other_store):
    a, b = parts([train_dataset / "shards" / "s4_t3.h5", other_store / "shards" / "s4_t3.h5"])
    mixed = MixedPatches([a, b], seed=5, stream=a.stream)
    sizes = np.array([len(a.windows) * len(a.corners), len(b.windows) * len(b.corners)], float)
    assert np.allclose(mixed.weights, sizes / sizes.sum()) and len(mixed) == len(a) + len(b)
    assert 0.05 < mixed.weights[1] < 0.95  # both parts matter in this test
    n = 2000
    sources = np.array([mixed.source(i) for i in range(n)])
    share = sources.mean()
    # binomial standard deviation of the share of part 1 over n draws: 5 sigma
    assert abs(share - mixed.weights[1]) < 5 * np.sqrt(mixed.weights[1] * mixed.weights[0] / n)
    for item in (0, 1, 7, 123):
        got, again = mixed[item], mixed[item]
        part = (a, b)[int(got["source"])]
        want = part[item]
        assert int(got["source"]) == mixed.source(item)
        assert torch.equal(got["where"], want["where"]) and torch.equal(
            got["hr"].nan_to_num(-9), want["hr"].nan_to_num(-9)
        )
        assert torch.equal(got["lr"].nan_to_num(-9), again["lr"].nan_to_num(-9))
    other_seed = MixedPatches([a, b], seed=6, stream=a.stream)
    assert [other_seed.source(i) for i in range(50)] != list(sources[:50])
    mixed.close()


def test_mix_shards_draws_each_part_equally_often(train_dataset, other_store):
    """data.mix 'shards': each shard is drawn equally often whatever its size (one radar at two pixel
    sizes told to the networks: two tasks, not one twice the data); another mix is refused by name."""
    from hpcsr.data.config import DataConfig

    a, b = parts([train_dataset / "shards" / "s4_t3.h5", other_store / "shards" / "s4_t3.h5"])
    mixed = MixedPatches([a, b], seed=5, stream=a.stream, mix="shards")
    assert np.allclose(mixed.weights, [0.5, 0.5])
    n = 2000
    share = np.mean([mixed.source(i) for i in range(n)])
    assert abs(share - 0.5) < 5 * np.sqrt(0.25 / n)
    with pytest.raises(ValueError, match="mix 'equal'"):
        MixedPatches([a, b], seed=5, stream=a.stream, mix="equal")
    with pytest.raises(ValueError, match="data.mix='equal'"):
        DataConfig(mix="equal")
    mixed.close()


def test_shards_of_different_pairs_are_refused_naming_both(train_dataset, other_store):
    a = parts([train_dataset / "shards" / "s4_t3.h5"])[0]
    with Shard(other_store / "shards" / "s2_t1.h5") as shard:
        norm = Normaliser.from_stats(shard.stats, "log1p")
    b = PatchDataset(other_store / "shards" / "s2_t1.h5", SPEC, "train", norm, 5, 1.0, "train")
    with pytest.raises(ValueError, match=r"different factor pairs.*s4_t3.*s2_t1"):
        MixedPatches([a, b], seed=5, stream=a.stream)


def train_cli(tmp_path, data, overrides):
    """`hpcsr train` on one rank, 3 steps of the mean stage with test_train_dist's settings."""
    args = [*COMMON, "train.steps=3", "train.val_every=0", f"data_dir={data}", f"run_dir={tmp_path / 'run'}"]
    return train_one_rank([*args, *overrides])


@pytest.mark.slow
def test_a_run_trains_on_extra_shards_and_records_them(train_dataset, other_store, tmp_path):
    extra = other_store / "shards" / "s4_t3.h5"
    out = train_cli(tmp_path, train_dataset, [f"data.extra_shards=[{extra}]"])
    assert out.returncode == 0, out.stderr[-4000:]
    meta = json.loads((tmp_path / "run" / "mean" / "export" / "model.json").read_text())
    assert meta["extra_shards"] == [str(extra)]
    assert meta["shard"] == str(train_dataset / "shards" / "s4_t3.h5")


def test_a_missing_or_other_pair_extra_shard_is_a_clear_error(train_dataset, other_store, tmp_path):
    missing = tmp_path / "nowhere.h5"
    out = train_cli(tmp_path, train_dataset, [f"data.extra_shards=[{missing}]"])
    assert out.returncode == 2 and "data.extra_shards" in out.stderr and str(missing) in out.stderr
    other_pair = other_store / "shards" / "s2_t1.h5"
    out = train_cli(tmp_path, train_dataset, [f"data.extra_shards=[{other_pair}]"])
    assert out.returncode == 2 and "s2_t1" in out.stderr and str(other_pair) in out.stderr
    assert not (tmp_path / "run" / "mean" / "checkpoints").exists() or not any(
        (tmp_path / "run" / "mean" / "checkpoints").iterdir()
    )
