"""Ten thousand accounts in one idlefetch under a 20,000 open-file limit.

For each account count (-n, default 1000 and 10000) and transport (TLS,
plaintext), starts one Dovecot on loopback set up for that many logins and
one idlefetch holding every account (one user and one INBOX each), waits
until all are idle, then prints:
- RSS once idle, and per account;
- descriptors: sockets and the others (an idle account should hold its
  socket and nothing more);
- idle CPU over --quiet seconds, with the machine's load meanwhile (the
  cores are shared: read the figure beside it);
- latency from the LMTP server's acceptance (its 250) to the file in the
  account's new/, one message at a time to a random account (no burst):
  p50 / p99 / max over --samples messages. Dovecot tells IDLE clients of
  new mail about 0.5 s after delivery; compare the counts with each other.

    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch \\
        python3 test/bench/scale10k.py [-n 1000,10000] [--only tls|plain]

Both idlefetch and Dovecot start with soft = hard = --nofile (20,000) open
files: what a machine with that hard limit gives a new user."""
import argparse
import ctypes
import os
import random
import resource
import select
import smtplib
import statistics
import sys
import time

import fixture as fx
import idle_rss

# One imap-login process relays every TLS connection for its life (two
# descriptors each): spread them over several so none nears its limit.
DOVECOT_EXTRA = """
service imap-login {{
  service_count = 0
  client_limit = {login_clients}
  process_min_avail = {login_procs}
  process_limit = {login_procs}
  vsz_limit = 4G
}}
# An imap process per idle client would be 10,000 processes on a 2-core
# machine (the load reached 500 and logins timed out), and imap-hibernate
# fails to wake thousands of clients at once ("net_connect_unix(imap-master)
# failed: Resource temporarily unavailable") and drops them: here each imap
# process serves up to 100 clients, all of one UID, whose mailboxes live in
# a page-cached directory.
service imap {{
  service_count = 0
  client_limit = 100
  process_limit = {k}
  vsz_limit = 2G
}}
default_client_limit = {k2}
default_process_limit = {k}
service anvil {{
  client_limit = {k2}
}}
service auth {{
  client_limit = {k2}
}}
service stats {{
  client_limit = {k2}
}}
"""

IN_CREATE, IN_MOVED_TO = 0x100, 0x80


class Inotify:
    """Waits for a file to appear in a directory, to the microsecond."""

    def __init__(self):
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")

    def watch(self, path):
        wd = self.libc.inotify_add_watch(self.fd, path.encode(),
                                         IN_CREATE | IN_MOVED_TO)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        return wd

    def wait(self, timeout):
        """The monotonic time of the next event, or None."""
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return None
        t = time.monotonic()
        os.read(self.fd, 65536)
        return t

    def unwatch(self, wd):
        self.libc.inotify_rm_watch(self.fd, wd)
        # Drain the IN_IGNORED the removal queues.
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 65536)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def fds(pid):
    socks = other = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:"):
            socks += 1
        else:
            other += 1
    return socks, other


def pct(ds, q):
    return ds[min(len(ds) - 1, max(0, int(len(ds) * q) - 1))]


def accounts(env, k, plain):
    """k accounts u0..u{k-1} on env's Dovecot, one INBOX each: their
    names and their [account] sections."""
    d = env.dovecot
    tls = "none" if plain else "implicit"
    port = d.imap_port if plain else d.imaps_port
    names = [f"u{i}" for i in range(k)]
    secs = []
    for a in names:
        md = os.path.join(env.root, "md", a)
        secs.append(f"\n[account {a}]\nhost = 127.0.0.1\nport = {port}\n"
                    f"tls = {tls}\nca_file = {d.certs.ca}\n"
                    f"username = {a}\npassword = {fx.PASSWORD}\n"
                    f"folders = INBOX\nmaildir = {md}\n")
    return names, "".join(secs)


def wait_idle(state, names, limit):
    """Seconds until every account's status says IDLE; None past limit."""
    t0 = time.monotonic()
    left = set(names)
    last = 0
    while left and time.monotonic() - t0 < limit:
        for a in list(left):
            try:
                with open(f"{state}/{a}/status") as st:
                    if "\tIDLE\t" in st.read():
                        left.discard(a)
            except OSError:
                pass
        if time.monotonic() - last > 30:
            last = time.monotonic()
            print(f"  {len(names) - len(left)}/{len(names)} idle after "
                  f"{last - t0:.0f} s", file=sys.stderr, flush=True)
        if left:
            time.sleep(3)
    return None if left else time.monotonic() - t0


def latencies(env, names, samples, ino):
    """LMTP 250 -> file in new/, one message at a time, random accounts."""
    rnd = random.Random(42)
    ds, lost = [], 0
    with smtplib.LMTP("127.0.0.1", env.dovecot.lmtp_port) as c:
        for s in range(samples):
            a = rnd.choice(names)
            new = os.path.join(env.root, "md", a, "new")
            wd = ino.watch(new)
            c.sendmail("s@example.org", [a],
                       fx.make_message(100000 + s))
            t0 = time.monotonic()
            t = ino.wait(10)
            ino.unwatch(wd)
            if t is None:
                lost += 1
            else:
                ds.append(t - t0)
            time.sleep(rnd.uniform(0.05, 0.15))
    return sorted(ds), lost


def run(k, plain, args, ino):
    login_procs = max(1, k // 2500 + 1)
    env = fx.Env(extra=DOVECOT_EXTRA.format(
        k=k + 100, k2=2 * k + 1000, login_procs=login_procs,
        login_clients=k // login_procs + 500))
    try:
        tls = "none" if plain else "implicit"
        names, secs = accounts(env, k, plain)
        # The fixture's own account makes k + 1: counted below.
        f = env.idlefetch(name="a-first", tls=tls, extra=secs)
        f.start()
        t_idle = wait_idle(f.state_dir, names, args.wait)
        if t_idle is None:
            print(f"{k} {tls}: not all idle after {args.wait} s; see "
                  f"{f.logfile}", file=sys.stderr)
        time.sleep(5)
        pid = f.proc.pid
        rss0 = fx.rss_kb(pid)
        socks, other = fds(pid)
        c0, m0, w0 = cpu_ticks(pid), machine_ticks(), time.monotonic()
        time.sleep(args.quiet)
        c1, m1, w1 = cpu_ticks(pid), machine_ticks(), time.monotonic()
        rss = fx.rss_kb(pid)
        if args.breakdown:
            print(f"{k} {tls}: where the resident memory is", flush=True)
            idle_rss.breakdown(pid)
        hz = os.sysconf("SC_CLK_TCK")
        cpu = (c1 - c0) / hz / (w1 - w0) * 100
        busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 100
        load = os.getloadavg()[0]
        ds, lost = latencies(env, names, args.samples, ino)
        res = {
            "k": k, "tls": "plaintext" if plain else "TLS",
            "idle_after": t_idle, "rss": rss, "rss0": rss0,
            "per": rss / (k + 1), "socks": socks, "other": other,
            "cpu": cpu, "busy": busy, "load": load,
            "p50": statistics.median(ds) * 1000 if ds else float("nan"),
            "p99": pct(ds, 0.99) * 1000 if ds else float("nan"),
            "max": ds[-1] * 1000 if ds else float("nan"),
            "n": len(ds), "lost": lost,
        }
        print(line(res), flush=True)
        f.stop()
        return res
    finally:
        env.close()


def line(r):
    idle = ("not all idle" if r["idle_after"] is None
            else f"all idle after {r['idle_after']:.0f} s")
    return (f"| {r['k'] + 1:,} | {r['tls']} | {idle} | "
            f"{r['rss'] / 1024:.1f} MiB | {r['per']:.1f} KiB | "
            f"{r['socks']:,} + {r['other']} | {r['cpu']:.2f} % "
            f"(machine {r['busy']:.0f} % busy, load {r['load']:.1f}) | "
            f"{r['p50']:.0f} / {r['p99']:.0f} / {r['max']:.0f} ms "
            f"({r['n']} msgs, {r['lost']} lost) |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", default="1000,10000",
                    help="account counts, comma-separated")
    ap.add_argument("--only", choices=("tls", "plain"))
    ap.add_argument("--quiet", type=float, default=30,
                    help="seconds of idle CPU measurement")
    ap.add_argument("--samples", type=int, default=200,
                    help="messages for the latency, one at a time")
    ap.add_argument("--wait", type=float, default=1800,
                    help="seconds to wait for every account to idle")
    ap.add_argument("--nofile", type=int, default=20000,
                    help="soft and hard open-file limit of idlefetch "
                    "and Dovecot")
    ap.add_argument("--breakdown", action="store_true",
                    help="print where the resident memory is, by mapping")
    args = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))
    counts = [int(x) for x in args.n.split(",")]
    inst = "/proc/sys/fs/inotify/max_user_instances"
    with open(inst) as fh:
        if int(fh.read()) < max(counts) + 500:
            with open(inst, "w") as w:
                w.write(str(max(counts) + 500))
    ino = Inotify()
    results = []
    for plain in (False, True):
        if args.only and args.only != ("plain" if plain else "tls"):
            continue
        for k in counts:
            results.append(run(k, plain, args, ino))
    print("\n| accounts | transport | start | RSS idle | per account | "
          "fds: sockets + other | idle CPU | LMTP 250 -> new/: "
          "p50 / p99 / max |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(line(r))


if __name__ == "__main__":
    main()
