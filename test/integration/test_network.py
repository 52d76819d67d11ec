"""A path that silently drops every packet, as a NAT or firewall does when
it forgets an idle connection: idlefetch notices, reconnects once the path
is back, and delivers what arrived meanwhile.

idlefetch runs in a network namespace of its own, joined to the server by a
veth pair; taking the server's end down drops packets without any RST or
ICMP, so only idlefetch's own liveness checks can tell."""
import os
import subprocess
import tempfile
import time
import unittest

import fixture as fx
import scripted

SERVER_IP = "10.213.0.1"
CLIENT_IP = "10.213.0.2"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, check=check)


class SilentDropTest(unittest.TestCase):
    def setUp(self):
        self.ns = f"idlefetch-test-{os.getpid()}"
        self.veth = f"idf{os.getpid() % 100000}"
        r = ip("netns", "add", self.ns, check=False)
        if r.returncode != 0:
            self.skipTest("cannot create a network namespace here: "
                          + r.stderr.decode().strip())
        self.addCleanup(ip, "netns", "del", self.ns, check=False)
        self.addCleanup(ip, "link", "del", self.veth, check=False)
        try:
            ip("link", "add", self.veth, "type", "veth", "peer", "name",
               "eth0", "netns", self.ns)
            ip("addr", "add", SERVER_IP + "/24", "dev", self.veth)
            ip("link", "set", self.veth, "up")
            ip("-n", self.ns, "addr", "add", CLIENT_IP + "/24", "dev", "eth0")
            ip("-n", self.ns, "link", "set", "eth0", "up")
            ip("-n", self.ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as e:
            self.skipTest("cannot join a network namespace by veth here: "
                          + e.stderr.decode().strip())
        self.root = tempfile.mkdtemp(prefix="idlefetch-net-")
        self.msgs = [fx.make_message(0), fx.make_message(1)]
        self.mb = scripted.Mailbox(self.msgs[:1])
        self.srv = scripted.Server(self.mb, host=SERVER_IP)
        self.addCleanup(self.srv.stop)

        class NoDovecot:
            certs = None
        self.f = fx.Idlefetch(self.root, NoDovecot(), tls="none", name="nat",
                              ca=False, host=SERVER_IP, port=self.srv.port,
                              wrap=("ip", "netns", "exec", self.ns),
                              extra="idle_refresh = 10\ntimeout = 3")
        self.addCleanup(self.f.stop)

    def test_silently_dropped_connection_is_noticed_and_replaced(self):
        f, srv, mb = self.f, self.srv, self.mb
        f.start("-v")
        self.assertTrue(fx.wait_until(lambda: srv.idling and f.md.count() == 1,
                                      15), f.log())
        # The path goes dark; a message arrives on the server meanwhile.
        ip("link", "set", self.veth, "down")
        t0 = time.monotonic()
        mb.add(self.msgs[1])
        srv.notify_exists()  # lost on the way
        # IDLE is re-issued after idle_refresh; DONE gets no answer within
        # timeout: the connection counts as dead.
        self.assertTrue(fx.wait_until(lambda: "timed out in IDLE_DONE"
                                      in f.log(), 25), f.log())
        noticed = time.monotonic() - t0
        self.assertEqual(f.md.count(), 1)
        ip("link", "set", self.veth, "up")
        t1 = time.monotonic()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 30), f.log())
        print(f"\nsilent drop noticed after {noticed:.1f} s "
              f"(idle_refresh 10 s + timeout 3 s); delivered "
              f"{time.monotonic() - t1:.1f} s after the path came back")
        self.assertEqual(f.stop(), 0)
        self.assertEqual(sorted(f.md.contents()), sorted(self.msgs),
                         "each message once")


if __name__ == "__main__":
    unittest.main()
