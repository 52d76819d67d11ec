"""The daemon: IDLE push, the poll fallback, and reconnecting after the
server went away."""
import re
import time
import unittest

import fixture as fx

NO_IDLE_CAPS = fx.DEFAULT_CAPS.replace(" IDLE", "")


class IdleTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def test_idle_delivers_each_lmtp_message_within_2s(self):
        f = self.env.idlefetch(tls="implicit", name="idle").start("-v")
        self.assertTrue(fx.wait_until(lambda: " IDLE" in f.log() and
                                      "conn IDLE_START -> IDLE" in f.log(),
                                      15), f.log())
        delays = []
        for i in range(20):
            t0 = time.monotonic()
            self.env.dovecot.lmtp(fx.make_message(i))
            ok = fx.wait_until(lambda: f.md.count() == i + 1, 5, step=0.01)
            delays.append(time.monotonic() - t0)
            self.assertTrue(ok, f"message {i} not delivered\n" + f.log())
        print(f"\nLMTP -> new/ delay: min {min(delays):.3f} s, "
              f"median {sorted(delays)[10]:.3f} s, max {max(delays):.3f} s")
        self.assertLess(max(delays), 2.0, delays)
        self.assertEqual(f.stop(), 0, "SIGTERM exits 0")
        self.assertIn("LOGOUT", f.log())
        self.assertEqual(f.md.count(), 20)

    def test_dovecot_restart_while_idling_reconnects_and_delivers(self):
        f = self.env.idlefetch(tls="implicit", name="restart").start()
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 10), f.log())
        self.env.dovecot.stop(graceful=True)
        time.sleep(1.5)
        self.env.dovecot.start()
        # Mail arrives while idlefetch is (probably) still backing off.
        self.env.dovecot.lmtp(fx.make_message(2))
        self.env.dovecot.lmtp(fx.make_message(3))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 3, 30), f.log())
        self.assertIn("reconnecting in", f.log())
        self.assertEqual(f.stop(), 0)
        self.assertEqual(sorted(f.md.contents()), sorted(set(f.md.contents())))


class ManyFoldersTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env(extra="namespace inbox {\n  mailbox Lists/dev {\n"
                          "    auto = create\n  }\n}\n")

    def tearDown(self):
        self.env.close()

    def test_one_process_idles_on_several_folders(self):
        f = self.env.idlefetch(tls="implicit", name="folders",
                               folders="INBOX, Lists/dev, Archive").start("-v")
        self.assertTrue(fx.wait_until(
            lambda: f.log().count("conn IDLE_START -> IDLE") >= 3, 15), f.log())
        sub = fx.Maildir(f.maildir_path + "/.Lists.dev")
        arch = fx.Maildir(f.maildir_path + "/.Archive")
        for i in range(3):
            self.env.dovecot.save(fx.make_message(100 + i), "Lists/dev")
            self.env.dovecot.lmtp(fx.make_message(i))
            self.env.dovecot.save(fx.make_message(200 + i), "Archive")
        self.assertTrue(fx.wait_until(
            lambda: (f.md.count(), sub.count(), arch.count()) == (3, 3, 3), 10),
            (f.md.count(), sub.count(), arch.count()))
        self.assertEqual(f.stop(), 0)
        self.assertTrue(all(b"message 10" in m for m in sub.contents()))
        self.assertTrue(all(b"message 20" in m for m in arch.contents()))


class PollTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env(caps=NO_IDLE_CAPS)

    def tearDown(self):
        self.env.close()

    def test_poll_fallback_delivers_within_poll_interval(self):
        f = self.env.idlefetch(tls="starttls", name="poll",
                               extra="poll_interval = 2").start("-v")
        self.assertTrue(fx.wait_until(lambda: "POLL_WAIT" in f.log(), 15),
                        f.log())
        for i in range(3):
            t0 = time.monotonic()
            self.env.dovecot.lmtp(fx.make_message(i))
            ok = fx.wait_until(lambda: f.md.count() == i + 1, 6, step=0.02)
            self.assertTrue(ok, f.log())
            self.assertLess(time.monotonic() - t0, 2.0 + 1.0)
        self.assertEqual(f.stop(), 0)
        self.assertIsNone(re.search(r"C: a\d+ IDLE", f.log()),
                          "IDLE is not sent when the server does not offer it")

    def test_idle_off_polls_even_when_offered(self):
        self.env.dovecot.stop()
        self.env.dovecot.caps = fx.DEFAULT_CAPS
        self.env.dovecot.write_conf()
        self.env.dovecot.start()
        f = self.env.idlefetch(tls="implicit", name="idleoff",
                               extra="idle = off\npoll_interval = 1").start("-v")
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 10), f.log())
        self.assertEqual(f.stop(), 0)
        self.assertIsNone(re.search(r"C: a\d+ IDLE", f.log()))


if __name__ == "__main__":
    unittest.main()
