"""idlefetch's resident memory while idling on N accounts (one folder each,
implicit TLS) against the test Dovecot. With --emulator (qemu-arm-static
-L SYSROOT, as scripts/armhf runs the armhf binary), the emulator's own
RSS, measured on `idlefetch --version`, is printed beside it so that it can
be subtracted.

    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch python3 test/bench/idle_rss.py
    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build-armhf/idlefetch \\
        python3 test/bench/idle_rss.py --emulator "qemu-arm-static -L /var/cache/idlefetch-test/armhf-sysroot"
"""
import argparse
import os
import re
import shlex
import subprocess
import time

import fixture as fx


def max_rss_kb(argv):
    p = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True,
                       text=True)
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                         p.stderr).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3, help="accounts")
    ap.add_argument("--emulator", default="", help="command prefix")
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    emu = shlex.split(args.emulator)
    env = fx.Env()
    try:
        extra = "".join(fx.account_section(
            f"acct{i}", env.dovecot, "INBOX",
            os.path.join(env.root, f"md{i}")) for i in range(1, args.n))
        f = env.idlefetch(name="acct0", extra=extra, wrap=emu)
        f.start()
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
        base = max_rss_kb([*emu, fx.IDLEFETCH, "--version"]) if emu else 0
        print(f"idlefetch idling on {args.n} account(s) for {args.seconds:.0f} s: "
              f"RSS {rss} KiB" + (f"; the emulator alone (--version) {base} KiB;"
                                  f" difference {rss - base} KiB" if emu else ""))
        f.stop()
    finally:
        env.close()


if __name__ == "__main__":
    main()
