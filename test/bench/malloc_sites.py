"""Where the heap of an idle idlefetch goes, by call site.

Starts one Dovecot and one idlefetch holding K accounts (one INBOX each,
as scale10k.py does) with malloc_sites.so preloaded, waits until every
account is idle, has the shim write the live heap blocks per call stack,
and prints the bytes per account of each site: the first frame of
idlefetch's own code (past xmalloc and friends) and, under it, the
frames that led there. Heap bytes are what malloc was asked for, not
malloc's own overhead (8-16 bytes a block and the rounding to 16, not
counted here).

    cc -O2 -shared -fPIC -o /tmp/malloc_sites.so test/bench/malloc_sites.c -ldl -lpthread
    sudo PYTHONPATH=test/lib:test/bench IDLEFETCH_BIN=build/idlefetch \\
        python3 test/bench/malloc_sites.py --shim /tmp/malloc_sites.so -n 1000

--all counts every block each site took since start, freed or not (the
short-lived allocations of connecting and logging in, whose holes stay in
the heap), instead of the live ones.

--tls holds the accounts over implicit TLS (OpenSSL's blocks then show
under CRYPTO_malloc's callers); --dump FILE only reports a dump written
before (FILE.maps beside it).
"""
import argparse
import bisect
import collections
import os
import resource
import subprocess
import sys
import time

import fixture as fx
import scale10k

WRAPPERS = {"xmalloc", "xcalloc", "xrealloc", "xstrdup", "xstrndup",
            "xasprintf", "xmemdup", "CRYPTO_malloc", "CRYPTO_zalloc",
            "CRYPTO_realloc", "CRYPTO_strdup", "CRYPTO_strndup",
            "CRYPTO_memdup", "uv__malloc", "uv__calloc", "uv__realloc",
            "uv__strdup"}


def load_maps(path):
    maps = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6 or "x" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            maps.append((lo, hi, int(parts[2], 16), parts[5]))
    maps.sort()
    return maps


class Symbolizer:
    def __init__(self, maps):
        self.maps = maps
        self.starts = [m[0] for m in maps]
        self.cache = {}

    def locate(self, pc):
        i = bisect.bisect_right(self.starts, pc) - 1
        if i < 0 or pc >= self.maps[i][1]:
            return None, pc
        lo, _, off, path = self.maps[i]
        return path, pc - lo + off

    def names(self, pcs):
        """One 'function (file:line)' per pc, via addr2line per object."""
        by_obj = collections.defaultdict(set)
        for pc in pcs:
            path, off = self.locate(pc)
            if path:
                by_obj[path].add(off - 1)
        for path, offs in by_obj.items():
            offs = sorted(offs)
            out = subprocess.run(["addr2line", "-f", "-C", "-e", path] +
                                 [hex(o) for o in offs],
                                 capture_output=True, text=True).stdout
            lines = out.splitlines()
            for j, o in enumerate(offs):
                fn = lines[2 * j] if 2 * j < len(lines) else "?"
                loc = lines[2 * j + 1] if 2 * j + 1 < len(lines) else "?"
                if fn == "??":
                    fn = os.path.basename(path)
                self.cache[(path, o)] = (fn, os.path.basename(loc.split(
                    " ")[0]), path)
        for pc in pcs:
            path, off = self.locate(pc)
            if (path, off - 1) not in self.cache:
                self.cache[(path, off - 1)] = ("?", "?", path or "?")

    def name(self, pc):
        path, off = self.locate(pc)
        return self.cache.get((path, off - 1), ("?", "?", "?"))


def report(dump, binary, accounts, top, what="live heap"):
    sites = []
    with open(dump) as f:
        for line in f:
            if line.startswith("#"):
                v = line.split()
                mi = {v[i]: int(v[i + 1]) for i in range(1, len(v) - 1, 2)}
                print(f"malloc: heap {mi['arena'] / 1048576:.2f} MiB, in use "
                      f"{mi['inuse'] / 1048576:.2f} MiB (with its headers), "
                      f"free {mi['free'] / 1048576:.2f} MiB; mmapped "
                      f"{mi['mmapped'] / 1048576:.2f} MiB")
                continue
            v = line.split()
            sites.append((int(v[0]), int(v[1]), [int(x, 16) for x in v[2:]]))
    sym = Symbolizer(load_maps(dump + ".maps"))
    sym.names({pc for s in sites for pc in s[2]})
    exe = os.path.realpath(binary)
    by_key = collections.defaultdict(lambda: [0, 0, collections.Counter()])
    total = blocks = 0
    for nbytes, count, pcs in sites:
        total += nbytes
        blocks += count
        frames = [sym.name(pc) for pc in pcs]
        own = [fr for fr in frames if fr[2] == exe and fr[0] not in WRAPPERS]
        key = f"{own[0][0]} ({own[0][1]})" if own else (
            f"{frames[0][0]} [{os.path.basename(frames[0][2])}]"
            if frames else "?")
        chain = " < ".join(f"{fr[0]}" for fr in frames[:6])
        e = by_key[key]
        e[0] += nbytes
        e[1] += count
        e[2][chain] += nbytes
    print(f"{what}: {total / 1024 / 1024:.2f} MiB in {blocks} blocks; "
          f"{total / accounts:.0f} B and {blocks / accounts:.1f} blocks "
          f"per account ({accounts} accounts)")
    print(f"{'B/acct':>8} {'blocks/acct':>11}  site")
    for key, (nbytes, count, chains) in sorted(by_key.items(),
                                               key=lambda kv: -kv[1][0]):
        if nbytes / accounts < top:
            continue
        print(f"{nbytes / accounts:8.0f} {count / accounts:11.2f}  {key}")
        for chain, b in chains.most_common(3):
            print(f"{'':22}{b / accounts:6.0f}  {chain}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--shim", required=True)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--top", type=float, default=4,
                    help="hide sites below this many bytes per account")
    ap.add_argument("--dump", help="only print the report of this dump")
    ap.add_argument("--all", action="store_true",
                    help="every block taken since start, not the live ones")
    args = ap.parse_args()
    binary = fx.IDLEFETCH
    if args.dump:
        report(args.dump, binary, args.n + 1, args.top,
               "taken since start" if args.all else "live heap")
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    k = args.n
    login_procs = max(1, k // 2500 + 1)
    env = fx.Env(extra=scale10k.DOVECOT_EXTRA.format(
        k=k + 100, k2=2 * k + 1000, login_procs=login_procs,
        login_clients=k // login_procs + 500))
    trig = os.path.join(env.root, "dump-now")
    out = os.path.join(env.root, "sites.txt")
    try:
        tls = "implicit" if args.tls else "none"
        names, secs = scale10k.accounts(env, k, not args.tls)
        f = env.idlefetch(name="a-first", tls=tls, extra=secs)
        f.start(env={"LD_PRELOAD": os.path.abspath(args.shim),
                     "MALLOC_SITES_TRIGGER": trig,
                     "MALLOC_SITES_OUT": out,
                     **({"MALLOC_SITES_ALL": "1"} if args.all else {})})
        if scale10k.wait_idle(f.state_dir, names, 1800) is None:
            print("not all idle", file=sys.stderr)
        time.sleep(8)
        rss = fx.rss_kb(f.proc.pid)
        open(trig, "w").close()
        fx.wait_until(lambda: not os.path.exists(trig), 30)
        time.sleep(1)
        print(f"RSS {rss / 1024:.1f} MiB (with the shim's tables)")
        report(out, binary, k + 1, args.top,
               "taken since start" if args.all else "live heap")
        f.stop()
    finally:
        env.close()


if __name__ == "__main__":
    main()
