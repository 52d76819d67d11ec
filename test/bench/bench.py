"""Side-by-side benchmark: idlefetch (into its Maildir, and through
procmail as its deliver = mda:), fetchmail (+ procmail as MDA), getmail6
and mbsync each fetch the same mailbox from the same throwaway Dovecot on
loopback into an empty Maildir, in the same run, over implicit TLS and
over plaintext IMAP.

Each tool runs --repeat times (default 3), alternating with the others
(the starting tool rotates from one round to the next), each time into a
fresh Maildir with fresh state. Per tool it prints the median of: wall
time, messages/s, MB/s, peak RSS, and the user and system CPU of the
tool and every process it waited for (wait4()'s rusage, as GNU time
reports it; procmail's processes count for fetchmail's row). The load
average is printed beside each table: the machine may be shared.

    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch \\
        python3 test/bench/bench.py [-n 2000] [--transport both|tls|plain]
        [--repeat 3] [--tools idlefetch,mbsync] [--syncs]

--syncs also runs each tool once under strace -f and counts its fsync(),
fdatasync(), syncfs() and sync_file_range() calls: whether it makes the
mail durable before it reports success. Seen on 100 messages: idlefetch
2 syncfs() and 16 fsync() (one syncfs() per large batch of files, a
fsync() per file of a small one, then new/ and its state); mbsync (FSync
yes, its default) a fsync() and a fdatasync() per message; procmail one
fsync() per message (its file, not new/); getmail6 two per message.

fetchmail, getmail6, isync, procmail, time and strace are Debian packages:
    apt-get install fetchmail getmail6 isync procmail time strace
"""
import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import fixture as fx


def maildir_count(path):
    n = 0
    for sub in ("new", "cur"):
        try:
            n += len(os.listdir(os.path.join(path, sub)))
        except FileNotFoundError:
            pass
    return n


def make_maildir(path):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


def load():
    return "load %.2f %.2f %.2f" % os.getloadavg()


def measure(cmd, env=None, timeout=600):
    """Runs cmd to its end under GNU time, which reports what wait4()
    returns for it. Returns a dict: secs (wall), user and sys (CPU seconds
    of cmd and of every descendant it waited for), rss (the largest peak
    RSS among them, KiB), rc and out (its stdout and stderr). After
    timeout seconds its process group is killed and rc is "timeout".

    Not wait4() from this script: a child's peak RSS starts at that of
    the process it was forked from (Linux keeps the old image's high-water
    mark across exec), and this Python process is larger than idlefetch."""
    with tempfile.TemporaryFile() as log:
        t0 = time.monotonic()
        p = subprocess.Popen(["/usr/bin/time", "-f", "BENCH %e %M %U %S",
                              *cmd], stdout=log, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = "timeout"
        secs = time.monotonic() - t0
        log.seek(0)
        out = log.read().decode(errors="replace")
    line = ([ln for ln in out.splitlines() if ln.startswith("BENCH ")]
            or ["BENCH 0 0 0 0"])[-1]
    _, _, rss, user, sys_ = line.split()
    return {"secs": secs, "user": float(user), "sys": float(sys_),
            "rss": int(rss), "rc": rc, "out": out}


class Ctx:
    """What every tool's setup needs: the Dovecot, where to work, and
    which idlefetch binary to run."""

    def __init__(self, env, binary=None):
        self.env = env
        self.d = env.dovecot
        self.ca = env.certs.ca
        self.binary = binary or fx.IDLEFETCH
        self.seq = 0

    def workdir(self, name):
        self.seq += 1
        w = os.path.join(self.env.root, f"bench-{self.seq}-{name}")
        os.makedirs(w)
        return w

    def port(self, transport):
        return self.d.imaps_port if transport == "tls" else self.d.imap_port


# Each setup writes a tool's configuration for a run and returns (argv,
# environment or None, the Maildir it fills); only argv is timed.

def setup_idlefetch(ctx, w, transport, deliver=None, folders="INBOX"):
    f = ctx.env.idlefetch(tls="implicit" if transport == "tls" else "none",
                          name=os.path.basename(w), deliver=deliver,
                          folders=folders)
    return [ctx.binary, "--config", f.conf, "--once"], None, f.maildir_path


def procmail_rc(w):
    """A Maildir and a procmailrc that delivers into it."""
    md = make_maildir(os.path.join(w, "Maildir"))
    procrc = os.path.join(w, "procmailrc")
    with open(procrc, "w") as f:
        f.write(f"MAILDIR={md}/\nDEFAULT={md}/\n")
    return md, procrc


def setup_idlefetch_mda(ctx, w, transport):
    """The same MDA as fetchmail's row: procmail, one process a message."""
    md, procrc = procmail_rc(w)
    argv, _, _ = setup_idlefetch(
        ctx, w, transport,
        deliver=f"deliver = mda:/usr/bin/procmail -m {procrc}")
    return argv, None, md


def setup_fetchmail(ctx, w, transport):
    md, procrc = procmail_rc(w)
    # sslproto '': no opportunistic STARTTLS on the plaintext port.
    tls = (f'ssl sslcertck sslcertfile "{ctx.ca}" sslcommonname "localhost"'
           if transport == "tls" else "sslproto ''")
    rc = os.path.join(w, "fetchmailrc")
    with open(rc, "w") as f:
        f.write(f"""set no bouncemail
poll 127.0.0.1 with proto IMAP port {ctx.port(transport)}
  user "{fx.USER}" there with password "{fx.PASSWORD}" is "root" here
  options keep fetchall {tls}
  mda "/usr/bin/procmail -m {procrc}"
""")
    os.chmod(rc, 0o600)
    return (["fetchmail", "-f", rc, "--nosyslog", "--silent"],
            dict(os.environ, FETCHMAILHOME=w), md)


def setup_getmail(ctx, w, transport):
    md = make_maildir(os.path.join(w, "Maildir"))
    rc = os.path.join(w, "getmailrc")
    if transport == "tls":
        retr = f"type = SimpleIMAPSSLRetriever\nca_certs = {ctx.ca}\n"
    else:
        retr = "type = SimpleIMAPRetriever\n"
    with open(rc, "w") as f:
        f.write(f"""[retriever]
{retr}server = 127.0.0.1
port = {ctx.port(transport)}
username = {fx.USER}
password = {fx.PASSWORD}
mailboxes = ("INBOX",)

[destination]
type = Maildir
path = {md}/

[options]
read_all = true
delete = false
verbose = 0
""")
    # getmail refuses to deliver as root: run it as nobody.
    subprocess.run(["chown", "-R", "nobody", w], check=True)
    return (["runuser", "-u", "nobody", "--", "getmail", "--rcfile", rc,
             "--getmaildir", w], None, md)


def setup_mbsync(ctx, w, transport):
    md = os.path.join(w, "Maildir")
    rc = os.path.join(w, "mbsyncrc")
    # isync checks only DNS names, so it connects by name. Over plaintext
    # it sends a password only with the mechanism named explicitly.
    tls = (f"SSLType IMAPS\nCertificateFile {ctx.ca}\n"
           if transport == "tls" else "SSLType None\nAuthMechs LOGIN\n")
    with open(rc, "w") as f:
        f.write(f"""FSync yes

IMAPAccount a
Host localhost
Port {ctx.port(transport)}
User {fx.USER}
Pass {fx.PASSWORD}
{tls}
IMAPStore remote
Account a

MaildirStore local
Path {w}/
Inbox {md}

Channel c
Far :remote:
Near :local:
Patterns INBOX
Sync Pull
Create Near
SyncState *
""")
    return ["mbsync", "-c", rc, "-a", "-q"], None, md


TOOLS = [("idlefetch", setup_idlefetch, None),
         ("idlefetch+procmail", setup_idlefetch_mda, "procmail"),
         ("fetchmail+procmail", setup_fetchmail, "fetchmail"),
         ("getmail6", setup_getmail, "getmail"),
         ("mbsync", setup_mbsync, "mbsync")]


def run_once(ctx, name, setup, transport, n, timeout=600):
    """One run of one tool into a fresh Maildir: measure()'s dict plus
    the delivered count."""
    w = ctx.workdir(name.replace("+", "-") + "-" + transport)
    argv, env, md = setup(ctx, w, transport)
    r = measure(argv, env, timeout)
    r["delivered"] = maildir_count(md)
    if r["delivered"] != n or r["rc"] != 0:
        print(f"   {name} ({transport}): {r['delivered']}/{n} delivered, "
              f"exit {r['rc']}:\n   " + r["out"][-800:].replace("\n", "\n   "),
              flush=True)
    return r


def median_of(runs, n, total):
    """The medians of a tool's runs, with messages/s and MB/s per run;
    runs killed after --timeout count only if all were."""
    done = [r for r in runs if r["rc"] != "timeout"]
    bad = [r["rc"] for r in runs if r["rc"] != 0]
    runs = done or runs
    m = {k: statistics.median(r[k] for r in runs)
         for k in ("secs", "user", "sys", "rss")}
    m["msgs"] = statistics.median(r["delivered"] / max(r["secs"], 0.01)
                                  for r in runs)
    m["mbs"] = statistics.median(total / 1e6 * r["delivered"] / n
                                 / max(r["secs"], 0.01) for r in runs)
    m["delivered"] = min(r["delivered"] for r in runs)
    m["rss_max"] = max(r["rss"] for r in runs)
    m["bad"] = bad
    return m


def put_mailbox(env, n, seed):
    """n messages into INBOX: mostly small mail (2 KB), some attachments
    (8 and 60 KB), and ten of 2 MB. Returns their total size in bytes."""
    rnd = random.Random(seed)
    sizes = [rnd.choice([2000] * 6 + [8000] * 3 + [60000]) for _ in range(n)]
    for i in range(0, n, max(1, n // 10)):
        sizes[i] = 2 * 1024 * 1024
    d = env.dovecot
    d.put([fx.make_message(i, size=s) for i, s in enumerate(sizes)])
    new = os.path.join(d.maildir(), "new")
    return sum(os.path.getsize(os.path.join(new, f)) for f in os.listdir(new))


def bench_transport(ctx, tools, transport, n, total, repeat, timeout):
    """repeat rounds of every tool, the first tool rotating; prints the
    table and returns {tool: medians}."""
    runs = {name: [] for name, _, _ in tools}
    l0 = load()
    for rep in range(repeat):
        k = rep % len(tools)
        for name, setup, _ in tools[k:] + tools[:k]:
            runs[name].append(run_once(ctx, name, setup, transport, n,
                                       timeout))
    l1 = load()
    label = "implicit TLS" if transport == "tls" else "plaintext"
    print(f"\n{label}, median of {repeat} alternating runs ({l0} before, "
          f"{l1} after):")
    print(f"{'tool':<20} {'seconds':>8} {'msg/s':>8} {'MB/s':>7} "
          f"{'peak RSS MB':>12} {'user s':>7} {'sys s':>7} {'delivered':>10}")
    med = {}
    for name, _, _ in tools:
        m = med[name] = median_of(runs[name], n, total)
        print(f"{name:<20} {m['secs']:>8.2f} {m['msgs']:>8.0f} "
              f"{m['mbs']:>7.1f} {m['rss'] / 1024:>12.1f} {m['user']:>7.2f} "
              f"{m['sys']:>7.2f} {m['delivered']:>6}/{n}"
              + (f"  (exit {m['bad']})" if m["bad"] else ""), flush=True)
    if "idlefetch" in med and "mbsync" in med:
        print(f"idlefetch / mbsync messages/s: "
              f"{med['idlefetch']['msgs'] / max(med['mbsync']['msgs'], 1e-9):.2f}x")
    return med


SYNC_CALLS = ("fsync", "fdatasync", "syncfs", "sync_file_range", "msync")


def count_syncs(ctx, tools, transport, timeout):
    """Each tool once under strace -f: its calls that make data durable."""
    print(f"\ndurability calls in one run ({transport}; strace -f, all "
          f"processes of the tool):")
    for name, setup, _ in tools:
        w = ctx.workdir(name.replace("+", "-") + "-strace")
        argv, env, md = setup(ctx, w, transport)
        out = os.path.join(w, "strace.out")
        p = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-e",
                              "trace=" + ",".join(SYNC_CALLS), *argv],
                             env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        late = False
        try:
            p.wait(timeout * 3)  # strace -f slows a tool down
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            late = True
        counts = {}
        with open(out) if os.path.exists(out) else open(os.devnull) as f:
            for line in f:
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?"
                             r"(\w+)$", line)
                if m and m.group(2) in SYNC_CALLS:
                    counts[m.group(2)] = int(m.group(1))
        got = maildir_count(md)
        print(f"  {name:<20} {got:>5} messages: " +
              ("killed after --timeout x 3, nothing counted" if late else
               ", ".join(f"{c} {k}()" for k, c in counts.items()) or "none"),
              flush=True)


def rss_by_size(ctx, transport):
    """idlefetch's peak RSS must not follow the message size."""
    print(f"\nidlefetch peak RSS by message size (one message, --once, "
          f"{transport}):")
    for mb in (0.001, 10, 100):
        folder = f"Size{int(mb * 1000)}"
        if not os.path.isdir(ctx.d.maildir(folder)):
            ctx.env.dovecot.put([fx.make_message(0, size=int(mb * 1024 * 1024))],
                                folder=folder)
        w = ctx.workdir(f"rss-{folder}-{transport}")
        argv, _, _ = setup_idlefetch(ctx, w, transport, folders=folder)
        r = measure(argv)
        print(f"  {mb:>8g} MB message: {r['rss'] / 1024:6.1f} MB peak RSS, "
              f"{r['secs']:.2f} s" + ("" if r["rc"] == 0
                                      else f" (exit {r['rc']})"), flush=True)


def select_tools(names):
    tools = []
    for name, setup, binary in TOOLS:
        if names and name not in names:
            continue
        if binary and shutil.which(binary) is None:
            print(f"{name:<20} (not installed)")
            continue
        tools.append((name, setup, binary))
    return tools


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="messages")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--transport", choices=("both", "tls", "plain"),
                    default="both")
    ap.add_argument("--repeat", type=int, default=3,
                    help="alternating runs per tool; the median is printed")
    ap.add_argument("--tools", default="",
                    help="comma-separated subset, e.g. idlefetch,mbsync")
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds one run may take before it is killed")
    ap.add_argument("--syncs", action="store_true",
                    help="also count each tool's fsync-like calls (strace)")
    ap.add_argument("--no-size", action="store_true",
                    help="skip the peak RSS by message size")
    args = ap.parse_args()
    transports = ["tls", "plain"] if args.transport == "both" \
        else [args.transport]
    env = fx.Env()
    try:
        ctx = Ctx(env)
        tools = select_tools([t for t in args.tools.split(",") if t])
        total = put_mailbox(env, args.n, args.seed)
        print(f"{args.n} messages, {total / 1e6:.1f} MB, Dovecot on loopback; "
              f"{os.cpu_count()} cores; idlefetch {ctx.binary}", flush=True)
        for t in transports:
            bench_transport(ctx, tools, t, args.n, total, args.repeat,
                            args.timeout)
        if args.syncs:
            for t in transports:
                count_syncs(ctx, tools, t, args.timeout)
        if not args.no_size:
            for t in transports:
                rss_by_size(ctx, t)
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
