"""Bad input to slurm/start.sh and slurm/stop.sh stops early with a message that names the problem
and the fix. Each case points the scripts at its own state folder, so a running cluster is untouched.
"""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ETC_CONF = Path("/etc/slurm/slurm.conf")


def start(env_extra: dict, tmp_path: Path, **kwargs) -> subprocess.CompletedProcess:
    env = os.environ | {"HPCSR_SLURM_DIR": str(tmp_path / "s")} | env_extra
    return subprocess.run(
        ["bash", "slurm/start.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30, **kwargs
    )


def conf_link() -> str | None:
    return os.readlink(ETC_CONF) if ETC_CONF.is_symlink() else None


def test_not_root_is_refused_with_the_fix(tmp_path):
    # As root, run the script as 'nobody'; as another user, run it directly.
    as_nobody = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    out = start({}, tmp_path, **as_nobody)
    assert out.returncode == 1
    assert "must run as root" in out.stderr and "sudo bash slurm/start.sh" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the later checks run only as root")
def test_long_state_folder_is_refused(tmp_path):
    out = start({"HPCSR_SLURM_DIR": "/tmp/" + "x" * 100}, tmp_path)
    assert out.returncode == 1
    assert "too long" in out.stderr and "HPCSR_SLURM_DIR=/tmp/hpcsr-slurm" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the later checks run only as root")
def test_busy_port_is_named_with_its_owner_and_changes_nothing(tmp_path):
    before = conf_link()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = start({"HPCSR_SLURMCTLD_PORT": str(port)}, tmp_path)
    assert out.returncode == 1
    assert f"port {port} (for slurmctld) is already in use" in out.stderr
    assert "HPCSR_SLURMCTLD_PORT=<port>" in out.stderr
    if shutil.which("ss"):
        assert "python" in out.stderr  # ss names the program holding the port: this test
    assert not (tmp_path / "s").exists() and conf_link() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="the later checks run only as root")
def test_missing_packages_are_listed_when_installing_is_not_allowed(tmp_path):
    tools = tmp_path / "bin"  # only the basic tools: no Slurm, no munge on this PATH
    tools.mkdir()
    for tool in ("bash", "dirname", "date", "id", "cat", "tr", "head", "timeout"):
        (tools / tool).symlink_to(shutil.which(tool))
    out = start({"PATH": str(tools), "HPCSR_SLURM_NO_INSTALL": "1"}, tmp_path)
    assert out.returncode == 1
    assert "missing Debian packages: slurmctld slurmd slurm-client munge" in out.stderr
    assert "apt-get install --no-install-recommends slurmctld slurmd slurm-client munge" in out.stderr


def test_stop_rejects_unknown_options_and_is_a_no_op_without_a_cluster(tmp_path):
    env = os.environ | {"HPCSR_SLURM_DIR": str(tmp_path / "s")}
    out = subprocess.run(
        ["bash", "slurm/stop.sh", "--force"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1 and "unknown option '--force'" in out.stderr
    out = subprocess.run(["bash", "slurm/stop.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout == ""
