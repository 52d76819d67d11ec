"""Watching 20 folders of one account, side by side: idlefetch (with
NOTIFY, and without it), fetchmail (one daemon polling every folder, and
the set-up people try for push: one `idle` daemon per folder), getmail6 and
mbsync (each run every --poll seconds). One Dovecot on loopback, with its
default limit of 10 connections per user and address. After each tool has
settled, one message is saved into each folder, one a second in random
order; the table shows how long each took to reach a Maildir, how many
IMAP connections the tool held, how many logins Dovecot refused, and the
tool's peak RSS (all its processes together).

    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch \\
        python3 test/bench/folders.py [--poll 30]

fetchmail, getmail6, isync and procmail are Debian packages:
    apt-get install fetchmail getmail6 isync procmail
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
import time

import fixture as fx

FOLDERS = ["INBOX"] + [f"F{i:02d}" for i in range(1, 20)]
NOTIFY_CAPS = fx.DEFAULT_CAPS + " NOTIFY"


def tree_pids(root):
    """root and every process below it."""
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def tree_rss_kb(root):
    return sum(fx.rss_kb(p) or 0 for p in tree_pids(root))


def connections(port):
    """Established connections to the IMAP port, as the server sees them."""
    out = subprocess.run(["ss", "-tnH", "state", "established",
                          f"( sport = :{port} )"], capture_output=True,
                         text=True).stdout
    return len(out.splitlines())


def message_ids(root):
    """Message-ID -> first time seen, for every file below root."""
    found = {}
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) not in ("new", "cur"):
            continue
        for n in files:
            try:
                with open(os.path.join(dirpath, n), "rb") as f:
                    head = f.read(2000)
            except OSError:
                continue
            m = re.search(rb"Message-ID: (<[^>]+>)", head, re.I)
            if m:
                found.setdefault(m.group(1).decode(), time.monotonic())
    return found


def procmail_rc(d):
    md = os.path.join(d, "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    rc = os.path.join(d, "procmailrc")
    with open(rc, "w") as f:
        f.write(f"MAILDIR={md}/\nDEFAULT={md}/\n")
    return rc


def start_idlefetch(d, dovecot, port, ca, poll):
    conf = os.path.join(d, "idlefetch.conf")
    with open(conf, "w") as f:
        f.write(f"[global]\nstate_dir = {d}/state\n")
        f.write(fx.account_section("bench", dovecot, ", ".join(FOLDERS),
                                   os.path.join(d, "Maildir")))
        f.write(f"poll_interval = {poll}\n")
    os.chmod(conf, 0o600)
    return [subprocess.Popen([fx.IDLEFETCH, "--config", conf],
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)]


def fetchmail_rc(d, port, ca, folders, poll, idle):
    rc = os.path.join(d, "fetchmailrc")
    quoted = ",".join(f'"{x}"' for x in folders)
    with open(rc, "w") as f:
        f.write(f"""set daemon {poll}
set no bouncemail
poll 127.0.0.1 with proto IMAP port {port}
  user "{fx.USER}" there with password "{fx.PASSWORD}" is "root" here
  folder {quoted}
  options keep {"idle " if idle else ""}ssl sslcertck sslcertfile "{ca}" sslcommonname "localhost"
  mda "/usr/bin/procmail -m {procmail_rc(d)}"
""")
    os.chmod(rc, 0o600)
    return rc


def start_fetchmail_poll(d, dovecot, port, ca, poll):
    rc = fetchmail_rc(d, port, ca, FOLDERS, poll, False)
    env = dict(os.environ, FETCHMAILHOME=d)
    return [subprocess.Popen(["fetchmail", "-f", rc, "--nosyslog", "-N",
                              "--silent", "--pidfile",
                              os.path.join(d, "pid")], env=env,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)]


def start_fetchmail_idle(d, dovecot, port, ca, poll):
    """IDLE watches one folder per fetchmail: one daemon per folder."""
    procs = []
    for name in FOLDERS:
        sub = os.path.join(d, name)
        os.makedirs(sub)
        rc = fetchmail_rc(sub, port, ca, [name], poll, True)
        env = dict(os.environ, FETCHMAILHOME=sub)
        procs.append(subprocess.Popen(
            ["fetchmail", "-f", rc, "--nosyslog", "-N", "--pidfile",
             os.path.join(sub, "pid")], env=env,
            stdout=open(os.path.join(sub, "log"), "ab"),
            stderr=subprocess.STDOUT))
    return procs


def start_getmail(d, dovecot, port, ca, poll):
    md = os.path.join(d, "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    rc = os.path.join(d, "getmailrc")
    boxes = ", ".join(f'"{x}"' for x in FOLDERS)
    with open(rc, "w") as f:
        f.write(f"""[retriever]
type = SimpleIMAPSSLRetriever
server = 127.0.0.1
port = {port}
username = {fx.USER}
password = {fx.PASSWORD}
ca_certs = {ca}
mailboxes = ({boxes},)

[destination]
type = Maildir
path = {md}/

[options]
read_all = false
delete = false
verbose = 0
""")
    subprocess.run(["chown", "-R", "nobody", d], check=True)
    loop = (f"while :; do getmail --rcfile {rc} --getmaildir {d}; "
            f"sleep {poll}; done")
    return [subprocess.Popen(["runuser", "-u", "nobody", "--", "sh", "-c",
                              loop], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             start_new_session=True)]


def start_mbsync(d, dovecot, port, ca, poll):
    rc = os.path.join(d, "mbsyncrc")
    with open(rc, "w") as f:
        f.write(f"""IMAPAccount a
Host localhost
Port {port}
User {fx.USER}
Pass {fx.PASSWORD}
SSLType IMAPS
CertificateFile {ca}

IMAPStore remote
Account a

MaildirStore local
Inbox {d}/Maildir
SubFolders Maildir++

Channel c
Far :remote:
Near :local:
Patterns *
Sync Pull
Create Near
SyncState *
""")
    loop = f"while :; do mbsync -c {rc} -a -q; sleep {poll}; done"
    return [subprocess.Popen(["sh", "-c", loop],
                             stdout=open(os.path.join(d, "log"), "ab"),
                             stderr=subprocess.STDOUT,
                             start_new_session=True)]


def stop(procs):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM) if p.pid == os.getpgid(p.pid) \
                else p.terminate()
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(name, start, caps, poll, rnd):
    env = fx.Env(caps=caps, userip=10)
    try:
        dv = env.dovecot
        for x in FOLDERS[1:]:
            dv.doveadm("mailbox", "create", "-u", fx.USER, x)
        work = os.path.join(env.root, "work")
        os.makedirs(work)
        refused0 = dv.connections_refused()
        procs = start(work, dv, dv.imaps_port, env.certs.ca, poll)
        peak = 0
        end = time.monotonic() + 8          # settle: log in, first sync
        while time.monotonic() < end:
            peak = max(peak, sum(tree_rss_kb(p.pid) for p in procs))
            time.sleep(0.2)
        conns = connections(dv.imaps_port)
        order = FOLDERS[:]
        rnd.shuffle(order)
        sent, seen = {}, {}

        def watch(until):
            nonlocal peak, conns
            while time.monotonic() < until and len(seen) < len(order):
                for mid, t in message_ids(work).items():
                    if mid in sent:
                        seen.setdefault(mid, t)
                peak = max(peak, sum(tree_rss_kb(p.pid) for p in procs))
                conns = max(conns, connections(dv.imaps_port))
                time.sleep(0.05)
        for i, folder in enumerate(order):
            body = fx.make_message(1000 + i)
            dv.save(body, folder)
            sent[fx.message_id(body)] = time.monotonic()
            watch(time.monotonic() + 1)
        watch(time.monotonic() + poll + 20)
        delays = sorted(seen[m] - sent[m] for m in seen)
        if len(delays) < len(sent) and os.environ.get("BENCH_DEBUG"):
            subprocess.run(f"tail -n 5 {work}/log {work}/*/log", shell=True)
        refused = dv.connections_refused() - refused0
        stop(procs)
        p50 = statistics.median(delays) if delays else float("nan")
        worst = delays[-1] if delays else float("nan")
        print(f"{name:<28} {len(delays):>4}/{len(sent):<3} {p50:>8.2f} "
              f"{worst:>8.2f} {conns:>6} {refused:>8} {peak / 1024:>9.1f}",
              flush=True)
    finally:
        env.close()


TOOLS = [
    ("idlefetch (NOTIFY)", start_idlefetch, NOTIFY_CAPS, None),
    ("idlefetch (no NOTIFY)", start_idlefetch, fx.DEFAULT_CAPS, None),
    ("fetchmail, 1 poller", start_fetchmail_poll, NOTIFY_CAPS, "fetchmail"),
    ("fetchmail, 20 x idle", start_fetchmail_idle, NOTIFY_CAPS, "fetchmail"),
    ("getmail6, polled", start_getmail, NOTIFY_CAPS, "getmail"),
    ("mbsync, polled", start_mbsync, NOTIFY_CAPS, "mbsync"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--poll", type=int, default=30,
                    help="poll interval of the tools that poll (seconds)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", help="run only tools whose name has this")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    print(f"20 folders, one message saved into each (1 a second), Dovecot "
          f"limited to 10 connections per user; pollers every {args.poll} s\n")
    print(f"{'tool':<28} {'got':>8} {'p50 s':>8} {'max s':>8} {'conns':>6} "
          f"{'refused':>8} {'RSS MB':>9}")
    for name, start, caps, binary in TOOLS:
        if args.only and args.only not in name:
            continue
        if binary and shutil.which(binary) is None:
            print(f"{name:<28} (not installed)")
            continue
        run(name, start, caps, args.poll, rnd)


if __name__ == "__main__":
    sys.exit(main())
