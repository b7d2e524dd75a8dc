"""The demo's index page: its criteria per pair and the credibility scores, from hand-made metrics."""

import pytest

from hpcsr.demo.index import criteria_table, demo_criteria, render_markdown


def _metrics(crps=0.04, ens_rmse=0.1, mean_rmse=0.09, ssr=1.2):
    return {
        "forecasts": {
            "ensemble": {
                "crps": crps,
                "rmse": ens_rmse,
                "spread_skill_ratio": ssr,
                "wet_fraction_ratio": 1.08,
                "spectral_ratio": {"min": 0.61, "max": 1.3},
                "seam_ratio": 1.04,
                "rank_histogram": [30, 10, 10, 10, 10, 14],  # mean 14: ends 30/14 and 14/14 x flat
            },
            "bicubic": {"mae": 0.05, "rmse": 0.1},
            "mean": {"rmse": mean_rmse},
        },
        "truth": {"seam_ratio": 0.98},
    }


def test_demo_criteria_values_and_verdicts():
    c = demo_criteria(_metrics())
    assert c["ensemble CRPS / bicubic MAE"] == {"value": pytest.approx(0.8), "target": "< 1", "met": True}
    assert c["ensemble-mean RMSE / bicubic RMSE"] == {"value": 1.0, "target": "<= 1", "met": True}  # equal is enough
    assert c["mean-network RMSE / bicubic RMSE"]["met"] and c["spread/skill"]["target"] == "0.7 .. 1.3"
    worse = demo_criteria(_metrics(crps=0.05, mean_rmse=0.1, ssr=1.4))
    assert not any(v["met"] for k, v in worse.items() if k != "ensemble-mean RMSE / bicubic RMSE")
    assert not any(v["met"] for v in demo_criteria({}).values())  # no metrics: nothing met


def test_index_table_states_criteria_and_credibility():
    md = render_markdown(
        [criteria_table([{"name": "s2_t1", "metrics": _metrics()}, {"name": "s4_t2", "metrics": _metrics(ssr=0.5)}])]
    )
    lines = md.splitlines()
    assert lines[0] == (
        "| pair | ensemble CRPS / bicubic MAE (< 1) | ensemble-mean RMSE / bicubic RMSE (<= 1) | "
        "mean-network RMSE / bicubic RMSE (< 1) | spread/skill (0.7 .. 1.3) | all met | "
        "wet fraction / truth | spectral ratio (2 px .. LR cell) | seam ratio (truth) | "
        "rank ends (lowest / highest x flat) |"
    )
    assert lines[2] == (
        "| s2_t1 | 0.8 met | 1 met | 0.9 met | 1.2 met | yes | 1.08 | 0.61 .. 1.3 | 1.04 (0.98) | 2.14 / 1.00 |"
    )
    assert "| s4_t2 | 0.8 met | 1 met | 0.9 met | 0.5 NOT met | NO |" in lines[3]


def test_index_without_a_rank_histogram_says_so():
    metrics = _metrics()
    del metrics["forecasts"]["ensemble"]["rank_histogram"]
    row = render_markdown([criteria_table([{"name": "s2_t1", "metrics": metrics}])]).splitlines()[2]
    assert row.endswith("| 1.04 (0.98) | - |")
