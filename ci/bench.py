#!/usr/bin/env python3
"""ringstage benchmark report: runs ringstage and its peers side by side in one run.

echo:  64-byte echo, 64 connections, closed loop; server pinned to CPU 0, load client to CPU 1.
       Servers: ringstage (examples/echo), tokio, monoio, a minimal C io_uring echo (liburing).
       Rounds are interleaved (A B C D A B C D ...) and medians reported, because absolute
       numbers on a shared VM drift by tens of percent between runs.
       Then process memory per idle connection at 10k idle connections.
queue: SPSC push+pop cost in ns and cycles (single and batches of 32) next to crossbeam.
"""
import argparse
import json
import os
import resource
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


def build_echo():
    sh(["cargo", "build", "--release", "--quiet", "--example", "echo"])
    sh(["cargo", "build", "--release", "--quiet", "--manifest-path", "benches/peers/Cargo.toml"])
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    sh(["gcc", "-O2", "-o", "target/bench/uring_echo", "benches/peers/c/uring_echo.c", "-luring"])


SERVERS = {
    # name: (argv builder, port)
    "ringstage": (lambda p: [os.path.join(ROOT, "target/release/examples/echo"), "--addr", f"127.0.0.1:{p}", "--cpu", "0"], 7100),
    "tokio": (lambda p: [os.path.join(PEERS, "tokio_echo"), f"127.0.0.1:{p}"], 7101),
    "monoio": (lambda p: [os.path.join(PEERS, "monoio_echo"), f"127.0.0.1:{p}"], 7102),
    "c-io_uring": (lambda p: [os.path.join(ROOT, "target/bench/uring_echo"), str(p)], 7103),
}


def start_server(name):
    argv, port = SERVERS[name]
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
        for n in names:
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
    lines.append(f"{'server':<12}{'msg/s':>12}{'p50 us':>10}{'p99 us':>10}{'cpu ns/msg':>12}{'idle B/conn':>13}")
    for r in rows:
        lines.append(f"{r['server']:<12}{r['rate']:>12.0f}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['cpu_ns_per_msg']:>12.0f}{r['idle_bytes_per_conn']:>13.0f}")
    lines.append("")
    lines.append("ringstage ratios (target):")
    for peer in ["tokio", "monoio"]:
        lines.append(f"  throughput / {peer:<10} {rs_['rate'] / by[peer]['rate']:6.3f}  (>= 1.0)   "
                     f"p99 / {peer:<7} {rs_['p99_us'] / by[peer]['p99_us']:6.3f}  (<= 1.0)")
    lines.append(f"  cpu per msg / c-io_uring {rs_['cpu_ns_per_msg'] / by['c-io_uring']['cpu_ns_per_msg']:6.3f}  (<= 1.0)")
    lines.append(f"  idle memory per connection {rs_['idle_bytes_per_conn']:.0f} B at {idle_n} idle connections  (<= 1024)")
    report = "\n".join(lines)
    print("\n" + report)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "echo.json"), "w") as f:
        json.dump({"rows": rows, "idle_connections": idle_n}, f, indent=1)
    with open(os.path.join(OUT, "echo.md"), "w") as f:
        f.write("```\n" + report + "\n```\n")
    plot_echo(rows, a)


def plot_echo(rows, a):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: skipped plots")
        return
    names = [r["server"] for r in rows]
    colors = ["#d62728" if n == "ringstage" else "#7f7f7f" for n in names]
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


def bench_queue(a):
    r = subprocess.run(["cargo", "bench", "--quiet", "--bench", "queue_cycles"], cwd=ROOT, capture_output=True, text=True, check=True)
    cases = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    lines = ["queue: push+pop on one thread, best of 30 x 1M items"]
    lines.append(f"{'case':<28}{'ns/item':>10}{'cycles/item':>13}")
    for c in cases:
        lines.append(f"{c['case']:<28}{c['ns_per_item']:>10.2f}{c['cycles_per_item']:>13.2f}")
    by = {c["case"]: c for c in cases}
    lines.append(f"targets: single <= 10 ns -> {by['spsc_single_push_pop']['ns_per_item']:.2f} ns; "
                 f"batch of 32 <= 15 cycles/item -> {by['spsc_batch32_push_pop']['cycles_per_item']:.2f}; "
                 f"vs crossbeam ArrayQueue {by['crossbeam_single_push_pop']['ns_per_item'] / by['spsc_single_push_pop']['ns_per_item']:.1f}x faster")
    report = "\n".join(lines)
    print("\n" + report)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "queue.md"), "w") as f:
        f.write("```\n" + report + "\n```\n")
    if not a.skip_criterion:
        print("criterion (queue, iobuf): reports under target/criterion/", flush=True)
        subprocess.run(["cargo", "bench", "--quiet", "--bench", "queue", "--bench", "iobuf", "--", "--noplot", "--warm-up-time", "1",
                        "--measurement-time", "2"], cwd=ROOT, check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=["echo", "queue", "all"])
    p.add_argument("--rounds", type=int, default=3)
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


if __name__ == "__main__":
    main()
