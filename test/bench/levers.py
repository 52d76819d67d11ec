"""Memory levers, variant against variant: each variant is a binary and
the environment it runs with, measured in turn on the same Dovecot in
rounds (the first variant rotates from one round to the next), the median
of --rounds. Per variant:

- idle: resident memory of one account idling over implicit TLS, after
  --seconds at IDLE;
- once: --once over implicit TLS on bench.py's mailbox (-n messages, ten
  of them 2 MB): peak RSS and messages/s.

Environment variables let one binary stand for a lever before it is
written in code (glibc's MALLOC_ARENA_MAX, libuv's UV_THREADPOOL_SIZE):

    sudo PYTHONPATH=test/lib python3 test/bench/levers.py \\
        base=build/idlefetch arena1=build/idlefetch,MALLOC_ARENA_MAX=1

The load average is printed: on a shared machine the messages/s are
noise unless the change is larger than the spread of the rounds.
"""
import argparse
import os
import statistics
import sys
import time

import bench
import fixture as fx


def parse_variant(text):
    """NAME=BINARY[,VAR=VALUE...] -> (name, binary, env)."""
    name, _, rest = text.partition("=")
    parts = rest.split(",")
    env = dict(p.split("=", 1) for p in parts[1:])
    return name, parts[0], env


def idle_rss(env, binary, extra, seconds, n):
    """KiB resident after seconds at IDLE on one TLS account."""
    fx.IDLEFETCH = binary
    f = env.idlefetch(name=f"lv{n}", tls="implicit")
    f.start(env=extra)
    try:
        if not f.idle(60):
            raise SystemExit(f"{binary} did not reach IDLE:\n" + f.log())
        time.sleep(seconds)
        return fx.rss_kb(f.proc.pid)
    finally:
        f.stop()


def once_run(ctx, binary, extra, n):
    """bench.measure()'s dict for one --once over TLS."""
    w = ctx.workdir("lever")
    ctx.binary = binary
    argv, _, md = bench.setup_idlefetch(ctx, w, "tls")
    r = bench.measure(argv, dict(os.environ, **extra))
    r["delivered"] = bench.maildir_count(md)
    if r["delivered"] != n or r["rc"] != 0:
        raise SystemExit(f"{binary}: {r['delivered']}/{n}, exit {r['rc']}"
                         f"\n{r['out'][-800:]}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", nargs="+", help="NAME=BINARY[,VAR=VALUE...]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("-n", type=int, default=2000, help="messages for --once")
    ap.add_argument("--only", default="idle,once")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    parts = args.only.split(",")
    res = {v[0]: {"idle": [], "rss": [], "msgs": []} for v in variants}
    env = fx.Env()
    try:
        ctx = bench.Ctx(env)
        if "once" in parts:
            bench.put_mailbox(env, args.n, 1)
        l0 = bench.load()
        k = 0
        for rnd in range(args.rounds):
            j = rnd % len(variants)
            for name, binary, extra in variants[j:] + variants[:j]:
                k += 1
                if "idle" in parts:
                    res[name]["idle"].append(
                        idle_rss(env, binary, extra, args.seconds, k))
                if "once" in parts:
                    r = once_run(ctx, binary, extra, args.n)
                    res[name]["rss"].append(r["rss"])
                    res[name]["msgs"].append(args.n / max(r["secs"], 0.01))
        print(f"median of {args.rounds} rounds ({l0} before, "
              f"{bench.load()} after)")
        print(f"{'variant':<14} {'idle TLS KiB':>13} {'once peak KiB':>14} "
              f"{'once msg/s':>11}  runs (idle; peak; msg/s)")
        for name, _, _ in variants:
            r = res[name]
            med = {k: statistics.median(v) if v else 0 for k, v in r.items()}
            print(f"{name:<14} {med['idle']:>13.0f} {med['rss']:>14.0f} "
                  f"{med['msgs']:>11.0f}  {r['idle']}; {r['rss']}; "
                  f"{[round(x) for x in r['msgs']]}", flush=True)
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
