"""idlefetch's main job on a throwaway local Dovecot: start Dovecot on
loopback, start idlefetch against it, deliver a message every second over
LMTP, and show each one landing in the Maildir."""
import argparse
import os
import signal
import sys
import time

import fixture as fx


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=15)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()

    print("starting a throwaway Dovecot on 127.0.0.1 ...", flush=True)
    env = fx.Env()
    try:
        f = env.idlefetch(tls="implicit", name="demo")
        print(f"config:  {f.conf}\nMaildir: {f.maildir_path}\n", flush=True)
        with open(f.conf) as c:
            print("".join("    " + l for l in c if l.strip()), flush=True)
        f.start()
        fx.wait_until(lambda: "selected" in f.log(), 10)
        shown = 0
        for i in range(args.messages):
            t0 = time.monotonic()
            env.dovecot.lmtp(fx.make_message(i, subject=f"demo message {i + 1}"))
            ok = fx.wait_until(lambda: f.md.count() > i, 5, step=0.005)
            dt = time.monotonic() - t0
            names = f.md.files()
            new = [n for n in names if n not in getattr(main, "seen", set())]
            main.seen = set(names)
            for n in new:
                print(f"  sent #{i + 1} over LMTP -> new/{n}  ({dt:.2f} s)",
                      flush=True)
            if not ok:
                print(f"  message {i + 1} did not arrive", flush=True)
            shown += 1
            time.sleep(max(0, args.interval - dt))
        print("\nidlefetch log:", flush=True)
        print(f.log(), flush=True)
        rc = f.stop(signal.SIGTERM)
        print(f"idlefetch exited with {rc}; {f.md.count()} message(s) in "
              f"{f.maildir_path}/new", flush=True)
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
