"""A small library for rsmld's end-to-end tests under the real KCL MultiLangDaemon (3.1.3 or 2.5.8).

Run with the venv made by scripts/install-daemon.sh (boto3, aws-kinesis-agg): the stream, lease
table and record helpers of scripts/kinesis_tool.py are used in-process.

Pieces:
  Emulators  one kinesis-local + dynalite pair (scripts/emulators.sh) with a private state file
  Daemon     one MultiLangDaemon (scripts/run-daemon.sh in the foreground, in its own process
             group, so that its exit code is known) with scripts/record.py around rsmld
  Case       a test case: its own stream, lease table (applicationName), manifest, checks; the
             daemon versions it runs under (`versions`)
  Producer   a thread that keeps putting plain records while a case runs
  run_suite  runs the cases of one daemon version (--kcl 3|2) one after the other on shared
             emulators and prints "N passed, M failed"

Everything binds 127.0.0.1; every process started here is stopped when a case or the suite ends,
including on SIGTERM/SIGHUP (raised as SystemExit, so the finally blocks run).
"""

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "scripts")
STATE = os.environ.get("RSMLD_STATE") or os.path.join(REPO, ".state")
RSMLD = os.path.abspath(os.environ.get("RSMLD_BIN") or os.path.join(REPO, "target", "release", "rsmld"))
RECORDER = os.path.join(SCRIPTS, "record.py")
# The independent reader of rsmld's metrics files: the Prometheus Python client's text parser,
# in a venv of its own (scripts/install-metrics-parser.sh), run through scripts/prom_parse.py.
METRICS_PY = os.path.join(STATE, "metrics-venv", "bin", "python")
PROM_PARSE = os.path.join(SCRIPTS, "prom_parse.py")

sys.path.insert(0, SCRIPTS)
import kinesis_tool as kt  # (needs the venv: boto3, aws-kinesis-agg)

# Daemon properties that make leases, splits and shutdowns happen within seconds. The lease
# taker runs every 2 x (failoverTimeMillis + 25 ms), the renewer every failoverTimeMillis / 3.
FAST_PROPS = {
    "failoverTimeMillis": 3000,
    "shardSyncIntervalMillis": 1000,
    "parentShardPollIntervalMillis": 500,
    "idleTimeBetweenReadsInMillis": 250,
    "timeoutInSeconds": 60,
    "shutdownGraceMillis": 5000,
}

# Lines in a daemon log that mean something went wrong (unless a case expects them).
FATAL_LOG_PATTERNS = [
    "Timedout to get status message",         # timeoutInSeconds expired: Runtime.halt
    "Encountered an error while running daemon",
    "Failed to start client executable",
    "Reached end of STDIN of child process",  # a processor died mid-protocol
    "Received error in response to",
    "Application didn't checkpoint at end of shard",
]

SHARD0, SHARD1 = "shardId-000000000000", "shardId-000000000001"

# The daemon versions scripts/install-daemon.sh installs, by the major version run-daemon.sh takes.
KCL_VERSIONS = {"3": "3.1.3", "2": "2.5.8"}


def say(msg):
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pid_alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# An extended sequence number as a comparable tuple (the cases import it from here).
esn = kt.esn


class CaseFailed(Exception):
    pass


# --------------------------------------------------------------------------------------------


class Emulators:
    def __init__(self, work):
        self.work = work
        self.env = dict(os.environ)
        self.env["RSMLD_STATE"] = STATE
        self.env["RSMLD_EMU_STATE"] = os.path.join(work, "emulators.env")
        for k, v in (("AWS_ACCESS_KEY_ID", "fakeAccessKeyId"), ("AWS_SECRET_ACCESS_KEY", "fakeSecretAccessKey"),
                     ("AWS_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
            self.env.setdefault(k, v)
        self.pids = []
        self.started = False

    def start(self):
        os.makedirs(self.work, exist_ok=True)
        self.started = True
        subprocess.run([os.path.join(SCRIPTS, "emulators.sh"), "start"], env=self.env, check=True, timeout=120)
        out = subprocess.run([os.path.join(SCRIPTS, "emulators.sh"), "env"], env=self.env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        for m in re.finditer(r"^export (KINESIS_ENDPOINT|DYNAMODB_ENDPOINT)=(\S+)$", out, re.MULTILINE):
            self.env[m.group(1)] = m.group(2)
        with open(self.env["RSMLD_EMU_STATE"]) as f:
            st = dict(line.strip().split("=", 1) for line in f if "=" in line)
        self.pids = [int(st["KINESIS_PID"]), int(st["DYNAMODB_PID"])]
        os.environ.update({k: self.env[k] for k in ("KINESIS_ENDPOINT", "DYNAMODB_ENDPOINT", "AWS_ACCESS_KEY_ID",
                                                      "AWS_SECRET_ACCESS_KEY", "AWS_REGION")})
        self.kinesis = kt._client("kinesis", self.env["KINESIS_ENDPOINT"])
        self.dynamodb = kt._client("dynamodb", self.env["DYNAMODB_ENDPOINT"])

    def stop(self):
        if self.started:
            subprocess.run([os.path.join(SCRIPTS, "emulators.sh"), "stop"], env=self.env, timeout=60, check=False)
            self.started = False


# --------------------------------------------------------------------------------------------


class Daemon:
    """One MultiLangDaemon running rsmld (file handler) through scripts/record.py."""

    def __init__(self, case, name, worker_id, rsmld_args=(), props=None, env=None):
        self.case, self.name, self.worker_id = case, name, worker_id
        self.env = dict(env or {})  # extra environment for the daemon and so for rsmld
        self.dir = os.path.join(case.work, name)
        self.out_dir = os.path.join(self.dir, "out")
        self.rec_dir = os.path.join(self.dir, "rec")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.props = dict(FAST_PROPS)
        self.props.update(props or {})
        # rsmld reads its settings from the daemon's own properties file (rsmld.* keys), as
        # in production: executableName is just `rsmld --properties <that file>`.
        self.props_path = os.path.join(self.dir, f"{case.app}.properties")
        flags = ["--workers", "2", *rsmld_args, "--handler", "file", "--output", self.out_dir]
        for flag, value in zip(flags[::2], flags[1::2]):
            self.props["rsmld." + flag[2:].replace("-", "_")] = value
        self.rsmld_args = ["--properties", self.props_path]
        self.proc = None
        self.returncode = None
        self.started_at = None
        self.term_sent = False

    def executable(self):
        return " ".join([sys.executable, RECORDER, "--out", self.rec_dir, "--", RSMLD, *self.rsmld_args])

    def start(self):
        # run-daemon.sh writes self.props_path (template + these --set overrides) in its one
        # write_properties function, for the demo too, and then starts the daemon.
        os.makedirs(self.dir, exist_ok=True)
        cmd = [os.path.join(SCRIPTS, "run-daemon.sh"), "run", "--kcl", self.case.kcl,
               "--stream", self.case.stream, "--app", self.case.app, "--worker-id", self.worker_id, "--run-dir", self.dir, "--log", self.log_path,
               "--executable", self.executable()]
        for k, v in self.props.items():
            cmd += ["--set", f"{k}={v}"]
        say(f"{self.case.name}: starting KCL {KCL_VERSIONS[self.case.kcl]} daemon {self.name} "
            f"(workerId {self.worker_id})")
        # run-daemon.sh execs java: this pid is the daemon's, and it leads its own process group.
        self.proc = subprocess.Popen(cmd, env={**self.case.emu.env, **self.env}, start_new_session=True,
                                     stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        self.case.daemons.append(self)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=40):
        """SIGTERM (graceful with shutdownGraceMillis > 0); SIGKILL the group after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            if self.wait_exit(timeout) is None:
                say(f"{self.case.name}: daemon {self.name} still running after {timeout}s: SIGKILL")
                self.kill()
        self.returncode = self.proc.wait()
        self.reap_group()
        return self.returncode

    def terminate(self):
        """Send SIGTERM once (a second one would not change anything)."""
        if self.proc is not None and self.proc.poll() is None and not self.term_sent:
            say(f"{self.case.name}: SIGTERM to daemon {self.name} (pid {self.pid})")
            self.term_sent = True
            self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.returncode = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.reap_group()

    def reap_group(self):
        """Processors left in the daemon's process group (they exit on stdin EOF; this is a
        safety net, reported by the case's leftover check)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def rsmld_pids(self):
        """The rsmld processes of this daemon: found by their unique output directory."""
        pattern = f"^{re.escape(RSMLD)} .*--properties {re.escape(self.props_path)}( |$)"
        r = subprocess.run(["pgrep", "-f", pattern], stdout=subprocess.PIPE, text=True, check=False)
        return sorted(int(p) for p in r.stdout.split() if pid_alive(int(p)))

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def fatal_log_lines(self, allowed=()):
        text = self.log_text()
        return [p for p in FATAL_LOG_PATTERNS if p in text and p not in allowed]

    def show_errors(self, n=12):
        lines = [l.rstrip()[:300] for l in self.log_text().splitlines()
                 if (" ERROR " in l or " WARN " in l or "Exception" in l) and "Received error line" not in l]
        say(f"daemon {self.name} log: {self.log_path}")
        for l in lines[-n:]:
            print("    " + l)

    def output(self):
        return kt.read_output(self.out_dir)

    def transcripts(self):
        return load_transcripts(self.rec_dir)


def load_transcripts(rec_dir):
    """Recorded processes of a recorder directory: {wpid: [events sorted by seq]}."""
    procs = {}
    if not os.path.isdir(rec_dir):
        return procs
    for name in sorted(os.listdir(rec_dir)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(rec_dir, name), encoding="utf-8") as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue  # a line being written
                procs.setdefault(e["wpid"], []).append(e)
    for evs in procs.values():
        evs.sort(key=lambda e: e["seq"])
    return procs


# --------------------------------------------------------------------------------------------


def serve_supports_metrics_listen(work):
    """Whether this rsmld's `serve` takes --metrics-listen: its help mentions it, or a command
    line with it and --help is accepted (serve splits its own flags off before child mode's
    parser, which rejects a flag it does not know)."""
    help_text = subprocess.run([RSMLD, "serve", "--help"], capture_output=True, text=True, timeout=30,
                               check=False)
    if "--metrics-listen" in help_text.stdout + help_text.stderr:
        return True
    probe = subprocess.run([RSMLD, "serve", "--socket", os.path.join(work, "probe.sock"), "--metrics-listen",
                            "127.0.0.1:1", "--help"], capture_output=True, text=True, timeout=30, check=False)
    return probe.returncode == 0


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `rsmld serve` (file handler) in the foreground, in its own process group; the
    daemons' children are `rsmld attach` processes (AttachDaemon) connecting to its socket."""

    def __init__(self, case, name="server", args=(), metrics_port=None):
        self.case, self.name = case, name
        self.dir = os.path.join(case.work, name)
        self.out_dir = os.path.join(self.dir, "out")
        self.socket = os.path.join(self.dir, "rsmld.sock")
        if len(self.socket) > 100:  # sun_path holds 108 bytes
            import tempfile
            self.socket = os.path.join(tempfile.mkdtemp(prefix="rsmld-e2e-"), "rsmld.sock")
        self.metrics_port = metrics_port
        self.args = ["--workers", "2", *args, "--handler", "file", "--output", self.out_dir]
        self.procs = []  # every server process started (a restart adds one)
        self.proc = None
        self.returncode = None
        self.log_paths = []

    def command(self):
        cmd = [RSMLD, "serve", "--socket", self.socket, "--grace", "30s"]
        if self.metrics_port:
            cmd += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        return cmd + self.args

    def start(self, timeout=30):
        os.makedirs(self.dir, exist_ok=True)
        log_path = os.path.join(self.dir, f"server{len(self.procs) + 1}.log")
        self.log_paths.append(log_path)
        say(f"{self.case.name}: starting {' '.join(self.command()[1:3])} ... (log {log_path})")
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, "RUST_LOG": "info"})
        self.procs.append(self.proc)
        self.returncode = None
        self.case.wait_until("rsmld serve listens on its socket", self.listening, timeout=timeout)
        return self

    def listening(self):
        """Its log says it serves (after the socket is bound; a stale socket of a killed
        server exists before that, so the file alone says nothing)."""
        if self.proc.poll() is not None:
            raise CaseFailed(f"rsmld serve exited {self.proc.returncode} at start: {self.log_tail()}")
        try:
            with open(self.log_paths[-1], encoding="utf-8", errors="replace") as f:
                return "serving leases on" in f.read() and os.path.exists(self.socket)
        except OSError:
            return False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=60):
        """SIGTERM; the exit code (None: still running after `timeout`, then SIGKILLed)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        say(f"{self.case.name}: SIGTERM to rsmld serve (pid {self.pid})")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            say(f"{self.case.name}: rsmld serve still running {timeout}s after SIGTERM: SIGKILL")
            self.kill()
            return None
        return self.returncode

    def kill(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.returncode = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def log_text(self):
        text = ""
        for p in self.log_paths:
            try:
                with open(p, encoding="utf-8", errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def log_tail(self, n=5):
        return " | ".join(line.strip()[:200] for line in self.log_text().splitlines()[-n:])

    def files(self):
        """The file handler's output files: [(file name, [raw lines])]."""
        out = []
        if not os.path.isdir(self.out_dir):
            return out
        for name in sorted(os.listdir(self.out_dir)):
            if name.endswith(".jsonl"):
                with open(os.path.join(self.out_dir, name), encoding="utf-8", errors="replace") as f:
                    out.append((name, [line for line in f if line.endswith("\n")]))
        return out

    def output(self, application):
        """The records written for `application`: the lines of its files
        `<application>.<shardId>.<time>.<nnnn>.w<k>.jsonl` (dead letters excluded)."""
        records = []
        for name, lines in self.files():
            if name.split(".")[0] != application or name.endswith(".deadletter.jsonl"):
                continue
            for line in lines:
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                if isinstance(o, dict) and "partitionKey" in o and "data" in o:
                    records.append(o)
        return records

    def naming_problems(self, applications):
        """Lines whose file or item JSON does not name their lease: the file name must start
        `<application>.<shardId>.` for one of `applications`, each line must start with
        `{"application":"<that application>"` and carry that shardId."""
        problems = []
        for name, lines in self.files():
            parts = name.split(".")
            app = parts[0]
            if app not in applications or len(parts) < 6:
                problems.append(f"file {name}: not <application>.<shardId>.<time>.<nnnn>.w<k>.jsonl")
                continue
            shard = parts[1]
            for line in lines:
                o = json.loads(line)
                if not line.startswith('{"application":' + json.dumps(app) + ","):
                    problems.append(f"{name}: a line starts {line[:40]!r}")
                elif kt.output_shard(o) != shard:
                    problems.append(f"{name}: a line of shard {kt.output_shard(o)}")
        return problems

    def scrape(self):
        """GET /metrics, parsed by the Prometheus Python client: [(sample, labels, value)]."""
        import urllib.request
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            if r.status != 200:
                raise CaseFailed(f"GET {url}: HTTP {r.status}")
            text = r.read().decode("utf-8")
        # Kept in the run dir (metrics-1.prom, ...): what the checks read, for a failure's reader.
        self.scrapes = getattr(self, "scrapes", 0) + 1
        with open(os.path.join(self.dir, f"metrics-{self.scrapes}.prom"), "w", encoding="utf-8") as f:
            f.write(text)
        return text, parse_exposition(text, f"GET {url}")


class AttachDaemon(Daemon):
    """A daemon whose processor is `rsmld attach --socket S --properties <its properties
    file>` (through the recorder): the lease runs in `server`, named by the file's
    applicationName. No rsmld.* keys: the server has the handler and pool options."""

    def __init__(self, case, name, worker_id, server, props=None, env=None):
        super().__init__(case, name, worker_id, (), props, env)
        self.server = server
        self.props = {k: v for k, v in self.props.items() if not k.startswith("rsmld.")}
        self.rsmld_args = ["attach", "--socket", server.socket, "--properties", self.props_path]

    def rsmld_pids(self):
        pattern = f"^{re.escape(RSMLD)} attach .*--properties {re.escape(self.props_path)}( |$)"
        r = subprocess.run(["pgrep", "-f", pattern], stdout=subprocess.PIPE, text=True, check=False)
        return sorted(int(p) for p in r.stdout.split() if pid_alive(int(p)))

    def output(self):
        return self.server.output(self.case.app)


def read_metrics_files(metrics_dir):
    """rsmld's metrics files in `metrics_dir` (--metrics-dir), each parsed by the Prometheus
    Python client's text parser (text_string_to_metric_families, through scripts/prom_parse.py
    in .state/metrics-venv), not by rsmld's code: {file name: [(sample name, labels, value)]}.
    Only `*.prom` files (what node_exporter reads); one removed while listing is skipped. A
    missing parser or a file it rejects is a CaseFailed that says so."""
    files = {}
    for name in sorted(os.listdir(metrics_dir)):
        if not name.endswith(".prom"):
            continue
        try:
            with open(os.path.join(metrics_dir, name), encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            continue  # its lease just ended
        files[name] = parse_exposition(text, name)
    return files


def parse_exposition(text, what):
    """A Prometheus text exposition parsed by the Prometheus Python client's text parser
    (text_string_to_metric_families, through scripts/prom_parse.py in .state/metrics-venv),
    not by rsmld's code: [(sample name, labels, value)]. No parser, or a text it rejects
    (`what` names it), is a CaseFailed that says so."""
    if not os.access(METRICS_PY, os.X_OK):
        raise CaseFailed(f"no Prometheus Python client at {METRICS_PY}: run scripts/install-metrics-parser.sh")
    r = subprocess.run([METRICS_PY, PROM_PARSE], input=text, capture_output=True, text=True,
                       timeout=60, check=False)
    if r.returncode != 0:
        raise CaseFailed(f"{what} does not parse: {r.stderr.strip()[:300]}")
    return [(s["name"], s["labels"], s["value"]) for fam in json.loads(r.stdout) for s in fam["samples"]]


def sample(samples, name, **labels):
    """The value of the one sample `name` whose labels include `labels`, or None if there is
    none (several: a CaseFailed)."""
    vals = [v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items())]
    if len(vals) > 1:
        raise CaseFailed(f"{len(vals)} samples {name}{labels}")
    return vals[0] if vals else None


def proc_shard(evs):
    return next((e["shard"] for e in evs if e.get("shard")), None)


def messages(evs):
    """(event, decoded message) for every JSON protocol line of one recorded process."""
    out = []
    for e in evs:
        if e["dir"] in ("d2p", "p2d") and e["line"].strip():
            try:
                out.append((e, json.loads(e["line"])))
            except ValueError:
                pass
    return out


def exchange_problems(evs, allow_unanswered=False):
    """Protocol sanity of one recorded process: every action answered by a matching status,
    no action sent while another is unanswered, no checkpoint during initialize/leaseLost."""
    problems, pending = [], None
    shard = proc_shard(evs)
    for e, msg in messages(evs):
        act = msg.get("action")
        if e["dir"] == "d2p" and act != "checkpoint":
            if pending is not None:
                problems.append(f"{shard}: {act} sent while {pending} unanswered")
            pending = act
        elif e["dir"] == "p2d" and act == "checkpoint" and pending in ("initialize", "leaseLost", None):
            problems.append(f"{shard}: checkpoint during {pending}")
        elif e["dir"] == "p2d" and act == "status":
            if msg.get("responseFor") != pending:
                problems.append(f"{shard}: status for {msg.get('responseFor')} while {pending} pending")
            pending = None
    if pending is not None and not allow_unanswered:
        problems.append(f"{shard}: {pending} never answered")
    return problems


# --------------------------------------------------------------------------------------------


class Producer(threading.Thread):
    """Puts `batch` plain records (spread over the open shards) every `period` seconds."""

    def __init__(self, case, batch=4, period=0.25, tag="live"):
        super().__init__(daemon=True)
        self.case, self.batch, self.period, self.tag = case, batch, period, tag
        self.stop_event = threading.Event()
        self.count = 0
        self.error = None

    def run(self):
        i = 0
        try:
            while not self.stop_event.is_set():
                self.case.put(plain=self.batch, tag=f"{self.tag}{i}", quiet=True)
                self.count += self.batch
                i += 1
                self.stop_event.wait(self.period)
        except Exception as e:  # noqa: BLE001  reported by stop()
            self.error = e

    def stop(self):
        self.stop_event.set()
        self.join(30)
        if self.error:
            raise CaseFailed(f"producer failed: {self.error}")
        return self.count


class Case:
    """One end-to-end case: subclasses set `name`, `title` and implement body()."""

    name = "case"
    title = ""
    allowed_fatal = ()
    versions = ("3", "2")  # the daemon versions (KCL_VERSIONS keys) this case runs under

    def __init__(self, emu, suite_work, kcl="3", keep_recordings=None):
        self.emu = emu
        self.kcl = kcl
        self.run_id = uuid.uuid4().hex[:6]
        self.work = os.path.join(suite_work, self.name)
        self.stream = f"e2e-{self.name}-k{kcl}-{self.run_id}"
        self.app = f"rsmld-e2e-{self.name}-k{kcl}-{self.run_id}"
        self.manifest = os.path.join(self.work, "manifest.jsonl")
        self.manifest_lock = threading.Lock()
        self.checks = []
        self.daemons = []
        self.notes = []
        self.keep_recordings = keep_recordings

    # ------------------------------------------------------------------ checks and waiting

    def check(self, ok, label, detail=""):
        self.checks.append((bool(ok), label, detail))
        say(f"{self.name}: {'PASS' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}")
        return bool(ok)

    def require(self, ok, label, detail=""):
        if not self.check(ok, label, detail):
            raise CaseFailed(label)

    def note(self, text):
        self.notes.append(text)
        say(f"{self.name}: {text}")

    def wait_until(self, what, fn, timeout=90, watch=(), interval=0.3):
        """Poll fn() until it returns a true value; fail fast if a watched daemon exits."""
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        while True:
            v = fn()
            if v:
                say(f"{self.name}: {what} ({time.monotonic() - t0:.1f}s)")
                return v
            for d in watch:
                if not d.alive():
                    d.show_errors()
                    raise CaseFailed(f"daemon {d.name} exited (code {d.proc.poll()}) while waiting: {what}")
            if time.monotonic() > deadline:
                raise CaseFailed(f"timed out after {timeout}s waiting: {what}")
            time.sleep(interval)

    # ------------------------------------------------------------------ stream, leases, records

    def create_stream(self, shards=2):
        kc = self.emu.kinesis
        kc.create_stream(StreamName=self.stream, ShardCount=shards)
        kt.wait_stream_active(kc, self.stream)

    def create_leases(self):
        kt.cmd_leases_create(argparse.Namespace(
            kinesis_endpoint=self.emu.env["KINESIS_ENDPOINT"], dynamodb_endpoint=self.emu.env["DYNAMODB_ENDPOINT"],
            app=self.app, stream=self.stream, initial_position="TRIM_HORIZON", all_shards=False))

    def put(self, plain=0, aggregated=0, per_aggregate=5, tag="r", quiet=False, size=0):
        entries = []
        if plain:
            entries += kt.put_plain(self.emu.kinesis, self.stream, plain, tag, size, spread=True)
        if aggregated:
            entries += kt.put_aggregated(self.emu.kinesis, self.stream, aggregated, per_aggregate, tag, 0)
        with self.manifest_lock:
            kt._append_manifest(self.manifest, entries)
        if not quiet:
            per_shard = collections.Counter(e["shard"] for e in entries)
            say(f"{self.name}: put {len(entries)} user records ({plain} plain, {aggregated}x{per_aggregate} "
                f"aggregated): {dict(sorted(per_shard.items()))}")
        return entries

    def read_manifest(self):
        with self.manifest_lock:
            return kt.read_manifest(self.manifest) if os.path.exists(self.manifest) else []

    def leases(self):
        return {r["leaseKey"]: r for r in kt.scan_leases(self.emu.dynamodb, self.app)}

    def shards(self):
        return kt.list_shards(self.emu.kinesis, self.stream)

    def output(self, daemons=None):
        out = []
        for d in daemons or self.daemons:
            out += d.output()
        return out

    def all_in_output(self, daemons=None, manifest=None):
        manifest = manifest if manifest is not None else self.read_manifest()
        missing, _, _, _ = kt.compare(manifest, self.output(daemons))
        return not missing

    def wait_records(self, daemons=None, timeout=90, stall=20, watch=None):
        """Wait until every manifest record is in the output of `daemons` (default: all). Gives
        up early when the output, once it has begun, has not grown for `stall` seconds (before
        the first line only `timeout` applies: KCL 3.x takes two lease assignment rounds to
        start); on failure, the record checks run first so that the report says what is missing."""
        daemons = daemons or list(self.daemons)
        watch = daemons if watch is None else watch
        state = {"n": -1, "t": time.monotonic()}
        t0 = time.monotonic()

        def done():
            output = self.output(daemons)
            missing, _, _, _ = kt.compare(self.read_manifest(), output)
            if not missing:
                return True
            if len(output) != state["n"] or not output:
                state["n"], state["t"] = len(output), time.monotonic()
            elif time.monotonic() - state["t"] > stall:
                raise CaseFailed(f"output stalled for {stall}s with {len(missing)} records missing")
            return False
        try:
            self.wait_until("every record put is in the output", done, timeout=timeout, watch=watch)
        except CaseFailed:
            say(f"{self.name}: records still missing after {time.monotonic() - t0:.1f}s")
            self.check_records(daemons, allow_duplicates=True)
            raise

    def check_records(self, daemons=None, allow_duplicates=False):
        """Every manifest record in the output, in its own shard, with its own sequence number
        and sub-sequence number; nothing unexpected. Returns (manifest, output, report)."""
        manifest = self.read_manifest()
        output = self.output(daemons)
        missing, duplicated, unexpected, wrong_shard = kt.compare(manifest, output)
        by_key = {(m["partitionKey"], m["data"]): m for m in manifest}
        wrong_esn = [o for o in output if (o["partitionKey"], o["data"]) in by_key
                     and (str(o.get("sequenceNumber")), o.get("subSequenceNumber"))
                     != (by_key[(o["partitionKey"], o["data"])]["sequenceNumber"],
                         by_key[(o["partitionKey"], o["data"])]["subSequenceNumber"])]
        self.check(not missing, "every record put is in the output",
                   f"{len(manifest)} put, {len(output)} lines written, {len(missing)} missing"
                   + (f" (first {missing[0][0]})" if missing else ""))
        self.check(not unexpected and not wrong_shard and not wrong_esn,
                   "each output line is a record put, in its shard, with its sequenceNumber and subSequenceNumber",
                   f"unexpected {len(unexpected)}, wrong shard {len(wrong_shard)}, wrong ESN {len(wrong_esn)}")
        if not allow_duplicates:
            self.check(not duplicated, "no record written twice", f"{len(duplicated)} duplicated")
        return manifest, output, {"missing": missing, "duplicated": duplicated}

    def check_processes(self, daemons=None, killed=()):
        """Recorded processors: well-formed exchanges, each exited 0 (except `killed` pids),
        each saw stdin EOF."""
        problems = []
        n = 0
        for d in daemons or self.daemons:
            for evs in d.transcripts().values():
                n += 1
                shard = proc_shard(evs)
                start = next((e for e in evs if e["dir"] == "start"), {})
                was_killed = start.get("child_pid") in killed
                problems += exchange_problems(evs, allow_unanswered=was_killed or d.returncode not in (0, None))
                exits = [e for e in evs if e["dir"] == "exit"]
                if not exits:
                    problems.append(f"{d.name} {shard}: no exit recorded")
                elif not was_killed and exits[-1]["rc"] != 0:
                    problems.append(f"{d.name} {shard}: rsmld exited {exits[-1]['rc']}")
                elif was_killed and exits[-1]["rc"] != -signal.SIGKILL:
                    problems.append(f"{d.name} {shard}: killed rsmld exited {exits[-1]['rc']}, not -9")
        self.check(n > 0 and not problems, "recorded exchanges well-formed; every rsmld exited 0 on stdin EOF",
                   f"{n} processes" + ("; " + "; ".join(problems[:5]) if problems else ""))

    def check_daemon_logs(self, allowed=()):
        bad = {d.name: d.fatal_log_lines(allowed) for d in self.daemons}
        bad = {k: v for k, v in bad.items() if v}
        self.check(not bad, "daemon logs free of fatal errors", json.dumps(bad) if bad else "")

    def our_pids(self):
        pids = set()
        for d in self.daemons:
            if d.pid:
                pids.add(d.pid)
            for evs in d.transcripts().values():
                for e in evs:
                    pids.add(e["wpid"])
                    if e.get("child_pid"):
                        pids.add(e["child_pid"])
        return pids

    # ------------------------------------------------------------------ run

    def body(self):
        raise NotImplementedError

    def cleanup(self):
        for d in self.daemons:
            if d.alive():
                d.stop(timeout=10)
            d.reap_group()

    def run(self):
        os.makedirs(self.work, exist_ok=True)
        say(f"===== case {self.name}: {self.title}")
        t0 = time.monotonic()
        try:
            self.body()
        except CaseFailed as e:
            self.check(False, "case ran to the end", str(e))
            for d in self.daemons:
                d.show_errors()
        except Exception as e:  # noqa: BLE001  a bug in the harness or an emulator error: the case fails
            self.check(False, "case ran to the end", f"{type(e).__name__}: {e}")
            traceback.print_exc()
        finally:
            self.cleanup()
            time.sleep(0.3)
            alive = [p for p in sorted(self.our_pids()) if pid_alive(p)]
            self.check(not alive, "no daemon, recorder or rsmld of this case left running", " ".join(map(str, alive)))
        self.seconds = time.monotonic() - t0
        self.passed = all(ok for ok, _, _ in self.checks)
        say(f"===== case {self.name}: {'PASSED' if self.passed else 'FAILED'} in {self.seconds:.1f}s")
        return self.passed

    def recordings(self):
        """Every recorded event of the case, all daemons, in time order (the committed format)."""
        evs = []
        for d in self.daemons:
            for pevs in d.transcripts().values():
                evs += pevs
        evs.sort(key=lambda e: (e["ts"], e["wpid"], e["seq"]))
        return evs



class Side(Case):
    """One stream and application of a case that runs several (the serve cases): its own
    stream, lease table and manifest; its checks are the parent case's (prefixed by `label`),
    its daemons are in the parent's list (cleanup, leftover check), its output is the
    server's lines of its application."""

    def __init__(self, parent, label, server):
        self.name = f"{parent.name}-{label}"
        super().__init__(parent.emu, parent.work, parent.kcl)
        self.parent, self.label, self.server = parent, label, server
        self.daemons = parent.daemons
        self.checks, self.notes = parent.checks, parent.notes

    def check(self, ok, label, detail=""):
        return self.parent.check(ok, f"[{self.label}] {label}", detail)

    def note(self, text):
        self.parent.note(f"[{self.label}] {text}")

    def output(self, daemons=None):
        return self.server.output(self.app)


# --------------------------------------------------------------------------------------------


def check_rsmld():
    if not os.access(RSMLD, os.X_OK):
        raise SystemExit(f"e2e: no rsmld binary at {RSMLD} (cargo build --release, or set RSMLD_BIN)")
    for path in (RSMLD, RECORDER, sys.executable, STATE):
        if " " in path:
            raise SystemExit(f"e2e: path contains a space, which the daemon cannot run: {path!r}")


def _terminate(signum, _frame):
    raise SystemExit(f"terminated by signal {signum}")


def run_suite(case_classes, argv=None, description=""):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("cases", nargs="*", help="case names to run (default: all)")
    p.add_argument("--work-dir", help="default: $RSMLD_STATE/e2e/<run id>")
    p.add_argument("--save-recordings", metavar="DIR",
                   help="write each case's recorded transcript to DIR/<case>.jsonl")
    p.add_argument("--kcl", choices=sorted(KCL_VERSIONS), default=os.environ.get("RSMLD_KCL", "3"),
                   help="the daemon: 3 = KCL 3.1.3 (default), 2 = KCL 2.5.8")
    p.add_argument("--part", metavar="K/N", default="1/1",
                   help="run only every N-th of the selected cases, starting with the K-th (e2e.sh runs "
                        "the parts of a slow suite side by side)")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    try:
        part, parts = (int(x) for x in args.part.split("/"))
        assert 1 <= part <= parts
    except (ValueError, AssertionError):
        raise SystemExit(f"e2e: --part wants K/N with 1 <= K <= N, got {args.part!r}")
    if args.list:
        for c in case_classes:
            print(f"{c.name:<12} {c.title}  [KCL {', '.join(KCL_VERSIONS[v] for v in c.versions)}]")
        return 0
    unknown = set(args.cases) - {c.name for c in case_classes}
    if unknown:
        raise SystemExit(f"e2e: unknown case(s) {', '.join(sorted(unknown))}")
    # A case named explicitly that does not run under this version is not an error (e2e.sh runs
    # the same case list under every version); it is just not run here.
    selected = [c for c in case_classes if (not args.cases or c.name in args.cases) and args.kcl in c.versions]
    selected = selected[part - 1::parts]
    version = KCL_VERSIONS[args.kcl]
    if not selected:
        say(f"no selected case runs under KCL {version}")
        print("0 passed, 0 failed", flush=True)
        if os.environ.get("RSMLD_E2E_RESULT_FILE"):
            with open(os.environ["RSMLD_E2E_RESULT_FILE"], "w") as f:
                f.write("0 passed, 0 failed\n")
        return 0
    check_rsmld()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    work = os.path.abspath(args.work_dir or os.path.join(STATE, "e2e", run_id))
    os.makedirs(work, exist_ok=True)
    say(f"work dir {work}; rsmld {RSMLD}; KCL {version} daemon; cases: {' '.join(c.name for c in selected)}")
    t0 = time.monotonic()
    emu = Emulators(os.path.join(work, "emulators"))
    results = []
    try:
        t = time.monotonic()
        emu.start()
        emu_seconds = time.monotonic() - t
        for cls in selected:
            case = cls(emu, work, args.kcl)
            case.run()
            results.append(case)
            if args.save_recordings:
                save_recording(case, args.save_recordings)
    finally:
        emu.stop()
        time.sleep(0.3)
        left = [p for p in emu.pids if pid_alive(p)]
        if left:
            say(f"emulator processes still alive: {left}")
    total = time.monotonic() - t0
    print()
    print("=" * 78)
    print(f"rsmld end-to-end tests under the real KCL {version} MultiLangDaemon   work dir: {work}")
    print(f"  {emu_seconds:6.1f}s  emulators start")
    for c in results:
        print(f"  {c.seconds:6.1f}s  {'PASS' if c.passed else 'FAIL'}  {c.name:<10} {c.title}")
        for ok, label, detail in c.checks:
            print(f"            {'ok  ' if ok else 'FAIL'} {label}" + (f"  [{detail}]" if detail else ""))
        for n in c.notes:
            print(f"            note: {n}")
    print(f"  {total:6.1f}s  total")
    passed = sum(1 for c in results if c.passed)
    failed = len(results) - passed + (len(selected) - len(results))
    print("=" * 78)
    print(f"{passed} passed, {failed} failed", flush=True)
    if os.environ.get("RSMLD_E2E_RESULT_FILE"):
        with open(os.environ["RSMLD_E2E_RESULT_FILE"], "w") as f:
            f.write(f"{passed} passed, {failed} failed\nin {total:.0f}s\n")
    return 0 if failed == 0 and passed > 0 else 1


def save_recording(case, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{case.name}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in case.recordings())
    say(f"{case.name}: recording saved to {path} ({os.path.getsize(path)} bytes)")
