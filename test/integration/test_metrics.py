"""Prometheus metrics: a real Prometheus scrapes the daemon every second,
and what it stores must match what the Maildir holds; hostile clients of
the endpoint must not hold up delivery."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse
import urllib.request

import fixture as fx

PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")


class Prometheus:
    """A Prometheus with its own configuration and storage, scraping one
    target every second, on a loopback port."""

    def __init__(self, root, target):
        self.dir = os.path.join(root, "prometheus")
        os.makedirs(self.dir, exist_ok=True)
        self.port = fx.free_port()
        conf = os.path.join(self.dir, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: idlefetch\n"
                    "    static_configs:\n"
                    f"      - targets: ['{target}']\n")
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={conf}",
             f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log)

    def query(self, expr):
        """The instant vector of expr as {labels: value}; {} on any error."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?" +
               urllib.parse.urlencode({"query": expr}))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                data = json.load(r)
        except OSError:
            return {}
        return {json.dumps(x["metric"], sort_keys=True): float(x["value"][1])
                for x in data["data"]["result"]}

    def value(self, expr):
        v = self.query(expr)
        return next(iter(v.values())) if len(v) == 1 else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        self.log.close()


def scrape(port, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                timeout=timeout) as r:
        return r.status, r.read().decode()


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.prom = None
        self.mport = fx.free_port()
        self.f = self.env.idlefetch(
            name="work", glob=f"metrics = 127.0.0.1:{self.mport}").start()
        self.assertTrue(fx.wait_until(self.answers, 15), self.f.log())

    def tearDown(self):
        if self.prom is not None:
            self.prom.stop()
        self.env.close()

    def answers(self):
        try:
            return scrape(self.mport, 1)[0] == 200
        except OSError:
            return False

    def start_prometheus(self):
        self.prom = Prometheus(self.env.root, f"127.0.0.1:{self.mport}")
        self.assertTrue(fx.wait_until(
            lambda: self.prom.value('up{job="idlefetch"}') == 1, 60, 0.5),
            "Prometheus never scraped idlefetch")

    def wait_for(self, expr, want, timeout=30):
        fx.wait_until(lambda: self.prom.value(expr) == want, timeout, 0.5)
        return self.prom.value(expr)

    def test_prometheus_counts_what_the_maildir_holds(self):
        n = 25
        self.start_prometheus()
        self.assertEqual(self.prom.value("idlefetch_messages_delivered_total"),
                         0)
        self.assertTrue(fx.wait_until(lambda: "IDLE" in scrape(self.mport)[1],
                                      15), self.f.log())
        for i in range(n):
            self.env.dovecot.lmtp(fx.make_message(i, size=500 + 97 * i))
        self.assertTrue(fx.wait_until(lambda: self.f.md.count() == n, 30),
                        self.f.log())
        files = self.f.md.files()
        size = sum(os.path.getsize(os.path.join(self.f.maildir_path, "new", x))
                   for x in files)
        self.assertEqual(self.wait_for(
            'idlefetch_messages_delivered_total{account="work"}', n),
            len(files))
        self.assertEqual(self.wait_for(
            'idlefetch_delivered_bytes_total{account="work"}', size), size)
        self.assertEqual(self.wait_for(
            'idlefetch_folder_last_delivered_uid{folder="INBOX"}', n), n)
        self.assertEqual(self.prom.value(
            'idlefetch_folder_messages_delivered_total{folder="INBOX"}'), n)
        # Each came while idling: its push delay is measured, none over 30 s.
        pushed = self.prom.value("idlefetch_push_delay_seconds_count")
        self.assertGreater(pushed, 0)
        self.assertEqual(self.prom.value(
            'idlefetch_push_delay_seconds_bucket{le="30"}'), pushed)
        self.assertEqual(self.prom.value("idlefetch_folders_up"), 1)
        self.assertGreater(self.prom.value("process_resident_memory_bytes"),
                           1 << 20)
        # As /proc counts them, give or take the scrape's own sockets.
        self.assertLessEqual(abs(self.prom.value("process_open_fds") -
                                 fds(self.f.proc.pid)), 4)
        # A reconnect is counted, with its reason.
        self.env.dovecot.stop(graceful=True)
        self.env.dovecot.start()
        self.assertGreaterEqual(self.wait_for(
            'sum(idlefetch_reconnects_total{account="work"})', 1), 1,
            self.f.log())
        self.assertEqual(self.f.stop(), 0)

    def test_hostile_clients_do_not_hold_up_delivery(self):
        n = 20
        self.start_prometheus()
        before = fds(self.f.proc.pid)
        stop = threading.Event()
        idle = []
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", self.mport))
            idle.append(s)

        def slowloris():
            with socket.create_connection(("127.0.0.1", self.mport)) as s:
                for c in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                    if stop.wait(0.5):
                        return
                    try:
                        s.send(bytes([c]))
                    except OSError:
                        return

        def flood():
            try:
                with socket.create_connection(("127.0.0.1", self.mport)) as s:
                    s.sendall(b"GET /metrics HTTP/1.1\r\nX: " +
                              b"a" * (1 << 20))
            except OSError:
                pass

        threads = [threading.Thread(target=slowloris),
                   threading.Thread(target=flood)]
        for t in threads:
            t.start()
        peak = 0
        for i in range(n):
            self.env.dovecot.lmtp(fx.make_message(i, size=2000))
            peak = max(peak, fds(self.f.proc.pid))
        ok = fx.wait_until(lambda: self.f.md.count() == n, 30)
        peak = max(peak, fds(self.f.proc.pid))
        self.assertTrue(ok, f"{self.f.md.count()} of {n}\n" + self.f.log())
        print(f"\nopen fds: {before} before, at most {peak} during the attack")
        # Bounded: the clients the endpoint holds at most, and a few more
        # for those being accepted only to be closed.
        self.assertLessEqual(peak, before + 16 + 4, peak)
        # Once the deadline has closed the held ones, a scrape is answered.
        self.assertTrue(fx.wait_until(self.answers, 15))
        status, text = scrape(self.mport)
        self.assertIn(f'idlefetch_messages_delivered_total{{account="work"}} '
                      f'{n}\n', text)
        self.assertEqual(self.wait_for(
            'idlefetch_messages_delivered_total{account="work"}', n), n)
        self.assertGreater(self.prom.value(
            "idlefetch_metrics_clients_refused_total"), 100)
        stop.set()
        for t in threads:
            t.join(10)
        for s in idle:
            s.close()
        self.assertEqual(self.f.stop(), 0)

    def test_reload_keeps_the_endpoint_and_its_counts(self):
        for i in range(3):
            self.env.dovecot.lmtp(fx.make_message(i))
        self.assertTrue(fx.wait_until(lambda: self.f.md.count() == 3, 20),
                        self.f.log())
        line = 'idlefetch_messages_delivered_total{account="work"} 3\n'
        self.assertTrue(fx.wait_until(
            lambda: line in scrape(self.mport)[1], 10))
        held = socket.create_connection(("127.0.0.1", self.mport))
        self.f.proc.send_signal(signal.SIGHUP)
        self.assertTrue(fx.wait_until(
            lambda: "configuration reloaded" in self.f.log(), 15))
        # The same listener: the client it held is still open, the counts
        # go on.
        held.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        held.settimeout(5)
        got = b""
        while not got.endswith(b"\n") or b"process_open_fds" not in got:
            chunk = held.recv(65536)
            if not chunk:
                break
            got += chunk
        held.close()
        self.assertIn(line.encode(), got)
        # A new address moves it.
        port = fx.free_port()
        with open(self.f.conf) as f:
            conf = f.read()
        with open(self.f.conf, "w") as f:
            f.write(conf.replace(f"metrics = 127.0.0.1:{self.mport}",
                                 f"metrics = 127.0.0.1:{port}"))
        self.f.proc.send_signal(signal.SIGHUP)
        old, self.mport = self.mport, port
        self.assertTrue(fx.wait_until(self.answers, 15), self.f.log())
        self.assertIn(line, scrape(port)[1])
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", old), timeout=2).close()
        self.assertEqual(self.f.stop(), 0)



class MetricsConfigTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def test_bad_metrics_address_names_file_line_and_key(self):
        f = self.env.idlefetch(name="bad", glob="metrics = localhost:9100")
        p = subprocess.run([fx.IDLEFETCH, "--config", f.conf,
                            "--check-config"], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"{f.conf}:3: key 'metrics'", p.stderr)
        self.assertIn("numeric address", p.stderr)

    def test_refused_login_is_counted_with_its_reason(self):
        port = fx.free_port()
        f = self.env.idlefetch(name="wrong", password="not-the-password",
                               glob=f"metrics = {port}").start()
        want = ('idlefetch_reconnects_total{account="wrong",'
                'reason="login"} 1\n')
        text = ""
        for _ in range(100):
            try:
                text = scrape(port)[1]
            except OSError:
                pass
            if want in text:
                break
            time.sleep(0.2)
        self.assertIn(want, text, f.log())
        self.assertIn('idlefetch_login_failures_total{account="wrong"} 1\n',
                      text)
        self.assertIn('idlefetch_folders_up{account="wrong"} 0\n', text)
        f.stop()

    def test_no_folder_series_with_metrics_folders_no(self):
        port = fx.free_port()
        f = self.env.idlefetch(name="quiet", glob=f"metrics = {port}\n"
                               "metrics_folders = no").start()
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 20), f.log())
        text = ""
        for _ in range(50):
            try:
                text = scrape(port)[1]
            except OSError:
                pass
            if 'idlefetch_messages_delivered_total{account="quiet"} 1\n' in text:
                break
            time.sleep(0.2)
        self.assertIn('idlefetch_messages_delivered_total{account="quiet"} 1\n',
                      text)
        self.assertNotIn("folder=", text)
        self.assertEqual(f.stop(), 0)


if __name__ == "__main__":
    unittest.main()
