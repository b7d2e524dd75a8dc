"""The dependency rules of the README's layout section, read from the source with
scripts/import_graph.py: hpcsr never imports the top-level preprocessing package (it plugs in as a
launcher stage through an entry point), hpcsr.artifacts is a leaf every area may import, no two
areas import each other, even through imports inside functions, and every import points down the
layers (scripts/import_graph.LAYERS: the export format below training, sampling and transfer)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from import_graph import LAYERS, cycles, graph, upward  # noqa: E402


def test_hpcsr_never_imports_preprocessing():
    edges, _ = graph()
    assert [src for src, deps in edges.items() if src.startswith("hpcsr") and "preprocessing" in deps] == []


def test_artifacts_is_a_leaf():
    edges, _ = graph()
    assert set(edges.get("hpcsr.artifacts", {})) <= {"hpcsr"}  # the package itself, for its version


def test_no_cycle_between_areas():
    edges, _ = graph()
    assert cycles(edges) == []


def test_imports_point_down_the_layers():
    edges, _ = graph()
    areas = set(edges) | {d for deps in edges.values() for d in deps}
    assert sorted(areas - {a for layer in LAYERS for a in layer}) == []  # a new area needs its layer
    assert upward(edges) == []
    assert "hpcsr.train" not in {*edges["hpcsr.sampling"], *edges["hpcsr.evaluate"]}  # exports: hpcsr.export
