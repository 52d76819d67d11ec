"""Network faults injected between idlefetch and Dovecot by a proxy
(test/lib/faultproxy.py): a cut, a black hole, a 1 KB/s link, 1-byte
segments, a reset in the middle of a message. After each, every message is
in the Maildir exactly once, whole, and nothing is left half-written."""
import time
import unittest

import faultproxy
import fixture as fx


class FaultTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.addCleanup(self.env.close)
        self.proxy = faultproxy.FaultProxy(self.env.dovecot.imap_port)
        self.addCleanup(self.proxy.stop)

    def fetcher(self, name):
        # Plaintext, so the proxy can see where a message's literal is.
        return self.env.idlefetch(tls="none", name=name,
                                  port=self.proxy.port,
                                  extra="timeout = 3\nidle_refresh = 10\n")

    def backlog(self, n, big=None):
        msgs = [fx.make_message(i, size=30000) for i in range(n)]
        if big is not None:
            msgs.insert(big, fx.make_message(999, size=1024 * 1024))
        self.env.dovecot.put(msgs)
        return msgs

    def assert_exactly(self, f, msgs, within=60):
        ok = fx.wait_until(lambda: f.md.count() >= len(msgs), within)
        got = f.md.contents()
        self.assertTrue(ok, f"{len(got)} of {len(msgs)}: {f.log()[-3000:]}")
        # A moment more: nothing must come twice after the last one.
        time.sleep(0.5)
        got = f.md.contents()
        self.assertEqual(len(got), len(msgs), "no duplicate")
        self.assertEqual(sorted(got), sorted(msgs), "each whole, none lost")
        self.assertEqual(f.md.files("tmp"), [], "no partial file left")

    def test_cut_mid_backlog(self):
        msgs = self.backlog(40)
        self.proxy.throttle(300 * 1024, sticky=True)  # 4 s for all of it
        f = self.fetcher("cut")
        f.start()
        # In the middle of the first batch: nothing of it is committed.
        self.assertTrue(fx.wait_until(lambda: self.proxy.bytes_down > 400000,
                                      20, step=0.005))
        self.proxy.clear()
        self.proxy.cut()
        self.assert_exactly(f, msgs)
        self.assertGreaterEqual(self.proxy.accepted, 2, "it reconnected")

    def test_black_hole_is_noticed_within_the_timeout(self):
        msgs = self.backlog(3, big=1)
        f = self.fetcher("blackhole")
        f.start()
        self.assertTrue(fx.wait_until(lambda: self.proxy.bytes_down > 3000,
                                      20, step=0.001))
        self.proxy.blackhole()
        t0 = time.monotonic()
        self.assertTrue(fx.wait_until(lambda: self.proxy.accepted >= 2, 20),
                        f.log())
        noticed = time.monotonic() - t0
        self.assertLess(noticed, 3 + 5, "timeout = 3, plus the backoff")
        self.assert_exactly(f, msgs)

    def test_one_kilobyte_a_second_delivers_without_timing_out(self):
        msg = fx.make_message(1, size=6000)
        self.env.dovecot.put([msg])
        self.proxy.throttle(1024, sticky=True)
        f = self.fetcher("slow")
        t0 = time.monotonic()
        f.start()
        self.assert_exactly(f, [msg], within=60)
        took = time.monotonic() - t0
        print(f"\n6 KB message at 1 KB/s delivered in {took:.1f} s")
        self.assertGreater(took, 5, "the link really was slow")
        self.assertEqual(self.proxy.accepted, 1,
                         "a slow answer that keeps coming is no timeout")

    def test_one_byte_segments(self):
        msgs = [fx.make_message(i, size=3000) for i in range(4)]
        self.env.dovecot.put(msgs)
        self.proxy.segments(sticky=True)
        f = self.fetcher("segments")
        f.start()
        self.assert_exactly(f, msgs, within=90)
        self.assertEqual(self.proxy.accepted, 1)

    def test_reset_in_the_middle_of_a_message(self):
        msgs = self.backlog(4, big=2)
        self.proxy.reset_in_literal(200000, sticky=True)
        f = self.fetcher("reset")
        f.start()
        self.assert_exactly(f, msgs)
        self.assertEqual(self.proxy.resets, 1, "the reset hit the big one")
        self.assertGreaterEqual(self.proxy.accepted, 2)
        self.assertIn("reconnecting", f.log())


if __name__ == "__main__":
    unittest.main()
