#!/usr/bin/env python3
"""ringstage benchmark report: runs ringstage and its peers side by side in one run.

echo:  64-byte echo, 64 connections, closed loop; server pinned to CPU 0, load client to CPU 1.
       Servers: ringstage (examples/echo), tokio, monoio, a minimal C io_uring echo (liburing).
       Rounds are interleaved (A B C D, then D C B A, ...) and medians of per-round ratios
       reported, because absolute numbers on a shared VM drift by tens of percent between runs.
       Then process memory per idle connection at 10k idle connections.
       Echo, http (one request at a time) and kv (SET and GET one at a time) also run ringstage
       as "ringstage-spin": --spin-us 25, polling for work before sleeping (its CPU counts it).
http:  the staged HTTP example vs nginx (one worker each, both pinned to CPU 0, wrk on CPU 1):
       plaintext (one request at a time, and pipelined 16 deep as TechEmpower's plaintext test
       is defined), 1 KiB and 100 KiB files with 64 connections; then throughput, p99 and Jain's
       fairness versus connections (16..1024) with the project's load client. On /plaintext a
       minimal C io_uring responder (no framework, no parsing) runs alongside as the floor, and
       in the sweeps the same responder with a canned 1 KiB body. The sweep prints each side's
       share of its core: against ringstage the client is the limit.
overload: the CPU-heavy /dynamic endpoint under open-loop load at 0.5x, 1x, 2x and 4x its
       measured capacity, adaptive admission control on and off: goodput, p50/p90/p99 of
       admitted requests, refusal rate, Jain's fairness.
kv:    the key-value example vs redis-server (one thread), both pinned to CPU 0, redis-benchmark
       -c 50 on CPU 1: SET and GET, one request at a time and pipelined 16 deep, and the list,
       set, hash and sorted-set tests pipelined, with each server's CPU per request. Then
       isolation: the project's load client (50 connections, GET) without and with 1% of
       commands slow (DEBUG SLEEP 5 ms): p99 of the fast commands.
proxy: the TCP proxy example (connectors) vs nginx's stream proxy and HAProxy (one worker or
       thread each, all pinned to CPU 0) in front of the C io_uring echo server; the load client
       and that upstream share CPU 1. 64 B x 64 connections and 16 KiB x 16 connections, closed
       loop, interleaved rounds: messages/s, p99, and each proxy's CPU per message. No target.
cache: a cache server written the way docs/guide.md teaches (examples/cache.rs: a session
       stage and a store stage, replies as views, no hand coalescing) vs the same server on
       tokio (benches/peers/src/bin/tokio_cache.rs), both pinned to CPU 0, redis-benchmark
       -c 32 -d 100 on CPU 1: SET and GET one at a time and pipelined 16 deep; req/s and each
       server's CPU per request. Target (issue 20): pipelined GET >= 1.0x tokio.
udp:   the UDP echo example (examples/udp_echo.rs: multishot RECVMSG, one SENDMSG per reply) vs a
       tokio UDP echo (benches/peers/src/bin/tokio_udp_echo.rs), both pinned to CPU 0, the load
       client on CPU 1: 32 sockets x 4 datagrams of 64 B in flight; datagrams/s, p99 and server
       CPU per datagram. Then GSO: each 1200 B datagram answered with 8 copies, as 8 sends or one
       UDP GSO send (NetCmd::SendSegments): server CPU per datagram sent.
https: the HTTP example with --tls-cert/--tls-key vs nginx (ssl, one worker), both pinned to CPU 0
       with the same self-signed P-256 certificate, TLS 1.3 and the suite both pick
       (TLS_AES_256_GCM_SHA384, X25519): keep-alive 1 KiB file (wrk -c64, https) req/s and
       server CPU per request; then a full handshake per request (ab -c16, no keep-alive):
       handshakes/s and server CPU per handshake. Target (issue 22): CPU per request and per
       handshake >= 1.0x nginx (nginx's CPU / ringstage's).
queue: SPSC push+pop cost in ns and cycles (single and batches of 32) next to crossbeam.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench-out")
PEERS = os.path.join(ROOT, "benches", "peers", "target", "release")


def sh(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def publish(name, report, data):
    """Prints a report and writes it as bench-out/NAME.md, with its data as NAME.json."""
    print("\n" + report)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{name}.json"), "w") as fh:
        json.dump(data, fh, indent=1)
    with open(os.path.join(OUT, f"{name}.md"), "w") as fh:
        fh.write("```\n" + report + "\n```\n")


def pyplot():
    """matplotlib's pyplot with a file backend, or None (tables only) when it is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("no matplotlib: skipped plots")
        return None


def build_echo():
    sh(["cargo", "build", "--release", "--quiet", "--example", "echo"])
    sh(["cargo", "build", "--release", "--quiet", "--manifest-path", "benches/peers/Cargo.toml"])
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    sh(["gcc", "-O2", "-o", "target/bench/uring_echo", "benches/peers/c/uring_echo.c", "-luring"])


# The poll before sleeping (microseconds) of the "ringstage-spin" runs: one setting, not tuned per case.
SPIN_US = 25

SERVERS = {
    # name: (argv builder, port)
    "ringstage": (lambda p: [os.path.join(ROOT, "target/release/examples/echo"), "--addr", f"127.0.0.1:{p}", "--cpu", "0"], 7100),
    "tokio": (lambda p: [os.path.join(PEERS, "tokio_echo"), f"127.0.0.1:{p}"], 7101),
    "monoio": (lambda p: [os.path.join(PEERS, "monoio_echo"), f"127.0.0.1:{p}"], 7102),
    "c-io_uring": (lambda p: [os.path.join(ROOT, "target/bench/uring_echo"), str(p)], 7103),
    # The same example polling for work before it sleeps (Builder::spin_before_sleep): its CPU
    # per message then counts the polling.
    "ringstage-spin": (lambda p: [os.path.join(ROOT, "target/release/examples/echo"), "--addr", f"127.0.0.1:{p}", "--cpu", "0",
                                  "--spin-us", str(SPIN_US)], 7104),
}


def wait_port_free(port, timeout=15, udp=False):
    """Waits until `port` (TCP, or UDP with `udp`) can be bound again: an io_uring server's ring
    (and the socket its multishot accept or receive holds) is torn down asynchronously after the
    process exits."""
    import socket
    t0 = time.time()
    while True:
        if udp:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return
        except OSError:
            if time.time() - t0 > timeout:
                raise
            time.sleep(0.05)
        finally:
            s.close()


def start_server(name):
    argv, port = SERVERS[name]
    wait_port_free(port)
    proc = subprocess.Popen(["taskset", "-c", "0"] + argv(port), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # each server prints one line once it listens
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"{name} did not start: {line!r}")
    return proc, port


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def loadgen(args):
    r = subprocess.run(["taskset", "-c", "1", os.path.join(PEERS, "loadgen")] + args, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed: {r.stderr[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def idle_cost(name, n):
    proc, port = start_server(name)
    try:
        time.sleep(0.3)
        before = rss_bytes(proc.pid)
        lg = subprocess.Popen(["taskset", "-c", "1", os.path.join(PEERS, "loadgen"), "--addr", f"127.0.0.1:{port}", "--idle", str(n)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = lg.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"idle client: {line!r}")
        time.sleep(0.5)
        after = rss_bytes(proc.pid)
        lg.stdin.close()
        lg.wait(timeout=30)
        return max(0, after - before) / n
    finally:
        stop_server(proc)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def bench_echo(a):
    build_echo()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    names = list(SERVERS)
    runs = {n: [] for n in names}
    for r in range(a.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):  # nobody always runs right after the same peer
            proc, port = start_server(n)
            try:
                res = loadgen(["--addr", f"127.0.0.1:{port}", "--conns", "64", "--size", "64", "--warmup", "1",
                               "--secs", str(a.secs), "--server-pid", str(proc.pid)])
            finally:
                stop_server(proc)
            runs[n].append(res)
            print(f"round {r + 1} {n:<11} {res['rate']:>10.0f} msg/s  p99 {res['p99_us']:>8.1f} us  "
                  f"cpu {res['cpu_ns_per_msg']:>7.0f} ns/msg", flush=True)
    idle_n = min(a.idle, hard - 200)  # the server and the client each hold one fd per connection
    idle = {}
    for n in names:
        if n == "ringstage-spin":
            idle[n] = float("nan")  # the same example: its idle connections cost the same
            continue
        try:
            idle[n] = idle_cost(n, idle_n)
        except Exception as e:  # report, don't hide
            print(f"idle test for {n} failed: {e}")
            idle[n] = float("nan")
    rows = []
    for n in names:
        rs = runs[n]
        rows.append({
            "server": n,
            "rate": median([x["rate"] for x in rs]),
            "p50_us": median([x["p50_us"] for x in rs]),
            "p99_us": median([x["p99_us"] for x in rs]),
            "cpu_ns_per_msg": median([x["cpu_ns_per_msg"] for x in rs]),
            "idle_bytes_per_conn": idle[n],
            "rounds": rs,
        })
    by = {r["server"]: r for r in rows}
    rs_ = by["ringstage"]
    lines = []
    lines.append(f"echo: 64 B messages, 64 connections, server on CPU 0, client on CPU 1; median of {a.rounds} interleaved rounds of {a.secs}s")
    lines.append("(the table: medians per server; the ratios: medians of per-round ratios, each round's runs being adjacent in time)")
    lines.append(f"{'server':<15}{'msg/s':>12}{'p50 us':>10}{'p99 us':>10}{'cpu ns/msg':>12}{'idle B/conn':>13}")
    for r in rows:
        lines.append(f"{r['server']:<15}{r['rate']:>12.0f}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['cpu_ns_per_msg']:>12.0f}{r['idle_bytes_per_conn']:>13.0f}")
    lines.append("")
    def ratio(peer, key, me="ringstage"):
        return median([x[key] / y[key] for x, y in zip(runs[me], runs[peer]) if y[key]])

    lines.append("ringstage ratios (target):")
    for peer in ["tokio", "monoio"]:
        lines.append(f"  throughput / {peer:<10} {ratio(peer, 'rate'):6.3f}  (>= 1.0)   "
                     f"p99 / {peer:<7} {ratio(peer, 'p99_us'):6.3f}  (<= 1.0)")
    lines.append(f"  cpu per msg / c-io_uring {ratio('c-io_uring', 'cpu_ns_per_msg'):6.3f}  (<= 1.0)")
    lines.append(f"  idle memory per connection {rs_['idle_bytes_per_conn']:.0f} B at {idle_n} idle connections  (<= 1024)")
    lines.append(f"ringstage-spin (--spin-us {SPIN_US}: polls for work before sleeping; its CPU per message counts the polling):")
    lines.append(f"  throughput / tokio {ratio('tokio', 'rate', 'ringstage-spin'):6.3f}  p99 / tokio {ratio('tokio', 'p99_us', 'ringstage-spin'):6.3f}"
                 f"  cpu per msg / c-io_uring {ratio('c-io_uring', 'cpu_ns_per_msg', 'ringstage-spin'):6.3f}"
                 f"  throughput / ringstage {ratio('ringstage', 'rate', 'ringstage-spin'):6.3f}")
    publish("echo", "\n".join(lines), {"rows": rows, "idle_connections": idle_n})
    plot_echo(rows, a)


def plot_echo(rows, a):
    plt = pyplot()
    if plt is None:
        return
    names = [r["server"] for r in rows]
    colors = ["#d62728" if n.startswith("ringstage") else "#7f7f7f" for n in names]
    fig, ax = plt.subplots(1, 4, figsize=(16, 4))
    panels = [("rate", "messages/s (higher is better)"), ("p99_us", "p99 latency, us (lower is better)"),
              ("cpu_ns_per_msg", "server CPU ns/message (lower is better)"), ("idle_bytes_per_conn", "bytes per idle connection")]
    for axis, (key, title) in zip(ax, panels):
        vals = [r[key] for r in rows]
        axis.bar(names, vals, color=colors)
        if key in ("rate", "p99_us", "cpu_ns_per_msg"):
            for i, r in enumerate(rows):  # each round as a dot: the spread
                axis.scatter([i] * len(r["rounds"]), [x[key] for x in r["rounds"]], color="black", s=8, zorder=3)
        axis.set_title(title, fontsize=9)
        axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(f"echo 64 B x 64 connections, one server core (median of {a.rounds} rounds; dots: each round)")
    fig.tight_layout()
    path = os.path.join(OUT, "echo.png")
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


WWW = os.path.join(ROOT, "examples", "http", "www")


def nginx_main(tmp):
    """The top of every nginx config here: one worker process in the foreground, errors to stderr."""
    return f"""
worker_processes 1;
master_process off;
daemon off;
pid {tmp}/nginx.pid;
error_log stderr error;
events {{ worker_connections 8192; }}
"""


def nginx_conf(port, tls=None, name="nginx"):
    """nginx's static-file config on `port`, with TLS 1.3 on (cert, key) when `tls` is given."""
    tmp = os.path.join(OUT, name)
    os.makedirs(tmp, exist_ok=True)
    listen = f"listen 127.0.0.1:{port} backlog=4096;"
    if tls:
        cert, key = tls
        listen = (f"listen 127.0.0.1:{port} ssl backlog=4096;\n    ssl_certificate {cert}; ssl_certificate_key {key};\n"
                  f"    ssl_protocols TLSv1.3; ssl_session_tickets on;")
    conf = nginx_main(tmp) + f"""http {{
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 65; keepalive_requests 100000000;
  open_file_cache max=1000 inactive=60s; open_file_cache_valid 5s;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  types {{ text/html html; text/css css; text/plain txt; application/octet-stream bin; }}
  default_type application/octet-stream;
  server {{
    {listen}
    root {WWW};
    location = /plaintext {{ default_type text/plain; return 200 "Hello, World!"; }}
  }}
}}
"""
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def wait_port(port, proc, timeout=10):
    import socket
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def start_http(name, extra=()):
    if name in ("ringstage", "ringstage-spin"):
        port = 8200 if name == "ringstage" else 8204
        spin = ["--spin-us", str(SPIN_US)] if name == "ringstage-spin" else []
        # The same requests-per-connection limit as the nginx config below (both default to 1000).
        argv = [os.path.join(ROOT, "target/release/examples/http"), "--addr", f"127.0.0.1:{port}", "--cpu", "0",
                "--keepalive-requests", "100000000", *spin, *extra]
    elif name == "c-io_uring":
        port = 8203
        argv = [os.path.join(ROOT, "target/bench/uring_http"), str(port)]
    elif name == "c-io_uring-1k":
        port = 8205
        argv = [os.path.join(ROOT, "target/bench/uring_http"), str(port), "1024"]
    else:
        port = 8201
        argv = ["nginx", "-e", "stderr", "-c", nginx_conf(port)]
    wait_port_free(port)
    proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def cpu_ns(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def wrk(port, path, conns, secs, pid=None, depth=1, scheme="http"):
    """wrk -t1 on CPU 1; `depth` > 1 pipelines that many requests per write (ci/pipeline.lua)."""
    c0 = cpu_ns(pid) if pid else 0
    script = ["-s", os.path.join(ROOT, "ci", "pipeline.lua")] if depth > 1 else []
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(secs))}s", "--latency", *script,
            f"{scheme}://127.0.0.1:{port}{path}"]
    if depth > 1:
        argv += ["--", str(depth)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    cpu = cpu_ns(pid) - c0 if pid else 0
    rate, p99, errors, total = 0.0, float("nan"), 0, 0
    unit = {"us": 1.0, "ms": 1000.0, "s": 1e6}
    for line in r.stdout.splitlines():
        t = line.split()
        if "requests in" in line:
            total = int(t[0])
        elif line.startswith("Requests/sec:"):
            rate = float(t[1])
        elif t[:1] == ["99%"]:
            v = t[1]
            num = v.rstrip("usm")
            p99 = float(num) * unit[v[len(num):]]
        elif "Non-2xx" in line or "Socket errors" in line:
            errors += 1
    return {"rate": rate, "p99_us": p99, "errors": errors, "cpu_us_per_req": cpu / 1000 / total if total else float("nan")}


def client_busy(run):
    """The share of its core the load client used over a loadgen run's measured window."""
    return run.get("client_cpu_ns", 0) / (run["secs"] * 1e9) if run.get("secs") else float("nan")


def cpu_cap(name, pid, frac):
    """Moves every thread of `pid` into a cpu cgroup of its own limited to `frac` of one CPU
    (10 ms period). Returns False when no cpu cgroup can be written (needs root)."""
    period = 10000
    quota = int(period * frac)
    try:
        v1 = "/sys/fs/cgroup/cpu"
        if os.path.exists(os.path.join(v1, "cpu.cfs_period_us")):
            g = os.path.join(v1, f"ringstage-bench-{name}")
            os.makedirs(g, exist_ok=True)
            open(os.path.join(g, "cpu.cfs_period_us"), "w").write(str(period))
            open(os.path.join(g, "cpu.cfs_quota_us"), "w").write(str(quota))
            for t in os.listdir(f"/proc/{pid}/task"):
                open(os.path.join(g, "tasks"), "w").write(t)
            return True
        v2 = "/sys/fs/cgroup"
        if os.path.exists(os.path.join(v2, "cgroup.subtree_control")):
            if "cpu" not in open(os.path.join(v2, "cgroup.subtree_control")).read().split():
                open(os.path.join(v2, "cgroup.subtree_control"), "w").write("+cpu")
            g = os.path.join(v2, f"ringstage-bench-{name}")
            os.makedirs(g, exist_ok=True)
            open(os.path.join(g, "cpu.max"), "w").write(f"{quota} {period}")
            open(os.path.join(g, "cgroup.procs"), "w").write(str(pid))
            return True
    except OSError as e:
        print(f"cpu cgroup unavailable ({e}): server-bound capacity check skipped", flush=True)
    return False


def bench_http(a):
    sh(["cargo", "build", "--release", "--quiet", "--example", "http"])
    sh(["cargo", "build", "--release", "--quiet", "--manifest-path", "benches/peers/Cargo.toml"])
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    sh(["gcc", "-O2", "-o", "target/bench/uring_http", "benches/peers/c/uring_http.c", "-luring"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    names = ["ringstage", "nginx"]
    # (name, path, pipeline depth). wrk's latency figures are per pipelined batch, not per
    # request, so the pipelined row reports no p99.
    cases = [("plaintext", "/plaintext", 1), ("plaintext x16", "/plaintext", 16), ("1 KiB file", "/files/1k.txt", 1),
             ("100 KiB file", "/files/100k.bin", 1)]
    fixed = {(n, c): [] for n in names for c, _, _ in cases}
    sweep_conns = [16, 64, 256, 1024]
    runs = {(n, c): [] for n in names for c in sweep_conns}
    # Server-bound check: one request at a time, wrk's core caps both servers, so each server is
    # also measured held to half a core by a cpu cgroup, where the server is the bottleneck.
    capped_cases = [("plaintext", "/plaintext", 1), ("1 KiB file", "/files/1k.txt", 1)]
    capped = {(n, c): [] for n in names for c, _, _ in capped_cases}
    capped_sweep = {(n, c): [] for n in names for c in sweep_conns}
    cap_frac = 0.5
    # The floor: a minimal C io_uring responder (a canned response per request, no parsing), on
    # /plaintext only, measured in the same rounds: how far below nginx any io_uring server
    # gets here, framework or not.
    floor = "c-io_uring"
    # ringstage polling for work before it sleeps, one request at a time only (where the
    # servers idle between the client's requests; pipelined, nobody sleeps).
    spin = "ringstage-spin"
    spin_cases = ("plaintext", "1 KiB file")
    # The floor in the connections sweeps: the same responder answering every request with a
    # canned 1 KiB body, like the sweep's cached file. Whether a server that does nothing but
    # answer is flat to 1024 connections here tells the kernel's share of the slope from ours.
    floor_1k = "c-io_uring-1k"
    # Both servers run for the whole round (the idle one costs nothing) and each measurement of
    # one is next to the same measurement of the other, alternating who goes first: this VM's
    # speed drifts by tens of percent over minutes, and paired runs keep that out of the ratios.
    def wrk_cases(r, servers, order, case_list, into, label):
        for c, path, depth in case_list:
            extra = ([floor] if c == "plaintext" else []) + ([spin] if c in spin_cases and label == "" else [])
            for n in order + extra:
                proc, port = servers[n]
                wrk(port, path, 64, 1, depth=depth)  # warm caches and connections
                res = wrk(port, path, 64, a.secs, proc.pid, depth)
                into[(n, c)].append(res)
                print(f"round {r + 1} {label}{n:<10} {c:<13} {res['rate']:>10.0f} req/s  p99 {res['p99_us']:>9.1f} us  "
                      f"server cpu {res['cpu_us_per_req']:.2f} us/req", flush=True)

    def sweep_round(r, servers, order, into, label):
        for c in sweep_conns[r % len(sweep_conns):] + sweep_conns[:r % len(sweep_conns)]:  # rotated per round
            for n in order:
                res = loadgen(["--addr", f"127.0.0.1:{servers[n][1]}", "--http", "/files/1k.txt", "--conns",
                               str(c), "--warmup", "1", "--secs", str(a.secs), "--server-pid", str(servers[n][0].pid)])
                into[(n, c)].append(res)
                print(f"round {r + 1} {label} {n:<10} {c:>5} conns {res['rate']:>10.0f} req/s  "
                      f"p99 {res['p99_us']:>9.1f} us  jain {res['jain']:.4f}  errors {res['errors']}", flush=True)

    fixed[(floor, "plaintext")], capped[(floor, "plaintext")] = [], []
    for c in spin_cases:
        fixed[(spin, c)] = []
    for c in sweep_conns:
        runs[(floor_1k, c)], capped_sweep[(floor_1k, c)] = [], []
    for r in range(a.rounds):
        servers = {n: start_http(n) for n in names + [floor, spin, floor_1k]}
        order = names if r % 2 == 0 else names[::-1]
        try:
            wrk_cases(r, servers, order, cases, fixed, "")
            sweep_round(r, servers, order + [floor_1k], runs, "sweep")
            if all(cpu_cap(n, servers[n][0].pid, cap_frac) for n in names + [floor, floor_1k]):  # (not the spin variant)
                wrk_cases(r, servers, order, capped_cases, capped, "capped ")
                sweep_round(r, servers, order + [floor_1k], capped_sweep, "capped sweep")
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
            for n in names + [floor, floor_1k]:
                for g in (f"/sys/fs/cgroup/cpu/ringstage-bench-{n}", f"/sys/fs/cgroup/ringstage-bench-{n}"):
                    try:
                        os.rmdir(g)  # empty once its server exited
                    except OSError:
                        pass
    sweep = {n: [{"conns": c, "rate": median([x["rate"] for x in runs[(n, c)]]),
                  "p99_us": median([x["p99_us"] for x in runs[(n, c)]]),
                  "cpu_us": median([x["cpu_ns_per_msg"] / 1000 for x in runs[(n, c)]]),
                  "client_busy": median([client_busy(x) for x in runs[(n, c)]]),
                  "jain": min(x["jain"] for x in runs[(n, c)]),
                  "errors": sum(x["errors"] for x in runs[(n, c)]), "rounds": runs[(n, c)]} for c in sweep_conns]
             for n in names}
    lines = [f"http: one server core each (CPU 0), wrk -t1 -c64 on CPU 1; {a.rounds} rounds of {a.secs}s, each server's run"]
    lines.append("next to the other's; req/s and us/req are medians, ratio and capacity medians of the per-round ratios.")
    lines.append("req/s is capped by the single wrk core when a server is faster than the client; 'capacity' is")
    lines.append("nginx's server CPU per request over ringstage's: the throughput ratio with the client out of the way.")
    lines.append("'plaintext x16' pipelines 16 requests per write, as TechEmpower's plaintext test does; one request at")
    lines.append("a time, wrk's core is the ceiling for both servers. wrk times pipelined batches, not requests: no p99 there.")
    lines.append("p99 ratio: median of the per-round ringstage/nginx p99 ratios (target: <= 1); a single run's p99 at wrk's")
    lines.append("ceiling swings by 2-3x now and then for either server, so the paired ratio is steadier than the two medians.")
    lines.append(f"{'case':<14}{'ringstage req/s':>16}{'nginx req/s':>13}{'ratio':>8}{'capacity':>10}{'target':>8}"
                 f"{'rs us/req':>11}{'ngx us/req':>11}{'rs p99 us':>11}{'nginx p99':>11}{'p99 ratio':>11}")
    targets = {"plaintext": 1.2, "plaintext x16": 1.2, "1 KiB file": 1.0, "100 KiB file": 1.0}
    summary = {}
    for c, _, depth in cases:
        rs = median([x["rate"] for x in fixed[("ringstage", c)]])
        ng = median([x["rate"] for x in fixed[("nginx", c)]])
        rp = median([x["p99_us"] for x in fixed[("ringstage", c)]])
        np_ = median([x["p99_us"] for x in fixed[("nginx", c)]])
        rc = median([x["cpu_us_per_req"] for x in fixed[("ringstage", c)]])
        nc = median([x["cpu_us_per_req"] for x in fixed[("nginx", c)]])
        pairs = list(zip(fixed[("ringstage", c)], fixed[("nginx", c)]))
        ratio = median([x["rate"] / y["rate"] for x, y in pairs if y["rate"]])
        capacity = median([y["cpu_us_per_req"] / x["cpu_us_per_req"] for x, y in pairs if x["cpu_us_per_req"]])
        p99_ratio = median([x["p99_us"] / y["p99_us"] for x, y in pairs if y["p99_us"] > 0]) if depth == 1 else float("nan")
        summary[c] = {"ringstage": rs, "nginx": ng, "ratio": ratio, "capacity": capacity,
                      "rs_cpu_us": rc, "nginx_cpu_us": nc, "rs_p99": rp, "nginx_p99": np_, "p99_ratio": p99_ratio}
        p99s = f"{rp:>11.1f}{np_:>11.1f}{p99_ratio:>11.3f}" if depth == 1 else f"{'-':>11}{'-':>11}{'-':>11}"
        lines.append(f"{c:<14}{rs:>16.0f}{ng:>13.0f}{ratio:>8.3f}{capacity:>10.3f}{'>=' + str(targets[c]):>8}"
                     f"{rc:>11.2f}{nc:>11.2f}{p99s}")
    pt, px = summary["plaintext"], summary["plaintext x16"]
    lines.append(f"plaintext vs nginx: pipelined x16 {px['ratio']:.2f}x (TechEmpower's plaintext method); one request at a "
                 f"time {pt['ratio']:.2f}x in req/s (both at wrk's ceiling) and {pt['capacity']:.2f}x in server CPU per request")
    fl = fixed[(floor, "plaintext")]
    if fl:
        fpairs = list(zip(fl, fixed[("nginx", "plaintext")]))
        fcap = median([y["cpu_us_per_req"] / x["cpu_us_per_req"] for x, y in fpairs if x["cpu_us_per_req"]])
        summary["floor plaintext capacity"] = fcap
        lines.append(f"floor: a minimal C io_uring responder (benches/peers/c/uring_http.c: one canned response per request, "
                     f"no parsing),")
        lines.append(f"  plaintext: {median([x['cpu_us_per_req'] for x in fl]):.2f} us/req, capacity vs nginx {fcap:.3f} "
                     f"(ringstage {pt['capacity']:.3f})")
    lines.append(f"ringstage-spin (--spin-us {SPIN_US}: polls for work before sleeping; its CPU per request counts the polling),"
                 " against nginx in the same rounds:")
    for c in spin_cases:
        sp = list(zip(fixed[(spin, c)], fixed[("nginx", c)]))
        sratio = median([x["rate"] / y["rate"] for x, y in sp if y["rate"]])
        scap = median([y["cpu_us_per_req"] / x["cpu_us_per_req"] for x, y in sp if x["cpu_us_per_req"]])
        sp99 = median([x["p99_us"] / y["p99_us"] for x, y in sp if y["p99_us"] > 0])
        summary[f"{c} spin"] = {"ratio": sratio, "capacity": scap, "p99_ratio": sp99}
        lines.append(f"  {c:<12} {median([x['rate'] for x, _ in sp]):>8.0f} req/s  ratio {sratio:.3f}  p99 ratio {sp99:.3f}  "
                     f"capacity {scap:.3f}")
    if all(capped.values()):
        lines.append(f"server-bound: each server held to {cap_frac} of a core by a cpu cgroup (10 ms period), wrk as above; "
                     "median of the per-round ratios:")
        for c, _, _ in capped_cases:
            pairs = list(zip(capped[("ringstage", c)], capped[("nginx", c)]))
            ratio = median([x["rate"] / y["rate"] for x, y in pairs if y["rate"]])
            summary[f"{c} capped"] = ratio
            lines.append(f"  {c:<12} ringstage {median([x['rate'] for x, _ in pairs]):>8.0f} req/s  nginx "
                         f"{median([y['rate'] for _, y in pairs]):>8.0f} req/s  ratio {ratio:.3f}")
            if capped.get((floor, c)):
                fp = list(zip(capped[(floor, c)], capped[("nginx", c)]))
                fr = median([x["rate"] / y["rate"] for x, y in fp if y["rate"]])
                summary[f"floor {c} capped"] = fr
                lines.append(f"  {'':<12} floor     {median([x['rate'] for x, _ in fp]):>8.0f} req/s  (C io_uring)"
                             f"{'':>10}ratio {fr:.3f}")
    lines.append("")
    lines.append(f"connections sweep, 1 KiB file (project load client, closed loop; median of {a.rounds} rounds, "
                 "min Jain; us/req: server CPU per request;")
    lines.append("busy: req/s x us/req, the share of its core the server used; client: the share of its core the load "
                 "client used.")
    lines.append("A server well under 100% with the client near it was held back by the client at that point; both near "
                 "100% is a closed")
    lines.append("loop in balance, where the client's own cost per request (which grows with connections) sets the pace "
                 "as much as the server's):")
    lines.append(f"{'conns':>6}" + "".join(f"{n + ' req/s':>17}{'p99 us':>10}{'jain':>8}{'us/req':>8}{'busy':>6}{'client':>7}"
                                          for n in names))
    for i, c in enumerate(sweep_conns):
        lines.append(f"{c:>6}" + "".join(f"{sweep[n][i]['rate']:>17.0f}{sweep[n][i]['p99_us']:>10.1f}{sweep[n][i]['jain']:>8.4f}"
                                         f"{sweep[n][i]['cpu_us']:>8.2f}"
                                         f"{sweep[n][i]['rate'] * sweep[n][i]['cpu_us'] / 1e4:>5.0f}%"
                                         f"{sweep[n][i]['client_busy'] * 100:>6.0f}%" for n in names))
    def flatness(into, n):
        """Throughput at the most connections over throughput at the peak, per round (the VM's
        speed drifts between rounds, so flatness is judged within each). The peak is the
        connection count with the highest median over the rounds: taking each round's own
        maximum over several noisy points would overstate the peak and understate flatness."""
        rounds = range(len(into[(n, sweep_conns[0])]))
        peak = max(sweep_conns, key=lambda c: median([into[(n, c)][r]["rate"] for r in rounds]))
        return peak, [into[(n, sweep_conns[-1])][r]["rate"] / into[(n, peak)][r]["rate"] for r in rounds]

    for n in names:
        peak, per_round = flatness(runs, n)
        summary[f"{n} flat"] = median(per_round)
        lines.append(f"{n}: throughput at 1024 conns / at the peak ({peak}) = {median(per_round):.3f} (flat: >= 0.90; "
                     f"median of the rounds: {', '.join(f'{x:.3f}' for x in per_round)}); min Jain "
                     f"{min(x['jain'] for x in sweep[n]):.4f} (>= 0.99)")

    def floor_line(into, key):
        """The floor's sweep on one line: req/s and server CPU per request at each point, and
        its flatness."""
        pts = "  ".join(f"{c}: {median([x['rate'] for x in into[(floor_1k, c)]]):.0f} req/s "
                        f"{median([x['cpu_ns_per_msg'] / 1000 for x in into[(floor_1k, c)]]):.2f} us/req" for c in sweep_conns)
        peak, per_round = flatness(into, floor_1k)
        summary[key] = median(per_round)
        return [f"floor (benches/peers/c/uring_http.c answering a canned 1 KiB body, no framework): {pts}",
                f"  floor: throughput at 1024 conns / at the peak ({peak}) = {median(per_round):.3f} "
                f"(median of the rounds: {', '.join(f'{x:.3f}' for x in per_round)})"]

    lines += floor_line(runs, "floor flat")
    if all(capped_sweep.values()):
        lines.append("")
        lines.append(f"connections sweep with each server held to {cap_frac} of a core (server-bound at every point; "
                     f"median of {len(capped_sweep[('ringstage', 16)])} rounds):")
        lines.append(f"{'conns':>6}" + "".join(f"{n + ' req/s':>17}{'p99 us':>10}{'jain':>8}{'us/req':>8}{'client':>7}"
                                              for n in names))
        for c in sweep_conns:
            lines.append(f"{c:>6}" + "".join(f"{median([x['rate'] for x in capped_sweep[(n, c)]]):>17.0f}"
                                             f"{median([x['p99_us'] for x in capped_sweep[(n, c)]]):>10.1f}"
                                             f"{min(x['jain'] for x in capped_sweep[(n, c)]):>8.4f}"
                                             f"{median([x['cpu_ns_per_msg'] / 1000 for x in capped_sweep[(n, c)]]):>8.2f}"
                                             f"{median([client_busy(x) for x in capped_sweep[(n, c)]]) * 100:>6.0f}%"
                                             for n in names))
        for n in names:
            peak, per_round = flatness(capped_sweep, n)
            summary[f"{n} flat capped"] = median(per_round)
            lines.append(f"{n} (server-bound): throughput at 1024 conns / at the peak ({peak}) = {median(per_round):.3f} (median of the "
                         f"rounds: {', '.join(f'{x:.3f}' for x in per_round)})")
        lines += floor_line(capped_sweep, "floor flat capped")
    publish("http", "\n".join(lines),
            {"fixed": {f"{k[0]}|{k[1]}": v for k, v in fixed.items()}, "sweep": sweep, "summary": summary,
             "capped": {f"{k[0]}|{k[1]}": v for k, v in capped.items()},
             "capped_sweep": {f"{k[0]}|{k[1]}": v for k, v in capped_sweep.items()}})
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    xs = range(len(cases))
    w = 0.38
    for k, n in enumerate(names):
        ax[0].bar([x + (k - 0.5) * w for x in xs], [summary[c][n] for c, _, _ in cases], w, label=n,
                  color="#d62728" if n == "ringstage" else "#7f7f7f")
    ax[0].set_xticks(list(xs), [c for c, _, _ in cases])
    ax[0].set_yscale("log")  # pipelined plaintext is an order of magnitude above the rest
    ax[0].set_title("requests/s, 64 connections (higher is better)", fontsize=9)
    ax[0].legend()
    for n in names:
        style = dict(color="#d62728" if n == "ringstage" else "#7f7f7f", marker="o", label=n)
        ax[1].plot(sweep_conns, [x["rate"] for x in sweep[n]], **style)
        ax[2].plot(sweep_conns, [x["p99_us"] for x in sweep[n]], **style)
        if all(capped_sweep.values()):
            style.update(linestyle="--", marker="s", label=f"{n}, {cap_frac} core")
            ax[1].plot(sweep_conns, [median([x["rate"] for x in capped_sweep[(n, c)]]) for c in sweep_conns], **style)
    fl_style = dict(color="#1f77b4", marker=".", linestyle=":", label="floor (C io_uring)")
    ax[1].plot(sweep_conns, [median([x["rate"] for x in runs[(floor_1k, c)]]) for c in sweep_conns], **fl_style)
    if all(capped_sweep.values()):
        fl_style.update(linestyle="-.", label=f"floor, {cap_frac} core")
        ax[1].plot(sweep_conns, [median([x["rate"] for x in capped_sweep[(floor_1k, c)]]) for c in sweep_conns], **fl_style)
    ax[1].set_ylim(bottom=0)  # flatness is judged from zero, not from a zoomed axis
    for axis, t in ((ax[1], "throughput vs connections (1 KiB file)"), (ax[2], "p99 latency (us) vs connections")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("connections")
        axis.set_title(t, fontsize=9)
        axis.legend(**(dict(fontsize=7, ncol=3, loc="lower center") if axis is ax[1] else {}))
    fig.suptitle("staged HTTP server vs nginx, one core each")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "http.png"), dpi=90)
    print(f"wrote {os.path.join(OUT, 'http.png')}")


def oha(port, rate, secs):
    """oha -q, the open-loop tool the issue names: goodput and refusals from its status-code
    counts; its percentiles cover every response (fast 503s included)."""
    r = subprocess.run(["taskset", "-c", "1", "oha", "-z", f"{secs}s", "-q", f"{rate:.0f}", "-c", "256", "--no-tui",
                        "--latency-correction", "--output-format", "json", f"http://127.0.0.1:{port}/dynamic"],
                       capture_output=True, text=True, timeout=secs + 60)
    if r.returncode != 0:
        raise RuntimeError(f"oha failed: {r.stderr[-300:]}")
    d = json.loads(r.stdout)
    t = d["summary"]["total"]
    codes = d.get("statusCodeDistribution", {})
    p = d.get("latencyPercentiles", {})
    return {"goodput": codes.get("200", 0) / t, "refused": codes.get("503", 0) / t,
            "p50_ms": (p.get("p50") or 0) * 1e3, "p90_ms": (p.get("p90") or 0) * 1e3, "p99_ms": (p.get("p99") or 0) * 1e3}


def stat_gauges(port, names):
    """Reads the named dynamic-stage gauges from the server's /stats (Prometheus text)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2).read().decode()
    out = {}
    for line in text.splitlines():
        for n in names:
            if line.startswith(f'{n}{{stage="dynamic"}}'):
                out[n] = float(line.rsplit(" ", 1)[1])
    return out


def convergence(cap, target_ms, extra, secs):
    """Time series of the controller's rate and p90 from a cold start at 4x load, sampled every
    100 ms (one control window). Returns the samples and the windows until the p90 first
    stays within 1.2 x target for three windows in a row."""
    proc, port = start_http("ringstage", extra)
    series = []
    try:
        lg = subprocess.Popen(["taskset", "-c", "1", os.path.join(PEERS, "loadgen"), "--addr", f"127.0.0.1:{port}", "--http",
                               "/dynamic", "--rate", f"{cap * 4:.1f}", "--conns", "256", "--clients", "16", "--warmup", "0",
                               "--secs", str(secs)], stdout=subprocess.DEVNULL)
        t0 = time.time()
        while lg.poll() is None:
            g = stat_gauges(port, ["ringstage_stage_admission_rate", "ringstage_stage_admission_p90_us"])
            series.append((time.time() - t0, g.get("ringstage_stage_admission_rate", 0),
                           g.get("ringstage_stage_admission_p90_us", 0) / 1000))
            time.sleep(0.1)
    finally:
        stop_server(proc)
    ok = [p90 <= 1.2 * target_ms and p90 > 0 for _, _, p90 in series]
    settled = next((i for i in range(len(ok) - 2) if all(ok[i:i + 3])), None)
    return series, settled


def bench_overload(a):
    """The /dynamic endpoint (1 ms of CPU per page) under open-loop load at 0.5x..4x its
    capacity, with SEDA's adaptive admission control on (target p90 10 ms) and off."""
    sh(["cargo", "build", "--release", "--quiet", "--example", "http"])
    sh(["cargo", "build", "--release", "--quiet", "--manifest-path", "benches/peers/Cargo.toml"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work, target_ms = "1000", 10
    proc, port = start_http("ringstage", ["--dynamic-us", work])
    try:
        cap = loadgen(["--addr", f"127.0.0.1:{port}", "--http", "/dynamic", "--conns", "16", "--warmup", "1", "--secs", "3"])["rate"]
    finally:
        stop_server(proc)
    print(f"capacity of /dynamic (closed loop, 16 connections): {cap:.0f} req/s", flush=True)
    factors = [0.5, 1.0, 2.0, 4.0]
    res = {}
    for mode in ["on", "off"]:
        extra = ["--dynamic-us", work] + (["--overload-target-ms", str(target_ms)] if mode == "on" else [])
        for f in factors:
            proc, port = start_http("ringstage", extra)
            try:
                # 256 connections in 16 clients: a connection carries one request at a time, so
                # enough of them keep the client from delaying its own schedule; fairness is
                # judged per client.
                r = loadgen(["--addr", f"127.0.0.1:{port}", "--http", "/dynamic", "--rate", f"{cap * f:.1f}", "--conns", "256",
                             "--clients", "16", "--warmup", "2", "--secs", str(a.secs)])
            finally:
                stop_server(proc)
            r["refused_rate"] = r["refused"] / r["secs"]
            if shutil.which("oha"):
                proc, port = start_http("ringstage", extra)
                try:
                    r["oha"] = oha(port, cap * f, max(2, round(a.secs)))
                finally:
                    stop_server(proc)
            res[(mode, f)] = r
            print(f"controller {mode:<3} {f:>3}x offered {cap * f:>7.0f}/s  goodput {r['rate']:>7.0f}/s  refused {r['refused_rate']:>7.0f}/s  "
                  f"p50 {r['p50_us'] / 1000:>8.1f} ms  p90 {r['p90_us'] / 1000:>8.1f} ms  p99 {r['p99_us'] / 1000:>8.1f} ms  jain {r['jain']:.3f}",
                  flush=True)
    lines = [f"overload: /dynamic (1 ms CPU per page), one server core; open loop, Poisson arrivals, latency from the scheduled",
             f"send; 256 connections in 16 clients (Jain over clients),",
             f"{a.secs}s after 2s warm-up; capacity {cap:.0f} req/s; controller target p90 {target_ms} ms"]
    lines.append(f"{'ctl':<5}{'load':>5}{'offered/s':>11}{'goodput/s':>11}{'% cap':>7}{'refused/s':>11}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'jain':>7}")
    for (mode, f), r in res.items():
        lines.append(f"{mode:<5}{f:>4}x{cap * f:>11.0f}{r['rate']:>11.0f}{100 * r['rate'] / cap:>7.1f}{r['refused_rate']:>11.0f}"
                     f"{r['p50_us'] / 1000:>9.1f}{r['p90_us'] / 1000:>9.1f}{r['p99_us'] / 1000:>9.1f}{r['jain']:>7.3f}")
    series, settled = convergence(cap, target_ms, ["--dynamic-us", work, "--overload-target-ms", str(target_ms)], 5)
    lines.append("")
    if settled is None:
        lines.append("convergence from a cold start at 4x: the controller's p90 never stayed within 1.2 x target for 3 windows")
    else:
        lines.append(f"convergence from a cold start at 4x: the controller's window p90 is within 1.2 x target from window {settled} "
                     f"(~{series[settled][0]:.1f} s; windows are 100 ms), rate then {series[settled][1]:.0f}/s")
    if all("oha" in r for r in res.values()):
        lines.append("")
        lines.append("cross-check with oha -q (256 connections, latency correction; percentiles over all responses, 503s included):")
        lines.append(f"{'ctl':<5}{'load':>5}{'goodput/s':>11}{'refused/s':>11}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
        for (mode, f), r in res.items():
            o = r["oha"]
            lines.append(f"{mode:<5}{f:>4}x{o['goodput']:>11.0f}{o['refused']:>11.0f}{o['p50_ms']:>9.1f}{o['p90_ms']:>9.1f}{o['p99_ms']:>9.1f}")
    else:
        lines.append("(oha not installed: cross-check skipped)")
    for f in (2.0, 4.0):
        r = res[("on", f)]
        lines.append(f"controller on at {f}x: goodput {100 * r['rate'] / cap:.1f}% of capacity (>= 90), "
                     f"p90 of admitted {r['p90_us'] / 1000:.1f} ms = {r['p90_us'] / 1000 / target_ms:.2f} x target (<= 1.2), "
                     f"Jain {r['jain']:.3f} (>= 0.99)")
    publish("overload", "\n".join(lines),
            {"capacity": cap, "target_ms": target_ms, "runs": {f"{m}|{f}": r for (m, f), r in res.items()},
             "convergence": series, "settled_window": settled})
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(1, 3, figsize=(17, 4))
    ts = [x[0] for x in series]
    ax[2].plot(ts, [x[1] for x in series], color="#d62728", label="admission rate /s")
    ax[2].axhline(cap, ls=":", color="black", label="capacity")
    ax[2].set_xlabel("seconds from cold start at 4x load")
    ax[2].set_title("controller convergence (rate; p90 on the right axis)", fontsize=9)
    ax[2].legend(loc="upper right")
    ax2 = ax[2].twinx()
    ax2.plot(ts, [x[2] for x in series], color="#1f77b4", alpha=0.6, label="window p90 ms")
    ax2.axhline(target_ms, ls="--", color="#1f77b4", alpha=0.6)
    ax2.set_ylabel("p90 ms")
    for mode, color in (("on", "#d62728"), ("off", "#7f7f7f")):
        xs = [cap * f for f in factors]
        ax[0].plot(xs, [res[(mode, f)]["rate"] for f in factors], marker="o", color=color, label=f"controller {mode}")
        ax[1].plot(xs, [res[(mode, f)]["p90_us"] / 1000 for f in factors], marker="o", color=color, label=f"controller {mode}")
    ax[0].axhline(cap, ls=":", color="black", label="capacity")
    ax[0].set_title("goodput (200s/s) vs offered load", fontsize=9)
    ax[1].axhline(target_ms, ls=":", color="black", label="target")
    ax[1].set_yscale("log")
    ax[1].set_title("p90 latency of admitted requests (ms, log)", fontsize=9)
    for axis in ax[:2]:
        axis.set_xlabel("offered requests/s")
        axis.legend()
    ax[2].set_ylim(0, cap * 2.5)  # the cold-start rate (10k/s) is off the top
    fig.suptitle("adaptive overload control on a CPU-bound stage")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "overload.png"), dpi=90)
    print(f"wrote {os.path.join(OUT, 'overload.png')}")


def start_kv(name):
    """The kv example (keyspace on CPU 0, slow stage on CPU 1) or redis-server (CPU 0)."""
    if name in ("ringstage", "ringstage-spin"):
        port = 6400 if name == "ringstage" else 6402
        spin = ["--spin-us", str(SPIN_US)] if name == "ringstage-spin" else []
        argvs = [[os.path.join(ROOT, "target/release/examples/kv"), "--addr", f"127.0.0.1:{port}", "--cpu", "0",
                  "--slow-cpu", "1", *spin]]
    else:
        port = 6401
        base = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--logfile", "", "--io-threads", "1"]
        # DEBUG is off by default from Redis 7 on; older versions lack the option but allow it.
        argvs = [base + ["--enable-debug-command", "yes"], base]
    wait_port_free(port)
    for argv in argvs:
        proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            return proc, port
        except RuntimeError:
            if argv is argvs[-1]:
                raise
    raise RuntimeError("unreachable")


def redis_benchmark(port, test, n, pipeline, pid):
    """redis-benchmark -c 50 on CPU 1 for one test; rps, p99 and the server's CPU per request."""
    c0 = cpu_ns(pid)
    r = subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50",
                        "-n", str(n), "-P", str(pipeline), "-t", test, "--csv"], capture_output=True, text=True, timeout=300)
    cpu = cpu_ns(pid) - c0
    rows = [l.replace('"', "").split(",") for l in r.stdout.splitlines()]
    head = next((x for x in rows if x and x[0] == "test"), None)
    # Some rows carry a note: "LRANGE_100 (first 100 elements)".
    row = next((x for x in rows if x and x[0].split(" ")[0] == test.upper()), None)
    if head is None or row is None:
        raise RuntimeError(f"redis-benchmark {test}: {r.stdout[-300:]} {r.stderr[-300:]}")
    d = dict(zip(head, row))
    return {"rate": float(d["rps"]), "p99_us": float(d.get("p99_latency_ms", "nan")) * 1000, "cpu_us_per_req": cpu / 1000 / n}


def kv_memory(name, requests=1_000_000):
    """Resident memory of a fresh server after redis-benchmark SETs `requests` random keys (of a
    keyspace of 10^8, so about that many distinct ones) with 32-byte values: (keys, RSS in bytes,
    bytes per key over the empty server)."""
    proc, port = start_kv(name)
    try:
        time.sleep(0.3)
        empty = rss_bytes(proc.pid)
        subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50",
                        "-n", str(requests), "-P", "16", "-r", "100000000", "-d", "32", "-t", "set", "-q"],
                       capture_output=True, text=True, timeout=600, check=True)
        time.sleep(0.3)
        rss = rss_bytes(proc.pid)
        keys = int(subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "dbsize"], capture_output=True,
                                  text=True, timeout=30, check=True).stdout.strip())
        return keys, rss, (rss - empty) / max(keys, 1)
    finally:
        stop_server(proc)


def bench_kv(a):
    sh(["cargo", "build", "--release", "--quiet", "--example", "kv"])
    sh(["cargo", "build", "--release", "--quiet", "--manifest-path", "benches/peers/Cargo.toml"])
    names = ["ringstage", "redis"]
    cases = [("SET", "set", 1), ("GET", "get", 1), ("SET -P 16", "set", 16), ("GET -P 16", "get", 16)]
    # The other data types, pipelined 16 deep so the server is the bottleneck (one at a time,
    # redis-benchmark's core is), each test on its own, ordered so that LRANGE, LPOP, SPOP and
    # ZPOPMIN find what LPUSH, SADD and ZADD stored. No target: informative.
    types = ["lpush", "lrange_100", "lpop", "sadd", "spop", "hset", "zadd", "zpopmin"]
    cases += [(f"{t.upper()} -P 16", t, 16) for t in types]
    # Requests per run, sized for about --secs each at this machine's usual rates (a quarter
    # of that for the data types, LRANGE_100 at its own rate).
    per_sec = {1: 160_000, 16: 2_000_000}
    n_for = {"lrange_100": 150_000 * a.secs / 4}
    targeted = ("SET", "GET", "SET -P 16", "GET -P 16")
    # ringstage polling for work before it sleeps, on SET and GET one at a time (pipelined,
    # nobody sleeps).
    spin = "ringstage-spin"
    runs = {(n, c[0]): [] for n in names + [spin] for c in cases}
    iso = {(n, k): [] for n in names for k in ("none", "slow")}
    for r in range(a.rounds):
        order = names if r % 2 == 0 else names[::-1]
        servers = {n: start_kv(n) for n in names + [spin]}
        try:
            for label, test, depth in cases:
                for n in order + ([spin] if label in ("SET", "GET") else []):
                    proc, port = servers[n]
                    n_req = per_sec[depth] * a.secs if label in targeted else n_for.get(test, per_sec[depth] * a.secs / 4)
                    res = redis_benchmark(port, test, int(n_req), depth, proc.pid)
                    runs[(n, label)].append(res)
                    print(f"round {r + 1} {n:<10} {label:<10} {res['rate']:>11.0f} req/s  p99 {res['p99_us']:>8.0f} us  "
                          f"server cpu {res['cpu_us_per_req']:.2f} us/req", flush=True)
            for kind, every in (("none", 0), ("slow", 100)):
                for n in order:
                    proc, port = servers[n]
                    res = loadgen(["--addr", f"127.0.0.1:{port}", "--resp", "get", "--conns", "50", "--warmup", "1",
                                   "--secs", str(a.secs), "--slow-every", str(every), "--slow-ms", "5"])
                    iso[(n, kind)].append(res)
                    print(f"round {r + 1} {n:<10} {'1% slow' if every else 'no slow':<10} {res['rate']:>11.0f} req/s  "
                          f"fast p99 {res['p99_us']:>8.1f} us  slow {res['slow']}  busy {res['refused']}  errors {res['errors']}",
                          flush=True)
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
    lines = [f"kv: one server core each (CPU 0; the kv example's slow stage has CPU 1), redis-benchmark -c 50 on CPU 1;",
             f"{a.rounds} rounds of about {a.secs}s, each server's run next to the other's; req/s, p99 and us/req are medians,",
             "ratio and capacity medians of the per-round ratios. One request at a time, redis-benchmark's core is the",
             "ceiling for both servers; 'capacity' is redis's server CPU per request over ringstage's.",
             f"{'case':<17}{'ringstage req/s':>16}{'redis req/s':>13}{'ratio':>8}{'capacity':>10}{'target':>8}"
             f"{'rs us/req':>11}{'redis us/req':>13}{'rs p99 us':>11}{'redis p99':>11}"]
    rows, spin_rows = [], []
    for label, _, _ in cases:
        A, B = runs[("ringstage", label)], runs[("redis", label)]
        row = {"case": label,
               "ringstage": median([x["rate"] for x in A]), "redis": median([x["rate"] for x in B]),
               "ratio": median([x["rate"] / y["rate"] for x, y in zip(A, B) if y["rate"]]),
               "capacity": median([y["cpu_us_per_req"] / x["cpu_us_per_req"] for x, y in zip(A, B) if x["cpu_us_per_req"]]),
               "rs_us": median([x["cpu_us_per_req"] for x in A]), "redis_us": median([x["cpu_us_per_req"] for x in B]),
               "rs_p99": median([x["p99_us"] for x in A]), "redis_p99": median([x["p99_us"] for x in B])}
        rows.append(row)
        lines.append(f"{label:<17}{row['ringstage']:>16.0f}{row['redis']:>13.0f}{row['ratio']:>8.3f}{row['capacity']:>10.3f}"
                     f"{'>=1.0' if label in targeted else '-':>8}{row['rs_us']:>11.2f}{row['redis_us']:>13.2f}{row['rs_p99']:>11.0f}{row['redis_p99']:>11.0f}")
    lines.append(f"ringstage-spin (--spin-us {SPIN_US}: polls for work before sleeping; its CPU per request counts the "
                 "polling), against redis in the same rounds:")
    for label in ("SET", "GET"):
        A, B = runs[(spin, label)], runs[("redis", label)]
        row = {"case": f"{label} spin", "ratio": median([x["rate"] / y["rate"] for x, y in zip(A, B) if y["rate"]]),
               "capacity": median([y["cpu_us_per_req"] / x["cpu_us_per_req"] for x, y in zip(A, B) if x["cpu_us_per_req"]]),
               "ringstage": median([x["rate"] for x in A]), "rs_p99": median([x["p99_us"] for x in A])}
        spin_rows.append(row)
        lines.append(f"  {label:<4} {row['ringstage']:>9.0f} req/s  ratio {row['ratio']:.3f}  capacity {row['capacity']:.3f}  "
                     f"p99 {row['rs_p99']:.0f} us")
    lines.append("")
    lines.append("isolation: GET, 50 connections closed loop (project load client); '1% slow': every 100th command of a")
    lines.append("connection is DEBUG SLEEP 0.005. p99 is of the fast commands only; target: with slow <= 2x without.")
    lines.append(f"{'server':<11}{'p99 no slow':>12}{'p99 1% slow':>13}{'ratio':>8}{'req/s no slow':>15}{'req/s 1% slow':>15}"
                 f"{'slow done':>11}{'busy':>7}{'errors':>8}")
    iso_rows = []
    for n in names:
        A, B = iso[(n, "none")], iso[(n, "slow")]
        row = {"server": n, "p99_none": median([x["p99_us"] for x in A]), "p99_slow": median([x["p99_us"] for x in B]),
               "ratio": median([y["p99_us"] / x["p99_us"] for x, y in zip(A, B) if x["p99_us"]]),
               "rate_none": median([x["rate"] for x in A]), "rate_slow": median([x["rate"] for x in B]),
               "slow": sum(x["slow"] for x in B), "busy": sum(x["refused"] for x in B),
               "errors": sum(x["errors"] for x in A + B)}
        iso_rows.append(row)
        lines.append(f"{n:<11}{row['p99_none']:>12.1f}{row['p99_slow']:>13.1f}{row['ratio']:>8.2f}{row['rate_none']:>15.0f}"
                     f"{row['rate_slow']:>15.0f}{row['slow']:>11}{row['busy']:>7}{row['errors']:>8}")
    lines.append("")
    lines.append("memory: RSS after redis-benchmark -t set -d 32 -r 100000000 -n 1000000 (about 1M keys), each server fresh;")
    lines.append("target: ringstage's RSS <= 1.2x redis-server's.")
    mem = {n: kv_memory(n) for n in names}
    for n in names:
        keys, rss, per = mem[n]
        lines.append(f"  {n:<10} {keys:>8} keys  RSS {rss / 2**20:>7.1f} MiB  {per:>6.0f} B per key")
    mem_ratio = mem["ringstage"][1] / mem["redis"][1]
    lines.append(f"  RSS ratio ringstage / redis: {mem_ratio:.3f}")
    publish("kv", "\n".join(lines), {"cases": rows, "spin": spin_rows, "isolation": iso_rows,
                                     "memory": {n: {"keys": k, "rss": r, "bytes_per_key": b} for n, (k, r, b) in mem.items()},
                                     "runs": {f"{k[0]} {k[1]}": v for k, v in runs.items()},
                                     "isolation_runs": {f"{k[0]} {k[1]}": v for k, v in iso.items()}})
    plot_kv(rows, iso_rows, a)


def start_cache(name):
    """The guide-style cache example or its tokio twin, on CPU 0."""
    if name == "ringstage":
        port = 6510
        argv = [os.path.join(ROOT, "target/release/examples/cache"), "--addr", f"127.0.0.1:{port}", "--cpu", "0"]
    else:
        port = 6511
        argv = [os.path.join(PEERS, "tokio_cache"), f"127.0.0.1:{port}"]
    wait_port_free(port)
    proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def bench_cache(a):
    sh(["cargo", "build", "--release", "--quiet", "--example", "cache"])
    sh(["cargo", "build", "--release", "--quiet", "--manifest-path", "benches/peers/Cargo.toml"])
    names = ["ringstage", "tokio"]
    cases = [("SET", "set", 1), ("GET", "get", 1), ("SET -P 16", "set", 16), ("GET -P 16", "get", 16)]
    per_sec = {1: 150_000, 16: 1_500_000}
    runs = {(n, c[0]): [] for n in names for c in cases}
    for r in range(a.rounds):
        order = names if r % 2 == 0 else names[::-1]
        servers = {n: start_cache(n) for n in names}
        try:
            for label, test, depth in cases:
                for n in order:
                    proc, port = servers[n]
                    c0 = cpu_ns(proc.pid)
                    n_req = int(per_sec[depth] * a.secs)
                    out = subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
                                          "-c", "32", "-d", "100", "-n", str(n_req), "-P", str(depth), "-t", test, "--csv"],
                                         capture_output=True, text=True, timeout=300)
                    cpu = cpu_ns(proc.pid) - c0
                    rows = [l.replace('"', "").split(",") for l in out.stdout.splitlines()]
                    head = next((x for x in rows if x and x[0] == "test"), None)
                    row = next((x for x in rows if x and x[0] == test.upper()), None)
                    if head is None or row is None:
                        raise RuntimeError(f"redis-benchmark {test} against {n}: {out.stdout[-300:]} {out.stderr[-300:]}")
                    d = dict(zip(head, row))
                    res = {"rate": float(d["rps"]), "p99_us": float(d.get("p99_latency_ms", "nan")) * 1000,
                           "cpu_us_per_req": cpu / 1000 / n_req}
                    runs[(n, label)].append(res)
                    print(f"round {r + 1} {n:<10} {label:<10} {res['rate']:>11.0f} req/s  p99 {res['p99_us']:>8.0f} us  "
                          f"server cpu {res['cpu_us_per_req']:.2f} us/req", flush=True)
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
    lines = ["cache: the guide-style cache server (examples/cache.rs) vs its tokio twin, one core each (CPU 0),",
             f"redis-benchmark -c 32 -d 100 on CPU 1; {a.rounds} rounds of about {a.secs}s; req/s, p99 and us/req are medians,",
             "ratio and capacity medians of the per-round ratios; 'capacity' is tokio's server CPU per request over ringstage's.",
             f"{'case':<12}{'ringstage req/s':>16}{'tokio req/s':>13}{'ratio':>8}{'capacity':>10}{'target':>8}"
             f"{'rs us/req':>11}{'tokio us/req':>13}{'rs p99 us':>11}{'tokio p99':>11}"]
    rows = []
    for label, _, _ in cases:
        A, B = runs[("ringstage", label)], runs[("tokio", label)]
        row = {"case": label, "ringstage": median([x["rate"] for x in A]), "tokio": median([x["rate"] for x in B]),
               "ratio": median([x["rate"] / y["rate"] for x, y in zip(A, B) if y["rate"]]),
               "capacity": median([y["cpu_us_per_req"] / x["cpu_us_per_req"] for x, y in zip(A, B) if x["cpu_us_per_req"]]),
               "rs_us": median([x["cpu_us_per_req"] for x in A]), "tokio_us": median([x["cpu_us_per_req"] for x in B]),
               "rs_p99": median([x["p99_us"] for x in A]), "tokio_p99": median([x["p99_us"] for x in B])}
        rows.append(row)
        target = ">=1.0" if label == "GET -P 16" else "-"
        lines.append(f"{label:<12}{row['ringstage']:>16.0f}{row['tokio']:>13.0f}{row['ratio']:>8.3f}{row['capacity']:>10.3f}"
                     f"{target:>8}{row['rs_us']:>11.2f}{row['tokio_us']:>13.2f}{row['rs_p99']:>11.0f}{row['tokio_p99']:>11.0f}")
    publish("cache", "\n".join(lines), {"cases": rows, "runs": {f"{k[0]} {k[1]}": v for k, v in runs.items()}})


def plot_kv(rows, iso_rows, a):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [3, 3, 2]})
    labels = [r["case"] for r in rows]
    x = range(len(labels))
    for i, (key, color) in enumerate((("ringstage", "#d62728"), ("redis", "#7f7f7f"))):
        ax[0].bar([k + (i - 0.5) * 0.4 for k in x], [r[key] for r in rows], width=0.4, color=color, label=key)
    ax[0].set_xticks(list(x), labels, fontsize=7, rotation=40, ha="right")
    ax[0].set_yscale("log")
    ax[0].set_title("requests/s (redis-benchmark -c 50)", fontsize=9)
    ax[0].legend(fontsize=8)
    ax[1].bar(labels, [r["capacity"] for r in rows], color="#d62728")
    ax[1].axhline(1.0, color="black", lw=0.8)
    ax[1].set_title("server CPU per request: redis / ringstage (higher: ringstage cheaper)", fontsize=9)
    ax[1].set_xticks(list(x), labels, fontsize=7, rotation=40, ha="right")
    for i, (key, title) in enumerate((("p99_none", "no slow commands"), ("p99_slow", "1% DEBUG SLEEP 5 ms"))):
        ax[2].bar([k + (i - 0.5) * 0.4 for k in range(len(iso_rows))], [r[key] / 1000 for r in iso_rows], width=0.4,
                  color=["#1f77b4", "#ff7f0e"][i], label=title)
    ax[2].set_xticks(list(range(len(iso_rows))), [r["server"] for r in iso_rows])
    ax[2].set_yscale("log")
    ax[2].set_title("p99 of the fast GETs, ms (log)", fontsize=9)
    ax[2].legend(fontsize=8)
    fig.suptitle(f"kv example vs redis-server, one server core each (median of {a.rounds} rounds)")
    fig.tight_layout()
    path = os.path.join(OUT, "kv.png")
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


PROXY_UPSTREAM = 7210
PROXIES = {"ringstage": 7200, "nginx": 7201, "haproxy": 7202}


def proxy_argv(name, port):
    up = f"127.0.0.1:{PROXY_UPSTREAM}"
    tmp = os.path.join(OUT, "proxy")
    os.makedirs(tmp, exist_ok=True)
    if name == "ringstage":
        return [os.path.join(ROOT, "target/release/examples/proxy"), "--addr", f"127.0.0.1:{port}", "--upstream", up, "--cpu", "0"]
    if name == "nginx":
        path = os.path.join(tmp, "nginx.conf")
        with open(path, "w") as f:
            f.write("load_module /usr/lib/nginx/modules/ngx_stream_module.so;" + nginx_main(tmp) + f"""stream {{
  server {{ listen 127.0.0.1:{port} backlog=4096; proxy_pass {up}; tcp_nodelay on; }}
}}
""")
        return ["nginx", "-e", "stderr", "-c", path]
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(f"""
global
  nbthread 1
  maxconn 8192
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen echo
  bind 127.0.0.1:{port}
  server upstream {up}
""")
    return ["haproxy", "-db", "-f", path]


def bench_proxy(a):
    sh(["cargo", "build", "--release", "--quiet", "--example", "proxy"])
    build_echo()  # the C io_uring echo upstream and the load client
    upstream = subprocess.Popen(["taskset", "-c", "1", os.path.join(ROOT, "target/bench/uring_echo"), str(PROXY_UPSTREAM)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cases = [("64 B x 64", 64, 64), ("16 KiB x 16", 16384, 16)]
    names = list(PROXIES)
    runs = {(c[0], n): [] for c in cases for n in names + ["direct"]}
    try:
        wait_port(PROXY_UPSTREAM, upstream)
        for r in range(a.rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                port = PROXIES[n]
                wait_port_free(port)
                proc = subprocess.Popen(["taskset", "-c", "0"] + proxy_argv(n, port), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                try:
                    wait_port(port, proc)
                    for case, size, conns in cases:
                        res = loadgen(["--addr", f"127.0.0.1:{port}", "--conns", str(conns), "--size", str(size),
                                       "--warmup", "1", "--secs", str(a.secs), "--server-pid", str(proc.pid)])
                        runs[(case, n)].append(res)
                        print(f"round {r + 1} {case:<12} {n:<10} {res['rate']:>10.0f} msg/s  p99 {res['p99_us']:>8.1f} us  "
                              f"cpu {res['cpu_ns_per_msg']:>7.0f} ns/msg", flush=True)
                finally:
                    stop_server(proc)
            for case, size, conns in cases:  # the upstream alone, for scale
                res = loadgen(["--addr", f"127.0.0.1:{PROXY_UPSTREAM}", "--conns", str(conns), "--size", str(size),
                               "--warmup", "0.5", "--secs", str(a.secs / 2)])
                runs[(case, "direct")].append(res)
    finally:
        stop_server(upstream)
    lines = [f"proxy: TCP proxies on CPU 0 (one worker/thread each) in front of the C io_uring echo server; the load client",
             f"and the upstream share CPU 1. Closed loop, {a.rounds} interleaved rounds of {a.secs}s; medians, ratios are medians",
             "of per-round ratios. 'capacity': the peer's proxy CPU per message over ringstage's. 'busy': the share of",
             "CPU 0 the proxy used (well under 100%: CPU 1, the client and upstream, was the bottleneck). No target.",
             f"{'case':<13}{'proxy':<11}{'msg/s':>10}{'p99 us':>9}{'cpu ns/msg':>12}{'busy':>6}{'ratio':>8}{'capacity':>10}{'p99 ratio':>11}"]
    rows = []
    for case, _, _ in cases:
        for n in names + ["direct"]:
            rs = runs[(case, n)]
            row = {"case": case, "proxy": n, "rate": median([x["rate"] for x in rs]),
                   "p99_us": median([x["p99_us"] for x in rs]),
                   "cpu_ns_per_msg": median([x.get("cpu_ns_per_msg", float("nan")) for x in rs]) if n != "direct" else float("nan"),
                   "rounds": rs}
            mine, theirs = runs[(case, "ringstage")], rs
            pair = list(zip(mine, theirs))
            row["ratio"] = median([m["rate"] / t["rate"] for m, t in pair if t["rate"]])
            row["capacity"] = median([t["cpu_ns_per_msg"] / m["cpu_ns_per_msg"] for m, t in pair
                                      if n != "direct" and m.get("cpu_ns_per_msg")])
            row["p99_ratio"] = median([m["p99_us"] / t["p99_us"] for m, t in pair if t["p99_us"]])
            rows.append(row)
            busy = row["rate"] * row["cpu_ns_per_msg"] / 1e9
            label = n if n != "direct" else "(no proxy)"
            if n in ("ringstage", "direct"):
                lines.append(f"{case:<13}{label:<11}{row['rate']:>10.0f}{row['p99_us']:>9.1f}"
                             f"{row['cpu_ns_per_msg'] if n != 'direct' else float('nan'):>12.0f}"
                             f"{(f'{busy:.0%}' if n != 'direct' else '-'):>6}{'':>8}{'':>10}{'':>11}")
            else:
                lines.append(f"{case:<13}{label:<11}{row['rate']:>10.0f}{row['p99_us']:>9.1f}{row['cpu_ns_per_msg']:>12.0f}"
                             f"{busy:>6.0%}{row['ratio']:>8.3f}{row['capacity']:>10.3f}{row['p99_ratio']:>11.3f}")
    lines.append("ratio, capacity and p99 ratio on a peer's line: ringstage against that peer (ratio and capacity > 1 and")
    lines.append("p99 ratio < 1 favour ringstage)")
    publish("proxy", "\n".join(lines), {"rows": rows})
    plot_proxy(rows, cases, names, a)


def plot_proxy(rows, cases, names, a):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(len(cases), 3, figsize=(13, 3.6 * len(cases)), squeeze=False)
    panels = [("rate", "messages/s (higher is better)"), ("p99_us", "p99 latency, us (lower is better)"),
              ("cpu_ns_per_msg", "proxy CPU ns/message (lower is better)")]
    for i, (case, _, _) in enumerate(cases):
        by = {r["proxy"]: r for r in rows if r["case"] == case}
        colors = ["#d62728" if n == "ringstage" else "#7f7f7f" for n in names]
        for j, (key, title) in enumerate(panels):
            axis = ax[i][j]
            axis.bar(names, [by[n][key] for n in names], color=colors)
            for k, n in enumerate(names):  # each round as a dot: the spread
                axis.scatter([k] * len(by[n]["rounds"]), [x[key] for x in by[n]["rounds"]], color="black", s=8, zorder=3)
            axis.set_title(f"{case}: {title}", fontsize=9)
    fig.suptitle(f"TCP proxy in front of an echo server, proxy on one core (median of {a.rounds} rounds; dots: each round)")
    fig.tight_layout()
    path = os.path.join(OUT, "proxy.png")
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


UDP_SERVERS = {
    "ringstage": lambda p, extra: [os.path.join(ROOT, "target/release/examples/udp_echo"), "--addr", f"127.0.0.1:{p}", "--cpu", "0"] + extra,
    "tokio": lambda p, extra: [os.path.join(PEERS, "tokio_udp_echo"), f"127.0.0.1:{p}"],
}


def bench_udp(a):
    sh(["cargo", "build", "--release", "--quiet", "--example", "udp_echo"])
    sh(["cargo", "build", "--release", "--quiet", "--manifest-path", "benches/peers/Cargo.toml"])

    def run(name, port, extra, lg):
        wait_port_free(port, udp=True)
        proc = subprocess.Popen(["taskset", "-c", "0"] + UDP_SERVERS[name](port, extra), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            line = proc.stdout.readline()
            if "udp echo" not in line:
                raise RuntimeError(f"{name} did not start: {line!r}")
            return loadgen(["--udp", "1", "--addr", f"127.0.0.1:{port}", "--warmup", "1", "--secs", str(a.secs),
                            "--server-pid", str(proc.pid)] + lg)
        finally:
            stop_server(proc)

    cases = [
        ("ringstage", "ringstage", [], ["--conns", "32", "--depth", "4", "--size", "64"]),
        ("tokio", "tokio", [], ["--conns", "32", "--depth", "4", "--size", "64"]),
        ("fanout8-sends", "ringstage", ["--fanout", "8"], ["--conns", "32", "--size", "1200", "--replies", "8"]),
        ("fanout8-gso", "ringstage", ["--fanout", "8", "--gso"], ["--conns", "32", "--size", "1200", "--replies", "8"]),
    ]
    names = [c[0] for c in cases]
    runs = {n: [] for n in names}
    for r in range(a.rounds):
        for i, (n, server, extra, lg) in enumerate(cases if r % 2 == 0 else cases[::-1]):
            res = run(server, 7200 + names.index(n), extra, lg)
            runs[n].append(res)
            print(f"round {r + 1} {n:<14} {res['rate']:>10.0f} dgram/s  p99 {res['p99_us']:>8.1f} us  "
                  f"cpu {res['cpu_ns_per_msg']:>7.0f} ns/dgram  lost {res['errors']}", flush=True)

    def ratio(me, peer, key):
        return median([x[key] / y[key] for x, y in zip(runs[me], runs[peer]) if y[key]])

    lines = [f"udp: server on CPU 0, client on CPU 1; median of {a.rounds} interleaved rounds of {a.secs}s"]
    lines.append(f"{'case':<16}{'dgram/s':>12}{'p50 us':>10}{'p99 us':>10}{'cpu ns/dgram':>14}{'lost':>8}")
    rows = []
    for n in names:
        rs = runs[n]
        row = {"case": n, "rate": median([x["rate"] for x in rs]), "p50_us": median([x["p50_us"] for x in rs]),
               "p99_us": median([x["p99_us"] for x in rs]), "cpu_ns_per_msg": median([x["cpu_ns_per_msg"] for x in rs]),
               "lost": sum(x["errors"] for x in rs), "rounds": rs}
        rows.append(row)
        lines.append(f"{n:<16}{row['rate']:>12.0f}{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}{row['cpu_ns_per_msg']:>14.0f}{row['lost']:>8}")
    lines.append("")
    lines.append("echo 64 B x 32 sockets x 4 in flight, ringstage / tokio:")
    lines.append(f"  datagrams/s {ratio('ringstage', 'tokio', 'rate'):6.3f}  (the client, one tokio thread, is near its core's limit)")
    lines.append(f"  capacity (tokio cpu per datagram / ringstage's) {1 / ratio('ringstage', 'tokio', 'cpu_ns_per_msg'):6.3f}  (>= 1.0)")
    lines.append(f"  p99 {ratio('ringstage', 'tokio', 'p99_us'):6.3f}  (<= 1.0)")
    lines.append("8 replies of 1200 B per datagram: one GSO send vs 8 sends:")
    lines.append(f"  server cpu per datagram sent {ratio('fanout8-gso', 'fanout8-sends', 'cpu_ns_per_msg'):6.3f}x  "
                 f"datagrams/s {ratio('fanout8-gso', 'fanout8-sends', 'rate'):6.3f}x")
    publish("udp", "\n".join(lines), {"rows": rows})


def tls_files():
    d = os.path.join(OUT, "tls")
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    if not (os.path.exists(cert) and os.path.exists(key)):
        sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost"], stderr=subprocess.DEVNULL)
    return cert, key


def bench_https(a):
    sh(["cargo", "build", "--release", "--quiet", "--example", "http"])
    cert, key = tls_files()

    def start(name):
        if name == "ringstage":
            port = 8210
            argv = [os.path.join(ROOT, "target/release/examples/http"), "--addr", f"127.0.0.1:{port}", "--cpu", "0",
                    "--keepalive-requests", "100000000", "--tls-cert", cert, "--tls-key", key]
        else:
            port = 8211
            argv = ["nginx", "-e", "stderr", "-c", nginx_conf(port, tls=(cert, key), name="nginx-tls")]
        wait_port_free(port)
        proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, proc)
        return proc, port

    def handshakes(port, pid, n=3000):
        c0 = cpu_ns(pid)
        r = subprocess.run(["taskset", "-c", "1", "ab", "-q", "-n", str(n), "-c", "16", "-f", "TLS1.3",
                            f"https://127.0.0.1:{port}/files/1k.txt"], capture_output=True, text=True, timeout=300)
        cpu = cpu_ns(pid) - c0
        done, failed, rate, proto = 0, 0, 0.0, ""
        for line in r.stdout.splitlines():
            if line.startswith("Complete requests:"):
                done = int(line.split()[2])
            elif line.startswith("Failed requests:"):
                failed = int(line.split()[2])
            elif line.startswith("Requests per second:"):
                rate = float(line.split()[3])
            elif line.startswith("SSL/TLS Protocol:"):
                proto = line.split(":", 1)[1].strip()
        return {"rate": rate, "failed": failed, "proto": proto, "cpu_us_per_req": cpu / 1000 / done if done else float("nan")}

    names = ["ringstage", "nginx"]
    runs = {(n, k): [] for n in names for k in ("keepalive", "handshake")}
    for r in range(a.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            proc, port = start(n)
            try:
                ka = wrk(port, "/files/1k.txt", 64, a.secs, proc.pid, scheme="https")
                hs = handshakes(port, proc.pid)
            finally:
                stop_server(proc)
            runs[(n, "keepalive")].append(ka)
            runs[(n, "handshake")].append(hs)
            print(f"round {r + 1} {n:<10} keep-alive {ka['rate']:>9.0f} req/s {ka['cpu_us_per_req']:6.2f} us/req  "
                  f"handshakes {hs['rate']:>7.0f}/s {hs['cpu_us_per_req']:7.1f} us each  {hs['proto']}  failed {hs['failed']}", flush=True)

    def med(n, k, key):
        return median([x[key] for x in runs[(n, k)]])

    def ratio(k, key):
        return median([y[key] / x[key] for x, y in zip(runs[("ringstage", k)], runs[("nginx", k)]) if x[key]])

    lines = [f"https: one server core each, same certificate (P-256), TLS 1.3; median of {a.rounds} interleaved rounds"]
    lines.append(f"{'server':<11}{'1 KiB req/s':>12}{'p99 us':>9}{'us/req':>8}{'handshakes/s':>14}{'us/handshake':>14}  suite")
    for n in names:
        proto = runs[(n, "handshake")][-1]["proto"] if runs[(n, "handshake")] else ""
        lines.append(f"{n:<11}{med(n, 'keepalive', 'rate'):>12.0f}{med(n, 'keepalive', 'p99_us'):>9.0f}"
                     f"{med(n, 'keepalive', 'cpu_us_per_req'):>8.2f}{med(n, 'handshake', 'rate'):>14.0f}"
                     f"{med(n, 'handshake', 'cpu_us_per_req'):>14.1f}  {proto}")
    lines.append("")
    lines.append("ringstage vs nginx (nginx's server CPU / ringstage's; target >= 1.0):")
    lines.append(f"  keep-alive 1 KiB: cpu per request {ratio('keepalive', 'cpu_us_per_req'):6.3f}   "
                 f"req/s {1 / ratio('keepalive', 'rate'):6.3f}x")
    lines.append(f"  full handshake per request: cpu per handshake {ratio('handshake', 'cpu_us_per_req'):6.3f}   "
                 f"handshakes/s {1 / ratio('handshake', 'rate'):6.3f}x")
    publish("https", "\n".join(lines), {"runs": {f"{n}/{k}": v for (n, k), v in runs.items()}})


def bench_queue(a):
    r = subprocess.run(["cargo", "bench", "--quiet", "--features", "internals", "--bench", "queue_cycles"], cwd=ROOT, capture_output=True, text=True, check=True)
    cases = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    lines = ["queue: push+pop on one thread, best of 30 x 1M items"]
    lines.append(f"{'case':<28}{'ns/item':>10}{'cycles/item':>13}")
    for c in cases:
        lines.append(f"{c['case']:<28}{c['ns_per_item']:>10.2f}{c['cycles_per_item']:>13.2f}")
    by = {c["case"]: c for c in cases}
    lines.append(f"targets: single <= 10 ns -> {by['spsc_single_push_pop']['ns_per_item']:.2f} ns; "
                 f"batch of 32 <= 15 cycles/item -> {by['spsc_batch32_push_pop']['cycles_per_item']:.2f}; "
                 f"vs crossbeam ArrayQueue {by['crossbeam_single_push_pop']['ns_per_item'] / by['spsc_single_push_pop']['ns_per_item']:.1f}x faster")
    publish("queue", "\n".join(lines), {"cases": cases})
    if not a.skip_criterion:
        print("criterion (queue, iobuf): reports under target/criterion/", flush=True)
        subprocess.run(["cargo", "bench", "--quiet", "--features", "internals", "--bench", "queue", "--bench", "iobuf", "--", "--noplot", "--warm-up-time", "1",
                        "--measurement-time", "2"], cwd=ROOT, check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=["echo", "http", "https", "kv", "cache", "overload", "proxy", "udp", "queue", "all"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--secs", type=float, default=4.0)
    p.add_argument("--idle", type=int, default=10000)
    p.add_argument("--skip-criterion", action="store_true")
    a = p.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("ci/bench needs 2 CPUs: server and load client are pinned apart")
    if a.what in ("queue", "all"):
        bench_queue(a)
    if a.what in ("echo", "all"):
        bench_echo(a)
    if a.what in ("http", "all"):
        bench_http(a)
    if a.what in ("kv", "all"):
        bench_kv(a)
    if a.what in ("cache", "all"):
        bench_cache(a)
    if a.what in ("overload", "all"):
        bench_overload(a)
    if a.what in ("proxy", "all"):
        bench_proxy(a)
    if a.what in ("udp", "all"):
        bench_udp(a)
    if a.what in ("https", "all"):
        bench_https(a)


if __name__ == "__main__":
    main()
