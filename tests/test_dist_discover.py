"""discover() on environments as launchers really set them (copied from torchrun, sbatch and srun runs)."""

import re

import pytest

from hpcsr import dist
from hpcsr.dist import DistConfigError, DistInfo, discover, expand_nodelist, parse_tasks_per_node

TORCHRUN = {
    "RANK": "1",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "localhost",
    "MASTER_PORT": "29511",
    "GROUP_RANK": "0",
}

# The job script of `sbatch -n 2` on slurm/start.sh's cluster (no srun yet): one process.
SLURM_BATCH = {
    "SLURM_JOB_ID": "10001718",
    "SLURM_JOBID": "10001718",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NTASKS": "2",
    "SLURM_NPROCS": "2",
    "SLURM_TASKS_PER_NODE": "2",
    "SLURM_JOB_NODELIST": "localhost",
    "SLURM_NODELIST": "localhost",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NNODES": "1",
    "SLURM_GTIDS": "0",
}
# Task 1 of `srun` inside that job: srun adds its step variables and SLURM_GTIDS lists both tasks.
SLURM_SRUN_TASK1 = SLURM_BATCH | {
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_GTIDS": "0,1",
    "SLURM_STEP_ID": "0",
    "SLURM_STEPID": "0",
    "SLURM_STEP_NUM_TASKS": "2",
}


def expected_slurm_port(job_id: int) -> int:
    return dist.SLURM_PORT_BASE + job_id % dist.SLURM_PORT_SPAN


def test_torchrun_env():
    assert discover(TORCHRUN) == DistInfo(1, 2, 1, 2, "localhost", 29511, "env")


def test_env_wins_over_slurm():
    assert discover(SLURM_SRUN_TASK1 | TORCHRUN).source == "env"


def test_hand_set_env_on_one_host_defaults_local_rank_to_rank():
    info = discover({"RANK": "1", "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29600"})
    assert (info.local_rank, info.local_world_size) == (1, 3)


@pytest.mark.parametrize(
    "env, named",
    [
        ({"RANK": "0"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2"}, "RANK"),
        ({"RANK": "x", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK='x'"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29500"}, "MASTER_ADDR"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "MASTER_PORT"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "70000"}, "MASTER_PORT=70000"),
        (
            {
                "RANK": "2",
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "h",
                "MASTER_PORT": "5",
                "LOCAL_RANK": "0",
                "LOCAL_WORLD_SIZE": "1",
            },
            "rank 2 >= world size 2",
        ),
        ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "node7", "MASTER_PORT": "5"}, "LOCAL_RANK"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE='0'"),
    ],
)
def test_bad_env_names_the_variable(env, named):
    with pytest.raises(DistConfigError, match=re.escape(named)):
        discover(env)


def test_slurm_srun_task():
    info = discover(SLURM_SRUN_TASK1)
    assert info == DistInfo(1, 2, 1, 2, "127.0.0.1", expected_slurm_port(10001718), "slurm")


def test_slurm_batch_script_without_srun_is_one_process():
    assert discover(SLURM_BATCH) == DistInfo(0, 1, 0, 1, "127.0.0.1", expected_slurm_port(10001718), "slurm")


def test_slurm_multi_node_srun_task_uses_first_host_and_this_nodes_task_count():
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "7",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "3",
        "SLURM_NTASKS": "11",
        "SLURM_TASKS_PER_NODE": "2(x5),1",
        "SLURM_GTIDS": "6,7",
        "SLURM_JOB_NODELIST": "node[01-04,07],gpu5",
        "SLURM_STEP_ID": "0",
    }
    assert discover(env) == DistInfo(7, 11, 1, 2, "node01", expected_slurm_port(4242), "slurm")


def test_slurm_multi_node_batch_step_is_one_process():
    env = {
        "SLURM_JOB_ID": "77",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NTASKS": "4",
        "SLURM_TASKS_PER_NODE": "1(x4)",
        "SLURM_GTIDS": "0",
        "SLURM_JOB_NODELIST": "cn[100-103]",
    }
    assert discover(env).world_size == 1
    # the same node's task 0 of an `srun -N4 -n4` step: srun's step id marks it as one of four
    assert discover(env | {"SLURM_STEP_ID": "0"}).world_size == 4


def test_slurm_master_port_from_env_and_distinct_per_job():
    assert discover(SLURM_SRUN_TASK1 | {"MASTER_PORT": "23456"}).master_port == 23456
    other = discover(SLURM_SRUN_TASK1 | {"SLURM_JOB_ID": "10001719"}).master_port
    assert other != discover(SLURM_SRUN_TASK1).master_port


def test_slurm_without_task_layout_on_several_hosts_is_an_error():
    env = {
        "SLURM_JOB_ID": "5",
        "SLURM_PROCID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NODELIST": "a,b",
        "SLURM_STEP_ID": "0",
    }
    with pytest.raises(DistConfigError, match="SLURM_TASKS_PER_NODE"):
        discover(env)


@pytest.mark.parametrize(
    "env, named",
    [
        (SLURM_SRUN_TASK1 | {"SLURM_PROCID": "two"}, "SLURM_PROCID='two'"),
        (SLURM_SRUN_TASK1 | {"SLURM_NTASKS": "1"}, "rank 1 >= world size 1"),
        (SLURM_SRUN_TASK1 | {"SLURM_TASKS_PER_NODE": "2(3)"}, "SLURM_TASKS_PER_NODE='2(3)'"),
        (SLURM_SRUN_TASK1 | {"SLURM_NODEID": "4"}, "SLURM_NODEID=4"),
        (SLURM_SRUN_TASK1 | {"SLURM_JOB_NODELIST": "n[1-2"}, "SLURM_JOB_NODELIST='n[1-2'"),
    ],
)
def test_bad_slurm_values_name_the_variable(env, named):
    with pytest.raises(DistConfigError, match=re.escape(named)):
        discover(env)


@pytest.mark.parametrize(
    "text, hosts",
    [
        ("localhost", ["localhost"]),
        ("node[01-04,07],gpu5", ["node01", "node02", "node03", "node04", "node07", "gpu5"]),
        ("a[8-10]", ["a8", "a9", "a10"]),
        ("r[1-2]n[09-10]", ["r1n09", "r1n10", "r2n09", "r2n10"]),
        ("x-1,y[3]", ["x-1", "y3"]),
    ],
)
def test_expand_nodelist(text, hosts):
    assert expand_nodelist(text) == hosts


@pytest.mark.parametrize(
    "text, why",
    [
        ("n[5-2]", "backwards"),
        ("n[1-2", "not closed"),
        ("n[a]", "not a number"),
        ("n1],x", "unbalanced"),
        ("n[[1]]", "nested"),
        ("a,,b", "empty"),
    ],
)
def test_bad_nodelist_says_why(text, why):
    with pytest.raises(DistConfigError, match=why):
        expand_nodelist(text)


def test_parse_tasks_per_node():
    assert parse_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert parse_tasks_per_node("4") == [4]


def test_override_forces_a_source():
    assert discover(TORCHRUN | {"HPCSR_DIST_SOURCE": "single"}).source == "single"
    assert discover(SLURM_SRUN_TASK1 | TORCHRUN | {"HPCSR_DIST_SOURCE": "slurm"}).source == "slurm"
    assert discover(TORCHRUN | {"HPCSR_DIST_SOURCE": "auto"}).source == "env"


@pytest.mark.parametrize(
    "env, named",
    [
        ({"HPCSR_DIST_SOURCE": "torchrun"}, "HPCSR_DIST_SOURCE='torchrun'"),
        ({"HPCSR_DIST_SOURCE": "slurm"}, "SLURM_JOB_ID, SLURM_PROCID not set"),
        ({"HPCSR_DIST_SOURCE": "env"}, "RANK, WORLD_SIZE not set"),
    ],
)
def test_bad_override(env, named):
    with pytest.raises(DistConfigError, match=re.escape(named)):
        discover(env)


def test_nothing_set_is_a_single_process_whose_port_the_os_picks_at_the_rendezvous():
    info = discover({})
    assert (info.rank, info.world_size, info.source, info.master_addr) == (0, 1, "single", "127.0.0.1")
    assert info.master_port == dist.AUTO_PORT
    assert discover({"RANK": "0", "WORLD_SIZE": "1"}).master_port == dist.AUTO_PORT


def test_free_port_is_below_the_range_outgoing_connections_take():
    # CI failed once (EADDRINUSE) when an OS-picked port was taken before the master listened on it
    floor = dist._ephemeral_floor()
    ports = {dist.free_port() for _ in range(20)}
    assert all(dist.SLURM_PORT_BASE + dist.SLURM_PORT_SPAN <= p < floor for p in ports) and len(ports) > 1


def test_srun_with_pmi_is_slurm_without_touching_mpi(monkeypatch):
    # srun --mpi=pmi2 exports PMI_RANK/PMI_SIZE equal to the Slurm task: no MPI call is needed.
    # _from_mpi is replaced so the test fails if discover() reaches for mpi4py.
    monkeypatch.setattr(dist, "_from_mpi", lambda env: pytest.fail("MPI must not be initialised"))
    info = discover(SLURM_SRUN_TASK1 | {"PMI_RANK": "1", "PMI_SIZE": "2"})
    assert (info.source, info.rank) == ("slurm", 1)
    with pytest.raises(DistConfigError, match="SLURM_PROCID=1 but the MPI rank is 0"):
        discover(SLURM_SRUN_TASK1 | {"PMI_RANK": "0", "PMI_SIZE": "2"})


def test_discover_has_no_side_effects():
    env = dict(SLURM_SRUN_TASK1)
    discover(env)
    assert env == SLURM_SRUN_TASK1


def test_dist_info_env_has_what_deepspeed_reads():
    exported = discover(TORCHRUN).env()
    assert {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"} <= exported.keys()
    assert exported["LOCAL_SIZE"] == "2" and exported["MASTER_PORT"] == "29511"
