"""What an idle idlefetch costs, binary against binary: the resident memory
of one account idling on the test Dovecot in plaintext and over implicit
TLS, the shared libraries mapped into the process, and the binary's size
once stripped. Each binary is measured in turn, against the same Dovecot,
the median of --runs starts.

    sudo PYTHONPATH=test/lib python3 test/bench/idle_libs.py \\
        /work/old/build/idlefetch build/idlefetch
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

import fixture as fx


def libraries(pid):
    """The shared objects mapped into pid (the dynamic loader included)."""
    libs = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if ".so" in os.path.basename(path):
                libs.add(os.path.basename(path))
    return sorted(libs)


def stripped_size(binary):
    with tempfile.NamedTemporaryFile() as t:
        subprocess.run(["strip", "-o", t.name, binary], check=True)
        return os.path.getsize(t.name)


def idle_once(env, binary, tls, seconds, n):
    """RSS in KiB and the libraries of binary idling on one account."""
    fx.IDLEFETCH = binary
    f = env.idlefetch(name=f"m{n}", tls=tls)
    f.start()
    try:
        if not f.idle(60):
            raise SystemExit(f"{binary} ({tls}) did not reach IDLE:\n"
                             + f.log())
        time.sleep(seconds)
        return fx.rss_kb(f.proc.pid), libraries(f.proc.pid)
    finally:
        f.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("-v", action="store_true", help="list the libraries")
    args = ap.parse_args()
    env = fx.Env()
    n = 0
    try:
        for b in args.binary:
            row = [f"{b}: stripped {stripped_size(b) // 1000} kB"]
            for tls in ("none", "implicit"):
                rss = []
                for _ in range(args.runs):
                    n += 1
                    kb, libs = idle_once(env, b, tls, args.seconds, n)
                    rss.append(kb)
                row.append(f"{'plaintext' if tls == 'none' else 'TLS'} "
                           f"RSS {statistics.median(rss) / 1024:.1f} MiB "
                           f"(runs: {', '.join(map(str, rss))} KiB)")
            row.append(f"{len(libs)} shared libraries mapped")
            print("; ".join(row))
            if args.v:
                print("  " + " ".join(libs))
    finally:
        env.close()


if __name__ == "__main__":
    main()
