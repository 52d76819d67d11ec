"""idlefetch's RSS across reconnects: a scripted server lets each
connection sync and idle, then drops it; RSS is sampled every 10
reconnects. It must stay flat.

    sudo PYTHONPATH=test/lib IDLEFETCH_BIN=build/idlefetch python3 test/bench/reconnect_rss.py [-n 60]
"""
import argparse
import shutil
import socket
import tempfile

import fixture as fx
import scripted


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=60, help="reconnects")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="idlefetch-soak-")
    mb = scripted.Mailbox([fx.make_message(0)])
    srv = scripted.Server(mb)

    class D:
        certs = None
    f = fx.Idlefetch(root, D(), tls="none", name="soak", ca=False,
                     port=srv.port).start()
    try:
        samples = []
        for i in range(1, args.n + 1):
            fx.wait_until(lambda: len(srv.idling) == 1, 10, step=0.01)
            mb.add(fx.make_message(i, size=50000))
            with srv.lock:
                for c in list(srv.idling):
                    c.sock.shutdown(socket.SHUT_RDWR)
            fx.wait_until(lambda: f.md.count() == i + 1, 10, step=0.01)
            if i % 10 == 0:
                samples.append((i, fx.rss_kb(f.proc.pid)))
                print(f"after {i:4d} reconnects: RSS {samples[-1][1] / 1024:.2f} MB, "
                      f"{f.md.count()} messages delivered", flush=True)
        growth = samples[-1][1] - samples[0][1]
        print(f"RSS growth from reconnect {samples[0][0]} to {samples[-1][0]}: "
              f"{growth} KiB")
    finally:
        f.stop()
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
