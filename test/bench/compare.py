"""Before and after: two idlefetch binaries on the same machine, in the
same invocation, alternating (old first in odd rounds, new first in even
ones), median of --repeat rounds:

- bench.py's idlefetch row (--once on its mailbox, implicit TLS and
  plaintext): messages/s, peak RSS, user and system CPU;
- idle_rss.py (its default 3 accounts over TLS): RSS while idle;
- scale.py at 100 TLS accounts: delay from LMTP delivery to the file in
  new/ (p50, p99), RSS after the quiet stretch, idle CPU.

It prints one table: each figure old and new, the change, the spread of
each side's rounds ((max - min) / median: a change inside it is noise),
and whether the new one is at most 10 % worse (--tolerance). A change
smaller than a figure's resolution (CPU seconds: 0.02 s, the clock tick
of two runs; idle CPU: 0.1 percentage point) is not counted as worse; a
worse one inside the larger spread is marked so. Exit status 1 if any
figure is worse. On a loaded machine (see the load averages printed) the
timing figures are noise: measured A/A (one commit built twice) at load
10-15 on 2 cores, messages/s moved by up to 23 % and the 100-account
delays by 40 %, while every RSS figure stayed within 1 %.

    sudo PYTHONPATH=test/lib python3 test/bench/compare.py \\
        --old /work/base/build/idlefetch --new build/idlefetch

Defaults keep a run under 10 minutes on 2 cores: bench.py's mailbox as it
is (2,000 messages, 10 of them 2 MB), idle_rss.py with --seconds 10 and
scale.py with --quiet 5 (its burst and the 15 s after it unchanged);
--only bench,idle,scale picks parts.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import fixture as fx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench.py sits beside this file)

# name: (unit, which way is better, resolution below which a change is
# noise, format)
FIGURES = {}


def figure(name, unit, better, floor=0.0, fmt="{:.1f}"):
    FIGURES[name] = (unit, better, floor, fmt)
    return name


def rounds(repeat, binaries, fn):
    """fn(label, binary) for each binary, alternating which goes first;
    returns {label: [fn's dicts]}."""
    out = {label: [] for label, _ in binaries}
    for rep in range(repeat):
        order = binaries if rep % 2 == 0 else binaries[::-1]
        for label, binary in order:
            out[label].append(fn(label, binary))
    return out


def bench_part(args, binaries):
    env = fx.Env()
    try:
        total = bench.put_mailbox(env, args.n, args.seed)
        ctx = bench.Ctx(env)
        print(f"bench.py mailbox: {args.n} messages, {total / 1e6:.1f} MB "
              f"({bench.load()})", flush=True)

        def one(label, binary):
            got = {}
            ctx.binary = binary
            for t in ("tls", "plain"):
                r = bench.run_once(ctx, "idlefetch",
                                   bench.setup_idlefetch, t, args.n)
                if r["delivered"] != args.n or r["rc"] != 0:
                    raise SystemExit(f"{label}: {r['delivered']}/{args.n} "
                                     f"delivered, exit {r['rc']}")
                got[figure(f"--once {t} msg/s", "msg/s", "higher",
                           fmt="{:.0f}")] = args.n / max(r["secs"], 0.01)
                got[figure(f"--once {t} peak RSS", "MiB", "lower")] = \
                    r["rss"] / 1024
                got[figure(f"--once {t} user CPU", "s", "lower", 0.02,
                           "{:.2f}")] = r["user"]
                got[figure(f"--once {t} sys CPU", "s", "lower", 0.02,
                           "{:.2f}")] = r["sys"]
            return got
        res = rounds(args.repeat, binaries, one)
        print(f"  done ({bench.load()})", flush=True)
        return res
    finally:
        env.close()


def script(name, binary, argv, timeout):
    """Runs test/bench/NAME with IDLEFETCH_BIN=binary; returns stdout."""
    e = dict(os.environ, IDLEFETCH_BIN=binary,
             PYTHONPATH=os.pathsep.join(
                 p for p in (os.environ.get("PYTHONPATH"),
                             os.path.join(HERE, "..", "lib")) if p))
    p = subprocess.run([sys.executable, os.path.join(HERE, name), *argv],
                       env=e, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"{name} with {binary} failed (exit "
                         f"{p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout


def grab(pattern, text, what):
    m = re.search(pattern, text)
    if not m:
        raise SystemExit(f"no {what} in:\n{text}")
    return float(m.group(1))


def idle_part(args, binaries):
    print(f"idle_rss.py, {args.idle_seconds:g} s idle ({bench.load()})",
          flush=True)

    def one(label, binary):
        out = script("idle_rss.py", binary,
                     ["--seconds", str(args.idle_seconds)], 120)
        return {figure("idle RSS (idle_rss.py)", "MiB", "lower"):
                grab(r"RSS (\d+) KiB", out, "RSS") / 1024}
    res = rounds(args.repeat, binaries, one)
    print(f"  done ({bench.load()})", flush=True)
    return res


def scale_part(args, binaries):
    print(f"scale.py -n {args.accounts} --quiet {args.scale_quiet:g} "
          f"({bench.load()})", flush=True)
    k = args.accounts

    def one(label, binary):
        out = script("scale.py", binary, ["-n", str(k), "--quiet",
                                          str(args.scale_quiet)], 400)
        got = int(grab(r"delivered (\d+)/", out, "delivered count"))
        if got != k:
            raise SystemExit(f"{label}: scale.py delivered {got}/{k}:\n{out}")
        return {
            figure(f"{k} accounts: delay p50", "ms", "lower", fmt="{:.0f}"):
                grab(r"delay p50 (\d+) ms", out, "p50"),
            figure(f"{k} accounts: delay p99", "ms", "lower", fmt="{:.0f}"):
                grab(r"p99 (\d+) ms", out, "p99"),
            figure(f"{k} accounts: RSS idle", "MiB", "lower"):
                grab(r"([\d.]+) MiB after", out, "RSS"),
            figure(f"{k} accounts: idle CPU", "%", "lower", 0.1,
                   "{:.2f}"):
                grab(r"idle CPU ([\d.]+) %", out, "idle CPU"),
        }
    res = rounds(args.repeat, binaries, one)
    print(f"  done ({bench.load()})", flush=True)
    return res


def verdict(name, old, new, tolerance):
    """(change in %, 'ok' or 'WORSE'): worse is lower for figures where
    higher is better, higher for the others."""
    unit, better, floor, _ = FIGURES[name]
    change = (new - old) / old * 100 if old else 0.0
    worse = old - new if better == "higher" else new - old
    bad = worse > floor and worse > abs(old) * tolerance / 100
    return change, "WORSE" if bad else "ok"


def spread(runs, name):
    """(max - min) / median of one binary's runs, in %: how far apart the
    rounds were, to weigh a change against; None for a median of 0."""
    v = [r[name] for r in runs]
    m = statistics.median(v)
    return (max(v) - min(v)) / m * 100 if m else None


def pct(v):
    return "-" if v is None else f"{v:.0f}%"


def report(results, tolerance, repeat):
    print(f"\nmedian of {repeat}, old -> new ({bench.load()}):")
    print(f"{'figure':<32} {'unit':>5} {'old':>9} {'new':>9} {'change':>8} "
          f"{'spread':>13}  <= {tolerance:g} % worse")
    failed = noisy = 0
    for name in FIGURES:
        if name not in results["old"][0]:
            continue
        old = statistics.median(r[name] for r in results["old"])
        new = statistics.median(r[name] for r in results["new"])
        change, v = verdict(name, old, new, tolerance)
        so, sn = spread(results["old"], name), spread(results["new"], name)
        if v != "ok" and abs(change) <= max(so or 0, sn or 0):
            v = "WORSE, within the spread"
            noisy += 1
        failed += v == "WORSE"
        unit, better, _, fmt = FIGURES[name]
        print(f"{name:<32} {unit:>5} {fmt.format(old):>9} "
              f"{fmt.format(new):>9} {change:>+7.1f}% {pct(so):>6} "
              f"{pct(sn):>6}  {v} ({better} is better)")
    print(f"\n{failed} figure(s) more than {tolerance:g} % worse beyond "
          f"the spread of the rounds, {noisy} within it (repeat on a quiet "
          f"machine, or with more --repeat)")
    return failed + noisy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True, help="the idlefetch before")
    ap.add_argument("--new", required=True, help="the idlefetch after")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("-n", type=int, default=2000, help="bench.py messages")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--accounts", type=int, default=100,
                    help="scale.py accounts")
    ap.add_argument("--scale-quiet", type=float, default=5,
                    help="scale.py's idle CPU stretch, seconds")
    ap.add_argument("--idle-seconds", type=float, default=10,
                    help="idle_rss.py's wait before it reads RSS")
    ap.add_argument("--tolerance", type=float, default=10,
                    help="how much worse, in %%, still passes")
    ap.add_argument("--only", default="bench,idle,scale")
    args = ap.parse_args()
    for b in (args.old, args.new):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"{b}: not an executable")
    binaries = [("old", os.path.abspath(args.old)),
                ("new", os.path.abspath(args.new))]
    for label, b in binaries:
        print(f"{label}: {b}")
    parts = {"bench": bench_part, "idle": idle_part, "scale": scale_part}
    results = {"old": None, "new": None}
    t0 = time.monotonic()
    for part in args.only.split(","):
        res = parts[part](args, binaries)
        for label in results:
            if results[label] is None:
                results[label] = res[label]
            else:
                for mine, theirs in zip(results[label], res[label]):
                    mine.update(theirs)
    failed = report(results, args.tolerance, args.repeat)
    print(f"compare.py took {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
