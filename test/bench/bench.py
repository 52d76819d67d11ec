"""Side-by-side benchmark: idlefetch (into its Maildir, and through
procmail as its deliver = mda:), fetchmail (+ procmail as MDA), getmail6
and mbsync each fetch the same mailbox from the same throwaway
Dovecot over implicit TLS into an empty Maildir, in the same run.
Prints wall time, messages/s, MB/s and peak RSS for each.

    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch python3 test/bench/bench.py [-n 2000]

fetchmail, getmail6, isync and procmail are Debian packages:
    apt-get install fetchmail getmail6 isync procmail time
"""
import argparse
import os
import random
import shutil
import subprocess
import sys

import fixture as fx


def maildir_count(path):
    n = 0
    for sub in ("new", "cur"):
        try:
            n += len(os.listdir(os.path.join(path, sub)))
        except FileNotFoundError:
            pass
    return n


def timed(cmd, env=None):
    """Runs cmd under GNU time; returns (seconds, peak RSS in KiB, rc, output)."""
    p = subprocess.run(["/usr/bin/time", "-f", "BENCH %e %M", *cmd],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env)
    out = p.stdout.decode(errors="replace")
    line = [l for l in out.splitlines() if l.startswith("BENCH ")][-1]
    _, secs, rss = line.split()
    return float(secs), int(rss), p.returncode, out


def run_idlefetch(env, d, port, ca):
    f = env.idlefetch(tls="implicit", name="bench")
    return timed([fx.IDLEFETCH, "--config", f.conf, "--once"]), f.maildir_path


def procmail_maildir(d):
    """A Maildir and a procmailrc that delivers into it."""
    md = os.path.join(d, "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    procrc = os.path.join(d, "procmailrc")
    with open(procrc, "w") as f:
        f.write(f"MAILDIR={md}/\nDEFAULT={md}/\n")
    return md, procrc


def run_idlefetch_mda(env, d, port, ca):
    """The same MDA as fetchmail's row: procmail, one process a message."""
    md, procrc = procmail_maildir(d)
    f = env.idlefetch(tls="implicit", name="bench-mda",
                      deliver=f"deliver = mda:/usr/bin/procmail -m {procrc}")
    return timed([fx.IDLEFETCH, "--config", f.conf, "--once"]), md


def run_fetchmail(env, d, port, ca):
    md, procrc = procmail_maildir(d)
    rc = os.path.join(d, "fetchmailrc")
    with open(rc, "w") as f:
        f.write(f"""set no bouncemail
poll 127.0.0.1 with proto IMAP port {port}
  user "{fx.USER}" there with password "{fx.PASSWORD}" is "root" here
  options keep fetchall ssl sslcertck sslcertfile "{ca}" sslcommonname "localhost"
  mda "/usr/bin/procmail -m {procrc}"
""")
    os.chmod(rc, 0o600)
    e = dict(os.environ, FETCHMAILHOME=d)
    return timed(["fetchmail", "-f", rc, "--nosyslog", "--silent"], e), md


def run_getmail(env, d, port, ca):
    md = os.path.join(d, "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    rc = os.path.join(d, "getmailrc")
    with open(rc, "w") as f:
        f.write(f"""[retriever]
type = SimpleIMAPSSLRetriever
server = 127.0.0.1
port = {port}
username = {fx.USER}
password = {fx.PASSWORD}
ca_certs = {ca}
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
    subprocess.run(["chown", "-R", "nobody", d], check=True)
    return timed(["runuser", "-u", "nobody", "--", "getmail", "--rcfile", rc,
                  "--getmaildir", d]), md


def run_mbsync(env, d, port, ca):
    md = os.path.join(d, "Maildir")
    rc = os.path.join(d, "mbsyncrc")
    with open(rc, "w") as f:
        # isync checks only DNS names, so it connects by name.
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
Path {d}/
Inbox {md}

Channel c
Far :remote:
Near :local:
Patterns INBOX
Sync Pull
Create Near
SyncState *
""")
    return timed(["mbsync", "-c", rc, "-a", "-q"]), md


TOOLS = [("idlefetch", run_idlefetch, None),
         ("idlefetch+procmail", run_idlefetch_mda, "procmail"),
         ("fetchmail+procmail",
         run_fetchmail, "fetchmail"), ("getmail6", run_getmail, "getmail"),
         ("mbsync", run_mbsync, "mbsync")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="messages")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    # Mostly small mail, some attachments, a few large ones.
    sizes = [rnd.choice([2000] * 6 + [8000] * 3 + [60000]) for _ in range(args.n)]
    for i in range(0, args.n, max(1, args.n // 10)):
        sizes[i] = 2 * 1024 * 1024
    env = fx.Env()
    try:
        d = env.dovecot
        d.put([fx.make_message(i, size=s) for i, s in enumerate(sizes)])
        total = sum(os.path.getsize(os.path.join(d.maildir(), "new", n))
                    for n in os.listdir(os.path.join(d.maildir(), "new")))
        print(f"{args.n} messages, {total / 1e6:.1f} MB, implicit TLS to Dovecot "
              f"on loopback\n")
        print(f"{'tool':<20} {'seconds':>8} {'msg/s':>8} {'MB/s':>7} "
              f"{'peak RSS MB':>12} {'delivered':>10}")
        for name, fn, binary in TOOLS:
            if binary and shutil.which(binary) is None:
                print(f"{name:<20} {'(not installed)':>8}")
                continue
            work = os.path.join(env.root, "bench-" + name.replace("+", "-"))
            os.makedirs(work, exist_ok=True)
            (secs, rss, rc, out), md = fn(env, work, d.imaps_port,
                                          env.certs.ca)
            n = maildir_count(md)
            secs = max(secs, 0.01)
            print(f"{name:<20} {secs:>8.2f} {n / secs:>8.0f} "
                  f"{total / 1e6 / secs:>7.1f} {rss / 1024:>12.1f} "
                  f"{n:>6}/{args.n}" + ("" if rc == 0 else f"  (exit {rc})"),
                  flush=True)
            if n != args.n:
                print("   " + out[-800:].replace("\n", "\n   "))
        rss_by_size(env)
    finally:
        env.close()


def rss_by_size(env):
    """idlefetch's peak RSS must not follow the message size."""
    print("\nidlefetch peak RSS by message size (one message, --once):")
    for mb in (0.001, 10, 100):
        folder = f"Size{int(mb * 1000)}"
        env.dovecot.put([fx.make_message(0, size=int(mb * 1024 * 1024))],
                        folder=folder)
        f = env.idlefetch(tls="implicit", name=f"rss-{folder}", folders=folder)
        (secs, rss, rc, out) = timed([fx.IDLEFETCH, "--config", f.conf,
                                      "--once"])
        print(f"  {mb:>8g} MB message: {rss / 1024:6.1f} MB peak RSS, "
              f"{secs:.2f} s" + ("" if rc == 0 else f" (exit {rc})"),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
