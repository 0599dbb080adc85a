"""A throw-away single-node SLURM cluster on localhost for the SLURM profile's tests.

Everything lives in one temporary folder: slurm.conf (found through SLURM_CONF, so nothing under /etc is read or
written), a fresh munge key and socket, state, spool, logs and the job-completion record. The daemons run in the
foreground, so the PIDs recorded here are the daemons' own; `stop()` ends each by PID and waits for it (and they
get SIGTERM should the test process itself be killed).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "sbatch", "squeue", "scontrol", "scancel", "srun")
NODE = "lgsegnode"


def why_not_available() -> str | None:
    """A sentence saying why this machine cannot bring a cluster up, or None when it can try."""
    if os.geteuid() != 0:
        return "starting SLURM daemons (slurmctld, slurmd, munged) needs root"
    missing = [tool for tool in DAEMONS + CLIENTS if shutil.which(tool) is None]
    if missing:
        return (f"SLURM is not installed (missing {', '.join(missing)}); "
                "`apt-get install slurm-wlm munge` (.ci/run does this when run as root)")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "the 'munge' user does not exist (the munge package creates it)"
    return None


def _die_with_parent() -> None:
    """In a daemon's child process: SIGTERM it should the test process die without tearing down (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Wait until none of `pids` exists any more (zombies included: they are reaped by init once orphaned)."""
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_record(line: str) -> dict[str, str]:
    """`Key=Value Key=Value ...` (scontrol -o, jobcomp/filetxt) -> dict; values may hold spaces up to the next key."""
    fields = {}
    for match in re.finditer(r"(?:^|\s)([A-Za-z:/]+)=(.*?)(?=\s+[A-Za-z:/]+=|\s*$)", line.strip()):
        fields[match.group(1)] = match.group(2)
    return fields


class SlurmCluster:
    """One node (`lgsegnode`, 127.0.0.1) with the given CPUs, memory, GPUs and partitions (name -> is default).

    The node may declare more CPUs and memory than the machine has (SlurmdParameters=config_overrides; nothing is
    enforced: no cgroups), and GPUs backed by /dev/null, so jobs can request them (`--gpus`) and SLURM schedules
    and records them on a machine that has none.
    """

    def __init__(self, cpus: int = 16, mem_mb: int = 65536, gpus: int = 2,
                 partitions: dict[str, bool] | None = None, start_timeout: float = 60):
        self.cpus, self.mem_mb, self.gpus = cpus, mem_mb, gpus
        self.partitions = partitions or {"main": True}
        self.start_timeout = start_timeout
        self.procs: dict[str, subprocess.Popen] = {}
        self.exited: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="lgseg-slurm-"))  # short path: unix socket names are limited
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.txt"
        self.ctld_log = self.root / "slurmctld.log"
        self.slurmd_log = self.root / "slurmd.log"
        self.munge_dir = self.root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}  # for daemons, clients and (exported) jobs
        for key in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))]:
            if key != "SLURM_CONF":
                del self.env[key]

    # ---------------------------------------------------------------- set-up
    def _write_munge_key(self) -> Path:
        munge = pwd.getpwnam("munge")
        self.root.chmod(0o755)  # munged runs as 'munge' and must reach its folder
        self.munge_dir.mkdir()
        self.munge_dir.chmod(0o755)  # munged: "execute permissions for all required" on its socket folder
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (self.munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        return key

    def _write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool"):
            (self.root / sub).mkdir()
        node = (f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb}"
                f" Gres=gpu:{self.gpus} State=UNKNOWN")
        partitions = "\n".join(
            f"PartitionName={name} Nodes={NODE} Default={'YES' if default else 'NO'} MaxTime=INFINITE State=UP"
            for name, default in self.partitions.items())
        self.conf.write_text(f"""\
ClusterName=lgsegtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root / "slurmd.pid"}
SlurmctldLogFile={self.ctld_log}
SlurmdLogFile={self.slurmd_log}
SlurmctldDebug=verbose
SlurmdDebug=verbose
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MinJobAge=3600
ReturnToService=2
MailProg=/bin/true
{node}
{partitions}
""")
        # slurmd drops GPUs without a character device file: links to /dev/null stand in for /dev/nvidia<k>
        devices = []
        for k in range(self.gpus):
            (self.root / f"fakegpu{k}").symlink_to("/dev/null")
            devices.append(f"NodeName={NODE} Name=gpu File={self.root / f'fakegpu{k}'}")
        (self.root / "gres.conf").write_text("\n".join(devices) + "\n")

    def _write_srun_shim(self) -> None:
        """An `srun` first on the jobs' PATH that names this cluster's slurm.conf.

        Inside a job, snakemake-executor-plugin-slurm-jobstep starts the rule with `srun` after removing every
        SLURM_* variable but the job's identity, SLURM_CONF included; a real cluster's nodes find their
        configuration in /etc/slurm or through slurmd, which this throw-away cluster must not touch.
        """
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec {shutil.which("srun")} "$@"\n')
        shim.chmod(0o755)
        self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env.get('PATH', '')}"

    def _spawn(self, name: str, args: list[str], **kwargs) -> None:
        log = open(self.root / f"{name}.stdout", "wb")
        self.procs[name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, **kwargs)
        log.close()

    def start(self) -> str | None:
        """Start munged, slurmctld and slurmd; None once the node is idle, else why not (all daemons stopped)."""
        key = self._write_munge_key()
        self._write_config()
        self._write_srun_shim()
        self._spawn("munged", ["munged", "--foreground", f"--key-file={key}", f"--socket={self.munge_socket}",
                               f"--pid-file={self.munge_dir / 'munged.pid'}",
                               f"--log-file={self.munge_dir / 'munged.log'}",
                               f"--seed-file={self.munge_dir / 'munged.seed'}"], user="munge", group="munge")
        if not self._wait(lambda: self.munge_socket.exists(), 15, "munged"):
            return self._give_up("munged did not create its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
        if not self._wait(self._node_idle, self.start_timeout, "slurmctld", "slurmd"):
            if self.exited:
                return self._give_up(f"{' and '.join(self.exited)} exited")
            return self._give_up(f"the node did not become idle within {self.start_timeout:g} s")
        return None

    def _node_idle(self) -> bool:
        result = self.run(["sinfo", "--noheader", "--nodes", NODE, "--format=%t"], timeout=10)
        return result.returncode == 0 and result.stdout.split()[:1] == ["idle"]

    def _wait(self, ready, timeout: float, *names: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(self.procs[n].poll() is not None for n in names):
                self.exited = [n for n in names if self.procs[n].poll() is not None]
                return False
            if ready():
                return True
            time.sleep(0.5)
        return False

    def _give_up(self, reason: str) -> str:
        tails = []
        for name in ("munge/munged.log", "munged.stdout", "slurmctld.log", "slurmctld.stdout", "slurmd.log",
                     "slurmd.stdout"):
            path = self.root / name
            if path.exists() and path.stat().st_size:
                tails.append(f"--- {name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-8:]))
        self.stop()
        return f"SLURM could not start: {reason}\n" + "\n".join(tails)

    # ---------------------------------------------------------------- use
    def run(self, args: list[str], timeout: int = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run a command against this cluster, hard-killed (`timeout -s KILL`) after `timeout` seconds."""
        return subprocess.run(["timeout", "-s", "KILL", str(timeout), *args], env=self.env, capture_output=True,
                              text=True, **kwargs)

    def jobs(self) -> dict[str, dict[str, str]]:
        """slurmctld's record of every job it still holds (MinJobAge=3600 keeps finished ones), by job id."""
        result = self.run(["scontrol", "--oneliner", "show", "job"])
        assert result.returncode == 0, result.stderr
        records = [parse_record(line) for line in result.stdout.splitlines() if line.startswith("JobId=")]
        return {r["JobId"]: r for r in records}

    def completions(self) -> dict[str, dict[str, str]]:
        """The job-completion log (jobcomp/filetxt): one record per finished job, by job id."""
        if not self.jobcomp.exists():
            return {}
        records = [parse_record(line) for line in self.jobcomp.read_text().splitlines() if line.strip()]
        return {r["JobId"]: r for r in records}

    # ---------------------------------------------------------------- tear-down
    def _our_leftovers(self) -> list[int]:
        """Job processes (slurmstepd, job scripts) started by this cluster: their environment names our slurm.conf."""
        marker = f"SLURM_CONF={self.conf}".encode()
        daemons = {p.pid for p in self.procs.values()}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in daemons or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """Cancel remaining jobs, then end slurmd, slurmctld and munged by their PIDs, and remove the folder."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run(["scancel", "--full", "--user", "root"], timeout=20)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                queue = self.run(["squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING"], timeout=10)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmctld", "slurmd", "munged"):  # slurmctld first: it hangs ~20 s without its slurmd
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            helpers = _children(proc.pid)  # slurmctld's slurmscriptd
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            _wait_gone(helpers, 10)
            if name == "slurmd":
                for pid in self._our_leftovers():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        shutil.rmtree(self.root, ignore_errors=True)
