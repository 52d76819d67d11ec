"""Mail that arrives while a connection is replaced: a scripted OAuth2
server whose tokens live 6 s ends each session at its token's expiry with
`* BYE Session invalidated - AccessTokenExpired`; 50 messages are appended
0.3-1.2 s apart (seeded) and each is timed from its append to its file in
new/. Runs two idlefetch builds in turn and prints p50/max latency,
connections and logins of each run, then the medians.

    sudo PYTHONPATH=test/lib python3 test/bench/handover.py \\
        --before build-base/idlefetch --after build/idlefetch [-r 3] [-n 50]
"""
import argparse
import os
import shutil
import statistics
import tempfile

import expiring
import fixture as fx
import scripted


def one(binary, n, seed):
    root = tempfile.mkdtemp(prefix="idlefetch-handover-")
    ts = expiring.ExpiringTokens()
    srv = scripted.Server(scripted.Mailbox(), caps=expiring.CAPS,
                          hooks={"command": ts.hook})
    ts.start(srv)

    class D:
        certs = None
    fx.IDLEFETCH = binary
    f = fx.Idlefetch(root, D(), tls="none", name="ms365", ca=False,
                     port=srv.port, password=None,
                     extra=expiring.account_lines(expiring.token_helper(root)))
    try:
        f.start()
        got = expiring.measure(ts, srv, f, n, seed)
        if got is None:
            raise SystemExit(f"{binary}: not every message landed\n{f.log()}")
        lat, copies = got
        return {"p50": statistics.median(lat), "max": lat[-1],
                "twice": sum(1 for c in copies.values() if c > 1),
                "conns": srv.connections, "logins": len(ts.logins),
                "byes": ts.ended}
    finally:
        f.stop()
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("-r", type=int, default=3, help="runs of each")
    ap.add_argument("-n", type=int, default=50, help="messages per run")
    ap.add_argument("--seed", type=int, default=21)
    args = ap.parse_args()
    res = {"before": [], "after": []}
    for i in range(args.r):
        for which in ("before", "after"):
            r = one(os.path.abspath(getattr(args, which)), args.n, args.seed)
            res[which].append(r)
            print(f"run {i + 1} {which:6}: p50 {r['p50']:6.1f} ms  max "
                  f"{r['max']:7.1f} ms  twice {r['twice']}  connections "
                  f"{r['conns']}  logins {r['logins']}  expired-token BYEs "
                  f"{r['byes']}", flush=True)
    for which in ("before", "after"):
        rs = res[which]
        print(f"median {which:6}: p50 "
              f"{statistics.median(r['p50'] for r in rs):6.1f} ms  max "
              f"{statistics.median(r['max'] for r in rs):7.1f} ms  "
              f"connections {statistics.median(r['conns'] for r in rs):.0f}")


if __name__ == "__main__":
    main()
