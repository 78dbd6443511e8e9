#!/usr/bin/env python3
"""Side-by-side benchmark of `cargo xtask clone-prod` against NetPoint's manual procedure.

    python3 scripts/bench.py [--scale quick|full|N] [--rounds R] [--keep]
                             [--json FILE] [--workdir DIR]
                             [--scrub-cost | --ssh-media | --dev-db | --netbox-shape |
                              --databases | --subset]

It is a report, not a test: it exits 0 when a target is missed and non-zero
only when the benchmark itself cannot run. Everything it needs is created
from scratch and removed at the end (unless --keep):

- a throwaway `postgres:15` container on a free 127.0.0.1 port, holding the
  source database and every target database; its password travels only in
  the environment (POSTGRES_PASSWORD, PGPASSWORD);
- a NetPoint-shaped source database: fixtures/netpoint.sql inflated server
  side with generate_series, most of it in the changelog (extras_objectchange);
- a media tree of random files (like already-compressed images) under
  <root>/netpoint/media/;
- an SSH-only host (`netpoint-prod-ssh:15`, sshd in Docker, a key of the
  run's own) whose media directory is that tree, for the clones over SSH.

`--subset` instead makes two NetBox-shaped sources (scripts/netbox_shape.py)
in the one container, at the scale and four times it, and times a one-site
subset of each, a full clone of the larger and a sample of about a million
rows of the larger, with each run's peak RSS.

`full` (the default) is a ~2 GiB database of which ~515 MiB is not changelog,
and 2.5 GiB of media in ~22,000 files; `quick` is 1/20 of that; a number N is
that fraction of `full`. Each comparison runs one warm-up of every command,
then R rounds (default 3) with the baseline and xtask alternating; ratios are
taken per round. BENCHMARKS.md describes the method, CONTRIBUTING.md
("Benchmarks") how to read the report. Only the Python standard library is used.
"""

import argparse
import json
import math
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import netbox_shape

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "postgres:15"
PREREQS = "bash scripts/test-prereqs.sh"
SCALES = {"quick": 0.05, "full": 1.0}
CHANGELOG = "extras_objectchange"
# Turns the leak scan off, for measuring what it costs (--scrub-cost) and nothing else.
LEAK_SCAN_OFF = "NETPOINT_SKIP_LEAK_SCAN"
MB = 1 << 20

# Starts argv[2:], reports its pid, then its exit code, ru_maxrss (KB), wall time and CPU
# seconds (its own and those of every process it waited for, psql and pg_dump included)
# through the file descriptor argv[1]. Run with `python3 -I -S` so that it stays small.
LAUNCHER = """
import os, signal, sys, time
out, argv = int(sys.argv[1]), sys.argv[2:]
signal.signal(signal.SIGINT, signal.SIG_IGN)
t0 = time.monotonic()
pid = os.posix_spawn(argv[0], argv, os.environ, setsigdef=(signal.SIGINT,))
os.write(out, b"%d\\n" % pid)
_, status, usage = os.wait4(pid, 0)
seconds = time.monotonic() - t0
cpu = usage.ru_utime + usage.ru_stime
os.write(out, b"%d %d %.6f %.6f\\n" % (os.waitstatus_to_exitcode(status), usage.ru_maxrss, seconds, cpu))
"""

# One batch of inflated data at scale 1. Per-site shapes stay fixed; the
# number of sites, the changelog and the media scale with --scale. At scale 1
# this gives ~515 MiB outside the changelog and ~2 GiB in all.
FULL = {
    "sites": 565,
    "changes": 810_000,
    "image_attachments": 22_000,
    "media_files": 22_000,
    "media_bytes": 5 << 29,  # 2.5 GiB
}
RACKS_PER_SITE = 20
DEVICES_PER_RACK = 6
INTERFACES_PER_DEVICE = 12
VLANS_PER_SITE = 50
PREFIXES_PER_SITE = 100

# (id, what is compared, goal, how the ratio reads)
TARGETS = [
    ("T1", "clone-prod direct (db) / manual procedure", 0.65, "max"),
    ("T2", "clone-prod direct (db) / pg_restore -j floor", 1.15, "max"),
    ("T3", "bundle export + import (db) / manual procedure", 0.90, "max"),
    ("T4", "media direct / tar -czf + tar -xf", 0.15, "max"),
    ("T5", "media direct / cp -a", 1.50, "max"),
    ("T6", "bundle export of media / tar -czf", 0.20, "max"),
    ("T7", "hash-media throughput / one sha256sum", 5.0, "min"),
    ("T11", "media again, 1 % changed / full media clone", 0.10, "max"),
    ("T12", "the same over SSH (sshd in Docker)", 0.10, "max"),
    ("S1", "clone-prod direct (db) over SSH / without SSH", None, "info"),
    ("T13", "dev-db save + restore / clone-prod db + media", 0.10, "max"),
    ("N1", "NetBox shape: clone-prod direct / manual", 0.50, "max"),
    ("N2", "NetBox shape: clone-prod direct / pg_restore -j", 1.00, "max"),
    ("N3", "NetBox shape: --no-scrub / pg_restore -j", None, "info"),
]
NETBOX_STEPS = [
    ("nb_manual", "manual procedure (pg_dump, dropdb, createdb, psql)"),
    ("nb_floor", "pg_restore -j <cores> of a -Fd -Z0 dump"),
    ("nb_direct", "xtask clone-prod --source --target --yes"),
    ("nb_no_scrub", "  the same with --no-scrub"),
]
SSH_IMAGE = "netpoint-prod-ssh:15"
SSH_MEDIA_STEPS = [
    ("media_full_local", "xtask clone-prod --media-only, into an empty target"),
    ("media_again_local", "  the same again, 1 % of the files changed"),
    ("media_full_ssh", "xtask clone-prod --media-only --source-ssh, empty target"),
    ("media_again_ssh", "  the same again, 1 % of the files changed"),
    ("direct_plain", "xtask clone-prod --source --target --yes (S1 round)"),
    ("direct_ssh", "  the same with --source-ssh (forwarded)"),
]
DB_STEPS = [
    ("manual", "manual: pg_dump > f, dropdb, createdb, psql -f f"),
    ("direct", "xtask clone-prod --source --target --yes"),
    ("floor", "pg_restore -j <cores> of the -Fd -Z0 dump"),
    ("export", "xtask clone-prod --source --out"),
    ("import", "xtask clone-prod --bundle --trust-unsigned --target --yes"),
]
DEV_DB_STEPS = [
    ("devdb_clone", "xtask clone-prod --source --target --source-media (empty)"),
    ("devdb_save", "xtask dev-db save NAME --force"),
    ("devdb_restore", "xtask dev-db restore NAME --yes"),
    ("devdb_restore_spare", "  the same with the ready spare renamed in"),
]
# --dev-db: the ready-spare restore at the scale and at this many times it, and the branch hook.
SPARE_FACTOR = 4
SPARE_ROUNDS = 9
SPARE_GOAL_S = 0.15
SPARE_SPREAD = 1.20
HOOK_SLACK_S = 0.2
SPARE_STEPS = [
    ("devdb_spare_1x", "xtask dev-db restore NAME --yes, ready spare, the scale"),
    ("devdb_spare_4x", f"  the same on a dev database {SPARE_FACTOR}x as large"),
    ("git_checkout", "git checkout BRANCH, no hook"),
    ("devdb_hook", "  the same with the dev-db hook (save + restore)"),
    ("devdb_hook_save", "    of which the hook's save --force, as it reports it"),
    ("devdb_hook_restore", "    and the hook's ready-spare restore, as it reports it"),
]
SUBSET_STEPS = [
    ("sub_small", "S1 clone-prod --subset site=SLUG --target, source 1x"),
    ("sub_large", "S2   the same one-site subset, source 4x"),
    ("sub_full", "S3 clone-prod --source 4x --target (the whole source)"),
    ("sub_million", "S4 clone-prod --subset 'dcim_device: true' --sample P%, 4x"),
]
# --subset: the larger source is this many times the smaller one.
SUBSET_FACTOR = 4
# S4 samples enough devices for a subset of about this many rows of the larger source at full scale.
SUBSET_ROWS = 1_000_000
# "Within noise" for S2/S1: one command's time varies by about a quarter between rounds here.
SUBSET_NOISE = (0.8, 1.25)
SUBSET_GOAL = 0.10
# Share of the media files rewritten between a full clone and the incremental one (T11, T12).
CHANGED_SHARE = 0.01
RSS_LIMIT_MB = 100
GROWTH_LIMIT = 0.10


class Fail(Exception):
    """A one-line error that says what to do."""


START = time.monotonic()


def log(msg):
    elapsed = int(time.monotonic() - START)
    print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {msg}", file=sys.stderr, flush=True)


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def tree_totals(root):
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


class Run:
    """One timed command: wall time, and for xtask its peak RSS two ways."""

    def __init__(self, seconds, hwm_kb=None, maxrss_kb=None, cpu=None):
        self.seconds = seconds
        self.hwm_kb = hwm_kb
        self.maxrss_kb = maxrss_kb
        # CPU seconds during the run, {"client", "server", "proxy"}; None when not measured.
        self.cpu = cpu
        # Rows of a subset run, from its closing line (--subset); None otherwise.
        self.rows = None

    def as_json(self):
        result = {"seconds": round(self.seconds, 4), "vmhwm_kb": self.hwm_kb, "ru_maxrss_kb": self.maxrss_kb}
        if self.cpu:
            result["cpu_s"] = {k: None if v is None else round(v, 3) for k, v in self.cpu.items()}
        return result


# Targets whose ratio has a floor set by the CPU our command needs: (ours, the baseline).
CPU_BOUNDS = {
    "T1": ("direct", "manual"),
    "T2": ("direct", "floor"),
    "N1": ("nb_direct", "nb_manual"),
    "N2": ("nb_direct", "nb_floor"),
}


def cpu_total(run):
    """A run's CPU seconds, the parts that were measured."""
    return sum(v for v in run.cpu.values() if v is not None)


class CpuMeter:
    """CPU seconds spent so far by the PostgreSQL container (every backend, the source's and the
    targets', and the server's own processes) and by Docker's userland port forwarder
    (docker-proxy) for its published port, which every byte to and from the server passes.

    Linux only: the container's cgroup (v2, hybrid or v1) and /proc. A part that cannot be
    read is None, and the report says "not measured" rather than guessing."""

    def __init__(self, container, port):
        self.port = str(port)
        self.server_file = None
        pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container],
                             capture_output=True, text=True).stdout.strip()
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            lines = []
        candidates = []
        for line in lines:
            _, controllers, path = line.split(":", 2)
            path = path.lstrip("/")
            if controllers == "":
                candidates += [(Path("/sys/fs/cgroup") / path / "cpu.stat", "usec"),
                               (Path("/sys/fs/cgroup/unified") / path / "cpu.stat", "usec")]
            elif "cpuacct" in controllers.split(","):
                candidates += [(Path("/sys/fs/cgroup") / controllers / path / "cpuacct.usage", "nsec"),
                               (Path("/sys/fs/cgroup/cpuacct") / path / "cpuacct.usage", "nsec")]
        for file, unit in candidates:
            if self.read_server(file, unit) is not None:
                self.server_file = (file, unit)
                break
        self.tick = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def read_server(file, unit):
        try:
            text = file.read_text()
        except OSError:
            return None
        if unit == "nsec":
            return int(text.strip()) / 1e9
        usage = next((line.split()[1] for line in text.splitlines() if line.startswith("usage_usec ")), None)
        return None if usage is None else int(usage) / 1e6

    def proxy_seconds(self):
        """utime + stime of every docker-proxy forwarding this port (IPv4 and IPv6), or None."""
        total, found = 0.0, False
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if not argv or not argv[0].endswith(b"docker-proxy"):
                    continue
                if self.port.encode() not in argv[argv.index(b"-host-port") + 1:][:1]:
                    continue
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, ValueError):
                continue
            total += (int(fields[11]) + int(fields[12])) / self.tick
            found = True
        return total if found else None

    def sample(self):
        server = self.read_server(*self.server_file) if self.server_file else None
        return server, self.proxy_seconds()

    @staticmethod
    def between(before, after, client):
        def diff(a, b):
            return None if a is None or b is None else b - a
        return {"client": client, "server": diff(before[0], after[0]), "proxy": diff(before[1], after[1])}


class Bench:
    def __init__(self, args):
        self.args = args
        self.scale = args.scale
        self.rounds = args.rounds
        self.cores = len(os.sched_getaffinity(0))
        self.password = secrets.token_urlsafe(24)
        self.container = f"netpoint-bench-{os.getpid()}-{secrets.token_hex(3)}"
        self.container_started = False
        self.subset_json = None  # what --json holds after a run of only some groups
        self.port = None
        self.work = None
        self.child = None
        self.xtask_pid = None
        self.xtask = None
        self.xtask_built = None
        self.revision = None
        self.rss_floor_kb = None
        self.media_only = False
        self.ssh_container = None
        self.ssh_port = None
        self.runs = {}  # name -> {"warmup": [Run], "rounds": [Run]}
        self.cpu_meter = None  # set once the container runs
        self.last_cpu = None  # CPU seconds of the last timed() steps
        self.data = {}

    # ------------------------------------------------------------ environment

    def base_env(self):
        """The caller's environment without settings that would steer xtask or libpq."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NETPOINT_", "PG"))}
        env["NO_COLOR"] = "1"
        return env

    def pg_env(self):
        env = self.base_env()
        env.update(PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER="postgres", PGPASSWORD=self.password)
        return env

    def xtask_env(self):
        env = self.base_env()
        env["PGPASSWORD"] = self.password
        # The same pg_dump/psql binaries as the baselines, never the Docker fallback.
        env["NETPOINT_PG_TOOLS"] = "host"
        return env

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def mask(self, text):
        return text.replace(self.password, "***")

    # --------------------------------------------------------------- checks

    def preflight(self):
        for tool in ("docker", "cargo", "tar", "gzip", "cp", "find", "xargs", "sha256sum"):
            if not shutil.which(tool):
                fix = f"run `{PREREQS}`" if tool == "docker" else f"install {tool}"
                raise Fail(f"{tool} not found on PATH: {fix}")
        if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            raise Fail(f"no Docker engine answers: run `{PREREQS}` (it starts dockerd)")
        for image in (IMAGE, SSH_IMAGE):
            if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
                raise Fail(f"image {image} is missing: run `PG_MAJORS=15 {PREREQS}`")
        for tool in ("ssh", "ssh-keygen"):
            if not shutil.which(tool):
                raise Fail(f"{tool} not found on PATH: install openssh-client (T12 and S1 clone over SSH)")
        for tool in ("pg_dump", "pg_restore", "psql", "createdb", "dropdb", "pg_isready"):
            path = shutil.which(tool)
            if not path:
                raise Fail(f"{tool} not found: install postgresql-client-15 (the baselines run the host's client tools)")
            out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
            try:
                major = int(out.split()[-1].split(".")[0])
            except (IndexError, ValueError):
                raise Fail(f"cannot read the version of {tool} ({out.strip()!r}): install postgresql-client-15")
            if major < 15:
                raise Fail(f"{tool} is PostgreSQL {major}; the benchmark server is 15: install postgresql-client-15")

    def check_space(self):
        # Source media (doubled at the end) plus the largest output next to it,
        # and the databases: source (doubled), four targets, a directory dump and WAL.
        media = FULL["media_bytes"] * self.scale
        need_work = 4.5 * media + 1.2e9 * self.scale + 2e8
        if self.args.subset:  # no media, no dumps: only logs and the binary
            need_work = 2e8
        need_docker = 8e9 * self.scale + 1.5e9
        if self.args.dev_db:  # the 4x dev database, its snapshot and its spare
            need_docker += 3 * SPARE_FACTOR * 0.6e9 * self.scale
        docker_root = subprocess.run(["docker", "info", "-f", "{{.DockerRootDir}}"], capture_output=True,
                                     text=True).stdout.strip() or "/"
        checks = [(self.work, need_work, "--workdir")]
        try:
            same = os.stat(docker_root).st_dev == os.stat(self.work).st_dev
        except OSError:
            same = True
        if same:
            checks = [(self.work, need_work + need_docker, "--workdir")]
        else:
            checks.append((docker_root, need_docker, "Docker's data root"))
        for path, need, what in checks:
            free = shutil.disk_usage(path).free
            if free < need:
                raise Fail(f"{path} has {human_bytes(free)} free, the benchmark needs about {human_bytes(need)}: "
                           f"free some space or point {what} at a larger disk (or use a smaller --scale)")

    # ---------------------------------------------------------------- build

    def build(self):
        log("building xtask (cargo build -p xtask, dev profile)")
        proc = subprocess.run(["cargo", "build", "-p", "xtask", "--message-format=json-render-diagnostics"],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-4:])
            raise Fail(f"cargo build -p xtask failed ({tail}): fix the build, then run the benchmark again")
        built = None
        for line in proc.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "xtask" \
                    and msg.get("executable"):
                built = msg["executable"]
        if not built:
            raise Fail("cargo build -p xtask produced no xtask executable: check `cargo build -p xtask` by hand")
        # A copy, so that a rebuild by someone else during the run cannot swap the binary.
        self.xtask = self.work / "xtask"
        shutil.copy2(built, self.xtask)
        self.xtask_built = built
        help_text = subprocess.run([self.xtask, "clone-prod", "--help"], capture_output=True, text=True).stdout
        self.media_only = "--media-only" in help_text
        # What wait4 reports for a process that does nearly nothing: the launcher's own size.
        self.rss_floor_kb = self.timed_xtask(["--version"], "version").maxrss_kb
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "xtask"], cwd=ROOT, capture_output=True,
                               text=True)
        self.revision = rev.stdout.strip() + (" + uncommitted xtask changes" if dirty.stdout.strip() else "")

    # -------------------------------------------------------------- postgres

    def free_port(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def start_postgres(self):
        self.port = self.free_port()
        log(f"starting {IMAGE} as {self.container} on 127.0.0.1:{self.port}")
        env = self.base_env()
        env["POSTGRES_PASSWORD"] = self.password
        # autovacuum off: a vacuum of one load must not land in the next measurement.
        cmd = ["docker", "run", "-d", "--rm", "--name", self.container, "--label", "netpoint-bench=1",
               "--shm-size=512m", "-e", "POSTGRES_PASSWORD", "-p", f"127.0.0.1:{self.port}:5432", IMAGE,
               "-c", "autovacuum=off"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise Fail(f"docker run {IMAGE} failed ({self.mask(proc.stderr.strip())}): run `{PREREQS}`")
        self.container_started = True
        deadline = time.monotonic() + 180
        while True:
            logs = subprocess.run(["docker", "logs", self.container], capture_output=True, text=True)
            if "database system is ready to accept connections" in logs.stderr:
                break
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", self.container],
                                   capture_output=True, text=True).stdout.strip()
            if state != "true":
                raise Fail(f"the {IMAGE} container stopped while starting ({self.mask(logs.stderr.strip()[-300:])}): "
                           f"run `{PREREQS} --rebuild`")
            if time.monotonic() > deadline:
                raise Fail(f"{IMAGE} did not become ready within 3 minutes: check `docker logs {self.container}`")
            time.sleep(0.3)
        while True:
            ready = subprocess.run(["pg_isready", "-q"], env=self.pg_env()).returncode == 0
            if ready and subprocess.run(["psql", "-X", "-q", "-d", "postgres", "-c", "select 1"], env=self.pg_env(),
                                        capture_output=True).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise Fail(f"{IMAGE} does not accept connections on 127.0.0.1:{self.port}: "
                           f"check `docker logs {self.container}`")
            time.sleep(0.3)
        self.cpu_meter = CpuMeter(self.container, self.port)

    def psql(self, db, sql):
        proc = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", "-"],
                              input=sql, env=self.pg_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise Fail(f"psql on {db} failed: {self.mask(proc.stderr.strip()[-500:])}")
        return proc.stdout.strip()

    def createdb(self, db):
        self.check(["dropdb", "--if-exists", db], env=self.pg_env())
        self.check(["createdb", db], env=self.pg_env())

    def settle(self):
        """Start every measurement from the same state: no background run of dev-db at work (a
        spare being prepared, a replaced copy being removed), no ready copy of a subset's schema
        template being made, dirty pages written, no pending checkpoint."""
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and subprocess.run(
                ["pgrep", "-f", "dev-db spare"], capture_output=True).returncode == 0:
            time.sleep(0.5)
        copying = ("select count(*) from pg_stat_activity where pid <> pg_backend_pid() "
                   "and query ~* '(create database .*_ready|drop database)'")
        while time.monotonic() < deadline and self.psql("postgres", copying) != "0":
            time.sleep(0.2)
        self.psql("postgres", "checkpoint")
        os.sync()

    # ------------------------------------------------------------------ data

    def counts(self, scale):
        sites = max(2, round(FULL["sites"] * scale))
        racks = sites * RACKS_PER_SITE
        devices = racks * DEVICES_PER_RACK
        interfaces = devices * INTERFACES_PER_DEVICE
        return {
            "sites": sites,
            "racks": racks,
            "devices": devices,
            "interfaces": interfaces,
            "cables": interfaces * 3 // 10,
            "vlans": sites * VLANS_PER_SITE,
            "prefixes": sites * PREFIXES_PER_SITE,
            "ips": devices + interfaces * 2 // 5,
            "image_attachments": max(10, round(FULL["image_attachments"] * scale)),
            "changes": max(100, round(FULL["changes"] * scale)),
        }

    def inflate(self, db, batch):
        c = self.counts(self.scale)
        log(f"inflating {db} (batch {batch + 1}): {c['devices']:,} devices, {c['interfaces']:,} interfaces, "
            f"{c['ips']:,} IP addresses, {c['changes']:,} changelog rows")
        t0 = time.monotonic()
        self.psql(db, inflate_sql(c, batch))
        self.psql(db, "vacuum (analyze)")
        log(f"  done in {time.monotonic() - t0:.0f} s")

    def db_sizes(self, db):
        row = self.psql(db, f"""
            select pg_database_size(current_database()), pg_total_relation_size('public.{CHANGELOG}'),
                   (select count(*) from public.{CHANGELOG})""").split("|")
        total, changelog, changes = map(int, row)
        tables = self.psql(db, """
            select c.relname, pg_total_relation_size(c.oid) from pg_class c
             where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
             order by 2 desc limit 7""")
        top = [(name, int(size)) for name, size in (line.split("|") for line in tables.splitlines())]
        return {"database_bytes": total, "changelog_bytes": changelog, "other_bytes": total - changelog,
                "changelog_rows": changes, "largest_tables": top}

    def make_media(self, root, batch):
        media = root / "netpoint" / "media"
        files = max(20, round(FULL["media_files"] * self.scale))
        total = round(FULL["media_bytes"] * self.scale)
        log(f"writing media: {files:,} files, {human_bytes(total)} of random bytes under {media}")
        write_media(media, files, total, seed=20240517 + batch, batch=batch)
        return media

    # ---------------------------------------------------------------- timing

    def check(self, argv, **kw):
        proc = subprocess.run(argv, capture_output=True, text=True, **kw)
        if proc.returncode != 0:
            raise Fail(f"{' '.join(map(str, argv))} failed: {self.mask(proc.stderr.strip()[-500:])}")
        return proc.stdout

    def timed(self, steps, env, log_name):
        """Runs argv lists one after another (each (argv, stdout_path_or_None)); returns wall seconds."""
        logf = self.work / "logs" / f"{log_name}.log"
        before = self.cpu_sample()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        with open(logf, "ab") as err:
            for argv, out in steps:
                with open(out if out else os.devnull, "wb") as stdout:
                    self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, env=env)
                    rc = self.child.wait()
                    self.child = None
                if rc in (130, -signal.SIGINT):
                    raise KeyboardInterrupt
                if rc != 0:
                    raise Fail(f"{' '.join(map(str, argv))} exited with {rc}: {self.tail(logf)}")
        seconds = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        self.last_cpu = self.cpu_between(before, client)
        return seconds

    def cpu_sample(self):
        return self.cpu_meter.sample() if self.cpu_meter else (None, None)

    def cpu_between(self, before, client):
        return CpuMeter.between(before, self.cpu_sample(), client)

    def timed_xtask(self, args, log_name, stdout_path=None, extra_env=None):
        """Runs xtask, polling its VmHWM every 20 ms; returns a Run with both peak RSS readings.

        xtask is started by a small launcher rather than by this process: Linux carries a
        process's high-water mark across exec, so a child forked from this (larger) process
        would report our resident size in ru_maxrss instead of its own.
        """
        logf = self.work / "logs" / f"{log_name}.log"
        argv = [str(self.xtask), *map(str, args)]
        read_end, write_end = os.pipe()
        before = self.cpu_sample()
        with open(logf, "ab") as err, open(stdout_path or os.devnull, "wb") as out:
            err.write(("$ xtask " + " ".join(map(str, args)) + "\n").encode())
            err.flush()
            launcher = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, str(write_end), *argv],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        env={**self.xtask_env(), **(extra_env or {})},
                                        pass_fds=(write_end,))
        os.close(write_end)
        self.child = launcher
        with os.fdopen(read_end) as reports:
            pid = int(reports.readline() or 0)
            self.xtask_pid = pid
            peak = [0]
            done = threading.Event()

            def poll():
                status = f"/proc/{pid}/status"
                while not done.is_set():
                    try:
                        with open(status) as f:
                            hwm = next((line for line in f if line.startswith("VmHWM:")), None)
                    except OSError:
                        return
                    if hwm is None:  # exited (a zombie has no memory left to report)
                        return
                    peak[0] = max(peak[0], int(hwm.split()[1]))
                    done.wait(0.02)

            poller = threading.Thread(target=poll, daemon=True)
            if pid:
                poller.start()
            result = reports.readline().split()
            done.set()
            if pid:
                poller.join()
        launcher.wait()
        self.child = self.xtask_pid = None
        cpu = self.cpu_between(before, float(result[3]) if len(result) == 4 else None)
        if not pid or len(result) != 4:
            raise Fail(f"could not start {self.xtask}: {self.tail(logf)}")
        code, maxrss, seconds = int(result[0]), int(result[1]), float(result[2])
        if code in (130, -signal.SIGINT):
            raise KeyboardInterrupt
        if code != 0:
            raise Fail(f"xtask {' '.join(map(str, args))} exited with {code}: {self.tail(logf)}")
        return Run(seconds, peak[0] or None, maxrss, cpu)

    def tail(self, path, lines=3):
        try:
            text = Path(path).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no output)"
        return self.mask(" | ".join(text[-lines:])) or "(no output)"

    def record(self, name, run, warmup):
        slot = self.runs.setdefault(name, {"warmup": [], "rounds": []})
        slot["warmup" if warmup else "rounds"].append(run)
        rss = f", peak RSS {run.hwm_kb / 1024:.1f} MiB" if run.hwm_kb else ""
        log(f"    {name:<16} {run.seconds:8.2f} s{rss}")

    # ----------------------------------------------------------- comparisons

    def db_round(self, warmup):
        src = "bench_source"
        # Baseline: NetPoint's manual procedure, as the README describes it.
        sql = self.work / "manual.sql"
        self.settle()
        seconds = self.timed([
            (["pg_dump", "--no-owner", "--no-privileges", f"--exclude-table-data={CHANGELOG}", src], sql),
            (["dropdb", "--if-exists", "bench_manual"], None),
            (["createdb", "bench_manual"], None),
            (["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "bench_manual", "-f", sql], None),
        ], self.pg_env(), "manual")
        self.data.setdefault("manual_sql_bytes", sql.stat().st_size)
        sql.unlink()
        self.record("manual", Run(seconds, cpu=self.last_cpu), warmup)

        self.settle()
        run = self.timed_xtask(["clone-prod", "--source", self.url(src), "--target", self.url("bench_direct"),
                                "--yes"], "direct")
        self.record("direct", run, warmup)

        self.createdb("bench_floor")
        self.settle()
        seconds = self.timed([(["pg_restore", "-j", str(self.cores), "--no-owner", "--no-privileges",
                                "-d", "bench_floor", self.work / "floor.dump"], None)], self.pg_env(), "floor")
        self.record("floor", Run(seconds, cpu=self.last_cpu), warmup)

        bundle = self.work / "bundle-db"
        shutil.rmtree(bundle, ignore_errors=True)
        self.settle()
        run = self.timed_xtask(["clone-prod", "--source", self.url(src), "--out", bundle], "export")
        self.record("export", run, warmup)
        # The benchmark exported this bundle itself: it is loaded unsigned on purpose.
        run = self.timed_xtask(["clone-prod", "--bundle", bundle, "--trust-unsigned",
                                "--target", self.url("bench_bundle"), "--yes"], "import")
        self.record("import", run, warmup)
        shutil.rmtree(bundle, ignore_errors=True)
        if warmup:
            self.check_db_copies()

    def scrub_round(self, warmup):
        """A direct clone scrubbed with the preset (and the leak scan), without the leak scan,
        and with --no-scrub, one after the other."""
        src = "bench_source"
        variants = [
            ("scrubbed", [], {}),
            ("scrubbed_no_scan", [], {LEAK_SCAN_OFF: "1"}),
            ("no_scrub", ["--no-scrub"], {LEAK_SCAN_OFF: "1"}),
        ]
        for name, extra, env in variants:
            self.settle()
            run = self.timed_xtask(["clone-prod", "--source", self.url(src), "--target",
                                    self.url(f"bench_{name}"), "--yes", *extra], name, extra_env=env)
            self.record(name, run, warmup)

    def run_scrub_cost(self):
        self.start_postgres()
        self.createdb("bench_source")
        self.check(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "bench_source", "-f",
                    ROOT / "fixtures" / "netpoint.sql"], env=self.pg_env())
        self.inflate("bench_source", 0)
        self.data["source"] = self.db_sizes("bench_source")
        self.print_db_sizes(self.data["source"])
        self.group("scrubbing (T9, T10)", self.scrub_round)
        t = self.times
        rows = [
            ("T9", "clone scrubbed + leak scan / clone --no-scrub", t("scrubbed"), t("no_scrub")),
            ("T10", "clone with leak scan / clone without it", t("scrubbed"), t("scrubbed_no_scan")),
        ]
        print(f"NetPoint scrubbing cost: scale {self.scale:g} of full, {self.rounds} rounds after 1 warm-up, "
              f"{self.cores} cores, xtask {self.revision}")
        print(f"database {human_bytes(self.data['source']['database_bytes'])}")
        print(f"{'':5}{'comparison':<48}{'ours':>8}{'baseline':>10}  ratio min / median / max")
        for tid, what, ours, base in rows:
            ratios = [a / b for a, b in zip(ours, base)]
            print(f"{tid:<5}{what:<48}{statistics.median(ours):>7.2f}s{statistics.median(base):>9.2f}s  "
                  f"{min(ratios):.3f} / {statistics.median(ratios):.3f} / {max(ratios):.3f}")
        return 0

    def check_db_copies(self):
        expect = self.psql("bench_source", "select count(*) from public.dcim_interface") + "|0"
        for db in ("bench_manual", "bench_direct", "bench_floor", "bench_bundle"):
            got = self.psql(db, f"select (select count(*) from public.dcim_interface), "
                                f"(select count(*) from public.{CHANGELOG})")
            if got != expect:
                raise Fail(f"{db} holds (interfaces|changelog rows) {got} where {expect} was expected: "
                           f"the copies differ, so the timings would not compare like with like")

    def media_round(self, warmup):
        src_root = self.work / "src"
        media = src_root / "netpoint" / "media"
        tgz = self.work / "netpoint_media.tar.gz"
        extract = self.work / "extract"
        tgz.unlink(missing_ok=True)
        extract.mkdir()
        self.settle()
        # One procedure: the archive is unpacked right after it is written, as a user would.
        czf = self.timed([(["tar", "-czf", tgz, "-C", src_root, "netpoint/media/"], None)], self.base_env(), "tar")
        self.record("tar_czf", Run(czf), warmup)
        xf = self.timed([(["tar", "-xf", tgz, "-C", extract], None)], self.base_env(), "tar")
        self.record("tar_xf", Run(xf), warmup)
        if warmup:
            self.check_media_copy(extract / "netpoint" / "media", "tar -xf")
        tgz.unlink()
        shutil.rmtree(extract)

        target = self.work / "media-direct"
        self.settle()
        run = self.timed_xtask(self.media_direct_args(media, target), "media-direct")
        self.record("media_direct", run, warmup)
        if warmup:
            self.check_media_copy(target, "clone-prod media")
        shutil.rmtree(target)

        copy = self.work / "media-cp"
        self.settle()
        seconds = self.timed([(["cp", "-a", media, copy], None)], self.base_env(), "cp")
        self.record("cp", Run(seconds), warmup)
        shutil.rmtree(copy)

        bundle = self.work / "bundle-media"
        shutil.rmtree(bundle, ignore_errors=True)
        self.settle()
        # The tiny database is empty: no scrub rule applies to it, which a clone refuses.
        run = self.timed_xtask(["clone-prod", "--source", self.url("bench_tiny"), "--out", bundle,
                                "--source-media", media, "--no-scrub"], "media-export")
        self.record("media_export", run, warmup)
        shutil.rmtree(bundle)

    def media_direct_args(self, media, target):
        if self.media_only:
            return ["clone-prod", "--media-only", "--source-media", media, "--target-media", target, "--yes"]
        # Until --media-only exists, the smallest database pair stands in for "no database".
        return ["clone-prod", "--source", self.url("bench_tiny"), "--target", self.url("bench_tiny_target"),
                "--source-media", media, "--target-media", target, "--yes"]

    def check_media_copy(self, copy, what):
        if tree_totals(copy) != self.data["media_tree"]:
            raise Fail(f"{what} produced {tree_totals(copy)} (files, bytes) where the source has "
                       f"{self.data['media_tree']}: the copies differ")

    def hash_round(self, warmup):
        media = self.work / "src" / "netpoint" / "media"
        t0 = time.monotonic()
        find = subprocess.Popen(["find", media, "-type", "f", "-print0"], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        xargs = subprocess.Popen(["xargs", "-0", "sha256sum"], stdin=find.stdout, stdout=subprocess.DEVNULL)
        find.stdout.close()
        self.child = xargs
        if xargs.wait() != 0 or find.wait() != 0:
            raise Fail("find | xargs -0 sha256sum failed over the media tree")
        self.child = None
        self.record("sha256sum", Run(time.monotonic() - t0), warmup)
        listing = self.work / "hash-media.txt" if warmup else None
        run = self.timed_xtask(["hash-media", media], "hash-media", stdout_path=listing)
        self.record("hash_media", run, warmup)
        if warmup:
            lines = sum(1 for _ in open(listing, "rb"))
            listing.unlink()
            if lines != self.data["media_tree"][0]:
                raise Fail(f"xtask hash-media listed {lines} files where the tree has {self.data['media_tree'][0]}")

    # ------------------------------------------------------------------ ssh

    def start_ssh(self):
        """An SSH-only "production host" (sshd in Docker) whose media directory is the source
        tree, bind-mounted, and from which the benchmark's PostgreSQL is reached on the Docker
        network, as a production database on a private network is."""
        keys = self.work / "ssh"
        keys.mkdir(mode=0o700)
        self.check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "id"])
        self.ssh_container = f"{self.container}-ssh"
        env = self.base_env()
        env["SSH_AUTHORIZED_KEY"] = (keys / "id.pub").read_text().strip()
        env["POSTGRES_PASSWORD"] = secrets.token_urlsafe(12)  # the host's own, unused server
        media = self.work / "src" / "netpoint" / "media"
        proc = subprocess.run(["docker", "run", "-d", "--rm", "--init", "--name", self.ssh_container,
                               "--label", "netpoint-bench=1", "-e", "SSH_AUTHORIZED_KEY", "-e", "POSTGRES_PASSWORD",
                               "-v", f"{media}:/srv/netpoint/media", "-p", "127.0.0.1::22", SSH_IMAGE],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            self.ssh_container = None
            raise Fail(f"docker run {SSH_IMAGE} failed ({proc.stderr.strip()}): run `{PREREQS}`")
        port = self.check(["docker", "port", self.ssh_container, "22/tcp"]).splitlines()[0]
        self.ssh_port = int(port.rsplit(":", 1)[1])
        self.db_ip = self.check(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                 self.container]).strip()
        deadline = time.monotonic() + 60
        while subprocess.run(["sh", "-c", f"{self.ssh_command()} deploy@127.0.0.1 true"], capture_output=True,
                             stdin=subprocess.DEVNULL).returncode != 0:
            if time.monotonic() > deadline:
                raise Fail(f"{SSH_IMAGE} does not take our key on 127.0.0.1:{self.ssh_port}: "
                           f"check `docker logs {self.ssh_container}`")
            time.sleep(0.3)
        log(f"SSH host {self.ssh_container} on 127.0.0.1:{self.ssh_port}; the database at {self.db_ip}:5432 from there")

    def ssh_command(self):
        keys = self.work / "ssh"
        return (f"ssh -i {keys / 'id'} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={keys / 'known_hosts'} "
                f"-o StrictHostKeyChecking=accept-new -p {self.ssh_port}")

    def ssh_env(self):
        return {"NETPOINT_SSH_COMMAND": self.ssh_command()}

    def change_media(self, seed):
        """Rewrites CHANGED_SHARE of the source files with new bytes of the same size (new
        modification times, the same totals)."""
        media = self.work / "src" / "netpoint" / "media"
        files = sorted(p for p in media.rglob("*") if p.is_file())
        rng = random.Random(seed)
        for path in rng.sample(files, max(1, round(len(files) * CHANGED_SHARE))):
            size = path.stat().st_size
            with open(path, "wb") as f:
                f.write(rng.randbytes(size))

    def incremental_round(self, warmup):
        media = self.work / "src" / "netpoint" / "media"
        for where, extra in (("local", None), ("ssh", self.ssh_env())):
            source = ["--source-ssh", "deploy@127.0.0.1", "--source-media", "/srv/netpoint/media"] \
                if where == "ssh" else ["--source-media", media]
            target = self.work / f"media-{where}"
            shutil.rmtree(target, ignore_errors=True)
            args = ["clone-prod", "--media-only", *source, "--target-media", target, "--yes"]
            self.settle()
            run = self.timed_xtask(args, f"media-full-{where}", extra_env=extra)
            self.record(f"media_full_{where}", run, warmup)
            self.change_media(len(self.runs[f"media_full_{where}"]["rounds"]) * 2 + (where == "ssh"))
            self.settle()
            run = self.timed_xtask(args, f"media-again-{where}", extra_env=extra)
            self.record(f"media_again_{where}", run, warmup)
            if warmup:
                self.check_media_copy(target, f"clone-prod media again ({where})")
            shutil.rmtree(target)

    def ssh_db_round(self, warmup):
        src = "bench_source"
        self.settle()
        run = self.timed_xtask(["clone-prod", "--source", self.url(src), "--target", self.url("bench_direct"),
                                "--yes"], "direct")
        self.record("direct_plain", run, warmup)
        self.settle()
        url = f"postgres://postgres@{self.db_ip}:5432/{src}"
        run = self.timed_xtask(["clone-prod", "--source-ssh", "deploy@127.0.0.1", "--source", url, "--target",
                                self.url("bench_direct"), "--yes"], "direct-ssh", extra_env=self.ssh_env())
        self.record("direct_ssh", run, warmup)

    def devdb_round(self, warmup):
        media = self.work / "src" / "netpoint" / "media"
        dev_media = self.work / "dev-media"
        shutil.rmtree(dev_media, ignore_errors=True)
        # A full clone each round: database and media into an empty media directory.
        self.settle()
        run = self.timed_xtask(["clone-prod", "--source", self.url("bench_source"), "--target",
                                self.url("bench_dev"), "--source-media", media, "--target-media", dev_media,
                                "--yes"], "devdb-clone")
        self.record("devdb_clone", run, warmup)
        target = ["--target", self.url("bench_dev"), "--target-media", dev_media]
        self.settle()
        run = self.timed_xtask(["dev-db", "save", "bench", "--force", *target], "devdb-save")
        self.record("devdb_save", run, warmup)
        self.settle()
        run = self.timed_xtask(["dev-db", "restore", "bench", "--yes", *target], "devdb-restore")
        self.record("devdb_restore", run, warmup)
        if warmup:
            self.check_media_copy(dev_media, "dev-db restore")
        # The spare the restore started preparing, renamed in by the next restore.
        self.wait_spare_ready("bench", target)
        self.settle()
        run = self.timed_xtask(["dev-db", "restore", "bench", "--yes", *target], "devdb-restore-spare")
        if warmup and "renamed the ready spare" not in (self.work / "logs" / "devdb-restore-spare.log").read_text():
            raise Fail("dev-db restore did not rename the ready spare in: see logs/devdb-restore-spare.log")
        self.record("devdb_restore_spare", run, warmup)

    def wait_spare_ready(self, name, target, timeout=600):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = subprocess.run([self.xtask, "dev-db", "list", *map(str, target)], capture_output=True,
                                    text=True, env=self.xtask_env()).stdout
            # Ready, and no background run of dev-db still at work: one that is about to
            # check the spare holds its lock for a moment, and a restore then copies.
            busy = subprocess.run(["pgrep", "-f", "dev-db spare"], capture_output=True).returncode == 0
            if not busy and any(line.startswith(f"{name} ") and "  ready  " in line for line in listed.splitlines()):
                return
            time.sleep(0.5)
        raise Fail(f"the spare of dev-db snapshot {name} was not ready after {timeout} s: see .netpoint-dev-db/spares.log")

    def prepare_netbox_shape(self):
        """The NetBox-shaped source (scripts/netbox_shape.py) and its floor dump."""
        src = "bench_nb_source"
        self.createdb(src)
        log(f"creating {src}: NetBox's shape, {len(netbox_shape.TABLES)} tables")
        t0 = time.monotonic()
        for part in (netbox_shape.schema_sql(), netbox_shape.data_sql(self.scale),
                     netbox_shape.constraints_sql(), "vacuum (analyze);\n"):
            self.psql(src, part)
        log(f"  done in {time.monotonic() - t0:.0f} s")
        self.data["nb_source"] = self.db_sizes(src)
        self.data["nb_shape"] = {key: int(self.psql(src, sql)) for key, sql in (
            ("tables", "select count(*) from pg_tables where schemaname = 'public'"),
            ("indexes", "select count(*) from pg_indexes where schemaname = 'public'"),
            ("constraints", "select count(*) from pg_constraint where connamespace = 'public'::regnamespace"),
        )}
        self.print_db_sizes(self.data["nb_source"])
        log("  " + ", ".join(f"{v} {k}" for k, v in self.data["nb_shape"].items()))
        self.check(["pg_dump", "-Fd", "-Z0", f"--exclude-table-data={CHANGELOG}", "-f", self.work / "nb-floor.dump",
                    src], env=self.pg_env())

    def netbox_round(self, warmup):
        """T1 and T2 on the NetBox-shaped data; the default clone scrubs (and so leaves out the
        search cache's rows, which NetBox rebuilds), --no-scrub copies what the baselines copy."""
        src = "bench_nb_source"
        sql = self.work / "nb-manual.sql"
        self.settle()
        seconds = self.timed([
            (["pg_dump", "--no-owner", "--no-privileges", f"--exclude-table-data={CHANGELOG}", src], sql),
            (["dropdb", "--if-exists", "bench_nb_manual"], None),
            (["createdb", "bench_nb_manual"], None),
            (["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "bench_nb_manual", "-f", sql], None),
        ], self.pg_env(), "nb-manual")
        sql.unlink()
        self.record("nb_manual", Run(seconds, cpu=self.last_cpu), warmup)
        self.createdb("bench_nb_floor")
        self.settle()
        seconds = self.timed([(["pg_restore", "-j", str(self.cores), "--no-owner", "--no-privileges",
                                "-d", "bench_nb_floor", self.work / "nb-floor.dump"], None)], self.pg_env(), "nb-floor")
        self.record("nb_floor", Run(seconds, cpu=self.last_cpu), warmup)
        for name, extra in (("nb_direct", []), ("nb_no_scrub", ["--no-scrub"])):
            self.settle()
            run = self.timed_xtask(["clone-prod", "--source", self.url(src), "--target", self.url(f"bench_{name}"),
                                    "--yes", *extra], name.replace("_", "-"))
            self.record(name, run, warmup)
        if warmup:
            expect = self.psql(src, "select count(*) from public.dcim_interface")
            for db in ("bench_nb_manual", "bench_nb_floor", "bench_nb_direct", "bench_nb_no_scrub"):
                got = self.psql(db, "select count(*) from public.dcim_interface")
                if got != expect:
                    raise Fail(f"{db} holds {got} interfaces where {expect} were expected")

    def run_netbox_shape(self):
        self.start_postgres()
        self.prepare_netbox_shape()
        self.group("NetBox shape (N1-N3)", self.netbox_round)
        shape = self.data["nb_shape"]
        self.print_subset(f"NetPoint clone benchmark on NetBox's shape ({shape['tables']} tables, "
                          f"{shape['indexes']} indexes, {shape['constraints']} constraints)",
                          ("N1", "N2", "N3"), NETBOX_STEPS, source="nb_source")
        return 0

    # ---------------------------------------------------------------- subsets

    def prepare_subsets(self):
        """Two NetBox-shaped sources in the one container: the benchmark's scale and
        SUBSET_FACTOR times it; the site of the one-site subset; S4's sample."""
        self.start_postgres()
        for db, scale in (("bench_sub_small", self.scale), ("bench_sub_large", self.scale * SUBSET_FACTOR)):
            self.createdb(db)
            log(f"creating {db}: NetBox's shape at {scale:g} of full")
            t0 = time.monotonic()
            for part in (netbox_shape.schema_sql(), netbox_shape.data_sql(scale),
                         netbox_shape.constraints_sql(), "vacuum (analyze);\n"):
                self.psql(db, part)
            log(f"  done in {time.monotonic() - t0:.0f} s")
            self.data[db] = self.db_sizes(db)
            self.data[db]["rows_estimate"] = int(self.psql(db, f"""
                select coalesce(sum(greatest(reltuples, 0)), 0)::bigint from pg_class
                 where relnamespace = 'public'::regnamespace and relkind = 'r'
                   and relname not in ('{CHANGELOG}', 'extras_cachedvalue')"""))
            self.print_db_sizes(self.data[db])
            self.check_subset_shape(db)
        # A site in the middle of the smaller source; the larger one has it too.
        slug = self.psql("bench_sub_small", "select slug from public.dcim_site order by id "
                                            "offset (select count(*) / 2 from public.dcim_site) limit 1")
        if self.psql("bench_sub_large", f"select count(*) from public.dcim_site where slug = '{slug}'") != "1":
            raise Fail(f"bench_sub_large has no site {slug!r}: scripts/netbox_shape.py must give both scales "
                       f"the same site slugs")
        self.data["subset_site"] = slug
        large = self.data["bench_sub_large"]["rows_estimate"]
        full_large = large / self.scale  # the larger source's rows at full scale
        self.data["subset_sample_percent"] = min(100, math.ceil(100 * SUBSET_ROWS / full_large)) if large else 100
        log(f"  one-site subset: site={slug}; S4 samples {self.data['subset_sample_percent']}% of the devices")

    def check_subset_shape(self, db):
        """What the NetBox preset needs of the shape: content types naming tables, and generic
        pairs pointing at rows that exist."""
        unnamed = self.psql(db, "select count(*) from public.django_content_type c "
                                "where to_regclass('public.' || c.app_label || '_' || c.model) is null")
        if unnamed != "0":
            raise Fail(f"{db}: {unnamed} content types name no table: fix django_content_type in "
                       f"scripts/netbox_shape.py")
        pairs = rows = 0
        for t in netbox_shape.TABLES:
            g = t["generic"]
            if not g:
                continue
            name = t["name"]
            kinds = self.psql(db, f"select distinct c.app_label || '_' || c.model from public.{name} x "
                                  f"join public.django_content_type c on c.id = x.{g}_type_id")
            for target in kinds.split():
                dangling, total = self.psql(db, f"""
                    select count(*) filter (where not exists (select 1 from public.{target} y where y.id = x.{g}_id)),
                           count(*)
                      from public.{name} x join public.django_content_type c on c.id = x.{g}_type_id
                     where c.app_label || '_' || c.model = '{target}'""").split("|")
                if dangling != "0":
                    raise Fail(f"{db}: {dangling} rows of {name}.{g}_type_id/{g}_id point at no {target} row: "
                               f"fix the generic pairs in scripts/netbox_shape.py")
                pairs += 1
                rows += int(total)
        log(f"  {db}: every content type names a table; {pairs} generic pairs, {rows:,} rows, none dangling")

    def subset_rows(self, log_name):
        """The rows of the last subset run logged under log_name, from its closing line."""
        text = (self.work / "logs" / f"{log_name}.log").read_text(errors="replace")
        found = re.findall(r"subset: (\d+) rows", text)
        return int(found[-1]) if found else None

    def subset_round(self, warmup):
        site = ["--subset", f"site={self.data['subset_site']}"]
        sample = ["--subset", "dcim_device: true", "--sample", f"{self.data['subset_sample_percent']}%"]
        runs = [
            ("sub_small", "bench_sub_small", "bench_sub_t1", site),
            ("sub_large", "bench_sub_large", "bench_sub_t2", site),
            ("sub_full", "bench_sub_large", "bench_sub_t3", []),
            ("sub_million", "bench_sub_large", "bench_sub_t4", sample),
        ]
        # The run after S4 (which reads the whole 4x source) finds less of its source cached:
        # S1 and S2 take turns at it.
        self.subset_rounds = getattr(self, "subset_rounds", 0) + 1
        if self.subset_rounds % 2 == 0:
            runs[0], runs[1] = runs[1], runs[0]
        for name, src, target, extra in runs:
            self.settle()
            log_name = name.replace("_", "-")
            run = self.timed_xtask(["clone-prod", "--source", self.url(src), "--target", self.url(target), "--yes",
                                    *extra], log_name)
            run.rows = self.subset_rows(log_name) if extra else None
            self.record(name, run, warmup)
        if warmup:
            counts = {db: self.psql(db, "select (select count(*) from public.dcim_device) || ' devices, ' || "
                                        "(select count(*) from public.dcim_interface) || ' interfaces'")
                      for db in ("bench_sub_t1", "bench_sub_t2", "bench_sub_t4")}
            log("  " + "; ".join(f"{db}: {c}" for db, c in counts.items()))
            slug = self.data["subset_site"]
            for db in ("bench_sub_t1", "bench_sub_t2"):
                if self.psql(db, f"select count(*) from public.dcim_site where slug = '{slug}'") != "1":
                    raise Fail(f"{db} lacks the site {slug}: the subset is not the one asked for")

    def run_subsets(self):
        self.prepare_subsets()
        self.group("subsets (S1-S4)", self.subset_round)
        return self.report_subsets()

    def report_subsets(self):
        small, large = self.data["bench_sub_small"], self.data["bench_sub_large"]
        t = self.times
        targets = []
        for tid, what, ours, base, goal in (
            ("S2/S1", "one-site subset, source 4x / source 1x", t("sub_large"), t("sub_small"), SUBSET_NOISE),
            ("S2/S3", "one-site subset / full clone, source 4x", t("sub_large"), t("sub_full"), SUBSET_GOAL),
        ):
            values = [a / b for a, b in zip(ours, base)]
            med = statistics.median(values)
            ok = goal[0] <= med <= goal[1] if isinstance(goal, tuple) else med <= goal
            targets.append({"id": tid, "what": what, "goal": goal, "ratios": values, "min": min(values),
                            "median": med, "max": max(values), "ours_median_s": statistics.median(ours),
                            "baseline_median_s": statistics.median(base), "result": "PASS" if ok else "MISS"})
        print(f"NetPoint subset benchmark on NetBox's shape: scale {self.scale:g} and {self.scale * SUBSET_FACTOR:g} "
              f"of full, {self.rounds} round{'s' if self.rounds > 1 else ''} after 1 warm-up, {self.cores} cores")
        print(f"xtask {self.revision}, dev profile ({self.xtask_built})")
        for label, src in (("source 1x", small), ("source 4x", large)):
            print(f"{label}: {human_bytes(src['database_bytes'])}, about {src['rows_estimate']:,} rows outside "
                  f"{CHANGELOG} and the search cache")
        print(f"one-site subset: --subset site={self.data['subset_site']}; S4: --subset 'dcim_device: true' "
              f"--sample {self.data['subset_sample_percent']}%")
        print()
        print(f"{'':6}{'comparison':<42}{'ours':>8}{'baseline':>10}  {'ratio min / median / max':<26}"
              f"{'goal':<14}result")
        for x in targets:
            goal = f"{x['goal'][0]:g} to {x['goal'][1]:g}" if isinstance(x["goal"], tuple) else f"<= {x['goal']:g}"
            spread = f"{x['min']:.3f} / {x['median']:.3f} / {x['max']:.3f}"
            print(f"{x['id']:<6}{x['what']:<42}{x['ours_median_s']:>7.2f}s{x['baseline_median_s']:>9.2f}s  "
                  f"{spread:<26}{goal:<14}{x['result']}")
        print()
        print(f"per run, over the warm-up and the rounds: seconds median [min - max], rows, peak RSS "
              f"(goal < {RSS_LIMIT_MB} MiB)")
        rss_rows = []
        for name, label in SUBSET_STEPS:
            runs = self.runs[name]["warmup"] + self.runs[name]["rounds"]
            secs = self.times(name)
            hwm = max((r.hwm_kb or 0) for r in runs)
            rows = [r.rows for r in runs if r.rows]
            result = "PASS" if hwm and hwm < RSS_LIMIT_MB * 1024 else "MISS"
            row_text = f"{max(rows):>9,} rows" if rows else f"{'(whole)':>14}"
            print(f"  {label:<56}{statistics.median(secs):>8.2f} [{min(secs):.2f} - {max(secs):.2f}]"
                  f"{row_text}  {hwm / 1024:6.1f} MiB  {result}")
            rss_rows.append({"command": name, "label": label, "rows": max(rows) if rows else None,
                             "vmhwm_max_kb": hwm or None, "result": result})
        s4 = next(r for r in rss_rows if r["command"] == "sub_million")
        if s4["rows"] and s4["rows"] < 0.9 * SUBSET_ROWS and self.scale < 1:
            print(f"  (S4 holds {s4['rows']:,} rows, fewer than {SUBSET_ROWS:,}: at this scale the 4x source is "
                  f"too small; the full-scale run reaches about a million)")
        print(f"elapsed {(time.monotonic() - START) / 60:.1f} min")
        if self.args.json:
            result = {"scale": self.scale, "factor": SUBSET_FACTOR, "rounds": self.rounds, "cores": self.cores,
                      "xtask": {"revision": self.revision},
                      "data": {k: self.data[k] for k in ("bench_sub_small", "bench_sub_large", "subset_site",
                                                         "subset_sample_percent")},
                      "targets": targets, "peaks": rss_rows,
                      "runs": {name: {k: [dict(r.as_json(), rows=r.rows) for r in v]
                                      for k, v in self.runs[name].items()} for name, _ in SUBSET_STEPS},
                      "elapsed_s": round(time.monotonic() - START, 1)}
            Path(self.args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0

    def run_dev_db(self):
        self.prepare()
        self.group("dev-db (T13)", self.devdb_round)
        self.devdb_spare_sizes()
        self.devdb_hook()
        self.print_subset("NetPoint dev-db benchmark", ("T13",), DEV_DB_STEPS + SPARE_STEPS)
        self.print_spares()
        return 0

    def devdb_spare_sizes(self):
        """The ready-spare restore on the dev database of T13 and on one SPARE_FACTOR times as large
        (the source inflated, its changelog emptied as a clone leaves it), SPARE_ROUNDS rounds each."""
        big = "bench_dev4"
        log(f"dev-db ready spare: a dev database {SPARE_FACTOR}x as large ({big})")
        self.check(["dropdb", "--if-exists", big], env=self.pg_env())
        self.check(["createdb", "-T", "bench_source", big], env=self.pg_env())
        for batch in range(1, SPARE_FACTOR):
            self.inflate(big, batch)
        self.psql(big, f"truncate public.{CHANGELOG}")
        dev_media = self.work / "dev-media"
        big_media = self.work / "dev-media-4x"
        shutil.rmtree(big_media, ignore_errors=True)
        self.check(["cp", "-a", "--reflink=auto", dev_media, big_media])
        self.data["spare_sizes"] = {}
        rounds = max(self.rounds, SPARE_ROUNDS)
        for label, db, media in (("1x", "bench_dev", dev_media), (f"{SPARE_FACTOR}x", big, big_media)):
            self.data["spare_sizes"][label] = self.psql("postgres", f"select pg_database_size('{db}')")
            target = ["--target", self.url(db), "--target-media", media]
            self.timed_xtask(["dev-db", "save", "spare", "--force", *target], f"devdb-spare-{label}")
            log(f"dev-db ready spare, {label}: {rounds} rounds after 1 warm-up")
            for n in range(rounds + 1):
                self.wait_spare_ready("spare", target)
                self.settle()
                logf = self.work / "logs" / f"devdb-spare-{label}.log"
                before = logf.stat().st_size
                run = self.timed_xtask(["dev-db", "restore", "spare", "--yes", *target], f"devdb-spare-{label}")
                with open(logf, "rb") as f:
                    f.seek(before)
                    if b"renamed the ready spare" not in f.read():
                        raise Fail(f"dev-db restore did not rename the ready spare in: see {logf}")
                self.record(f"devdb_spare_{label}", run, n == 0)
            self.wait_spare_ready("spare", target)
            self.timed_xtask(["dev-db", "drop", "spare", "--yes", *target], f"devdb-spare-{label}")
        self.check(["dropdb", big], env=self.pg_env())
        shutil.rmtree(big_media, ignore_errors=True)

    def devdb_hook(self):
        """What the dev-db hook adds to a branch switch: git checkout between two branches with the
        hook (it saves the branch left and renames the other's ready spare in) and without it."""
        repo = self.work / "hook-repo"
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir()
        dev_media = self.work / "dev-media"
        env = self.xtask_env()
        env.update(NETPOINT_XTASK=str(self.xtask), NETPOINT_DATABASE_URL=self.url("bench_dev"),
                   NETPOINT_MEDIA_ROOT=str(dev_media), GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@invalid",
                   GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@invalid")
        git = ["git", "-C", str(repo)]
        self.check(git + ["init", "-q", "-b", "main"], env=env)
        (repo / "README").write_text("main\n")
        self.check(git + ["add", "."], env=env)
        self.check(git + ["commit", "-q", "-m", "main"], env=env)
        self.check(git + ["branch", "other"], env=env)
        no_hooks = self.work / "no-hooks"
        no_hooks.mkdir(exist_ok=True)
        rounds = max(self.rounds, SPARE_ROUNDS)
        log(f"git checkout without hooks: {rounds} rounds after 1 warm-up")
        for n in range(rounds + 1):
            for branch in ("other", "main"):
                seconds = self.timed([(git + ["-c", f"core.hooksPath={no_hooks}", "checkout", "-q", branch], None)],
                                     env, "git-checkout")
                self.record("git_checkout", Run(seconds, cpu=self.last_cpu), n == 0)
        self.check([self.xtask, "dev-db", "hook", "install"], env=env, cwd=repo)
        target = ["--target", self.url("bench_dev"), "--target-media", dev_media]
        # The first switch each way makes each branch's snapshot.
        for branch in ("other", "main"):
            self.check(git + ["checkout", "-q", branch], env=env)
        log(f"git checkout with the dev-db hook: {rounds} rounds after 1 warm-up")
        logf = self.work / "logs" / "devdb-hook.log"
        for n in range(rounds + 1):
            for branch in ("other", "main"):
                self.wait_spares_ready(target)
                self.settle()
                before = logf.stat().st_size if logf.exists() else 0
                seconds = self.timed([(git + ["checkout", "-q", branch], None)], env, "devdb-hook")
                with open(logf, "rb") as f:
                    f.seek(before)
                    said = f.read().decode(errors="replace")
                parts = re.search(r"dev-db: saved branch .*? \(([0-9.]+)s\), restored .*? \(([0-9.]+)s\)", said)
                if not parts:
                    raise Fail(f"the dev-db hook did not save and restore on git checkout {branch}: see {logf}")
                self.record("devdb_hook", Run(seconds, cpu=self.last_cpu), n == 0)
                self.record("devdb_hook_save", Run(float(parts.group(1))), n == 0)
                self.record("devdb_hook_restore", Run(float(parts.group(2))), n == 0)
        self.check([self.xtask, "dev-db", "hook", "uninstall"], env=env, cwd=repo)
        self.wait_spares_ready(target)
        for name in self.snapshot_names(target):
            self.check([self.xtask, "dev-db", "drop", name, "--yes", *map(str, target)], env=self.xtask_env())

    def snapshot_names(self, target):
        listed = subprocess.run([self.xtask, "dev-db", "list", *map(str, target)], capture_output=True,
                                text=True, env=self.xtask_env()).stdout
        return [line.split()[0] for line in listed.splitlines()
                if line and not line.startswith((" ", "snapshots of", "name ", "disk:", "no snapshots"))]

    def wait_spares_ready(self, target, timeout=600):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = subprocess.run([self.xtask, "dev-db", "list", *map(str, target)], capture_output=True,
                                    text=True, env=self.xtask_env()).stdout
            names = self.snapshot_names(target)
            rows = [line for line in listed.splitlines() if line.split()[:1] and line.split()[0] in names]
            if rows and all("  ready  " in line for line in rows):
                return
            time.sleep(0.5)
        raise Fail(f"the dev-db spares were not all ready after {timeout} s: see .netpoint-dev-db/spares.log")

    def print_spares(self):
        med = {name: statistics.median(self.times(name)) for name, _ in SPARE_STEPS}
        small, large = med["devdb_spare_1x"], med[f"devdb_spare_{SPARE_FACTOR}x"]
        ratio = large / small
        sizes = self.data["spare_sizes"]
        ok = small <= SPARE_GOAL_S and large <= SPARE_GOAL_S and 1 / SPARE_SPREAD <= ratio <= SPARE_SPREAD
        print()
        print(f"dev-db restore with a ready spare (goal: median <= {SPARE_GOAL_S:g} s at both sizes, the medians "
              f"within {SPARE_SPREAD - 1:.0%} of each other):")
        for label in ("1x", f"{SPARE_FACTOR}x"):
            t = self.times(f"devdb_spare_{label}")
            print(f"  {label:<3} database {human_bytes(int(sizes[label])):>10}: median {statistics.median(t):.3f} s "
                  f"[{min(t):.3f} - {max(t):.3f}] over {len(t)} rounds")
        print(f"  ratio of the medians {SPARE_FACTOR}x / 1x: {ratio:.2f}   {'OK' if ok else 'MISS'}")
        added = med["devdb_hook"] - med["git_checkout"]
        # A save's time is the hook's own save's: the same save --force of the branch left, on a
        # dev database just renamed in from a spare (its pages not in the cache, unlike those
        # of T13's save, which follows a clone).
        save = med["devdb_hook_save"]
        budget = save + small + HOOK_SLACK_S
        print(f"dev-db hook: a branch switch takes {med['devdb_hook']:.2f} s with it, {med['git_checkout']:.3f} s "
              f"without: it adds {added:.2f} s; goal <= its save {save:.2f} + ready-spare restore {small:.2f} + "
              f"{HOOK_SLACK_S:g} = {budget:.2f} s   {'OK' if added <= budget else 'MISS'}")
        rest = added - save - med["devdb_hook_restore"]
        print(f"  the hook's save --force {save:.2f} s (T13's save {statistics.median(self.times('devdb_save')):.2f} s), "
              f"its restore {med['devdb_hook_restore']:.2f} s, the rest of the hook {rest:.2f} s")
        if self.args.json:
            result = json.loads(Path(self.args.json).read_text())
            result["spares"] = {"sizes_bytes": sizes, "medians_s": med, "ratio": ratio, "hook_added_s": added,
                                "hook_budget_s": budget}
            Path(self.args.json).write_text(json.dumps(result, indent=2) + "\n")

    def print_subset(self, title, ids, steps, source="source"):
        src = self.data[source]
        media = ""
        if "media_tree" in self.data:
            files, size = self.data["media_tree"]
            media = f", media {human_bytes(size)} in {files:,} files"
        print(f"{title}: scale {self.scale:g} of full, {self.rounds} rounds after 1 warm-up, {self.cores} cores; "
              f"database {human_bytes(src['database_bytes'])} ({human_bytes(src['other_bytes'])} outside "
              f"{CHANGELOG}){media}")
        print(f"xtask {self.revision}, dev profile ({self.xtask_built})")
        print()
        print(f"{'':4}{'comparison':<48}{'ours':>8}{'baseline':>10}  {'ratio min / median / max':<26}"
              f"{'goal':<10}result")
        targets = self.ratios(ids)
        self.write_subset_json(targets, steps, source)
        for t in targets:
            goal = "-" if t["goal"] is None else f"<= {t['goal']:g}"
            spread = f"{t['min']:.2f} / {t['median']:.2f} / {t['max']:.2f}"
            print(f"{t['id']:<4}{t['what']:<48}{t['ours_median_s']:>7.2f}s{t['baseline_median_s']:>9.2f}s  "
                  f"{spread:<26}{goal:<10}{t['result']}")
        print()
        print("seconds per command, median [min - max] over the rounds:")
        for name, label in steps:
            t = self.times(name)
            print(f"  {label:<56}{statistics.median(t):>8.2f} [{min(t):.2f} - {max(t):.2f}]")
        self.print_cpu(ids, steps)
        print(f"elapsed {(time.monotonic() - START) / 60:.1f} min")

    def print_cpu(self, ids, steps):
        """Where the CPU went, per command, and the lowest ratio that work allows: no command
        can take less wall time than its CPU seconds spread over every core."""
        rows = [(name, label, self.runs[name]["rounds"]) for name, label in steps]
        rows = [row for row in rows if row[2] and all(r.cpu and r.cpu["client"] is not None for r in row[2])]
        if not rows:
            return
        print()
        print("CPU seconds per command, median over the rounds (client: the command and every process it")
        print("waited for; server: the PostgreSQL container, source and targets; proxy: Docker's port forwarder):")
        print(f"  {'':<56}{'client':>8}{'server':>8}{'proxy':>8}{'total':>8}  cores busy")
        for name, label, runs in rows:
            cells = []
            for part in ("client", "server", "proxy"):
                values = [r.cpu[part] for r in runs]
                cells.append("-" if None in values else f"{statistics.median(values):.2f}")
            total = statistics.median(cpu_total(r) for r in runs)
            busy = statistics.median(cpu_total(r) / r.seconds for r in runs)
            print(f"  {label:<56}" + "".join(f"{c:>8}" for c in cells) + f"{total:>8.2f}  {busy:.2f}")
        bounds = []
        for tid in ids:
            if tid not in CPU_BOUNDS:
                continue
            ours, base = (self.runs[name]["rounds"] for name in CPU_BOUNDS[tid])
            if not all(r.cpu and None not in r.cpu.values() for r in ours):
                continue
            per_round = [cpu_total(o) / self.cores / b.seconds for o, b in zip(ours, base)]
            bounds.append(f"{tid} {statistics.median(per_round):.2f}")
        if bounds:
            print(f"lowest ratio the measured work allows on {self.cores} cores (ours: CPU seconds / "
                  f"{self.cores} cores / the baseline's wall time), median: {', '.join(bounds)}")

    def write_subset_json(self, targets, steps, source):
        """With --json, the results of a run of only some groups; a second subset of the same
        run (--databases prints two) is added to the same file."""
        if not self.args.json:
            return
        result = self.subset_json = self.subset_json or {
            "scale": self.scale, "rounds": self.rounds, "cores": self.cores,
            "xtask": {"revision": self.revision}, "data": {}, "targets": [], "runs": {},
        }
        result["data"][source] = self.data[source]
        result["targets"] += targets
        for name, _ in steps:
            slot = self.runs[name]
            result["runs"][name] = {k: [r.as_json() for r in v] for k, v in slot.items()}
        result["elapsed_s"] = round(time.monotonic() - START, 1)
        Path(self.args.json).write_text(json.dumps(result, indent=2) + "\n")

    def run_ssh_media(self):
        self.prepare()
        self.start_ssh()
        self.group("media again, 1 % changed (T11-T12)", self.incremental_round)
        self.group("database over SSH (S1)", self.ssh_db_round)
        self.print_subset(f"NetPoint incremental media and SSH benchmark ({CHANGED_SHARE:.0%} of the files rewritten "
                          "between the two media clones of a round)", ("T11", "T12", "S1"), SSH_MEDIA_STEPS)
        return 0

    def group(self, title, one_round):
        log(f"{title}: warm-up")
        one_round(True)
        for n in range(1, self.rounds + 1):
            log(f"{title}: round {n}/{self.rounds}")
            one_round(False)

    # ---------------------------------------------------------------- phases

    def run_databases(self):
        self.prepare(media=False)
        self.group("database (T1-T3)", self.db_round)
        self.prepare_netbox_shape()
        self.group("NetBox shape (N1-N3)", self.netbox_round)
        self.print_subset("NetPoint database clone benchmark on NetPoint's schema", ("T1", "T2", "T3"), DB_STEPS)
        print()
        shape = self.data["nb_shape"]
        self.print_subset(f"and on NetBox's shape ({shape['tables']} tables, {shape['indexes']} indexes, "
                          f"{shape['constraints']} constraints)", ("N1", "N2", "N3"), NETBOX_STEPS,
                          source="nb_source")
        return 0

    def prepare(self, media=True):
        self.start_postgres()
        self.createdb("bench_source")
        self.check(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "bench_source", "-f",
                    ROOT / "fixtures" / "netpoint.sql"], env=self.pg_env())
        self.inflate("bench_source", 0)
        for db in ("bench_tiny", "bench_tiny_target"):
            self.createdb(db)
        self.data["source"] = self.db_sizes("bench_source")
        self.print_db_sizes(self.data["source"])
        log("writing the directory dump for the pg_restore floor (pg_dump -Fd -Z0), outside the timing")
        self.check(["pg_dump", "-Fd", "-Z0", f"--exclude-table-data={CHANGELOG}", "-f", self.work / "floor.dump",
                    "bench_source"], env=self.pg_env())
        if not media:
            return
        self.make_media(self.work / "src", 0)
        self.data["media_tree"] = tree_totals(self.work / "src" / "netpoint" / "media")
        self.data["media_tree_first"] = self.data["media_tree"]

    def print_db_sizes(self, sizes):
        log(f"  database {human_bytes(sizes['database_bytes'])}: {CHANGELOG} "
            f"{human_bytes(sizes['changelog_bytes'])} ({sizes['changelog_rows']:,} rows), "
            f"everything else {human_bytes(sizes['other_bytes'])}")
        log("  largest tables: " + ", ".join(f"{n} {human_bytes(s)}" for n, s in sizes["largest_tables"]))

    def double(self):
        log("doubling the data for the memory-growth check")
        self.inflate("bench_source", 1)
        self.data["doubled"] = self.db_sizes("bench_source")
        self.print_db_sizes(self.data["doubled"])
        self.make_media(self.work / "src", 1)
        self.data["media_tree_doubled"] = tree_totals(self.work / "src" / "netpoint" / "media")
        self.data["media_tree"] = self.data["media_tree_doubled"]
        self.settle()
        run = self.timed_xtask(["clone-prod", "--source", self.url("bench_source"), "--target",
                                self.url("bench_direct"), "--yes"], "direct-2x")
        self.record("direct_2x", run, False)
        media = self.work / "src" / "netpoint" / "media"
        target = self.work / "media-direct"
        self.settle()
        run = self.timed_xtask(self.media_direct_args(media, target), "media-direct-2x")
        self.record("media_direct_2x", run, False)
        shutil.rmtree(target)

    def run(self):
        self.preflight()
        parent = Path(self.args.workdir).resolve() if self.args.workdir else None
        if parent:
            parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="netpoint-bench-", dir=parent))
        (self.work / "logs").mkdir()
        self.check_space()
        self.build()
        if self.args.scrub_cost:
            return self.run_scrub_cost()
        if self.args.ssh_media:
            return self.run_ssh_media()
        if self.args.dev_db:
            return self.run_dev_db()
        if self.args.netbox_shape:
            return self.run_netbox_shape()
        if self.args.databases:
            return self.run_databases()
        if self.args.subset:
            return self.run_subsets()
        self.prepare()
        self.group("database (T1-T3)", self.db_round)
        self.group("media (T4-T6)", self.media_round)
        self.group("hashing (T7)", self.hash_round)
        self.start_ssh()
        self.group("media again, 1 % changed (T11-T12)", self.incremental_round)
        self.group("database over SSH (S1)", self.ssh_db_round)
        self.group("dev-db (T13)", self.devdb_round)
        self.prepare_netbox_shape()
        self.group("NetBox shape (N1-N3)", self.netbox_round)
        self.double()
        return self.report()

    def cleanup(self):
        if self.xtask_pid:
            try:
                os.kill(self.xtask_pid, signal.SIGINT)  # xtask cleans up after itself on SIGINT
            except OSError:
                pass
        if self.child and self.child.poll() is None:
            if not self.xtask_pid:
                self.child.send_signal(signal.SIGINT)
            try:
                self.child.wait(30)
            except subprocess.TimeoutExpired:
                if self.xtask_pid:
                    os.kill(self.xtask_pid, signal.SIGKILL)
                self.child.kill()
                self.child.wait()
        if self.args.keep:
            if self.container_started:
                passfile = self.work / "bench.pgpass"
                passfile.touch(mode=0o600)
                passfile.write_text(f"127.0.0.1:{self.port}:*:postgres:{self.password}\n")
                log(f"kept: container {self.container}, "
                    f"{self.url('bench_source')}?passfile={passfile}; remove with `docker rm -f {self.container}`")
            if self.work:
                log(f"kept: {self.work}")
            return
        if self.ssh_container:
            subprocess.run(["docker", "rm", "-f", "-v", self.ssh_container], capture_output=True)
        if self.container_started:
            subprocess.run(["docker", "rm", "-f", "-v", self.container], capture_output=True)
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---------------------------------------------------------------- report

    def times(self, name):
        return [r.seconds for r in self.runs[name]["rounds"]]

    def ratios(self, only=None):
        def t(name):
            return lambda: self.times(name)

        def plus(a, b):
            return lambda: [x + y for x, y in zip(a(), b())]

        pairs = {
            "T1": (t("direct"), t("manual")),
            "T2": (t("direct"), t("floor")),
            "T3": (plus(t("export"), t("import")), t("manual")),
            "T4": (t("media_direct"), plus(t("tar_czf"), t("tar_xf"))),
            "T5": (t("media_direct"), t("cp")),
            "T6": (t("media_export"), t("tar_czf")),
            "T7": (t("hash_media"), t("sha256sum")),
            "T11": (t("media_again_local"), t("media_full_local")),
            "T12": (t("media_again_ssh"), t("media_full_ssh")),
            "S1": (t("direct_ssh"), t("direct_plain")),
            "T13": (plus(t("devdb_save"), t("devdb_restore")), t("devdb_clone")),
            "N1": (t("nb_direct"), t("nb_manual")),
            "N2": (t("nb_direct"), t("nb_floor")),
            "N3": (t("nb_no_scrub"), t("nb_floor")),
        }
        out = []
        for tid, what, goal, kind in TARGETS:
            if only is not None and tid not in only:
                continue
            ours, base = pairs[tid][0](), pairs[tid][1]()
            if kind == "min":  # throughput: same bytes, so baseline time / our time
                values = [b / o for o, b in zip(ours, base)]
            else:
                values = [o / b for o, b in zip(ours, base)]
            med = statistics.median(values)
            ok = kind == "info" or (med >= goal if kind == "min" else med <= goal)
            out.append({"id": tid, "what": what, "goal": goal, "goal_kind": kind,
                        "ours_median_s": statistics.median(ours), "baseline_median_s": statistics.median(base),
                        "ratios": values, "min": min(values), "median": med, "max": max(values),
                        "result": "-" if kind == "info" else "PASS" if ok else "MISS"})
        return out

    def rss(self):
        labels = {
            "direct": "clone-prod --source --target (db)",
            "export": "clone-prod --source --out (db)",
            "import": "clone-prod --bundle --target (db)",
            "media_direct": "clone-prod media direct",
            "media_export": "clone-prod --out --source-media",
            "hash_media": "hash-media",
            "direct_2x": "clone-prod db, data doubled",
            "media_direct_2x": "clone-prod media, data doubled",
        }
        rows = []
        for name, label in labels.items():
            runs = self.runs[name]["warmup"] + self.runs[name]["rounds"]
            hwm = [r.hwm_kb for r in runs if r.hwm_kb]
            maxrss = [r.maxrss_kb for r in runs if r.maxrss_kb]
            rows.append({"command": name, "label": label, "runs": len(runs),
                         "vmhwm_max_kb": max(hwm) if hwm else None,
                         "vmhwm_median_kb": statistics.median(hwm) if hwm else None,
                         "ru_maxrss_max_kb": max(maxrss) if maxrss else None})
        return rows

    def report(self):
        targets = self.ratios()
        rss = self.rss()
        by = {row["command"]: row for row in rss}
        peak = max(row["vmhwm_max_kb"] or 0 for row in rss)
        growth = {}
        for base, doubled in (("direct", "direct_2x"), ("media_direct", "media_direct_2x")):
            before = statistics.median([r.hwm_kb for r in self.runs[base]["rounds"]])
            after = self.runs[doubled]["rounds"][0].hwm_kb
            growth[base] = {"before_kb": before, "after_kb": after, "growth": after / before - 1}
        worst = max(g["growth"] for g in growth.values())
        t8 = {"peak_kb": peak, "peak_result": "PASS" if peak < RSS_LIMIT_MB * 1024 else "MISS",
              "growth": growth, "growth_result": "PASS" if worst < GROWTH_LIMIT else "MISS"}
        elapsed = time.monotonic() - START
        src, dbl = self.data["source"], self.data["doubled"]
        files, size = self.data["media_tree_first"]
        scale_name = next((k for k, v in SCALES.items() if v == self.scale), f"{self.scale:g}")
        media_mode = "clone-prod --media-only" if self.media_only else \
            "--media-only not in this xtask yet, so database + media with an empty database pair"

        def mib(kb):
            return f"{kb / 1024:.1f}" if kb else "-"

        print(f"NetPoint clone-prod benchmark: scale {scale_name} ({self.scale:g} of full), "
              f"{self.rounds} round{'s' if self.rounds > 1 else ''} after 1 warm-up, {self.cores} cores")
        print(f"xtask {self.revision}, dev profile ({self.xtask_built})")
        print(f"database {human_bytes(src['database_bytes'])}: {CHANGELOG} {human_bytes(src['changelog_bytes'])}, "
              f"other tables {human_bytes(src['other_bytes'])}; dump without changelog data "
              f"{human_bytes(self.data['manual_sql_bytes'])}")
        print(f"media {human_bytes(size)} in {files:,} files; media direct: {media_mode}")
        print()
        print(f"{'':4}{'comparison':<48}{'ours':>8}{'baseline':>10}  {'ratio min / median / max':<26}"
              f"{'goal':<10}result")
        for t in targets:
            goal = "-" if t["goal"] is None else f"{'>=' if t['goal_kind'] == 'min' else '<='} {t['goal']:g}"
            spread = f"{t['min']:.2f} / {t['median']:.2f} / {t['max']:.2f}"
            print(f"{t['id']:<4}{t['what']:<48}{t['ours_median_s']:>7.2f}s{t['baseline_median_s']:>9.2f}s  "
                  f"{spread:<26}{goal:<10}{t['result']}")
        print(f"{'T8':<4}{'peak RSS, any xtask command (MiB)':<48}{'':18}  "
              f"{'max ' + mib(peak):<26}{'< ' + str(RSS_LIMIT_MB):<10}{t8['peak_result']}")
        print(f"{'T8':<4}{'peak RSS growth with the data doubled':<48}{'':18}  "
              f"{'max ' + format(worst * 100, '+.1f') + ' %':<26}{'< 10 %':<10}{t8['growth_result']}")
        print()
        print("seconds per command, median [min - max] over the rounds:")
        steps = [
            *DB_STEPS,
            ("tar_czf", "tar -czf x.tar.gz -C root netpoint/media/"),
            ("tar_xf", "tar -xf x.tar.gz into a new directory"),
            ("media_direct", "xtask clone-prod media direct"),
            ("cp", "cp -a A B2"),
            ("media_export", "xtask clone-prod --source TINY --out --source-media"),
            ("sha256sum", "find -print0 | xargs -0 sha256sum"),
            ("hash_media", "xtask hash-media"),
            *SSH_MEDIA_STEPS,
            *DEV_DB_STEPS,
        ]
        for name, label in steps:
            s = self.times(name)
            print(f"  {label:<56}{statistics.median(s):>8.2f} [{min(s):.2f} - {max(s):.2f}]")
        print()
        print("peak RSS of xtask in MiB, highest of all runs (warm-ups included):")
        print(f"  {'command':<40}{'VmHWM':>8}{'ru_maxrss':>11}{'runs':>6}")
        for row in rss:
            print(f"  {row['label']:<40}{mib(row['vmhwm_max_kb']):>8}{mib(row['ru_maxrss_max_kb']):>11}"
                  f"{row['runs']:>6}")
        print(f"  (VmHWM: polled every 20 ms. ru_maxrss: from wait4, also counts the pg_dump/psql xtask waited "
              f"for, never below {mib(self.rss_floor_kb)} MiB)")
        print()
        print(f"data doubled at scale {scale_name}: database {human_bytes(src['database_bytes'])} -> "
              f"{human_bytes(dbl['database_bytes'])}, media {human_bytes(size)} -> "
              f"{human_bytes(self.data['media_tree_doubled'][1])}")
        for key, g in growth.items():
            print(f"  {by[key]['label']:<40}{mib(g['before_kb']):>8} -> {mib(g['after_kb'])} MiB "
                  f"({g['growth'] * 100:+.1f} %)")
        print(f"elapsed {elapsed / 60:.1f} min")

        if self.args.json:
            result = {
                "scale": self.scale, "scale_name": scale_name, "rounds": self.rounds, "cores": self.cores,
                "xtask": {"revision": self.revision, "media_only": self.media_only},
                "ru_maxrss_floor_kb": self.rss_floor_kb,
                "data": {"source": src, "doubled": dbl, "manual_sql_bytes": self.data["manual_sql_bytes"],
                         "media_files": files, "media_bytes": size,
                         "media_doubled": list(self.data["media_tree_doubled"])},
                "targets": targets,
                "t8": t8,
                "rss": rss,
                "runs": {name: {k: [r.as_json() for r in v] for k, v in slot.items()}
                         for name, slot in self.runs.items()},
                "elapsed_s": round(elapsed, 1),
            }
            Path(self.args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0


# ---------------------------------------------------------------------- media

MEDIA_LAYOUT = [  # (share of files, subdirectory, name pattern)
    (0.72, "image-attachments", "{kind}_{n}_{label}.{ext}"),
    (0.08, "image-attachments/archive/{year}", "{kind}_{n}_{label}_before_refresh.{ext}"),
    (0.16, "devicetype-images", "{vendor}-{model}-{n}.{side}.png"),
    (0.04, "devicetype-images/legacy", "{vendor}-{model}-{n}.{side}.png"),
]


def write_media(media, files, total, seed, batch):
    """Random, incompressible files (like JPEG/PNG) with lognormal sizes summing to `total`."""
    rng = random.Random(seed)
    sigma = 1.0
    mean = total / files
    mu = math.log(mean) - sigma * sigma / 2
    sizes = [min(max(int(rng.lognormvariate(mu, sigma)), 2048), 40 * MB) for _ in range(files)]
    factor = total / sum(sizes)
    sizes = [max(1024, int(s * factor)) for s in sizes]
    sizes[-1] = max(1024, sizes[-1] + total - sum(sizes))
    labels = ["front", "rear", "serial label", "floorplan", "entrance photo", "cabling", "patch panel"]
    vendors = ["kestrel", "northgate", "corvid", "halden", "aster"]
    counts = [round(files * share) for share, _, _ in MEDIA_LAYOUT[:-1]]
    counts.append(files - sum(counts))
    n = 0
    for count, (_, subdir, pattern) in zip(counts, MEDIA_LAYOUT):
        for _ in range(count):
            uid = batch * 10_000_000 + n
            fields = {
                "kind": rng.choice(["rack", "device", "site", "location"]), "n": uid,
                "label": rng.choice(labels), "ext": rng.choice(["jpg", "jpg", "png"]),
                "year": rng.choice([2021, 2022, 2023]), "vendor": rng.choice(vendors),
                "model": f"x{rng.randrange(100, 9999)}", "side": rng.choice(["front", "rear"]),
            }
            path = media / subdir.format(**fields) / pattern.format(**fields)
            path.parent.mkdir(parents=True, exist_ok=True)
            left = sizes[n]
            with open(path, "wb") as f:
                while left:
                    chunk = min(left, 4 * MB)
                    f.write(rng.randbytes(chunk))
                    left -= chunk
            n += 1


# ------------------------------------------------------------------- database

def inflate_sql(c, batch):
    """One batch of NetPoint-shaped rows, appended after the existing ids; FK-consistent by construction."""
    per_site_devices = RACKS_PER_SITE * DEVICES_PER_RACK
    half = c["interfaces"] // 2
    return f"""
-- Triggers (and so the deferred FK checks) are off while filling; every load later
-- re-creates each foreign key, which checks all rows.
set session_replication_role = replica;
set synchronous_commit = off;
begin;
create temp table ref on commit drop as select
  (select coalesce(max(id), 0) from public.dcim_site) as site0,
  (select coalesce(max(id), 0) from public.dcim_rack) as rack0,
  (select coalesce(max(id), 0) from public.dcim_device) as dev0,
  (select coalesce(max(id), 0) from public.dcim_interface) as if0,
  (select coalesce(max(id), 0) from public.dcim_cable) as cab0,
  (select coalesce(max(id), 0) from public.ipam_ipaddress) as ip0,
  (select coalesce(max(id), 0) from public.ipam_vlan) as vlan0,
  (select array_agg(id order by id) from public.dcim_region) as regions,
  (select array_agg(id order by id) from public.tenancy_tenant) as tenants,
  (select array_agg(id order by id) from public.dcim_devicetype) as dtypes,
  (select array_agg(id order by id) from public.dcim_devicerole) as roles,
  (select array_agg(id order by id) from public.dcim_platform) as platforms,
  (select array_agg(id order by id) from public.ipam_vrf) as vrfs,
  (select array_agg(id order by id) from public.extras_tag) as tags,
  (select array_agg(id order by id) from public.users_user) as users,
  (select array_agg(username::text order by id) from public.users_user) as usernames,
  (select id from public.django_content_type where app_label = 'dcim' and model = 'device') as ct_device,
  (select id from public.django_content_type where app_label = 'dcim' and model = 'interface') as ct_interface,
  (select id from public.django_content_type where app_label = 'dcim' and model = 'rack') as ct_rack,
  (select id from public.django_content_type where app_label = 'ipam' and model = 'ipaddress') as ct_ip,
  timestamptz '2023-03-01 00:00:00+00' + interval '{batch * 400} days' as t0;

insert into public.dcim_site (id, created, last_updated, custom_field_data, name, slug, status, facility,
  time_zone, description, physical_address, shipping_address, latitude, longitude, comments, region_id, tenant_id)
select r.site0 + g, r.t0 + g * interval '1 hour', r.t0 + g * interval '3 hours',
  jsonb_build_object('noc_phone', '+49 69 555 ' || lpad((g % 10000)::text, 4, '0'), 'power_feeds', 1 + g % 4),
  'Site ' || (r.site0 + g), 'site-' || (r.site0 + g), 'active', 'HALL-' || (g % 20), 'Europe/Berlin',
  'Colocation site ' || (r.site0 + g), g || ' Example Street, 60314 Frankfurt', '',
  round(40 + (g % 1000) / 100.0, 6), round((g % 3000) / 100.0, 6), '',
  r.regions[1 + g % cardinality(r.regions)],
  case when g % 3 = 0 then null else r.tenants[1 + g % cardinality(r.tenants)] end
from ref r, generate_series(1, {c['sites']}) g;

insert into public.dcim_rack (id, created, last_updated, custom_field_data, name, facility_id, status, serial,
  asset_tag, width, u_height, starting_unit, desc_units, outer_depth, comments, description, site_id, location_id,
  tenant_id)
select r.rack0 + k, r.t0 + k * interval '5 minutes', r.t0 + k * interval '9 minutes', '{{}}',
  'R' || lpad(((k - 1) % {RACKS_PER_SITE} + 1)::text, 2, '0'), 'F' || (r.rack0 + k), 'active',
  'RK' || lpad((r.rack0 + k)::text, 8, '0'), 'RK-' || (r.rack0 + k), 19, 42, 1, false, 1200, '', '',
  r.site0 + 1 + (k - 1) / {RACKS_PER_SITE}, null, null
from ref r, generate_series(1, {c['racks']}) k;

insert into public.ipam_vlan (id, created, last_updated, custom_field_data, vid, name, status, description,
  comments, site_id, tenant_id)
select r.vlan0 + v, r.t0 + v * interval '1 minute', r.t0 + v * interval '1 minute', '{{}}',
  100 + (v - 1) % {VLANS_PER_SITE}, 'vlan' || (100 + (v - 1) % {VLANS_PER_SITE}), 'active', '', '',
  r.site0 + 1 + (v - 1) / {VLANS_PER_SITE}, null
from ref r, generate_series(1, {c['vlans']}) v;

insert into public.dcim_device (id, created, last_updated, custom_field_data, local_context_data, name, serial,
  asset_tag, "position", face, status, airflow, description, comments, device_type_id, role_id, platform_id,
  site_id, location_id, rack_id, tenant_id, primary_ip4_id, primary_ip6_id, interface_count)
select r.dev0 + k, r.t0 + k * interval '61 seconds', r.t0 + k * interval '97 seconds',
  jsonb_build_object('warranty_end', (date '2026-01-01' + k % 900)::text, 'support_contract', 'SC-' || (40000 + k)),
  case when k % 4 = 0 then jsonb_build_object(
    'bgp', jsonb_build_object('asn', 65000 + k % 500, 'router_id', host('10.255.0.0'::inet + k)),
    'syslog', jsonb_build_object('host', '10.10.0.250', 'port', 514, 'facility', 'local6'),
    'ntp_servers', jsonb_build_array('10.10.0.5', '10.10.0.6')) end,
  'dev' || (r.dev0 + k), 'SN' || upper(substr(md5(k::text || '{batch}'), 1, 10)), 'DA-' || (r.dev0 + k),
  1 + ((k - 1) % {DEVICES_PER_RACK}) * 6, 'front', 'active', 'front-to-rear', '', '',
  r.dtypes[1 + k % cardinality(r.dtypes)], r.roles[1 + k % cardinality(r.roles)],
  r.platforms[1 + k % cardinality(r.platforms)],
  r.site0 + 1 + (k - 1) / {per_site_devices}, null, r.rack0 + 1 + (k - 1) / {DEVICES_PER_RACK},
  case when k % 5 = 0 then r.tenants[1 + k % cardinality(r.tenants)] end,
  r.ip0 + k, null, {INTERFACES_PER_DEVICE}
from ref r, generate_series(1, {c['devices']}) k;

insert into public.dcim_interface (id, created, last_updated, custom_field_data, name, label, type, enabled,
  mgmt_only, mtu, mac_address, speed, duplex, mode, description, mark_connected, cable_end, device_id, lag_id,
  parent_id, untagged_vlan_id, vrf_id, cable_id)
select r.if0 + i, r.t0 + i * interval '7 seconds', r.t0 + i * interval '11 seconds', '{{}}',
  case when j = 0 then 'mgmt0' else 'et-0/0/' || (j - 1) end,
  case when j = 0 then 'MGMT' else '' end,
  case when j = 0 then '1000base-t' else (array['10gbase-x-sfpp', '25gbase-x-sfp28', '100gbase-x-qsfp28'])[1 + j % 3] end,
  i % 17 <> 0, j = 0, case when j = 0 then 1500 else 9216 end,
  ('02' || lpad(to_hex(r.if0 + i), 10, '0'))::macaddr,
  case when j = 0 then 1000000 else 25000000 end, case when j = 0 then 'full' end,
  case when i % 3 = 1 then 'access' when i % 3 = 2 then 'tagged' else '' end,
  case when i % 4 = 0 then 'uplink to ' || 'dev' || (r.dev0 + 1 + (i + {half}) / {INTERFACES_PER_DEVICE}) else '' end,
  false,
  case when i <= {c['cables']} then 'A' when i > {half} and i <= {half} + {c['cables']} then 'B' else '' end,
  r.dev0 + 1 + (i - 1) / {INTERFACES_PER_DEVICE}, null, null,
  case when i % 3 = 1 then r.vlan0 + ((i - 1) / {INTERFACES_PER_DEVICE * per_site_devices}) * {VLANS_PER_SITE}
                          + 1 + i % {VLANS_PER_SITE} end,
  case when i % 10 = 0 then r.vrfs[1 + i % cardinality(r.vrfs)] end,
  case when i <= {c['cables']} then r.cab0 + i
       when i > {half} and i <= {half} + {c['cables']} then r.cab0 + i - {half} end
from ref r, generate_series(1, {c['interfaces']}) i,
  lateral (select (i - 1) % {INTERFACES_PER_DEVICE} as j) jj;

insert into public.dcim_cable (id, created, last_updated, custom_field_data, type, status, label, color, length,
  length_unit, description, comments, tenant_id, a_interface_id, b_interface_id)
select r.cab0 + c, r.t0 + c * interval '13 seconds', r.t0 + c * interval '17 seconds', '{{}}',
  (array['smf', 'mmf-om4', 'dac-active', 'cat6'])[1 + c % 4], 'connected', 'C' || lpad((r.cab0 + c)::text, 7, '0'),
  (array['f5d300', '111111', '2196f3', 'ff5722'])[1 + c % 4], round(1 + (c % 300) / 10.0, 2), 'm', '', '',
  case when c % 7 = 0 then r.tenants[1 + c % cardinality(r.tenants)] end, r.if0 + c, r.if0 + {half} + c
from ref r, generate_series(1, {c['cables']}) c;

insert into public.ipam_ipaddress (id, created, last_updated, custom_field_data, address, status, role, dns_name,
  description, comments, assigned_object_type_id, assigned_object_id, nat_inside_id, vrf_id, tenant_id)
select r.ip0 + a, r.t0 + a * interval '19 seconds', r.t0 + a * interval '23 seconds', '{{}}',
  case when a <= {c['devices']} then set_masklen('10.0.0.0'::inet + (r.ip0 + a), 16)
       when a % 5 = 0 then set_masklen('fd00::'::inet + (r.ip0 + a), 64)
       else set_masklen('100.64.0.0'::inet + (r.ip0 + a), 24) end,
  'active', case when a % 50 = 0 then 'vip' else '' end,
  case when a <= {c['devices']} then 'dev' || (r.dev0 + a) || '.mgmt.netpoint.example' else '' end,
  case when a % 6 = 0 then 'service address ' || a else '' end, '',
  r.ct_interface,
  case when a <= {c['devices']} then r.if0 + (a - 1) * {INTERFACES_PER_DEVICE} + 1
       else r.if0 + 1 + ((a - {c['devices']}) * 7) % {c['interfaces']} end,
  null, case when a % 10 = 0 then r.vrfs[1 + a % cardinality(r.vrfs)] end,
  case when a % 9 = 0 then r.tenants[1 + a % cardinality(r.tenants)] end
from ref r, generate_series(1, {c['ips']}) a;

insert into public.ipam_prefix (created, last_updated, custom_field_data, prefix, status, is_pool, mark_utilized,
  description, comments, _depth, _children, site_id, vlan_id, vrf_id, tenant_id)
select r.t0 + p * interval '29 seconds', r.t0 + p * interval '31 seconds', '{{}}',
  set_masklen('10.0.0.0'::inet + ((r.ip0 / 256 + p)::bigint * 256), 24)::cidr, 'active', false, false,
  'subnet ' || p, '', 1, 0, r.site0 + 1 + (p - 1) / {PREFIXES_PER_SITE},
  case when p % 2 = 0 then r.vlan0 + ((p - 1) / {PREFIXES_PER_SITE}) * {VLANS_PER_SITE} + 1 + p % {VLANS_PER_SITE} end,
  case when p % 10 = 0 then r.vrfs[1 + p % cardinality(r.vrfs)] end, null
from ref r, generate_series(1, {c['prefixes']}) p;

insert into public.extras_taggeditem (object_id, content_type_id, tag_id)
select r.dev0 + k, r.ct_device, r.tags[1 + (k + 3 * t) % cardinality(r.tags)]
from ref r, generate_series(1, {c['devices']}) k, generate_series(0, 1) t
union all
select r.if0 + i, r.ct_interface, r.tags[1 + i % cardinality(r.tags)]
from ref r, generate_series(3, {c['interfaces']}, 3) i
union all
select r.ip0 + a, r.ct_ip, r.tags[1 + a % cardinality(r.tags)]
from ref r, generate_series(4, {c['ips']}, 4) a;

insert into public.extras_imageattachment (created, last_updated, object_id, image, image_height, image_width,
  name, content_type_id)
select r.t0 + m * interval '1 hour', r.t0 + m * interval '1 hour',
  case when m % 2 = 0 then r.rack0 + 1 + m % {c['racks']} else r.dev0 + 1 + m % {c['devices']} end,
  'image-attachments/' || case when m % 2 = 0 then 'rack' else 'device' end || '_' || ({batch * 10_000_000} + m)
    || '_front.jpg', 1080, 1920, 'Front',
  case when m % 2 = 0 then r.ct_rack else r.ct_device end
from ref r, generate_series(1, {c['image_attachments']}) m;

-- The changelog: serialized interfaces before and after each change, as NetPoint writes them.
-- Snapshots start from a pool of 2,000 serialized interfaces; each row then gets its own
-- object, device, description and times.
create temp table snapshot (p integer primary key, snap jsonb not null) on commit drop;
insert into snapshot
select p, jsonb_build_object(
    'id', p, 'url', '/api/dcim/interfaces/' || p || '/', 'display', 'et-0/0/' || (p % 48),
    'device', jsonb_build_object('id', p, 'url', '/api/dcim/devices/' || p || '/', 'name', 'dev' || p,
                                 'display', 'dev' || p),
    'name', 'et-0/0/' || (p % 48), 'label', '', 'type', '25gbase-x-sfp28', 'enabled', true,
    'parent', null, 'bridge', null, 'lag', null, 'mtu', 9216,
    'mac_address', upper(substr(md5(p::text), 1, 12)), 'speed', 25000000, 'duplex', null, 'wwn', null,
    'mgmt_only', false, 'description', '', 'mode', 'access',
    'untagged_vlan', jsonb_build_object('id', 100 + p % 50, 'vid', 100 + p % 50, 'name', 'vlan' || (100 + p % 50)),
    'tagged_vlans', '[]'::jsonb, 'mark_connected', false,
    'cable', jsonb_build_object('id', p * 37, 'url', '/api/dcim/cables/' || (p * 37) || '/',
                                'label', 'C' || lpad((p * 37)::text, 7, '0')),
    'cable_end', 'A', 'link_peers_type', 'dcim.interface',
    'link_peers', jsonb_build_array(jsonb_build_object('id', p + 1, 'name', 'et-0/0/' || ((p + 1) % 48),
                                                       'device', jsonb_build_object('id', p + 1))),
    'vrf', null, 'l2vpn_termination', null,
    'tags', jsonb_build_array(jsonb_build_object('id', 1 + p % 8, 'slug', 'tag-' || (1 + p % 8))),
    'custom_fields', jsonb_build_object('circuit_ref', 'CR-' || (p * 7 % 99991), 'patch_position',
                                        'PP' || (p % 48) || '-' || (p % 24), 'notes', md5(p::text || 'n')),
    'created', timestamptz '2022-06-01 00:00:00+00' + p * interval '1 hour') as snap
from generate_series(0, 1999) p;

insert into public.extras_objectchange (time, user_name, request_id, action, changed_object_id,
  related_object_id, object_repr, prechange_data, postchange_data, changed_object_type_id,
  related_object_type_id, user_id)
select t, r.usernames[u], md5('request' || (g / 3) || '/{batch}')::uuid, act, obj, dev,
  'dev' || dev || ' et-0/0/' || (g % 48),
  case when act = 'create' then null else pre end,
  case when act = 'delete' then null
       else pre || jsonb_build_object('description', 'moved to ' || md5(g::text || 'post'),
                                      'last_updated', t, 'enabled', g % 13 <> 0) end,
  r.ct_interface, r.ct_device, r.users[u]
from ref r, generate_series(1, {c['changes']}) g,
  lateral (select 1 + g % cardinality(r.users) as u, r.t0 + g * interval '23 seconds' as t,
                  case when g % 10 < 6 then 'update' when g % 10 < 9 then 'create' else 'delete' end as act,
                  r.if0 + 1 + (g::bigint * 7919) % {c['interfaces']} as obj,
                  r.dev0 + 1 + ((g::bigint * 7919) % {c['interfaces']}) / {INTERFACES_PER_DEVICE} as dev) k,
  lateral (select s.snap || jsonb_build_object(
             'id', obj, 'url', '/api/dcim/interfaces/' || obj || '/',
             'device', jsonb_build_object('id', dev, 'url', '/api/dcim/devices/' || dev || '/',
                                          'name', 'dev' || dev, 'display', 'dev' || dev),
             'description', substr(md5(g::text), 1, 8 + g % 24),
             'last_updated', t - interval '9 days') as pre
           from snapshot s where s.p = g % 2000 offset 0) v;

do $$
declare t record;
begin
  for t in select table_schema, table_name, column_name from information_schema.columns
           where table_schema = 'public' and is_identity = 'YES' loop
    execute format('select setval(pg_get_serial_sequence(%L, %L), coalesce((select max(%I) from %I.%I), 0) + 1, false)',
                   t.table_schema || '.' || t.table_name, t.column_name, t.column_name, t.table_schema, t.table_name);
  end loop;
end $$;
commit;
"""


# ----------------------------------------------------------------------- main

def parse_scale(value):
    if value in SCALES:
        return SCALES[value]
    try:
        scale = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("use quick, full or a number (the fraction of full, e.g. 0.25)")
    if not 0.001 <= scale <= 10:
        raise argparse.ArgumentTypeError("a numeric scale is a fraction of full between 0.001 and 10")
    return scale


def main():
    parser = argparse.ArgumentParser(
        description="Side-by-side benchmark of cargo xtask clone-prod against the manual procedure "
                    "(not part of the test suite).")
    parser.add_argument("--scale", type=parse_scale, default="full", metavar="quick|full|N",
                        help="data size: full (2 GiB database, 2.5 GiB media), quick (1/20 of that) or N, "
                             "a fraction of full [default: full]")
    parser.add_argument("--rounds", type=int, default=3, metavar="R",
                        help="measured rounds per comparison, after one warm-up [default: 3]")
    parser.add_argument("--keep", action="store_true",
                        help="keep the container, the data and the work directory at the end")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    only = parser.add_mutually_exclusive_group()  # each runs its groups alone
    only.add_argument("--scrub-cost", action="store_true",
                      help="only measure what scrubbing and the leak scan cost a direct clone, side by side "
                           "with --no-scrub (database only, no media)")
    only.add_argument("--ssh-media", action="store_true",
                      help="only measure a second media clone with 1 %% of the files changed against a full "
                           "one, locally and over SSH (T11, T12), and a database clone over SSH against one "
                           "without (S1)")
    only.add_argument("--dev-db", action="store_true",
                      help="only measure dev-db save + restore against a clone-prod of the same database and "
                           "media (T13)")
    only.add_argument("--netbox-shape", action="store_true",
                      help="only measure database clones on a NetBox-shaped database (scripts/netbox_shape.py: "
                           "about 190 tables, most tiny, the search cache largest) against the manual procedure "
                           "and pg_restore -j (N1-N3)")
    only.add_argument("--databases", action="store_true",
                      help="only measure the database clones, on both data sets: NetPoint's schema (T1-T3) "
                           "and NetBox's shape (N1-N3); no media")
    only.add_argument("--subset", action="store_true",
                      help="only measure clone-prod --subset on NetBox's shape at two scales in one run (the "
                           "scale and 4x): a one-site subset at both (S1, S2), a full clone of the larger "
                           "source (S3) and a sample of about a million rows (S4), with peak RSS")
    parser.add_argument("--workdir", metavar="DIR",
                        help="where the work directory (media, dumps, bundles) is created [default: /tmp]")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json: the directory of {args.json} does not exist")
    if args.json and Path(args.json).is_dir():
        parser.error(f"--json: {args.json} is a directory; name a file to write the results to")

    bench = Bench(args)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        return bench.run()
    except (Fail, OSError) as err:
        print(f"bench: error: {bench.mask(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
