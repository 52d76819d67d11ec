"""What the metrics endpoint costs: the resident memory of an idle daemon
with metrics off and on, and its CPU time while a real Prometheus scrapes
it every second. Run as the integration tests run (IDLEFETCH_BIN,
PYTHONPATH=test/lib:test/integration)."""
import os
import sys
import time

import fixture as fx
from test_metrics import Prometheus, scrape

WINDOW = int(os.environ.get("WINDOW", "60"))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def idle_daemon(env, name, glob):
    f = env.idlefetch(name=name, glob=glob).start()
    fx.wait_until(lambda: "IDLE" in open(f.logfile).read() or
                  fx.rss_kb(f.proc.pid) == 0, 5)
    time.sleep(5)
    return f


def main():
    env = fx.Env()
    try:
        off = idle_daemon(env, "off", "")
        rss_off = fx.rss_kb(off.proc.pid)
        c0 = cpu_s(off.proc.pid)
        time.sleep(WINDOW)
        cpu_off = cpu_s(off.proc.pid) - c0
        off.stop()
        port = fx.free_port()
        on = idle_daemon(env, "on", f"metrics = 127.0.0.1:{port}")
        rss_on = fx.rss_kb(on.proc.pid)
        body = scrape(port)[1]
        prom = Prometheus(env.root, f"127.0.0.1:{port}")
        try:
            fx.wait_until(lambda: prom.value('up{job="idlefetch"}') == 1, 60)
            c0 = cpu_s(on.proc.pid)
            time.sleep(WINDOW)
            cpu_on = cpu_s(on.proc.pid) - c0
            scrapes = prom.value('count_over_time(up{job="idlefetch"}[%ds])'
                                 % WINDOW)
        finally:
            prom.stop()
        rss_scraped = fx.rss_kb(on.proc.pid)
        on.stop()
        print(f"RSS idle: metrics off {rss_off} KiB, on {rss_on} KiB, "
              f"on after {WINDOW} s of 1 s scrapes {rss_scraped} KiB")
        print(f"CPU over {WINDOW} s: off {cpu_off:.2f} s, on and scraped "
              f"{scrapes} times {cpu_on:.2f} s "
              f"({cpu_on / WINDOW * 100:.2f} % of a core); "
              f"one scrape {len(body)} bytes")
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
