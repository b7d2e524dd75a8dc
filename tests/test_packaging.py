"""`pip install .` (not editable) gives working console scripts and carries the Hydra configs."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_non_editable_install_has_scripts_and_configs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    for script in ("hpcsr", "hpcsr-launch", "hpcsr-preprocess"):
        assert (target / "bin" / script).is_file(), f"console script {script} missing"
    assert (target / "hpcsr" / "conf" / "config.yaml").is_file()
    assert (target / "hpcsr" / "conf" / "factor" / "s10_t3.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("HPCSR_CONFIG_DIR", None)
    # run from an unrelated folder so the repository checkout cannot be picked up instead
    out = subprocess.run(
        [sys.executable, str(target / "bin" / "hpcsr"), "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "hpcsr-launch" in out.stdout
    probe = (
        "import hpcsr.config as c; p = c.config_dir(); print(p); "
        "assert p.parent.name == 'hpcsr' and 'site' in str(p), p"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
