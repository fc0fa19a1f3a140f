"""A throw-away, single-node SLURM cluster on localhost, for integration tests.

    with slurm_cluster() as cluster:   # pytest: the module-scoped fixture `slurm` in
        records = run_with_profile(    # tests/test_slurm_cluster.py wraps exactly this
            workdir, snakefile, extra_args, timeout=300, env=cluster.env)

What `slurm_cluster()` does (Debian/Ubuntu, as root):
  * skips (pytest.skip) unless root + apt-get + opted in (SERS_SLURM_TESTS=1, or CI=true;
    SERS_SLURM_TESTS=0 always skips), and when SLURM daemons already run here (a real cluster);
  * installs munge, slurmctld, slurmd, slurm-client, slurmdbd and mariadb-server if missing, with
    service auto-start blocked (policy-rc.d) so apt starts nothing;
  * starts, by recorded PID: munged (unless one already runs), a private MariaDB (own datadir and TCP
    port on 127.0.0.1), slurmdbd, slurmctld, slurmd; config in /etc/slurm (slurm.conf, gres.conf,
    cgroup.conf, slurmdbd.conf; files already there are moved aside and put back afterwards).
    /etc/slurm and not $SLURM_CONF, because the slurm-jobstep plugin drops every SLURM_* variable
    (SLURM_CONF included) before the `srun` it runs inside each job;
  * one node (this machine; advertises at least 16 CPUs / 64 GB so that real resource requests
    fit, nothing enforces them) with fake GPUs `gpu:a100:<gpus>` (character devices), one
    partition `sers_test` (default), an account `sers_test_acct`, accounting through slurmdbd
    (so `sacct` works: the plugin's default status command, and the test's source of truth);
  * a TaskProlog that logs SLURM_JOB_ID/SLURM_STEP_ID/CUDA_VISIBLE_DEVICES of every task, so the test
    sees what each job got without the workflow's cooperation;
  * on exit (also on failure or Ctrl-C): cancels jobs, stops the daemons it started by PID (SIGTERM,
    then SIGKILL), kills leftover slurmstepd by PID, restores /etc/slurm, deletes its temp dir
    (daemon logs are copied to `keep_logs`, if given).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE_DIR = REPO_ROOT / "profiles" / "slurm"

APT_PACKAGES = ("munge", "slurm-client", "slurmctld", "slurmd", "slurmdbd", "mariadb-server")
CLUSTER_NAME = "serstest"
PARTITION = "sers_test"
ACCOUNT = "sers_test_acct"
GPU_MODEL = "a100"
ETC_SLURM = Path("/etc/slurm")
CONF_FILES = ("slurm.conf", "gres.conf", "cgroup.conf", "slurmdbd.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
SLURM_DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "slurmstepd")
TERMINAL_STATES = (
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
)
SACCT_FIELDS = (
    "JobID", "JobName", "Comment", "Account", "Partition", "State", "ExitCode", "ReqTRES",
    "AllocTRES", "NodeList", "Timelimit", "Submit", "Start", "End", "Elapsed", "SubmitLine",
)


# --------------------------------------------------------------------------------------------
# skipping


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def skip_reason() -> str | None:
    """Why the SLURM cluster tests cannot / should not run here (None: they can)."""
    opt = os.environ.get("SERS_SLURM_TESTS", "").strip()
    if opt == "0":
        return "SERS_SLURM_TESTS=0"
    if opt != "1" and not _truthy(os.environ.get("CI")):
        return "local SLURM cluster test is opt-in: set SERS_SLURM_TESTS=1 (on by default when CI=true)"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (installs packages, starts munge/MariaDB/SLURM daemons)"
    if shutil.which("apt-get") is None:
        return "needs apt-get (Debian/Ubuntu) to install SLURM"
    running = _running_processes(SLURM_DAEMONS)
    if running:
        return f"SLURM processes already running here ({running}); not touching a real cluster"
    return None


# --------------------------------------------------------------------------------------------
# small process helpers


def _running_processes(names: Sequence[str]) -> list[tuple[int, str]]:
    """(pid, name) of live (non-zombie) processes whose command name is in `names`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ...": comm may contain spaces/parentheses.
        comm = text[text.find("(") + 1 : text.rfind(")")]
        state = text[text.rfind(")") + 2 : text.rfind(")") + 3]
        if comm in names and state not in ("Z", "X"):
            found.append((int(stat.parent.name), comm))
    return sorted(found)


def _run(cmd: Sequence[str], *, timeout: float = 60, check: bool = True, env=None,
         input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        list(cmd), text=True, capture_output=True, timeout=timeout, env=env, input=input
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"<{path}: unreadable>"
    return "\n".join(lines[-n:])


def _wait_for(what: str, predicate, timeout: float, interval: float = 0.2, daemons=()):
    deadline = time.monotonic() + timeout
    while True:
        for d in daemons:
            d.check_alive()
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclasses.dataclass
class _Daemon:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self):
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with {self.popen.returncode}:\n{_tail(self.log)}"
            )

    def stop(self, timeout: float = 20):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def _start(name: str, argv: Sequence[str], log: Path, **popen_kw) -> _Daemon:
    logf = open(log, "ab")
    try:
        popen = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, **popen_kw,
        )
    finally:
        logf.close()
    return _Daemon(name, popen, log)


# --------------------------------------------------------------------------------------------
# packages


def _dpkg_installed(pkg: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
    )
    return proc.returncode == 0 and "install ok installed" in proc.stdout


@contextlib.contextmanager
def _no_service_autostart():
    """Make invoke-rc.d / deb-systemd-invoke refuse to start services while apt runs."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# temporary, written by sers tests/slurm/cluster.py\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def ensure_packages(packages: Sequence[str] = APT_PACKAGES) -> list[str]:
    """apt-get install the missing packages; returns those installed."""
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        return []
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _no_service_autostart():
        _run(["apt-get", "update", "-q"], timeout=300, env=env)
        _run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            timeout=900, env=env,
        )
    return missing


# --------------------------------------------------------------------------------------------
# the cluster


@dataclasses.dataclass
class SlurmCluster:
    run_dir: Path          # temp dir with state, spool, logs (deleted on exit)
    log_dir: Path          # daemon logs + task_env.log
    cluster_name: str
    partition: str
    account: str
    node: str
    gpu_model: str
    env: dict              # environment for `snakemake --profile profiles/slurm` (partition/account)
    daemons: list = dataclasses.field(default_factory=list, repr=False)
    installed: list = dataclasses.field(default_factory=list)  # packages apt-installed by us
    timings: dict = dataclasses.field(default_factory=dict)  # s: install, then cumulative start

    @property
    def task_env_log(self) -> Path:
        return self.log_dir / "task_env.log"

    def task_env(self) -> dict[str, list[dict]]:
        """job id -> [{step, CUDA_VISIBLE_DEVICES, ...}] as logged by the TaskProlog."""
        out: dict[str, list[dict]] = {}
        if not self.task_env_log.exists():
            return out
        for line in self.task_env_log.read_text().splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if "job" in fields:
                out.setdefault(fields["job"], []).append(fields)
        return out

    def daemon_logs(self, n: int = 30) -> str:
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            parts.append(f"----- {log.name} -----\n{_tail(log, n)}")
        return "\n".join(parts)


def _slurmd_hardware() -> tuple[str, int, int]:
    """(node name, CPUs, RealMemory in MB) as `slurmd -C` reports them."""
    first = _run(["slurmd", "-C"]).stdout.splitlines()[0]
    fields = dict(kv.split("=", 1) for kv in first.split() if "=" in kv)
    return fields["NodeName"], int(fields["CPUs"]), int(fields["RealMemory"])


def _fake_gpus(run: Path, n: int) -> list[Path]:
    """n fake GPU device files dev/nvidia0..n-1: character devices (1:3, like /dev/null).

    A plain file is only half accepted by slurmd and leaves CUDA_VISIBLE_DEVICES empty.
    """
    (run / "dev").mkdir()
    devices = []
    for i in range(n):
        dev = run / "dev" / f"nvidia{i}"
        try:
            os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))
        except OSError:
            dev.symlink_to("/dev/null")  # no CAP_MKNOD: stat() through the link sees a chr dev
        devices.append(dev)
    return devices


def _write_configs(run: Path, node: str, cpus: int, mem_mb: int, gpus: int,
                   ports: dict) -> dict[str, str]:
    devices = _fake_gpus(run, gpus)
    gpu_files = str(devices[0]) if gpus == 1 else f"{run}/dev/nvidia[0-{gpus - 1}]"
    task_prolog = run / "task_prolog.sh"
    task_prolog.write_text(
        "#!/bin/sh\n"
        "# Log what every task of every job got; stdout lines of a TaskProlog are parsed by\n"
        "# slurmstepd (export/print/unset), so log to a file only.\n"
        f'echo "job=$SLURM_JOB_ID step=${{SLURM_STEP_ID:-}} '
        f'CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES-<unset>}} '
        f'SLURM_JOB_GPUS=${{SLURM_JOB_GPUS-<unset>}}" >> {run}/log/task_env.log\n'
    )
    task_prolog.chmod(0o755)
    slurm_conf = f"""\
# Written by sers tests/slurm/cluster.py for a throw-away single-node test cluster.
ClusterName={CLUSTER_NAME}
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
StateSaveLocation={run}/state
SlurmdSpoolDir={run}/spool
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd.pid
SlurmctldLogFile={run}/log/slurmctld.log
SlurmdLogFile={run}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Jobs run at the nice value of the sbatch that submitted them (not slurmd's): a test that lowers
# its CPU priority lowers its jobs' too.
PropagatePrioProcess=1
TaskProlog={task_prolog}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default memory per CPU a job that names no memory gets the whole node.
DefMemPerCPU=100
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for 5 minutes.
MinJobAge=300
KillWait=5
InactiveLimit=0
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
AccountingStorageTRES=gres/gpu,gres/gpu:{GPU_MODEL}
AccountingStoreFlags=job_comment
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# config_overrides: slurmd takes CPUs/RealMemory below as given, even when larger than the
# machine, so real-pipeline requests (e.g. 8 CPUs, 16 GB) are schedulable; nothing enforces them
# (no cgroups, jobacct_gather/none).
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:{GPU_MODEL}:{gpus} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    gres_conf = f"""\
AutoDetect=off
NodeName={node} Name=gpu Type={GPU_MODEL} File={gpu_files}
"""
    cgroup_conf = """\
# Unused: the test cluster runs with ProctrackType=proctrack/linuxproc and TaskPlugin=task/none
# (no cgroups in containers / CI runners). Present so that no stale system file is picked up.
"""
    slurmdbd_conf = f"""\
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mysql']}
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={run}/slurmdbd.pid
LogFile={run}/log/slurmdbd.log
"""
    return {
        "slurm.conf": slurm_conf,
        "gres.conf": gres_conf,
        "cgroup.conf": cgroup_conf,
        "slurmdbd.conf": slurmdbd_conf,
    }


@contextlib.contextmanager
def _etc_slurm_files(contents: dict[str, str], backup_dir: Path):
    """Install config files in /etc/slurm; move existing ones aside and restore them on exit."""
    ETC_SLURM.mkdir(parents=True, exist_ok=True)
    backup_dir.mkdir(parents=True, exist_ok=True)
    moved = []
    try:
        for name, text in contents.items():
            target = ETC_SLURM / name
            if target.exists() or target.is_symlink():
                shutil.move(str(target), backup_dir / name)
                moved.append(name)
            target.write_text(text)
            target.chmod(0o600 if name == "slurmdbd.conf" else 0o644)
        yield
    finally:
        for name in contents:
            (ETC_SLURM / name).unlink(missing_ok=True)
        for name in moved:
            shutil.move(str(backup_dir / name), ETC_SLURM / name)


def _ensure_munge(run: Path, stack: contextlib.ExitStack) -> None:
    """Start munged as the munge user unless one is already running (then reuse it)."""
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
        stack.callback(MUNGE_KEY.unlink, missing_ok=True)
    if _running_processes(("munged",)):
        return
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    MUNGE_SOCKET_DIR.chmod(0o755)
    log = run / "log" / "munged.log"
    log.touch()
    shutil.chown(log, "munge", "munge")
    munged = _start(
        "munged", ["munged", "--foreground", f"--log-file={log}"], log,
        user="munge", group="munge", extra_groups=[],
    )
    stack.callback(munged.stop)
    _wait_for(
        "munged",
        lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0,
        timeout=20, daemons=[munged],
    )


def _start_mariadb(run: Path, port: int, stack: contextlib.ExitStack) -> _Daemon:
    mysql_dir = run / "mysql"
    mysql_dir.mkdir()
    shutil.chown(mysql_dir, "mysql", "mysql")
    datadir = mysql_dir / "data"
    innodb = ["--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M"]
    _run(
        ["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=mysql",
         "--auth-root-authentication-method=normal", "--skip-test-db", *innodb],
        timeout=120,
    )
    log = run / "log" / "mariadbd.log"
    mariadbd = _start(
        "mariadbd",
        ["mariadbd", "--no-defaults", f"--datadir={datadir}", "--user=mysql",
         f"--socket={mysql_dir}/mysqld.sock", f"--pid-file={mysql_dir}/mysqld.pid",
         f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve", *innodb],
        log,
    )
    stack.callback(mariadbd.stop)
    _wait_for(
        "MariaDB",
        lambda: subprocess.run(
            ["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "-e", "SELECT 1"],
            capture_output=True,
        ).returncode == 0,
        timeout=60, daemons=[mariadbd],
    )
    return mariadbd


def _node_state(node: str) -> str:
    proc = subprocess.run(
        ["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True, timeout=20
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _cancel_jobs_and_reap(timeout: float = 30) -> None:
    """Cancel every job of the test cluster and wait (bounded) until none runs any more."""
    with contextlib.suppress(Exception):
        ids = _run(["squeue", "-h", "-o", "%i"], check=False, timeout=20).stdout.split()
        if ids:
            _run(["scancel", *ids], check=False, timeout=20)
            _wait_for(
                "cancelled jobs to end",
                lambda: not _run(["squeue", "-h", "-t", "R,CG", "-o", "%i"], check=False,
                                 timeout=20).stdout.strip(),
                timeout=timeout, interval=0.5,
            )


def _kill_leftover_stepd() -> None:
    # skip_reason() made sure no SLURM process ran before we started, so any slurmstepd is ours.
    for pid, _ in _running_processes(("slurmstepd",)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def slurm_cluster(
    keep_logs: Path | None = None,
    *,
    gpus: int = 1,
    min_cpus: int = 16,
    min_memory_mb: int = 64000,
    node_timeout: float = 60,
) -> Iterator[SlurmCluster]:
    """Start a single-node SLURM cluster (with accounting) on localhost; stop it on exit.

    keep_logs: directory to copy the daemon logs (and task_env.log) to before cleaning up.
    gpus: fake `gpu:a100` devices on the node.
    min_cpus / min_memory_mb: the node advertises max(real, min) CPUs / MB of memory.
    """
    reason = skip_reason()
    if reason:
        import pytest  # only here: the rest of this module also works outside pytest

        pytest.skip(reason)

    timings = {}
    t0 = time.monotonic()
    installed = ensure_packages()
    timings["install"] = time.monotonic() - t0

    t1 = time.monotonic()
    run = Path(tempfile.mkdtemp(prefix="sers-slurm-"))
    run.chmod(0o755)  # mysql and munge users need to reach their sub-dirs
    for sub in ("state", "spool", "log"):
        (run / sub).mkdir()
    daemons: list[_Daemon] = []
    with contextlib.ExitStack() as stack:
        # LIFO: registered first = runs last.
        stack.callback(shutil.rmtree, run, ignore_errors=True)
        if keep_logs is not None:
            stack.callback(shutil.copytree, run / "log", Path(keep_logs), dirs_exist_ok=True)
        ports = {k: _free_port() for k in ("slurmctld", "slurmd", "slurmdbd", "mysql")}
        node, cpus, mem_mb = _slurmd_hardware()
        configs = _write_configs(
            run, node, max(cpus, min_cpus), max(mem_mb, min_memory_mb), gpus, ports
        )
        stack.enter_context(_etc_slurm_files(configs, run / "etc-slurm-backup"))
        _ensure_munge(run, stack)
        timings["munge"] = time.monotonic() - t1
        daemons.append(_start_mariadb(run, ports["mysql"], stack))
        timings["mariadb"] = time.monotonic() - t1

        def start_slurm(name: str, argv: list[str]) -> _Daemon:
            d = _start(name, argv, run / "log" / f"{name}.out")
            daemons.append(d)
            stack.callback(d.stop)
            return d

        start_slurm("slurmdbd", ["slurmdbd", "-D"])
        _wait_for(
            "slurmdbd",
            lambda: subprocess.run(["sacctmgr", "-n", "list", "cluster"],
                                   capture_output=True).returncode == 0,
            timeout=60, daemons=daemons,
        )
        for args in (
            ["add", "cluster", CLUSTER_NAME],
            ["add", "account", ACCOUNT, "Description=sers tests", "Organization=sers"],
            ["add", "user", "root", f"Account={ACCOUNT}"],
        ):
            _run(["sacctmgr", "-i", *args], timeout=30)
        timings["slurmdbd"] = time.monotonic() - t1

        start_slurm("slurmctld", ["slurmctld", "-D", "-i"])
        stack.callback(_kill_leftover_stepd)  # runs after slurmd has been stopped
        start_slurm("slurmd", ["slurmd", "-D"])
        stack.callback(_cancel_jobs_and_reap)  # runs first: while slurmctld/slurmd still run
        try:
            _wait_for(
                f"node {node} to become idle", lambda: _node_state(node) == "idle",
                timeout=node_timeout, interval=0.3, daemons=daemons,
            )
        except TimeoutError as e:
            raise RuntimeError(
                f"{e}; state={_node_state(node)!r}\n"
                + "\n".join(f"--- {d.name} ---\n{_tail(d.log, 20)}" for d in daemons)
            ) from None
        timings["node_idle"] = time.monotonic() - t1

        yield SlurmCluster(
            run_dir=run,
            log_dir=run / "log",
            cluster_name=CLUSTER_NAME,
            partition=PARTITION,
            account=ACCOUNT,
            node=node,
            gpu_model=GPU_MODEL,
            env={"SERS_SLURM_PARTITION": PARTITION, "SERS_SLURM_ACCOUNT": ACCOUNT},
            daemons=daemons,
            installed=installed,
            timings=timings,
        )


# --------------------------------------------------------------------------------------------
# running Snakemake with the profile, and reading SLURM's records


class SnakemakeRunError(AssertionError):
    pass


def _snakemake_env(extra: dict | None) -> dict:
    env = dict(os.environ)
    # Not "inside a SLURM job" (the plugin would warn and strip these anyway).
    for var in list(env):
        if var.startswith(("SLURM_JOB", "SLURM_STEP", "SBATCH_", "SRUN_")):
            env.pop(var)
    # Jobs run `<this python> -m snakemake` again on the node (--export=ALL): put the venv first on
    # PATH, so that whatever they spawn (snakemake, python) comes from it too.
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "/usr/bin:/bin")])
    env.update(extra or {})
    return env


def _parse_tres(tres: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (tres or "").split(",")):
        key, _, value = item.partition("=")
        m = re.match(r"(\d+)", value)
        out[key] = int(m.group(1)) if m else 0
    return out


def _rule_of(comment: str, submit_line: str) -> str | None:
    text = comment
    if not text:
        m = re.search(r"--comment[= ]'?([^' ]+)", submit_line or "")
        text = m.group(1) if m else ""
    m = re.match(r"^(rule|group)_(.+?)(?:_wildcards_.*)?$", text)
    return m.group(2) if m else None


def sacct_records(run_uuid: str, expected_ids: Sequence[str] = (), timeout: float = 60) -> list[dict]:
    """Allocation records (sacct -X) of the jobs named `run_uuid`, once slurmdbd has them all.

    slurmdbd receives job records asynchronously: right after a job ends, sacct can show it with
    an empty partition/TRES or a non-final state. Poll until every expected job is complete.
    """
    start = (_dt.datetime.now() - _dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    cmd = ["sacct", "-a", "-X", "-n", "-P", "--name", run_uuid, "-S", start,
           "-o", ",".join(SACCT_FIELDS)]

    def query():
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            return None
        recs = []
        for line in proc.stdout.splitlines():
            values = line.split("|")
            if len(values) < len(SACCT_FIELDS):
                continue
            # SubmitLine is last and may itself contain "|".
            rec = dict(zip(SACCT_FIELDS[:-1], values[: len(SACCT_FIELDS) - 1]))
            rec["SubmitLine"] = "|".join(values[len(SACCT_FIELDS) - 1 :])
            recs.append(rec)
        ids = {r["JobID"] for r in recs}
        complete = all(
            r["JobName"] == run_uuid and r["Partition"] and r["ReqTRES"]
            and r["State"].split()[0] in TERMINAL_STATES
            for r in recs
        )
        if complete and recs and set(expected_ids) <= ids:
            return recs
        return None

    try:
        recs = _wait_for(f"sacct records of run {run_uuid}", query, timeout=timeout, interval=1)
    except TimeoutError as e:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        raise AssertionError(f"{e}\n{' '.join(cmd)}\n{proc.stdout}{proc.stderr}") from None
    for r in recs:
        r["rule"] = _rule_of(r["Comment"], r["SubmitLine"])
        r["req_tres"] = _parse_tres(r["ReqTRES"])
        r["alloc_tres"] = _parse_tres(r["AllocTRES"])
        r["gpus"] = r["alloc_tres"].get("gres/gpu", 0)
        r["req_gpus"] = r["req_tres"].get("gres/gpu", 0)
    return sorted(recs, key=lambda r: int(re.match(r"\d+", r["JobID"]).group(0)))


def run_with_profile(
    workdir: Path | str,
    snakefile: Path | str,
    extra_args: Sequence[str] = (),
    timeout: float = 600,
    *,
    env: dict | None = None,
    profile: Path | str = PROFILE_DIR,
) -> list[dict]:
    """Run `snakemake --profile <profile> --snakefile <snakefile> --directory <workdir> <extra_args>`
    and return SLURM's accounting records (sacct -X) of every job that run submitted.

    Each record holds the sacct fields (JobID, JobName, Comment, Account, Partition, State,
    ExitCode, ReqTRES, AllocTRES, NodeList, Timelimit, Submit, Start, End, Elapsed, SubmitLine)
    plus:
      rule       rule name, from the job comment the plugin sets (rule_<name>[_wildcards_...])
      gpus       GPUs allocated (gres/gpu in AllocTRES); req_gpus: requested (ReqTRES)
      alloc_tres / req_tres   the TRES strings as {name: count}
      log_file / log          the job's SLURM log (plugin: <slurm-logdir>/rule_<rule>/.../<id>.log)
    Snakemake's own output is saved to <workdir>/snakemake-slurm.log.
    Raises SnakemakeRunError on failure / timeout (after cancelling the run's jobs).
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out_log = workdir / "snakemake-slurm.log"
    cmd = [
        sys.executable, "-m", "snakemake",
        "--profile", str(Path(profile).resolve()),
        "--snakefile", str(Path(snakefile).resolve()),
        "--directory", str(workdir),
        *map(str, extra_args),
    ]
    with open(out_log, "w") as logf:
        logf.write("$ " + " ".join(cmd) + "\n")
        logf.flush()
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=_snakemake_env(env), stdin=subprocess.DEVNULL,
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # our own child's process group
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
    output = out_log.read_text(errors="replace")
    m = re.search(r"SLURM run ID: (\S+)", output)
    run_uuid = m.group(1) if m else None
    if rc is None and run_uuid:
        subprocess.run(["scancel", "--name", run_uuid], capture_output=True)
    if rc != 0:
        tail = "\n".join(output.splitlines()[-80:])
        what = f"timed out after {timeout:.0f}s" if rc is None else f"exited with {rc}"
        raise SnakemakeRunError(f"snakemake --profile {profile} {what}:\n{tail}")
    if not run_uuid:
        raise SnakemakeRunError("no 'SLURM run ID' in the Snakemake output: was the slurm executor used?")
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", output)
    records = sacct_records(run_uuid, expected_ids=submitted)
    for r in records:
        logs = sorted(workdir.glob(f"**/{r['JobID']}.log"))
        r["log_file"] = logs[0] if logs else None
        r["log"] = logs[0].read_text(errors="replace") if logs else ""
    return records
