"""The dependency rules of the README's layout section, read from the source with
scripts/import_graph.py: hpcsr never imports the top-level preprocessing package (it plugs in as a
launcher stage by name), hpcsr.artifacts is a leaf every area may import, and no two areas import
each other, even through imports inside functions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from import_graph import cycles, graph  # noqa: E402


def test_hpcsr_never_imports_preprocessing():
    edges, _ = graph()
    assert [src for src, deps in edges.items() if src.startswith("hpcsr") and "preprocessing" in deps] == []


def test_artifacts_is_a_leaf():
    edges, _ = graph()
    assert set(edges.get("hpcsr.artifacts", {})) <= {"hpcsr"}  # the package itself, for its version


def test_no_cycle_between_areas():
    edges, _ = graph()
    assert cycles(edges) == []
