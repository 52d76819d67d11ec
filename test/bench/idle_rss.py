"""idlefetch's resident memory while idling on N accounts (one folder each)
against the test Dovecot, over implicit TLS or plaintext. With --emulator
(qemu-arm-static -L SYSROOT, as scripts/armhf runs the armhf binary), the
emulator's own RSS, measured on `idlefetch --version`, is printed beside it
so that it can be subtracted.

--trust system leaves ca_file out, as a user of a public provider does:
idlefetch then trusts the system's store, here the machine's own
(SSL_CERT_DIR points at a copy of its hashed directory that also holds the
test CA, so the test server verifies). Beside RSS it prints PSS, the
private pages and the anonymous ones: most of what TLS adds to RSS is
libcrypto's code, shared with every other process that maps it.
--breakdown prints where the resident pages are: the heap, other
anonymous memory, and each library.

    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch python3 test/bench/idle_rss.py
    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch python3 test/bench/idle_rss.py \\
        -n 1 --transport plain
    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build-armhf/idlefetch \\
        python3 test/bench/idle_rss.py --emulator "qemu-arm-static -L /var/cache/idlefetch-test/armhf-sysroot"
"""
import argparse
import collections
import os
import re
import shlex
import subprocess
import time

import fixture as fx

SYSTEM_DIR = "/etc/ssl/certs"


def max_rss_kb(argv):
    p = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True,
                       text=True)
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                         p.stderr).group(1))


def system_store(root, ca):
    """The environment that makes OpenSSL's default trust the machine's own
    plus the test CA: SSL_CERT_DIR names a copy of the hashed directory
    with the test CA added; the bundle stays the machine's."""
    d = os.path.join(root, "certs")
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(SYSTEM_DIR):
        os.symlink(os.path.join(SYSTEM_DIR, name), os.path.join(d, name))
    h = subprocess.run(["openssl", "x509", "-noout", "-subject_hash",
                        "-in", ca], capture_output=True, text=True,
                       check=True).stdout.strip()
    n = 0
    while os.path.lexists(os.path.join(d, f"{h}.{n}")):
        n += 1
    os.symlink(ca, os.path.join(d, f"{h}.{n}"))
    # A bundle named in the environment is loaded whole, as a user who
    # sets it asks; a Debian system sets none.
    os.environ.pop("SSL_CERT_FILE", None)
    return {"SSL_CERT_DIR": d}


def rollup(pid):
    """Pss and private (clean + dirty) KiB from smaps_rollup."""
    v = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            head = line.split()
            if len(head) >= 2 and head[1].isdigit():
                v[head[0].rstrip(":")] = int(head[1])
    return v["Pss"], v["Private_Clean"] + v["Private_Dirty"], v["Anonymous"]


def breakdown(pid):
    """KiB resident per mapping kind: [heap], anonymous, each file."""
    rss, anon = collections.Counter(), collections.Counter()
    name = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                name = head[5] if len(head) > 5 else "[anonymous]"
                name = os.path.basename(name) if "/" in name else name
            elif head[0] == "Rss:":
                rss[name] += int(head[1])
            elif head[0] == "Anonymous:":
                anon[name] += int(head[1])
    for k, v in sorted(rss.items(), key=lambda kv: -kv[1]):
        if v:
            print(f"  {v:6d} KiB resident, {anon[k]:6d} KiB anonymous: {k}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3, help="accounts")
    ap.add_argument("--transport", choices=("tls", "plain"), default="tls")
    ap.add_argument("--trust", choices=("ca_file", "system"),
                    default="ca_file")
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--emulator", default="", help="command prefix")
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    emu = shlex.split(args.emulator)
    env = fx.Env()
    tls = "implicit" if args.transport == "tls" else "none"
    d = env.dovecot
    port = d.imaps_port if tls == "implicit" else d.imap_port
    ca = f"ca_file = {d.certs.ca}\n" if args.trust == "ca_file" else ""
    try:
        extra = "".join(
            f"\n[account acct{i}]\nhost = 127.0.0.1\nport = {port}\n"
            f"tls = {tls}\n{ca}username = {fx.USER}\n"
            f"password = {fx.PASSWORD}\nfolders = INBOX\n"
            f"maildir = {os.path.join(env.root, f'md{i}')}\n"
            for i in range(1, args.n))
        f = env.idlefetch(name="acct0", extra=extra, wrap=emu, tls=tls,
                          ca=args.trust == "ca_file")
        f.start(env=system_store(env.root, d.certs.ca)
                if args.trust == "system" else None)
        def idling():
            n = 0
            for i in range(args.n):
                try:
                    with open(f"{f.state_dir}/acct{i}/status") as st:
                        n += "\tIDLE\t" in st.read()
                except OSError:
                    pass
            return n == args.n
        if not fx.wait_until(idling, 60):
            raise SystemExit("not every account reached IDLE:\n" + f.log())
        time.sleep(args.seconds)
        rss = fx.rss_kb(f.proc.pid)
        pss, private, anon = rollup(f.proc.pid)
        base = max_rss_kb([*emu, fx.IDLEFETCH, "--version"]) if emu else 0
        what = "TLS" if tls == "implicit" else "plaintext"
        if tls == "implicit":
            what += f", trust {args.trust}"
        print(f"idlefetch idling on {args.n} account(s) ({what}) for "
              f"{args.seconds:.0f} s: RSS {rss} KiB (PSS {pss}, private {private}, "
              f"anonymous {anon})" +
              (f"; the emulator alone (--version) {base} KiB;"
               f" difference {rss - base} KiB" if emu else ""))
        if args.breakdown:
            breakdown(f.proc.pid)
        f.stop()
    finally:
        env.close()


if __name__ == "__main__":
    main()
