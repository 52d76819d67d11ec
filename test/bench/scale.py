"""Many accounts in one idlefetch: K accounts (one user and one INBOX
each) idling against one Dovecot on loopback. Prints RSS once all idle, CPU
over a quiet stretch, and the delay from LMTP delivery to the file in new/
(p50/p99 across accounts; Dovecot itself announces about 0.5 s after
delivery).

    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch \\
        python3 test/bench/scale.py -n 1000 [--plain] [--quiet 60]

The fd soft limit of this script (and so of idlefetch) is set with
--nofile (default: leave it; idlefetch raises its own soft limit to the
hard limit)."""
import argparse
import datetime
import os
import re
import resource
import smtplib
import statistics
import sys
import time

import fixture as fx

DOVECOT_EXTRA = """
service imap-login {{
  service_count = 0
  client_limit = {k5}
  process_min_avail = 1
  # With TLS, imap-login relays every connection for its whole life: at
  # 3,000 connections one process needs more than the default 256 MB.
  vsz_limit = 4G
}}
service imap {{
  client_limit = 100
  process_limit = {k}
}}
default_client_limit = {k2}
default_process_limit = {k}
service anvil {{
  client_limit = {k2}
}}
service auth {{
  client_limit = {k2}
}}
"""


def notified_delays(log, wall0, k):
    """From each account's first EXISTS after wall0 (Dovecot notifying
    over IDLE) to its "delivered" line: what idlefetch itself takes."""
    pat = re.compile(r'^(\S+)Z \w+ account=a(\d+) folder="INBOX" '
                     r'msg="(S: \* \d+ EXISTS|delivered )')
    exists, done = {}, {}
    for line in log.splitlines():
        m = pat.match(line)
        if not m:
            continue
        t = datetime.datetime.fromisoformat(m.group(1)).replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if t < wall0:
            continue
        i = int(m.group(2))
        if m.group(3).startswith("S:"):
            exists.setdefault(i, t)
        elif i in exists:
            done.setdefault(i, t)
    ds = sorted(done[i] - exists[i] for i in done)
    if not ds:
        print("no EXISTS/delivered pairs in the log")
        return
    print(f"from the server's EXISTS to the delivery, {len(ds)}/{k} "
          f"accounts: p50 {statistics.median(ds) * 1000:.0f} ms, p99 "
          f"{ds[int(len(ds) * 0.99) - 1] * 1000:.0f} ms, max "
          f"{ds[-1] * 1000:.0f} ms")


def machine_ticks():
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000, help="accounts")
    ap.add_argument("--plain", action="store_true", help="no TLS")
    ap.add_argument("--quiet", type=float, default=30,
                    help="seconds of idle CPU measurement")
    ap.add_argument("--nofile", type=int, default=0,
                    help="soft fd limit to start idlefetch with")
    ap.add_argument("--notified", action="store_true",
                    help="log at debug level and also print the delay "
                    "from the server's EXISTS to the delivery")
    args = ap.parse_args()
    k = args.n
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 4 * k + 1024
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (max(hard, want), max(hard, want)))
    except ValueError:  # no CAP_SYS_RESOURCE (a container): up to hard
        print(f"the hard open-file limit is {hard}, below the {want} this "
              "wants; Dovecot and idlefetch share it")
        want = hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Dovecot watches each idling mailbox with an inotify instance; past
    # the per-user limit (128 by default) it falls back to a 30 s poll.
    inst = "/proc/sys/fs/inotify/max_user_instances"
    with open(inst) as fh:
        if int(fh.read()) < k + 200:
            with open(inst, "w") as w:
                w.write(str(k + 200))
            print(f"raised fs.inotify.max_user_instances to {k + 200}")
    env = fx.Env(extra=DOVECOT_EXTRA.format(k=k + 100, k2=2 * k + 1000,
                                            k5=k + 500))
    d = env.dovecot
    try:
        tls = "none" if args.plain else "implicit"
        port = d.imap_port if args.plain else d.imaps_port
        secs = []
        for i in range(k):
            md = os.path.join(env.root, "md", f"u{i}")
            secs.append(f"\n[account a{i}]\nhost = 127.0.0.1\nport = {port}\n"
                        f"tls = {tls}\nca_file = {d.certs.ca}\n"
                        f"username = u{i}\npassword = {fx.PASSWORD}\n"
                        f"folders = INBOX\nmaildir = {md}\n")
        f = env.idlefetch(name="a-first", tls=tls, extra="".join(secs))
        if args.nofile:
            soft = args.nofile
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (soft, max(hard, want)))
        t0 = time.monotonic()
        f.start(*(["-v"] if args.notified else []))
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, want),
                                                    max(hard, want)))
        state = f.state_dir

        def idle_count():
            n = 0
            for i in range(k):
                try:
                    with open(f"{state}/a{i}/status") as st:
                        n += "\tIDLE\t" in st.read()
                except OSError:
                    pass
            return n
        ok = fx.wait_until(lambda: idle_count() == k, 300, 1)
        t_idle = time.monotonic() - t0
        if not ok:
            print(f"only {idle_count()} of {k} accounts idle after 300 s",
                  file=sys.stderr)
        time.sleep(3)
        rss = fx.rss_kb(f.proc.pid)
        c0, w0 = cpu_ticks(f.proc.pid), time.monotonic()
        time.sleep(args.quiet)
        c1, w1 = cpu_ticks(f.proc.pid), time.monotonic()
        # After the quiet stretch idlefetch has handed freed heap back.
        rss_quiet = fx.rss_kb(f.proc.pid)
        hz = os.sysconf("SC_CLK_TCK")
        cpu = (c1 - c0) / hz / (w1 - w0) * 100
        # One message per account, in one LMTP session. CPU during it:
        # idlefetch's, and the machine's (Dovecot's LMTP and imap
        # processes share the cores with idlefetch and this script).
        b0, sys0, bt0 = cpu_ticks(f.proc.pid), machine_ticks(), time.monotonic()
        sent = {}
        wall0 = time.time()
        with smtplib.LMTP("127.0.0.1", d.lmtp_port) as c:
            for i in range(k):
                c.sendmail("s@example.org", [f"u{i}"], fx.make_message(i))
                sent[i] = time.monotonic()
        delays = {}
        end = time.monotonic() + 60
        while len(delays) < k and time.monotonic() < end:
            for i in range(k):
                if i in delays:
                    continue
                try:
                    got = os.listdir(os.path.join(env.root, "md", f"u{i}",
                                                  "new"))
                except FileNotFoundError:  # an account that never started
                    got = []
                if got:
                    delays[i] = time.monotonic() - sent[i]
            time.sleep(0.02)
        b1, sys1, bt1 = cpu_ticks(f.proc.pid), machine_ticks(), time.monotonic()
        busy = (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1]) * 100
        burst_cpu = (b1 - b0) / hz
        time.sleep(15)
        rss_after = fx.rss_kb(f.proc.pid)
        ds = sorted(delays.values())
        p50 = statistics.median(ds) if ds else float("nan")
        p99 = ds[int(len(ds) * 0.99) - 1] if ds else float("nan")
        print(f"{k} accounts over {'plaintext' if args.plain else 'TLS'}: "
              f"all idle after {t_idle:.1f} s; RSS {rss / 1024:.1f} MiB "
              f"3 s later, {rss_quiet / 1024:.1f} MiB after "
              f"{args.quiet:.0f} s idle ({rss_quiet / k:.1f} KiB per "
              f"account), {rss_after / 1024:.1f} MiB 15 s after the "
              f"burst; idle CPU {cpu:.2f} % of "
              f"one core over {args.quiet:.0f} s; delivered {len(ds)}/{k}, "
              f"delay p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
              f"during the burst ({bt1 - bt0:.1f} s) idlefetch used "
              f"{burst_cpu:.1f} CPU s, and all cores were {busy:.0f} % busy")
        if args.notified:
            notified_delays(f.log(), wall0, k)
        f.stop()
    finally:
        env.close()


if __name__ == "__main__":
    main()
