#!/usr/bin/env python3
"""Splits perf profiles into cost categories, in ns per request, to compare two servers (or one
server under two loads) that were each measured at a known CPU cost per request.

usage: ci/perf_categories.py NAME=perf.data:NS_PER_REQ [NAME=perf.data:NS_PER_REQ ...]

Each profile: `perf record -e cpu-clock -g -p PID` over a steady load; NS_PER_REQ: the server's
CPU time over the same window divided by the requests served (`ci/bench` prints it as us/req).
Categories: user space; io_uring; syscall entry, epoll and VFS; scheduler, timers and the
interrupt-enable points where a VM charges work done with interrupts off (wakeups); and the
rest of the kernel, which for a loopback server is the TCP/IP stack and skb handling.
"""

import re
import subprocess
import sys

CATEGORIES = [
    ("io_uring", re.compile(r"^(io_|__io_|io_uring|__do_sys_io_uring|llist_|tctx_|task_work|xa_load)")),
    ("syscall/epoll/vfs", re.compile(
        r"^(do_syscall|entry_SYSCALL|syscall_|__x64_sys|__sys_|___sys_|ksys_|fdget|fget|fput|__fget|__fput|"
        r"sock_from_file|vfs_|sock_write_iter|sock_read_iter|ep_|do_epoll|__ep|epoll|sock_poll|tcp_poll|"
        r"import_iovec|__import_iovec|iovec_from_user|copy_msghdr|__copy_msghdr|sockfd_lookup|"
        r"__check_object_size|check_heap_object|__virt_addr_valid|exit_to_user|fpregs_|restore_fpregs|"
        r"switch_fpu)")),
    ("sched/wakeups/timers", re.compile(
        r"^(schedule|__schedule|try_to_wake_up|ttwu|pick_next|enqueue_|dequeue_|update_curr|update_load|"
        r"select_task|finish_task_switch|__switch_to|psi_|hrtimer|__hrtimer|native_|set_next_entity|"
        r"put_prev|__wake_up|autoremove_wake|default_wake|prepare_to_wait|finish_wait|__mod_timer|"
        r"lock_timer|add_timer|__run_timer|_raw_spin)")),
]
KERNEL_REST = "tcp/ip/skb/other kernel"


def profile(path):
    out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym", "-g", "none",
                          "--stdio", "--percent-limit", "0"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(4).strip()))
    return rows


def categorise(rows):
    cats = {}
    for pct, dso, sym in rows:
        if dso != "[kernel.kallsyms]":
            c = "user"
        else:
            c = next((name for name, rx in CATEGORIES if rx.match(sym)), KERNEL_REST)
        cats[c] = cats.get(c, 0.0) + pct
    return cats


def main(argv):
    if len(argv) < 2 or any("=" not in a or ":" not in a for a in argv[1:]):
        sys.exit(__doc__)
    names = ["user", "io_uring", "syscall/epoll/vfs", "sched/wakeups/timers", KERNEL_REST]
    print(f"{'':<12}" + "".join(f"{n:>26}" for n in names) + f"{'total':>10}")
    for arg in argv[1:]:
        name, rest = arg.split("=", 1)
        path, ns = rest.rsplit(":", 1)
        cats = categorise(profile(path))
        total = sum(cats.values()) or 1.0
        ns = float(ns)
        cells = "".join(f"{cats.get(n, 0) / total * 100:>8.1f}% {cats.get(n, 0) / total * ns:>8.0f} ns/req"
                        for n in names)
        print(f"{name:<12}{cells}{ns:>10.0f}")


if __name__ == "__main__":
    main(sys.argv)
