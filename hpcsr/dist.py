"""Rank discovery and torch.distributed start-up: the one place that knows how processes find each other.

`discover()` reads who this process is (rank, world size, local rank, local world size, master
address and port) from, in order of precedence:

1. ``HPCSR_DIST_SOURCE=env|slurm|mpi|single`` forces one source (``auto`` or unset: the order below);
2. ``env``: explicit variables as torchrun and DeepSpeed's launcher set them (RANK, WORLD_SIZE,
   LOCAL_RANK, LOCAL_WORLD_SIZE or LOCAL_SIZE, MASTER_ADDR, MASTER_PORT);
3. ``slurm``: a Slurm task (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID,
   SLURM_TASKS_PER_NODE, SLURM_JOB_NODELIST, SLURM_JOB_ID), never variables that only srun sets.
   The batch step of a job with several tasks is one process (its SLURM_GTIDS lists only task 0),
   so a batch script that does not call srun does not wait for partners that never start.
   When an MPI launcher started the process inside the allocation (mpirun in a batch script),
   the MPI ranks differ from the Slurm task and MPI describes the processes;
4. ``mpi``: an MPI launcher's environment (PMI_RANK, OMPI_COMM_WORLD_RANK, PMIX_RANK,
   MPI_LOCALRANKID, ...) and then mpi4py, imported only in that case: rank 0 broadcasts its address
   (127.0.0.1 when all ranks share one host);
5. ``single``: one process.

Where no MASTER_PORT is given and rank 0 can tell the others (MPI, or one process), the port is
AUTO_PORT (0) until the rendezvous: rank 0's store then listens on a port the OS picks and MPI
broadcasts it, so no other program can take the port between its choice and its use.

`init_distributed()` exports what DeepSpeed reads (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_SIZE,
MASTER_ADDR, MASTER_PORT), selects DeepSpeed's CPU accelerator when there is no CUDA, keeps
DeepSpeed from JIT-compiling its shared-memory comm op, meets the other ranks at the master's
address and port within a bounded time (``HPCSR_RENDEZVOUS_TIMEOUT_S``, default 300 s; a master
that cannot be reached, a port in use or a rank that never starts ends in a DistRendezvousError
naming host and port, never a hang) and starts torch.distributed there (gloo on CPU, nccl on
GPUs), which `deepspeed.init_distributed` then adopts. `shutdown()` ends a rank without the
abort-at-exit that gloo threads otherwise cause now and then.

`python -m hpcsr.dist` prints what was discovered and checks an all_reduce sum across the ranks.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
import re
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

OVERRIDE_VAR = "HPCSR_DIST_SOURCE"
RENDEZVOUS_TIMEOUT_VAR = "HPCSR_RENDEZVOUS_TIMEOUT_S"
RENDEZVOUS_TIMEOUT_S = 300.0  # default: seconds the ranks may take to meet at the master
SOURCES = ("env", "slurm", "mpi", "single")
LOOPBACK = "127.0.0.1"
# Slurm jobs get a master port in [SLURM_PORT_BASE, SLURM_PORT_BASE + SLURM_PORT_SPAN), from the
# job id: below Linux's ephemeral range (32768+), so concurrent jobs on a node rarely collide.
SLURM_PORT_BASE = 15000
SLURM_PORT_SPAN = 15000
AUTO_PORT = 0  # master_port before the rendezvous when rank 0 picks one (see the module docstring)
# Environment variables that show an MPI launcher started this process (MPICH/Hydra, Intel MPI,
# Slurm's PMI2, OpenMPI, PMIx, MVAPICH).
MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
MPI_MARKER_VARS = MPI_RANK_VARS + ("MPI_LOCALRANKID", "PMI_FD", "PMI_PORT", "HYDI_CONTROL_FD")


class DistConfigError(RuntimeError):
    """The environment describes the processes inconsistently; the message names the variable."""


class DistRendezvousError(RuntimeError):
    """The ranks did not meet at the master's address and port in time; the message names both."""


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits among the processes of one run."""

    rank: int  # global index of this process, 0 .. world_size-1
    world_size: int  # number of processes in the run
    local_rank: int  # index of this process on its host
    local_world_size: int  # number of processes on this host
    master_addr: str  # address of rank 0 (torch.distributed rendezvous)
    master_port: int  # TCP port of the rendezvous on master_addr
    source: str  # where this came from: env, slurm, mpi or single

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def env(self) -> dict[str, str]:
        """The variables torch.distributed and DeepSpeed read, as strings."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_SIZE": str(self.local_world_size),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


# ---------------------------------------------------------------------------- parsing helpers


def _int(environ: Mapping[str, str], name: str, minimum: int = 0) -> int:
    text = environ[name]
    try:
        value = int(text.strip())
    except ValueError:
        raise DistConfigError(f"{name}={text!r} is not an integer; unset it or give a whole number") from None
    if value < minimum:
        raise DistConfigError(f"{name}={text!r} must be >= {minimum}")
    return value


def _port(environ: Mapping[str, str], name: str = "MASTER_PORT") -> int:
    port = _int(environ, name, minimum=1)
    if port > 65535:
        raise DistConfigError(f"{name}={port} is not a TCP port; use a free port in 1024..65535")
    return port


def _check_ranks(info: DistInfo, names: str) -> DistInfo:
    if info.rank >= info.world_size:
        raise DistConfigError(
            f"rank {info.rank} >= world size {info.world_size} (from {names}); the rank must be below the world size"
        )
    if info.local_rank >= info.local_world_size:
        raise DistConfigError(
            f"local rank {info.local_rank} >= local world size {info.local_world_size} (from {names})"
        )
    if info.local_world_size > info.world_size:
        raise DistConfigError(f"local world size {info.local_world_size} > world size {info.world_size} (from {names})")
    return info


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux's ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on `host` now, for MASTER_PORT of processes started apart (torchrun-style).

    Drawn below the kernel's ephemeral range, so that no outgoing connection can take it before the
    master listens on it (an OS-picked port can be, and then the master fails with EADDRINUSE).
    """
    floor = _ephemeral_floor()
    low = SLURM_PORT_BASE + SLURM_PORT_SPAN  # above the ports Slurm jobs derive from their id
    candidates = random.Random().sample(range(low, floor), min(64, max(floor - low, 0)))
    for port in candidates + [0]:  # 0: the OS picks, where the range below its own is empty or full
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise DistConfigError(f"no free TCP port on {host}")


def expand_nodelist(nodelist: str, name: str = "SLURM_JOB_NODELIST") -> list[str]:
    """Expand Slurm's compressed host list, e.g. 'node[01-03,07],gpu5' -> node01..node03, node07, gpu5.

    Several bracket groups in one name expand as a product ('r[1-2]n[1-2]' -> r1n1 r1n2 r2n1 r2n2);
    zero padding follows the lower bound. `name` is only used in error messages.
    """

    def fail(why: str) -> DistConfigError:
        return DistConfigError(f"{name}={nodelist!r}: {why}; expected a Slurm host list such as 'node[01-04,07],gpu5'")

    def split_top(text: str) -> list[str]:
        parts, depth, start = [], 0, 0
        for i, ch in enumerate(text):
            depth += {"[": 1, "]": -1}.get(ch, 0)
            if depth not in (0, 1):
                raise fail("brackets are nested or unbalanced")
            if ch == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        if depth:
            raise fail("a '[' is not closed")
        parts.append(text[start:])
        return parts

    def expand_range(spec: str) -> list[str]:
        out = []
        for item in spec.split(","):
            lo, dash, hi = item.partition("-")
            if not lo.isdigit() or (dash and not hi.isdigit()):
                raise fail(f"'{item}' is not a number or a range a-b")
            if dash and int(hi) < int(lo):
                raise fail(f"range '{item}' goes backwards")
            out += [str(n).zfill(len(lo)) for n in range(int(lo), int(hi if dash else lo) + 1)]
        return out

    def expand_name(text: str) -> list[str]:
        match = re.search(r"\[([^\]]*)\]", text)
        if match is None:
            return [text]
        head, tail = text[: match.start()], text[match.end() :]
        return [head + mid + rest for mid in expand_range(match.group(1)) for rest in expand_name(tail)]

    hosts = []
    for part in split_top(nodelist.strip()):
        if not part.strip():
            raise fail("empty host name")
        hosts += expand_name(part.strip())
    return hosts


def parse_tasks_per_node(text: str, name: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """Slurm's per-node task counts, e.g. '2(x3),1' -> [2, 2, 2, 1]."""
    counts = []
    for item in text.strip().split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if match is None:
            raise DistConfigError(f"{name}={text!r}: '{item}' is not 'N' or 'N(xK)' (e.g. '2(x3),1')")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


# ---------------------------------------------------------------------------- the sources


def _from_env(environ: Mapping[str, str]) -> DistInfo:
    missing = [v for v in ("RANK", "WORLD_SIZE") if v not in environ]
    if missing:
        raise DistConfigError(
            f"explicit launch variables incomplete: {', '.join(missing)} not set "
            "(set RANK and WORLD_SIZE together, or unset both)"
        )
    rank, world = _int(environ, "RANK"), _int(environ, "WORLD_SIZE", minimum=1)
    addr = environ.get("MASTER_ADDR", "").strip()
    if world > 1 and not addr:
        raise DistConfigError(f"WORLD_SIZE={world} but MASTER_ADDR is not set: set it to rank 0's host")
    addr = addr or LOOPBACK
    if world > 1 and "MASTER_PORT" not in environ:
        raise DistConfigError(f"WORLD_SIZE={world} but MASTER_PORT is not set: set it to a free port of rank 0's host")
    port = _port(environ) if "MASTER_PORT" in environ else AUTO_PORT
    local_size_var = next((v for v in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE") if v in environ), None)
    single_host = addr in (LOOPBACK, "localhost", "::1")
    if "LOCAL_RANK" in environ:
        local_rank = _int(environ, "LOCAL_RANK")
    elif single_host:
        local_rank = rank  # all processes share this host
    else:
        raise DistConfigError(
            f"LOCAL_RANK is not set and MASTER_ADDR={addr!r} is another host: "
            "set LOCAL_RANK to this process's index on its host"
        )
    if local_size_var:
        local_size = _int(environ, local_size_var, minimum=1)
    elif single_host:
        local_size = world
    else:
        raise DistConfigError(
            f"LOCAL_WORLD_SIZE (or LOCAL_SIZE) is not set and MASTER_ADDR={addr!r} "
            "is another host: set it to the number of processes on this host"
        )
    return _check_ranks(
        DistInfo(rank, world, local_rank, local_size, addr, port, "env"),
        "RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE",
    )


def _slurm_batch_step(environ: Mapping[str, str], tasks_here: int) -> bool:
    """True in the batch step (the job script itself): one process, whatever SLURM_NTASKS says.

    slurmstepd sets SLURM_GTIDS (this step's task ids on this node) in every step; the batch step
    has the single task 0. An srun step with one task on this node looks the same on a node that
    the job gives one task; only there does the absence of srun's SLURM_STEP_ID decide.
    """
    gtids = environ.get("SLURM_GTIDS", "").strip()
    if gtids != "0" or environ.get("SLURM_PROCID", "0").strip() != "0":
        return False
    return tasks_here > 1 or "SLURM_STEP_ID" not in environ


def _from_slurm(environ: Mapping[str, str]) -> DistInfo:
    needed = ("SLURM_JOB_ID", "SLURM_PROCID")
    missing = [v for v in needed if v not in environ]
    if missing:
        raise DistConfigError(
            f"Slurm task variables missing: {', '.join(missing)} not set "
            "(run inside a Slurm job step, or choose another HPCSR_DIST_SOURCE)"
        )
    job_id = _int(environ, "SLURM_JOB_ID", minimum=1)
    rank = _int(environ, "SLURM_PROCID")
    ntasks_var = next((v for v in ("SLURM_NTASKS", "SLURM_NPROCS") if v in environ), None)
    world = _int(environ, ntasks_var, minimum=1) if ntasks_var else 1
    node_id = _int(environ, "SLURM_NODEID") if "SLURM_NODEID" in environ else 0
    nodelist_var = next((v for v in ("SLURM_JOB_NODELIST", "SLURM_NODELIST") if v in environ), None)
    hosts = expand_nodelist(environ[nodelist_var], nodelist_var) if nodelist_var else [LOOPBACK]

    if "SLURM_TASKS_PER_NODE" in environ:
        per_node = parse_tasks_per_node(environ["SLURM_TASKS_PER_NODE"])
        if node_id >= len(per_node):
            raise DistConfigError(
                f"SLURM_NODEID={node_id} but SLURM_TASKS_PER_NODE="
                f"{environ['SLURM_TASKS_PER_NODE']!r} lists {len(per_node)} node(s)"
            )
        tasks_here = per_node[node_id]
    elif "SLURM_NTASKS_PER_NODE" in environ:
        tasks_here = _int(environ, "SLURM_NTASKS_PER_NODE", minimum=1)
    elif len(hosts) == 1:
        tasks_here = world
    else:
        raise DistConfigError(
            f"{nodelist_var} has {len(hosts)} hosts but neither SLURM_TASKS_PER_NODE nor "
            "SLURM_NTASKS_PER_NODE is set: cannot tell how many tasks share this host"
        )

    port = _port(environ) if "MASTER_PORT" in environ else SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN
    addr = LOOPBACK if len(hosts) == 1 else hosts[0]
    if world > 1 and _slurm_batch_step(environ, tasks_here):
        return DistInfo(0, 1, 0, 1, LOOPBACK, port, "slurm")
    local_rank = _int(environ, "SLURM_LOCALID") if "SLURM_LOCALID" in environ else rank
    return _check_ranks(
        DistInfo(rank, world, local_rank, min(tasks_here, world), addr, port, "slurm"),
        f"SLURM_PROCID, {ntasks_var or 'SLURM_NTASKS'}, SLURM_LOCALID, SLURM_TASKS_PER_NODE",
    )


def mpi_launched(environ: Mapping[str, str]) -> bool:
    """True when an MPI launcher (mpirun/mpiexec, or srun with a PMI plugin) started this process."""
    return any(v in environ for v in MPI_MARKER_VARS)


def _mpi_world_from_env(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(rank, size) as the MPI launcher exported them, without initialising MPI; None if unknown."""
    for rank_var, size_var in (
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
        ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
    ):
        if rank_var in environ and size_var in environ:
            return _int(environ, rank_var), _int(environ, size_var, minimum=1)
    return None


_MPI_INFO: DistInfo | None = None  # discovered once per process: it costs collective MPI calls
_INFO: DistInfo | None = None  # set by init_distributed once torch.distributed runs


def _from_mpi(environ: Mapping[str, str]) -> DistInfo:
    global _MPI_INFO
    if _MPI_INFO is not None:
        return _MPI_INFO
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise DistConfigError(
            f"an MPI launcher started this process but mpi4py cannot be imported ({err}); "
            "install mpi4py built against the MPI that launched it"
        ) from None
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank, local_size = local.Get_rank(), local.Get_size()
    local.Free()
    if rank == 0:
        addr = LOOPBACK if local_size == world else socket.gethostname()
        port = _port(environ) if "MASTER_PORT" in environ else AUTO_PORT
        chosen = (environ.get("MASTER_ADDR", "").strip() or addr, port)
    else:
        chosen = None
    addr, port = comm.bcast(chosen, root=0)
    _MPI_INFO = _check_ranks(DistInfo(rank, world, local_rank, local_size, addr, port, "mpi"), "MPI_COMM_WORLD")
    return _MPI_INFO


def _single(environ: Mapping[str, str]) -> DistInfo:
    port = _port(environ) if "MASTER_PORT" in environ else AUTO_PORT
    return DistInfo(0, 1, 0, 1, LOOPBACK, port, "single")


def discover(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Who this process is, from `environ` (default os.environ); see the module docstring.

    Changes nothing; only the MPI source communicates (mpi4py initialises MPI, rank 0 broadcasts).
    After init_distributed, discover() returns what it started with (the port rank 0 listens on).
    Raises DistConfigError naming the variable when a value is bad or the sources disagree.
    """
    if environ is None and _INFO is not None:
        return _INFO
    environ = os.environ if environ is None else environ
    forced = environ.get(OVERRIDE_VAR, "").strip().lower()
    if forced not in ("", "auto") + SOURCES:
        raise DistConfigError(
            f"{OVERRIDE_VAR}={environ[OVERRIDE_VAR]!r}: allowed are {', '.join(SOURCES)} or auto (or unset)"
        )
    readers = {"env": _from_env, "slurm": _from_slurm, "mpi": _from_mpi, "single": _single}
    if forced in SOURCES:
        return readers[forced](environ)
    if "RANK" in environ or "WORLD_SIZE" in environ:
        return _from_env(environ)
    if "SLURM_JOB_ID" in environ and "SLURM_PROCID" in environ:
        slurm = _from_slurm(environ)
        if not mpi_launched(environ):
            return slurm
        # srun with a PMI plugin: MPI and Slurm name the same processes. mpirun inside a job: they differ.
        mpi = _mpi_world_from_env(environ)
        if mpi is not None and mpi[1] == slurm.world_size:
            if mpi[0] != slurm.rank:
                raise DistConfigError(
                    f"SLURM_PROCID={slurm.rank} but the MPI rank is {mpi[0]} in a world of "
                    f"{mpi[1]}: set {OVERRIDE_VAR}=mpi or {OVERRIDE_VAR}=slurm"
                )
            return slurm
        return _from_mpi(environ)
    if mpi_launched(environ):
        return _from_mpi(environ)
    return _single(environ)


# ---------------------------------------------------------------------------- start and stop


def _writable_extensions_dir() -> str:
    """A folder torch may JIT-build C++ extensions into: the user cache if writable, else tmp."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (
        os.path.join(cache, "hpcsr", "torch_extensions"),
        os.path.join(tempfile.gettempdir(), f"hpcsr-torch-extensions-{os.getuid()}"),
    ):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise DistConfigError("no writable folder for torch extensions: set TORCH_EXTENSIONS_DIR")


def _rendezvous_timeout(environ: Mapping[str, str]) -> float:
    if RENDEZVOUS_TIMEOUT_VAR not in environ:
        return RENDEZVOUS_TIMEOUT_S
    text = environ[RENDEZVOUS_TIMEOUT_VAR]
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DistConfigError(f"{RENDEZVOUS_TIMEOUT_VAR}={text!r}: give a positive number of seconds")
    return value


def _cause(err: Exception) -> str:
    """torch's error message on one line, at most 300 characters."""
    return " ".join(str(err).split())[:300] or type(err).__name__


def _rendezvous_error(info: DistInfo, port: int, timeout_s: float, cause: str) -> DistRendezvousError:
    return DistRendezvousError(
        f"rank {info.rank} of {info.world_size} on host {socket.gethostname()}: no rendezvous with the "
        f"master at {info.master_addr}:{port} within {timeout_s:g} s ({cause}). Check that "
        f"{info.master_addr} is rank 0's host and reachable from here, that port {port} is free "
        f"there (MASTER_PORT chooses another) and that every rank started; {RENDEZVOUS_TIMEOUT_VAR} sets the limit"
    )


def _rendezvous(info: DistInfo, timeout_s: float):
    """A TCPStore at the master: rank 0 serves it, the others connect; returns (store, info).

    With a given port rank 0 waits for every rank. With AUTO_PORT rank 0 listens on a port the OS
    picks and MPI (the one source that leaves the port to rank 0 with several ranks) broadcasts it;
    the returned info carries it. Raises DistRendezvousError naming this host, the master's address
    and port when the store cannot listen (port in use), cannot be reached, or not every rank
    arrives within timeout_s.
    """
    from torch.distributed import TCPStore

    timeout = datetime.timedelta(seconds=timeout_s)
    addr, world, port = info.master_addr, info.world_size, info.master_port
    if port != AUTO_PORT:
        try:
            return TCPStore(addr, port, world, info.rank == 0, timeout=timeout, wait_for_workers=True), info
        except RuntimeError as err:  # torch's DistStoreError and DistNetworkError are RuntimeErrors
            raise _rendezvous_error(info, port, timeout_s, _cause(err)) from None
    store, failure = None, None
    if info.rank == 0:
        try:
            store = TCPStore(addr, 0, world, True, timeout=timeout, wait_for_workers=False)
            port = store.port
        except RuntimeError as err:
            failure = _cause(err)
    if world > 1:
        from mpi4py import MPI

        port, failure = MPI.COMM_WORLD.bcast((port, failure), root=0)
        if failure is not None and info.rank > 0:
            failure = f"rank 0: {failure}"
    if failure is None and info.rank > 0:
        try:
            store = TCPStore(addr, port, world, False, timeout=timeout)
        except RuntimeError as err:
            failure = _cause(err)
    if failure is not None:
        raise _rendezvous_error(info, port, timeout_s, failure)
    return store, dataclasses.replace(info, master_port=port)


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Discover this process's place, export it, meet the other ranks and start torch.distributed.

    backend: 'gloo' or 'nccl'; default nccl when CUDA is available, else gloo.
    timeout_s: seconds collective operations may wait for the other ranks; the rendezvous waits at
    most HPCSR_RENDEZVOUS_TIMEOUT_S (default 300 s), and fails with DistRendezvousError.
    Idempotent: a second call returns the first call's DistInfo.
    """
    global _INFO
    import torch
    import torch.distributed as tdist

    if _INFO is not None and tdist.is_initialized():
        return _INFO
    info = discover()
    has_cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if has_cuda else "gloo")
    if backend not in ("gloo", "nccl"):
        raise DistConfigError(f"backend={backend!r}: allowed are 'gloo' (CPU) and 'nccl' (CUDA GPUs)")
    if backend == "nccl" and not has_cuda:
        raise DistConfigError("backend='nccl' needs CUDA GPUs and none is visible: use backend='gloo'")
    if timeout_s <= 0:
        raise DistConfigError(f"timeout_s={timeout_s}: must be a positive number of seconds")
    rendezvous_s = _rendezvous_timeout(os.environ)

    os.environ.update(info.env())
    if not has_cuda and os.environ.get("DS_ACCELERATOR", "cuda") == "cuda":
        os.environ["DS_ACCELERATOR"] = "cpu"
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", _writable_extensions_dir())
    if has_cuda:
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())

    import deepspeed

    # The CPU accelerator would JIT-compile a shared-memory all-reduce op (~60 s) at first start.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    timeout = datetime.timedelta(seconds=timeout_s)
    if not tdist.is_initialized():
        store, info = _rendezvous(info, rendezvous_s)
        os.environ["MASTER_PORT"] = str(info.master_port)  # the port rank 0's store listens on
        tdist.init_process_group(backend, store=store, rank=info.rank, world_size=info.world_size, timeout=timeout)
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False, timeout=timeout)
    if tdist.get_world_size() != info.world_size or tdist.get_rank() != info.rank:
        raise DistConfigError(
            f"torch.distributed started as rank {tdist.get_rank()} of {tdist.get_world_size()} "
            f"but discovery said {info.rank} of {info.world_size} ({info.source})"
        )
    _INFO = info
    return info


def shutdown(exit_code: int = 0) -> None:
    """End this rank now: destroy the process group (no barrier), flush output, os._exit(exit_code).

    os._exit skips the interpreter's teardown, during which gloo's threads otherwise abort the
    process now and then after all work is done. MPI is finalised first when mpi4py started it.
    """
    try:
        tdist = sys.modules.get("torch.distributed")  # not imported: nothing to destroy
        if tdist is not None and tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
    finally:
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
            mpi.Finalize()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(exit_code)


SELF_CHECK_PREFIX = "hpcsr.dist "


def read_self_check(output: str) -> list[dict]:
    """The records `python -m hpcsr.dist` printed (one per rank) in `output`, sorted by rank."""
    import json

    found = re.findall(re.escape(SELF_CHECK_PREFIX) + r"(\{[^{}]*\})", output)
    return sorted((json.loads(text) for text in found), key=lambda r: r["rank"])


def _self_check(argv: list[str] | None = None) -> None:
    """`python -m hpcsr.dist`: print the discovered place and check an all_reduce sum across ranks."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m hpcsr.dist", description=_self_check.__doc__)
    parser.add_argument("--discover-only", action="store_true", help="print discover() and exit")
    parser.add_argument("--backend", choices=("gloo", "nccl"), default=None, help="default: nccl with CUDA, else gloo")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the other ranks")
    args = parser.parse_args(argv)
    try:
        info = discover() if args.discover_only else init_distributed(args.backend, args.timeout)
    except (DistConfigError, DistRendezvousError) as err:
        print(f"hpcsr.dist: {err}", file=sys.stderr)
        shutdown(2)
    record = dataclasses.asdict(info) | {"host": socket.gethostname(), "pid": os.getpid()}
    code = 0
    if not args.discover_only:
        import torch
        import torch.distributed as tdist

        value = torch.tensor([float(info.rank + 1)])
        tdist.all_reduce(value)
        expected = info.world_size * (info.world_size + 1) / 2
        record |= {"all_reduce_sum": value.item(), "expected": expected, "backend": tdist.get_backend()}
        code = 0 if value.item() == expected else 1
    sys.stdout.write(SELF_CHECK_PREFIX + json.dumps(record, sort_keys=True) + "\n")  # one write: ranks share stdout
    shutdown(code)


if __name__ == "__main__":
    _self_check()
