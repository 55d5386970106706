#!/usr/bin/env python3
"""Benchmark orchestration (see bench/README.md). Ratios are what count: this machine is shared."""
import argparse, json, os, platform, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANDBOX = os.path.join(ROOT, "tests/integration/pg_sandbox.sh")
IS_ROOT = os.geteuid() == 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start listening on {port}")


def tree_cpu_seconds(root):
    """CPU time (user + system) of a process and all its descendants, from /proc."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                stats[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
            except (OSError, IndexError):
                pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo += [c for c, (ppid, _) in stats.items() if ppid == pid]
    return total / os.sysconf("SC_CLK_TCK")


def system_busy_seconds():
    """CPU time the whole machine spent busy (all CPUs, user + system + irq + softirq), from
    /proc/stat: the kernel splice runs in softirq context, charged to whichever process the CPU
    was in (often pgbench or PostgreSQL), so only the machine's total tells what it costs."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# The pool cells' SCRAM users, one per proxy so that pg_stat_activity tells their pools apart.
POOL_USERS = {"pgproxy_pool": "bench_pool_pgproxy", "pgbouncer_pool": "bench_pool_pgbouncer"}
POOL_PASSWORD = "bench-pool-secret"
# The read/write split cell's targets log in as pgproxy's pool user.
TARGET_USER = {"pgproxy_plugin": "pgproxy_pool", "pgproxy_split": "pgproxy_pool", "pgproxy_nosplit": "pgproxy_pool",
               "pgproxy_standby": "pgproxy_pool", "pgproxy_optimistic": "pgproxy_pool"}


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if IS_ROOT else cmd


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="pgproxy-bench-")
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.pg = free_port()
        self.pg2 = free_port()

    # ---- setup ---------------------------------------------------------------------------
    def start(self):
        # Room for the largest cell through every proxy at once plus PgBouncer's pool, so a cell
        # never fails on "sorry, too many clients already".
        need = 2 * max(self.args.clients) + 300
        env = dict(os.environ, PG_MAX_CONNECTIONS=str(max(700, need)))
        subprocess.run([SANDBOX, "start", self.dir, str(self.pg), str(self.pg2)], check=True, env=env)
        shown = subprocess.run(["psql", "-X", "-A", "-t", "-c", "show max_connections",
                                self.conn(self.pg, "disable")], capture_output=True, text=True)
        if shown.returncode != 0 or int(shown.stdout.strip() or 0) < max(self.args.clients) + 10:
            raise SystemExit(f"the bench cluster's max_connections is too low for "
                             f"{max(self.args.clients)} clients: {shown.stdout.strip()} "
                             f"{shown.stderr.strip()}")
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", self.conn(self.pg, "disable")],
                       check=True, capture_output=True)
        self.ports = {"direct": self.pg}
        if self.args.pool_clients:
            self.start_pools()
        if self.args.pool_only:
            return
        self.ports["pgproxy"] = self.start_pgproxy("main", self.pg)
        # TLS terminated by pgproxy, plaintext to PostgreSQL: what PgBouncer does with client TLS.
        self.ports["pgproxy_term"] = self.start_pgproxy(
            "term", self.pg, f", tls: terminate, certificate: {self.dir}/proxy-host1.crt, "
            f"key: {self.dir}/proxy-host1.key, backend_tls: disable")
        self.pgproxy_term_main_pid = self.pgproxy_term_pid
        self.ports["haproxy"] = self.start_haproxy("main", self.pg)
        self.ports["pgbouncer"] = self.start_pgbouncer()

    def start_pools(self):
        """The pool cells' targets: pgproxy with a pooled mapping and PgBouncer in transaction mode,
        the same pool size and SCRAM with the same verifiers. Each proxy logs in as a user of its
        own, so pg_stat_activity shows each one's server connections."""
        sql = ["SET password_encryption = 'scram-sha-256'"]
        for user in POOL_USERS.values():
            sql += [f"CREATE ROLE {user} LOGIN PASSWORD '{POOL_PASSWORD}'",
                    f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}"]
        self.psql(sql)
        # First match wins: these users must prove their password, with SCRAM, from 127.0.0.1.
        hba = os.path.join(self.dir, "host1/pg_hba.conf")
        with open(hba) as f:
            rules = f.read()
        with open(hba, "w") as f:
            f.write("".join(f"host all {u} 127.0.0.1/32 scram-sha-256\n" for u in POOL_USERS.values())
                    + rules)
        self.psql(["SELECT pg_reload_conf()"])
        # PgBouncer's userlist format, the verifiers as pg_authid holds them: both proxies check the
        # client's proof against them and log in to PostgreSQL with the ClientKey it reveals.
        users = os.path.join(self.dir, "userlist-pool.txt")
        with open(users, "w") as f:
            for user in POOL_USERS.values():
                verifier = self.psql([f"SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"])
                if not verifier.startswith("SCRAM-SHA-256$"):
                    raise SystemExit(f"{user} has no SCRAM verifier: {verifier!r}")
                f.write(f'"{user}" "{verifier}"\n')
        # The postmaster rereads pg_hba.conf on SIGHUP, asynchronously: wait until a wrong password
        # is refused, then check the right one.
        for target in POOL_USERS:
            deadline = time.time() + 10
            while self.login(target, "wrong"):
                if time.time() > deadline:
                    raise SystemExit(f"pg_hba.conf does not make {POOL_USERS[target]} prove its "
                                     f"password")
                time.sleep(0.1)
            if not self.login(target, POOL_PASSWORD):
                raise SystemExit(f"{POOL_USERS[target]} cannot log in to PostgreSQL with SCRAM")
        size = self.args.pool_size
        self.ports["pgproxy_pool"] = self.start_pgproxy(
            "pool", self.pg, f", tls: terminate, certificate: {self.dir}/proxy-host1.crt, "
            f"key: {self.dir}/proxy-host1.key, backend_tls: disable, "
            f"pool: {{mode: transaction, size: {size}}}",
            top_extra=f"auth: {{type: scram-sha-256, file: {users}}}\n")
        self.ports["pgbouncer_pool"] = self.start_pgbouncer(
            "pool", users, auth_type="scram-sha-256", pool_mode="transaction", pool_size=size,
            idle_timeout=600,  # pgproxy's server_idle_timeout is 10m; its access log is off too
            extra="log_connections = 0\nlog_disconnections = 0\n")
        # Whose CPU each pool target's runs are charged to (pgbench_once: TARGET_main_pid).
        self.pgproxy_pool_main_pid = self.pgproxy_pool_pid
        self.pgbouncer_pool_main_pid = self.pgbouncer_pool_pid

    def login(self, target, password):
        """Whether the target's SCRAM user logs in to PostgreSQL directly with this password."""
        conn = self.conn(self.pg, "disable", "direct", target).replace(
            f"password={POOL_PASSWORD}", f"password={password}")
        return subprocess.run(["psql", "-X", "-A", "-t", "-c", "SELECT 1", conn],
                              capture_output=True, text=True).stdout.strip() == "1"

    def psql(self, statements):
        out = ""
        for sql in statements:
            r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql,
                                self.conn(self.pg, "disable")], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"psql {sql!r} failed: {r.stderr.strip()}")
            out = r.stdout.strip()
        return out

    def spawn(self, cmd, log):
        p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start_pgproxy(self, name, backend, mapping_extra="", top_extra="", mapping=None):
        """`mapping`: the whole flow mapping's keys after external (instead of internal/port)."""
        port = free_port()
        cfg = os.path.join(self.dir, f"pgproxy-{name}.yaml")
        keys = mapping or f"internal: 127.0.0.1, port: {backend}{mapping_extra}"
        with open(cfg, "w") as f:
            f.write(f"listen: {{address: 127.0.0.1, port: {port}}}\nworkers: {self.args.workers}\naccess_log: \"off\"\n"
                    f"{top_extra}"
                    f"mappings:\n  - {{external: host1.example.com, {keys}}}\n")
        p = self.spawn([self.args.pgproxy, "-c", cfg], os.path.join(self.dir, f"pgproxy-{name}.log"))
        wait_port(port, "pgproxy")
        setattr(self, f"pgproxy_{name}_pid", p.pid)
        return port

    def start_haproxy(self, name, backend):
        port = free_port()
        cfg = os.path.join(self.dir, f"haproxy-{name}.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
  maxconn 9000
  nbthread {self.args.workers}
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend pg
  bind 127.0.0.1:{port}
  default_backend pg
backend pg
  server s1 127.0.0.1:{backend}
""")
        p = self.spawn(["haproxy", "-db", "-f", cfg], os.path.join(self.dir, f"haproxy-{name}.log"))
        wait_port(port, "haproxy")
        setattr(self, f"haproxy_{name}_pid", p.pid)
        return port

    def start_pgbouncer(self, name="main", users=None, auth_type="trust", pool_mode="session",
                        pool_size=280, idle_timeout=5, extra=""):
        port = free_port()
        ini = os.path.join(self.dir, f"pgbouncer-{name}.ini")
        if users is None:
            users = os.path.join(self.dir, "userlist.txt")
            with open(users, "w") as f:
                f.write('"postgres" ""\n')
        with open(ini, "w") as f:
            f.write(f"""[databases]
postgres = host=127.0.0.1 port={self.pg} dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = {auth_type}
auth_file = {users}
pool_mode = {pool_mode}
max_client_conn = 2000
default_pool_size = {pool_size}
server_idle_timeout = {idle_timeout}
client_tls_sslmode = allow
client_tls_key_file = {self.dir}/host1.key
client_tls_cert_file = {self.dir}/host1.crt
server_tls_sslmode = disable
logfile = {self.dir}/pgbouncer-{name}.log
pidfile = {self.dir}/pgbouncer-{name}.pid
{extra}""")
        if IS_ROOT:
            subprocess.run(["chown", "postgres", ini, users, f"{self.dir}/host1.key"], check=True)
        p = self.spawn(as_postgres(["pgbouncer", ini]), os.path.join(self.dir, f"pgbouncer-{name}.out"))
        wait_port(port, "pgbouncer")
        setattr(self, f"pgbouncer_{name}_pid", p.pid)
        return port

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([SANDBOX, "stop", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- measurements --------------------------------------------------------------------
    def conn(self, port, sslmode, target="direct", user_of=None):
        """libpq's connection string for a target; the pool targets (or `user_of` one) log in as
        their SCRAM user."""
        host = ("host=host1.example.com hostaddr=127.0.0.1" if target.startswith("pgproxy")
                else "host=127.0.0.1")
        user = POOL_USERS.get(user_of or TARGET_USER.get(target) or target)
        login = f"user={user} password={POOL_PASSWORD}" if user else "user=postgres"
        return f"{host} port={port} sslmode={sslmode} {login} dbname=postgres gssencmode=disable"

    def pgbench(self, target, sslmode, clients, connect_each, protocol="simple", threads=2,
                script=None):
        """One run; on failure, up to two more with twice the time each, saying why (a loaded
        machine may need more than a smoke cell's seconds just to open every session).
        `script`: a pgbench script file instead of -S."""
        duration = self.args.duration
        for attempt in range(1, 4):
            result, why = self.pgbench_once(target, sslmode, clients, connect_each, duration,
                                            protocol, threads, script)
            if result:
                return result
            what = (f"pgbench -M {protocol} against {target} (sslmode={sslmode}, {clients} clients"
                    f"{', -C' if connect_each else ''}, {duration} s) failed: {why}")
            if attempt == 3:
                raise SystemExit(what)
            duration *= 2
            print(f"{what}\n  retrying with {duration} s ({attempt}/2)", file=sys.stderr)

    def pgbench_once(self, target, sslmode, clients, connect_each, duration, protocol="simple",
                     threads=2, script=None):
        """(tps, latency ms, proxy CPU us per transaction), None; or None and pgbench's reason."""
        cmd = ["pgbench", "-n"] + (["-f", script] if script else ["-S"]) + [
            "-M", protocol, "-c", str(clients), "-j", str(threads), "-T", str(duration)]
        if connect_each:
            cmd.append("-C")
        cmd.append(self.conn(self.ports[target], sslmode, target))  # positional: -d is --debug
        proxy = getattr(self, f"{target}_main_pid", None)
        cpu0 = tree_cpu_seconds(proxy) if proxy else 0.0
        busy0 = system_busy_seconds()
        out = subprocess.run(cmd, capture_output=True, text=True)
        busy = system_busy_seconds() - busy0
        cpu = tree_cpu_seconds(proxy) - cpu0 if proxy else 0.0
        tps = re.search(r"tps = ([0-9.]+)", out.stdout)
        done = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
        lat = re.search(r"latency average = ([0-9.]+) ms", out.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
        processed = int(done.group(1)) if done else 0
        if out.returncode != 0 or not tps or processed == 0 or (failed and failed.group(1) != "0"):
            return None, pgbench_error(out, processed, duration)
        # The proxy's own CPU per transaction: the cost the proxy adds, and far less noisy than TPS
        # on a machine where the proxy, PostgreSQL and pgbench share two cores.
        cpu_us = 1e6 * cpu / processed
        return (float(tps.group(1)), float(lat.group(1)) if lat else 0.0, cpu_us,
                1e6 * busy / processed), None

    def run_cells(self):
        cells = [(m, c, False) for m in ("disable", "require") for c in self.args.clients]
        cells += [(m, 16, True) for m in ("disable", "require")]
        results = []
        for mode, clients, connect_each in cells:
            targets = ["direct", "pgproxy", "haproxy", "pgbouncer"]
            if mode == "require":
                targets.append("pgproxy_term")
            samples = {t: [] for t in targets}
            for _ in range(self.args.repeat):
                for t in targets:  # interleaved: A B C D, A B C D ...
                    samples[t].append(self.pgbench(t, mode, clients, connect_each))
            cell = {"sslmode": mode, "clients": clients, "connect_per_transaction": connect_each}
            for t in targets:
                cell[t] = {"tps": statistics.median(s[0] for s in samples[t]),
                           "latency_ms": statistics.median(s[1] for s in samples[t]),
                           "proxy_cpu_us_per_tx": statistics.median(s[2] for s in samples[t])}
            cell["pgproxy_vs_direct"] = cell["pgproxy"]["tps"] / cell["direct"]["tps"]
            cell["pgproxy_vs_haproxy"] = cell["pgproxy"]["tps"] / cell["haproxy"]["tps"]
            results.append(cell)
            print(f"  {mode:8} c={clients:<3} {'-C ' if connect_each else '   '}"
                  f"pgproxy/direct {cell['pgproxy_vs_direct']:.2f}  "
                  f"pgproxy/haproxy {cell['pgproxy_vs_haproxy']:.2f}  CPU us/tx pgproxy "
                  f"{cell['pgproxy']['proxy_cpu_us_per_tx']:.1f} haproxy "
                  f"{cell['haproxy']['proxy_cpu_us_per_tx']:.1f}", file=sys.stderr)
        return results

    def server_connections(self, target):
        """PostgreSQL sessions of the target's SCRAM user: the pool's server connections."""
        return int(self.psql([f"SELECT count(*) FROM pg_stat_activity "
                              f"WHERE usename = '{POOL_USERS[target]}'"]))

    def run_pool_cells(self):
        """pgproxy's pooled mapping against PgBouncer in transaction mode: same pool size, SCRAM
        with the same verifiers, client TLS terminated by both (require) or plaintext (disable)."""
        modes = ("require",) if self.args.smoke else ("disable", "require")
        cells = [(m, c, False) for m in modes for c in self.args.pool_clients]
        if not self.args.smoke:
            cells += [(m, 16, True) for m in modes]
        targets = ["pgproxy_pool", "pgbouncer_pool"]
        results = []
        for mode, clients, connect_each in cells:
            samples = {t: [] for t in targets}
            servers = {t: 0 for t in targets}
            for _ in range(self.args.repeat):
                for t in targets:  # interleaved: A B, A B ...
                    samples[t].append(self.pgbench(t, mode, clients, connect_each))
                    servers[t] = max(servers[t], self.server_connections(t))
            cell = {"sslmode": mode, "clients": clients, "connect_per_transaction": connect_each,
                    "pool_size": self.args.pool_size}
            for t in targets:
                if servers[t] > self.args.pool_size:  # not pooling as configured: say so, stop
                    raise SystemExit(f"{t} holds {servers[t]} server connections, more than its "
                                     f"pool size {self.args.pool_size}")
                cell[t] = {"tps": statistics.median(s[0] for s in samples[t]),
                           "latency_ms": statistics.median(s[1] for s in samples[t]),
                           "proxy_cpu_us_per_tx": statistics.median(s[2] for s in samples[t]),
                           "server_connections": servers[t]}
            cell["pgproxy_vs_pgbouncer"] = cell["pgproxy_pool"]["tps"] / cell["pgbouncer_pool"]["tps"]
            cell["goal"] = pool_goal(clients, connect_each)
            results.append(cell)
            print(f"  pool {mode:8} c={clients:<3} {'-C ' if connect_each else '   '}"
                  f"pgproxy/pgbouncer {cell['pgproxy_vs_pgbouncer']:.2f} (goal {cell['goal']:.1f})  "
                  f"CPU us/tx pgproxy {cell['pgproxy_pool']['proxy_cpu_us_per_tx']:.1f} pgbouncer "
                  f"{cell['pgbouncer_pool']['proxy_cpu_us_per_tx']:.1f}", file=sys.stderr)
        return results

    def run_prepared_cell(self):
        """Issue 16: pgbench -M prepared -S at 64 clients through pgproxy's transaction pool,
        against pgproxy's own -M simple and PgBouncer's -M extended (Debian 12's PgBouncer 1.18
        has no prepared statement support; 1.21+ would be the fairer comparison)."""
        clients, mode = 64, "require"
        # PostgreSQL's own gain from prepared statements, without any proxy: the ceiling of what
        # the pool's prepared/simple ratio can be (the proxy's cost per transaction is about the
        # same in both protocols, so its ratio is lower).
        runs = [("pgproxy_pool", "prepared"), ("pgproxy_pool", "simple"),
                ("pgbouncer_pool", "extended"), ("direct", "prepared"), ("direct", "simple")]
        samples = {r: [] for r in runs}
        for _ in range(self.args.repeat):
            for target, protocol in runs:  # interleaved
                # A thread per client for all three: pgbench 15 prepares with the blocking
                # PQprepare, and a thread whose other client holds the pool's last server would
                # wait for ever.
                samples[(target, protocol)].append(
                    self.pgbench(target, mode, clients, False, protocol, threads=clients))
        cell = {"sslmode": mode, "clients": clients, "pool_size": self.args.pool_size}
        for (target, protocol), got in samples.items():
            cell[f"{target}_{protocol}"] = {
                "tps": statistics.median(g[0] for g in got),
                "latency_ms": statistics.median(g[1] for g in got),
                "proxy_cpu_us_per_tx": statistics.median(g[2] for g in got)}
        prepared = cell["pgproxy_pool_prepared"]["tps"]
        cell["prepared_vs_pgbouncer_extended"] = prepared / cell["pgbouncer_pool_extended"]["tps"]
        cell["prepared_vs_own_simple"] = prepared / cell["pgproxy_pool_simple"]["tps"]
        cell["direct_prepared_vs_simple"] = (cell["direct_prepared"]["tps"] /
                                             cell["direct_simple"]["tps"])
        print(f"  prepared c={clients}: pgproxy -M prepared / PgBouncer -M extended "
              f"{cell['prepared_vs_pgbouncer_extended']:.2f} (goal 1.3), / pgproxy -M simple "
              f"{cell['prepared_vs_own_simple']:.2f} (goal 1.5; PostgreSQL alone: "
              f"{cell['direct_prepared_vs_simple']:.2f})", file=sys.stderr)
        return cell

    def run_plugin_cell(self):
        """Issue 19: what Lua plugins cost per query. pgbench -S (one query per transaction) at
        16 clients through pgproxy's transaction pool, with and without a plugin whose on_connect
        and on_query do nothing; the goal is at most 3 us of pgproxy CPU per query."""
        clients, mode = 16, "require"
        plugin = os.path.join(self.dir, "noop.lua")
        with open(plugin, "w") as f:
            f.write("function on_connect(info) return nil end\n"
                    "function on_query(info, sql) return nil end\n")
        users = os.path.join(self.dir, "userlist-pool.txt")
        self.ports["pgproxy_plugin"] = self.start_pgproxy(
            "plugin", self.pg, f", tls: terminate, certificate: {self.dir}/proxy-host1.crt, "
            f"key: {self.dir}/proxy-host1.key, backend_tls: disable, "
            f"pool: {{mode: transaction, size: {self.args.pool_size}}}",
            top_extra=f"auth: {{type: scram-sha-256, file: {users}}}\n"
                      f"plugins: [{{file: {plugin}}}]\n")
        self.pgproxy_plugin_main_pid = self.pgproxy_plugin_pid
        samples = {"pgproxy_pool": [], "pgproxy_plugin": []}
        for _ in range(self.args.repeat):
            for target in samples:  # interleaved
                samples[target].append(self.pgbench(target, mode, clients, False))
        cell = {"sslmode": mode, "clients": clients, "pool_size": self.args.pool_size}
        for target, got in samples.items():
            cell[target] = {"tps": statistics.median(g[0] for g in got),
                            "latency_ms": statistics.median(g[1] for g in got),
                            "proxy_cpu_us_per_tx": statistics.median(g[2] for g in got)}
        cell["plugin_us_per_query"] = (cell["pgproxy_plugin"]["proxy_cpu_us_per_tx"] -
                                       cell["pgproxy_pool"]["proxy_cpu_us_per_tx"])
        cell["plugin_vs_none"] = cell["pgproxy_plugin"]["tps"] / cell["pgproxy_pool"]["tps"]
        print(f"  plugin c={clients}: on_connect+on_query cost "
              f"{cell['plugin_us_per_query']:.1f} us/query (goal <= 3), tps with/without "
              f"{cell['plugin_vs_none']:.2f}", file=sys.stderr)
        return cell

    def run_splice_cell(self):
        """Issue 20: TLS passthrough with the splice in the kernel (BPF sockmap) and in user space,
        beside HAProxy and direct, pgbench -S at 16 and 64 clients. The proxy's cost per
        transaction is the machine's busy CPU per transaction less direct's: the kernel splice's
        work runs in softirq, charged to whatever process was on the CPU, so the proxy's own
        process tree would flatter it. Goal: kernel >= 1.15x HAProxy's TPS at <= 0.5x its cost."""
        self.ports["pgproxy_kernel"] = self.start_pgproxy("kernel", self.pg,
                                                          top_extra="splice: kernel\n")
        self.pgproxy_kernel_main_pid = self.pgproxy_kernel_pid
        self.ports["pgproxy_user"] = self.start_pgproxy("user", self.pg,
                                                        top_extra="splice: user\n")
        self.pgproxy_user_main_pid = self.pgproxy_user_pid
        cells = []
        targets = ["direct", "pgproxy_kernel", "pgproxy_user", "haproxy"]
        for clients in ([16] if self.args.smoke else [16, 64]):
            samples = {t: [] for t in targets}
            for _ in range(self.args.repeat):
                for t in targets:  # interleaved
                    samples[t].append(self.pgbench(t, "require", clients, False))
            cell = {"sslmode": "require", "clients": clients}
            for t in targets:
                got = samples[t]
                cell[t] = {"tps": statistics.median(g[0] for g in got),
                           "latency_ms": statistics.median(g[1] for g in got),
                           "proxy_cpu_us_per_tx": statistics.median(g[2] for g in got),
                           "system_cpu_us_per_tx": statistics.median(g[3] for g in got)}
            base = cell["direct"]["system_cpu_us_per_tx"]
            for t in targets[1:]:
                cell[t]["added_cpu_us_per_tx"] = cell[t]["system_cpu_us_per_tx"] - base
            h = cell["haproxy"]
            for t in ("pgproxy_kernel", "pgproxy_user"):
                cell[t + "_vs_haproxy_tps"] = cell[t]["tps"] / h["tps"]
                cell[t + "_vs_haproxy_cpu"] = (cell[t]["added_cpu_us_per_tx"] /
                                               h["added_cpu_us_per_tx"]
                                               if h["added_cpu_us_per_tx"] > 0 else float("nan"))
            if self.args.profile:
                cell["profile"] = {t: self.profile(t, clients) for t in targets[1:]}
            cells.append(cell)
            print(f"  splice c={clients}: kernel/haproxy tps {cell['pgproxy_kernel_vs_haproxy_tps']:.2f}"
                  f" cpu {cell['pgproxy_kernel_vs_haproxy_cpu']:.2f}; user/haproxy tps "
                  f"{cell['pgproxy_user_vs_haproxy_tps']:.2f} cpu "
                  f"{cell['pgproxy_user_vs_haproxy_cpu']:.2f}", file=sys.stderr)
        return cells

    def profile(self, target, clients):
        """Where the machine's CPU goes during one more pgbench run against `target`: perf's
        system-wide samples, by command (process names; softirq work is charged to whichever
        process the CPU was running) and by kernel or user symbol. Needs perf (linux-perf)."""
        data = os.path.join(self.dir, f"perf-{target}-{clients}.data")
        rec = subprocess.Popen(["perf", "record", "-a", "-F", "499", "-o", data],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.pgbench(target, "require", clients, False)
        finally:
            rec.send_signal(signal.SIGINT)
            rec.wait(timeout=60)

        def top(sort, n):
            out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort,
                                  "--stdio", "--percent-limit", "0.5"],
                                 capture_output=True, text=True).stdout
            rows = []
            for line in out.splitlines():
                m = re.match(r"\s*([0-9.]+)%\s+(.*\S)", line)
                if m and not line.startswith("#"):
                    rows.append([float(m.group(1)), " ".join(m.group(2).split())])
            return rows[:n]

        got = {"by_command": top("comm", 8), "by_symbol": top("sym", 15)}
        print(f"  profile {target} c={clients}: " +
              ", ".join(f"{name} {pct:.0f}%" for pct, name in got["by_command"][:5]),
              file=sys.stderr)
        return got

    def run_split_cell(self):
        """Issue 18: pgbench -S at 64 clients (TLS) through two pooled mappings over the same
        primary and its streaming standby: one with read_write_split (every pgbench -S
        transaction is a proven read: the standby's), one without (role: primary). On a 2-core
        machine a standby adds no capacity, so the cell shows what the split costs and where the
        reads land (transactions committed on each cluster, from pg_stat_database)."""
        clients, mode = 64, "require"
        standby = free_port()
        subprocess.run([SANDBOX, "standby", self.dir, "standby", str(standby), str(self.pg)],
                       check=True, capture_output=True)
        users = os.path.join(self.dir, "userlist-pool.txt")
        common = (f"backends: [{{host: 127.0.0.1, port: {self.pg}}}, "
                  f"{{host: 127.0.0.1, port: {standby}}}], "
                  f"health_check: {{interval: 500ms, user: postgres}}, tls: terminate, "
                  f"certificate: {self.dir}/proxy-host1.crt, key: {self.dir}/proxy-host1.key, "
                  f"backend_tls: disable, pool: {{mode: transaction, size: {self.args.pool_size}}}")
        top = f"auth: {{type: scram-sha-256, file: {users}}}\n"
        self.ports["pgproxy_split"] = self.start_pgproxy(
            "split", 0, top_extra=top,
            mapping=common + ", read_write_split: true, read_after_write: off")
        self.ports["pgproxy_nosplit"] = self.start_pgproxy(
            "nosplit", 0, top_extra=top, mapping=common + ", role: primary")
        # Every session on the standby, no split: what the standby itself serves, so that
        # split / this is the split's own cost (classifying, choosing the pool).
        self.ports["pgproxy_standby"] = self.start_pgproxy(
            "standby", 0, top_extra=top, mapping=common + ", role: standby")
        self.pgproxy_split_main_pid = self.pgproxy_split_pid
        self.pgproxy_nosplit_main_pid = self.pgproxy_nosplit_pid
        self.pgproxy_standby_main_pid = self.pgproxy_standby_pid
        # Until the health checks have told the primary from the standby, no mapping serves.
        for target, want in (("pgproxy_split", "t"), ("pgproxy_nosplit", "f"),
                             ("pgproxy_standby", "t")):
            deadline = time.time() + 30
            while True:
                r = subprocess.run(["psql", "-X", "-A", "-t", "-c", "SELECT pg_is_in_recovery()",
                                    self.conn(self.ports[target], mode, target)],
                                   capture_output=True, text=True)
                if r.stdout.strip() == want:
                    break
                if time.time() > deadline:
                    with open(os.path.join(self.dir, f"pgproxy-{target[8:]}.log")) as f:
                        log = f.read()[-3000:]
                    raise SystemExit(f"{target} never reached the "
                                     f"{'standby' if want == 't' else 'primary'}: "
                                     f"{r.stdout.strip()} {r.stderr.strip()}\n{log}")
                time.sleep(0.2)

        def commits(port):
            return int(subprocess.run(
                ["psql", "-X", "-A", "-t", "-c", "SELECT sum(xact_commit) FROM pg_stat_database",
                 self.conn(port, "disable")], capture_output=True, text=True).stdout.strip() or 0)

        samples = {"pgproxy_split": [], "pgproxy_nosplit": [], "pgproxy_standby": []}
        landed = {"primary": 0, "standby": 0}
        for _ in range(self.args.repeat):
            for target in samples:  # interleaved
                if target == "pgproxy_split":
                    time.sleep(1.5)  # the previous run's statistics first
                before = (commits(self.pg), commits(standby))
                samples[target].append(self.pgbench(target, mode, clients, False))
                if target == "pgproxy_split":
                    # Statistics reach pg_stat_database within a second of each commit.
                    time.sleep(1.5)
                    landed["primary"] += commits(self.pg) - before[0]
                    landed["standby"] += commits(standby) - before[1]
        cell = {"sslmode": mode, "clients": clients, "pool_size": self.args.pool_size,
                "split_commits": landed}
        for target, got in samples.items():
            cell[target] = {"tps": statistics.median(g[0] for g in got),
                            "latency_ms": statistics.median(g[1] for g in got),
                            "proxy_cpu_us_per_tx": statistics.median(g[2] for g in got)}
        cell["split_vs_nosplit"] = cell["pgproxy_split"]["tps"] / cell["pgproxy_nosplit"]["tps"]
        cell["split_vs_standby"] = cell["pgproxy_split"]["tps"] / cell["pgproxy_standby"]["tps"]
        print(f"  split c={clients}: split/primary only {cell['split_vs_nosplit']:.2f}, "
              f"split/standby only {cell['split_vs_standby']:.2f} (goal >= 0.95); "
              f"commits during the split runs: standby {landed['standby']}, primary "
              f"{landed['primary']}", file=sys.stderr)

        # read_write_split: optimistic against true, with explicit transactions (BEGIN ... END,
        # as drivers with autocommit off send them): one that reads (optimistic: the standby;
        # true: the primary) and one that writes (optimistic: tried on the standby, refused,
        # run again on the primary: what the retry costs).
        self.ports["pgproxy_optimistic"] = self.start_pgproxy(
            "optimistic", 0, top_extra=top,
            mapping=common + ", read_write_split: optimistic, read_after_write: off")
        self.pgproxy_optimistic_main_pid = self.pgproxy_optimistic_pid
        # The write below needs it; the standby gets the grant by replication.
        self.psql([f"GRANT UPDATE ON pgbench_accounts TO {POOL_USERS['pgproxy_pool']}"])
        scripts = {}
        for name, body in (("read", "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;"),
                           ("write", "UPDATE pgbench_accounts SET abalance = abalance + 1 "
                                     "WHERE aid = :aid;")):
            scripts[name] = os.path.join(self.dir, f"tx-{name}.sql")
            with open(scripts[name], "w") as f:
                f.write("\\set aid random(1, 100000 * :scale)\nBEGIN;\n" + body + "\nEND;\n")
        tx = {}
        for name, script in scripts.items():
            got = {"pgproxy_split": [], "pgproxy_optimistic": []}
            for _ in range(self.args.repeat):
                for target in got:
                    got[target].append(self.pgbench(target, mode, clients, False, script=script))
            tx[name] = {t: {"tps": statistics.median(g[0] for g in v),
                            "latency_ms": statistics.median(g[1] for g in v),
                            "proxy_cpu_us_per_tx": statistics.median(g[2] for g in v)}
                        for t, v in got.items()}
            tx[name]["optimistic_vs_true"] = (tx[name]["pgproxy_optimistic"]["tps"] /
                                              tx[name]["pgproxy_split"]["tps"])
            print(f"  split c={clients} BEGIN/{name}/END: optimistic / true "
                  f"{tx[name]['optimistic_vs_true']:.2f}", file=sys.stderr)
        cell["optimistic"] = tx
        return cell

    def idle_memory(self):
        backend = free_port()
        server = self.spawn([sys.executable, os.path.join(ROOT, "bench/idle_sessions.py"), "serve",
                             str(backend)], os.path.join(self.dir, "standin.log"))
        wait_port(backend, "stand-in backend")
        out = {}
        for name, start in (("pgproxy", self.start_pgproxy), ("haproxy", self.start_haproxy)):
            port = start("idle", backend)
            pid = getattr(self, f"{name}_idle_pid")
            r = subprocess.run([sys.executable, os.path.join(ROOT, "bench/idle_sessions.py"), "measure",
                                str(port), str(self.args.idle), "host1.example.com", str(pid)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"idle measurement for {name} failed:\n{r.stderr}")
            out[name] = int(r.stdout.strip())
        server.terminate()
        return out


def pool_goal(clients, connect_each):
    """Issue 15: pgproxy's TPS over PgBouncer's with the same pool."""
    if connect_each:
        return 1.2
    return 1.0 if clients <= 16 else 1.3


def pgbench_error(out, processed, duration):
    """pgbench's own words for a failed run: its error lines (a refused or failed connection, an
    aborted client), else what its summary shows."""
    text = out.stderr + out.stdout
    errors = [l.strip() for l in text.splitlines()
              if re.search(r"error|FATAL|could not|aborted|failed|sorry|timeout", l, re.I)
              and not l.startswith("number of failed transactions: 0")]
    summary = [l.strip() for l in out.stdout.splitlines()
               if re.match(r"(number of|tps|latency|initial connection time)", l)]
    why = [f"exit code {out.returncode}"]
    if processed == 0:
        why.append(f"no transaction completed in {duration} s" + (
            "" if errors else " (opening the sessions may have taken longer than that)"))
    lines = ["; ".join(why)]
    lines += [f"  | {l}" for l in (errors[:20] or out.stderr.strip().splitlines()[-20:])]
    lines += [f"  | {l}" for l in summary]
    return "\n".join(lines)


def markdown(results, memory, pool_results, args):
    lines = [f"pgbench -S, -j 2, {args.duration}s per cell, median of {args.repeat}; "
             f"{platform.node()} ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}"]
    if results:
        lines += [""] + markdown_main(results, memory, args)
    if pool_results:
        lines += [""] + markdown_pool(pool_results, args)
    return "\n".join(lines)


def markdown_main(results, memory, args):
    lines = ["| sslmode | clients | direct tps | pgproxy tps | HAProxy tps | PgBouncer tps | "
             "pgproxy/direct | pgproxy/HAProxy | pgproxy lat ms | HAProxy lat ms | "
             "CPU us/tx pgproxy | HAProxy | PgBouncer | pgproxy terminate tps | terminate/PgBouncer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results:
        label = f"{c['clients']}{' (-C)' if c['connect_per_transaction'] else ''}"
        term = "– | –"
        if "pgproxy_term" in c:
            term = (f"{c['pgproxy_term']['tps']:.0f} | "
                    f"{c['pgproxy_term']['tps'] / c['pgbouncer']['tps']:.2f}")
        lines.append(f"| {c['sslmode']} | {label} | {c['direct']['tps']:.0f} | {c['pgproxy']['tps']:.0f} | "
                     f"{c['haproxy']['tps']:.0f} | {c['pgbouncer']['tps']:.0f} | "
                     f"{c['pgproxy_vs_direct']:.2f} | {c['pgproxy_vs_haproxy']:.2f} | "
                     f"{c['pgproxy']['latency_ms']:.3f} | {c['haproxy']['latency_ms']:.3f} | "
                     f"{c['pgproxy']['proxy_cpu_us_per_tx']:.1f} | {c['haproxy']['proxy_cpu_us_per_tx']:.1f} | "
                     f"{c['pgbouncer']['proxy_cpu_us_per_tx']:.1f} | {term} |")
    lines += ["", f"Memory per idle TLS passthrough session ({args.idle} sessions): "
              f"pgproxy {memory['pgproxy']} bytes, HAProxy {memory['haproxy']} bytes."]
    return lines


def markdown_pool(results, args):
    lines = [f"Pools (transaction mode, {args.pool_size} server connections, SCRAM; pgproxy "
             f"{args.workers} workers, PgBouncer 1 process):", "",
             "| sslmode | clients | pgproxy tps | PgBouncer tps | pgproxy/PgBouncer | goal | "
             "pgproxy lat ms | PgBouncer lat ms | CPU us/tx pgproxy | PgBouncer | "
             "server conns pgproxy | PgBouncer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results:
        label = f"{c['clients']}{' (-C)' if c['connect_per_transaction'] else ''}"
        a, b = c["pgproxy_pool"], c["pgbouncer_pool"]
        lines.append(f"| {c['sslmode']} | {label} | {a['tps']:.0f} | {b['tps']:.0f} | "
                     f"{c['pgproxy_vs_pgbouncer']:.2f} | >= {c['goal']:.1f} | "
                     f"{a['latency_ms']:.3f} | {b['latency_ms']:.3f} | "
                     f"{a['proxy_cpu_us_per_tx']:.1f} | {b['proxy_cpu_us_per_tx']:.1f} | "
                     f"{a['server_connections']} | {b['server_connections']} |")
    return lines


def markdown_prepared(c):
    rows = [("pgproxy", "prepared", "pgproxy_pool_prepared"), ("pgproxy", "simple", "pgproxy_pool_simple"),
            ("PgBouncer 1.18", "extended", "pgbouncer_pool_extended"),
            ("none (PostgreSQL, 64 backends)", "prepared", "direct_prepared"),
            ("none (PostgreSQL, 64 backends)", "simple", "direct_simple")]
    lines = [f"Prepared statements through the transaction pool (pgbench -S -c {c['clients']}, "
             f"sslmode={c['sslmode']}, {c['pool_size']} server connections):", "",
             "| proxy | pgbench -M | tps | lat ms | CPU us/tx |", "|---|---|---|---|---|"]
    for name, protocol, key in rows:
        r = c[key]
        lines.append(f"| {name} | {protocol} | {r['tps']:.0f} | {r['latency_ms']:.3f} | "
                     f"{r['proxy_cpu_us_per_tx']:.1f} |")
    lines += ["", f"pgproxy -M prepared / PgBouncer -M extended: "
              f"{c['prepared_vs_pgbouncer_extended']:.2f} (goal >= 1.3); / pgproxy -M simple: "
              f"{c['prepared_vs_own_simple']:.2f} (goal >= 1.5); PostgreSQL alone, prepared / "
              f"simple: {c['direct_prepared_vs_simple']:.2f}"]
    return lines


def markdown_plugin(c):
    a, b = c["pgproxy_pool"], c["pgproxy_plugin"]
    return [f"Lua plugins (pgbench -S -c {c['clients']}, sslmode={c['sslmode']}, transaction pool "
            f"of {c['pool_size']}; a plugin whose on_connect and on_query return nil):", "",
            "| pgproxy | tps | lat ms | CPU us/tx |", "|---|---|---|---|",
            f"| no plugin | {a['tps']:.0f} | {a['latency_ms']:.3f} | "
            f"{a['proxy_cpu_us_per_tx']:.1f} |",
            f"| on_connect + on_query | {b['tps']:.0f} | {b['latency_ms']:.3f} | "
            f"{b['proxy_cpu_us_per_tx']:.1f} |", "",
            f"Plugin cost: {c['plugin_us_per_query']:.1f} us of pgproxy CPU per query (goal <= 3); "
            f"tps with / without {c['plugin_vs_none']:.2f}."]


def markdown_splice(cells):
    out = ["### TLS passthrough: in-kernel splice (issue 20)", "",
           "pgbench -S, sslmode=require (TLS passthrough). Added CPU: the machine's busy CPU per "
           "transaction less direct's (the kernel splice runs in softirq, outside pgproxy's "
           "processes).", "",
           "| clients | direct TPS | kernel TPS | user TPS | HAProxy TPS | kernel/HAProxy TPS | "
           "user/HAProxy TPS | added CPU us/tx kernel | user | HAProxy | kernel/HAProxy CPU | "
           "pgproxy process CPU us/tx kernel | user |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        k, u, h = c["pgproxy_kernel"], c["pgproxy_user"], c["haproxy"]
        out.append(f"| {c['clients']} | {c['direct']['tps']:.0f} | {k['tps']:.0f} | {u['tps']:.0f} | "
                   f"{h['tps']:.0f} | {c['pgproxy_kernel_vs_haproxy_tps']:.2f} | "
                   f"{c['pgproxy_user_vs_haproxy_tps']:.2f} | {k['added_cpu_us_per_tx']:.1f} | "
                   f"{u['added_cpu_us_per_tx']:.1f} | {h['added_cpu_us_per_tx']:.1f} | "
                   f"{c['pgproxy_kernel_vs_haproxy_cpu']:.2f} | {k['proxy_cpu_us_per_tx']:.1f} | "
                   f"{u['proxy_cpu_us_per_tx']:.1f} |")
    for c in cells:
        for target, got in c.get("profile", {}).items():
            out += ["", f"perf, {target}, {c['clients']} clients, by command: " +
                    ", ".join(f"{name} {pct:.1f}%" for pct, name in got["by_command"]),
                    "by symbol: " + ", ".join(f"{name} {pct:.1f}%"
                                               for pct, name in got["by_symbol"])]
    return out


def markdown_split(c):
    a, b, s = c["pgproxy_split"], c["pgproxy_nosplit"], c["pgproxy_standby"]
    return [f"Read/write split (pgbench -S -c {c['clients']}, sslmode={c['sslmode']}, transaction "
            f"pool of {c['pool_size']}, a primary and its streaming standby):", "",
            "| mapping | tps | lat ms | CPU us/tx |", "|---|---|---|---|",
            f"| read_write_split: true | {a['tps']:.0f} | {a['latency_ms']:.3f} | "
            f"{a['proxy_cpu_us_per_tx']:.1f} |",
            f"| role: primary (no split) | {b['tps']:.0f} | {b['latency_ms']:.3f} | "
            f"{b['proxy_cpu_us_per_tx']:.1f} |",
            f"| role: standby (no split) | {s['tps']:.0f} | {s['latency_ms']:.3f} | "
            f"{s['proxy_cpu_us_per_tx']:.1f} |", "",
            f"split / role: standby (the split's own cost): {c['split_vs_standby']:.2f} (goal >= "
            f"0.95); split / role: primary: {c['split_vs_nosplit']:.2f}. Transactions "
            f"committed during the split runs: standby {c['split_commits']['standby']}, primary "
            f"{c['split_commits']['primary']} (the primary's are its own background work and "
            f"the health checks)."] + markdown_optimistic(c)


def markdown_optimistic(c):
    tx = c.get("optimistic")
    if not tx:
        return []
    rows = ["", f"Explicit transactions (pgbench -f: BEGIN, one statement, END; -c {c['clients']}), "
            "read_write_split: true (a plain BEGIN runs on the primary) against optimistic (it "
            "tries a standby; a write there is refused and runs again on the primary):", "",
            "| transaction | true tps | optimistic tps | optimistic / true | CPU us/tx true | "
            "CPU us/tx optimistic |", "|---|---|---|---|---|---|"]
    for name, r in tx.items():
        a, o = r["pgproxy_split"], r["pgproxy_optimistic"]
        rows.append(f"| {name} | {a['tps']:.0f} | {o['tps']:.0f} | {r['optimistic_vs_true']:.2f} | "
                    f"{a['proxy_cpu_us_per_tx']:.1f} | {o['proxy_cpu_us_per_tx']:.1f} |")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pgproxy", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench/results/latest.json"))
    ap.add_argument("--clients",
                    help="comma-separated client counts (default 1,16,64,256; smoke: 1,16)")
    ap.add_argument("--duration", type=int, help="seconds per pgbench run")
    ap.add_argument("--repeat", type=int, help="interleaved repetitions per cell")
    ap.add_argument("--idle", type=int, help="idle sessions for the memory figure")
    ap.add_argument("--workers", type=int, default=2, help="pgproxy workers and HAProxy threads")
    ap.add_argument("--pool", dest="pool_only", action="store_true",
                    help="only the pool cells: pgproxy's pooled mapping against PgBouncer "
                    "(transaction mode)")
    ap.add_argument("--no-pool", action="store_true", help="leave the pool cells out")
    ap.add_argument("--prepared-only", action="store_true",
                    help="only the prepared statement cell (with --pool)")
    ap.add_argument("--pool-clients",
                    help="comma-separated client counts of the pool cells (default 16,64,256; "
                    "smoke: 16)")
    ap.add_argument("--plugin", dest="plugin_only", action="store_true",
                    help="only the Lua plugin cell (issue 19)")
    ap.add_argument("--splice", dest="splice_only", action="store_true",
                    help="only the in-kernel splice cell (issue 20)")
    ap.add_argument("--profile", action="store_true",
                    help="with --splice: one more run per proxy under perf record -a, reported "
                    "by command and by symbol")
    ap.add_argument("--split", dest="split_only", action="store_true",
                    help="only the read/write split cell (issue 18)")
    ap.add_argument("--pool-size", type=int, default=20,
                    help="server connections per pool, pgproxy's and PgBouncer's (default 20)")
    args = ap.parse_args()
    if args.pool_only and args.no_pool:
        ap.error("--pool and --no-pool exclude each other")
    if args.split_only or args.plugin_only:
        args.pool_only = True  # the split and plugin cells use the pool cells' users
    duration, repeat = (3, 1) if args.smoke else (10, 3)
    args.duration = args.duration or duration
    args.repeat = args.repeat or repeat
    # The smoke run checks that the harness works, not that the machine is fast: few clients.
    default_clients = [1, 16] if args.smoke else [1, 16, 64, 256]
    args.clients = [int(c) for c in args.clients.split(",")] if args.clients else default_clients
    args.idle = args.idle or (500 if args.smoke else 5000)
    default_pool_clients = [16] if args.smoke else [16, 64, 256]
    args.pool_clients = ([] if args.no_pool else [int(c) for c in args.pool_clients.split(",")]
                         if args.pool_clients else default_pool_clients)
    results, memory, pool_results, prepared_cell, split_cell = [], {}, [], None, None
    plugin_cell, splice_cells = None, []
    if args.splice_only:
        args.pool_clients = []
    b = Bench(args)
    try:
        b.start()
        if not args.pool_only and not args.splice_only:
            results = b.run_cells()
        if not args.pool_only:
            splice_cells = b.run_splice_cell()
        only_one = args.prepared_only or args.split_only or args.plugin_only
        pool_results = b.run_pool_cells() if args.pool_clients and not only_one else []
        prepared_cell = (b.run_prepared_cell()
                         if args.pool_clients and not args.split_only and not args.plugin_only
                         else None)
        if args.pool_clients and (args.plugin_only or not only_one):
            plugin_cell = b.run_plugin_cell()
        # Not in the smoke run: its standby is a base backup of the whole bench database.
        if (args.pool_clients and not args.prepared_only and not args.plugin_only and
                (args.split_only or not args.smoke)):
            split_cell = b.run_split_cell()
        if not args.pool_only and not args.splice_only:
            memory = b.idle_memory()
    finally:
        b.stop()
    if results or pool_results:
        print(markdown(results, memory, pool_results, args))
    if splice_cells:
        print("\n" + "\n".join(markdown_splice(splice_cells)))
    if prepared_cell:
        print("\n" + "\n".join(markdown_prepared(prepared_cell)))
    if split_cell:
        print("\n" + "\n".join(markdown_split(split_cell)))
    if plugin_cell:
        print("\n" + "\n".join(markdown_plugin(plugin_cell)))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "host": platform.node(), "cpus": os.cpu_count(),
                   "smoke": args.smoke, "duration_s": args.duration, "repeat": args.repeat,
                   "cells": results, "idle_bytes_per_session": memory,
                   "pool_size": args.pool_size, "pool_cells": pool_results,
                   "prepared_cell": prepared_cell, "split_cell": split_cell,
                   "plugin_cell": plugin_cell, "splice_cells": splice_cells}, f, indent=1)


if __name__ == "__main__":
    main()
