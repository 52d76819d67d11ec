"""kill -9 in the middle of a backlog: nothing lost, nothing twice, no
partial file in new/."""
import random
import signal
import time
import unittest

import fixture as fx


class CrashTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def test_kill9_during_backlog_loses_nothing(self):
        rnd = random.Random(7)
        msgs = [fx.make_message(i, size=rnd.choice((0, 20000, 150000)))
                for i in range(500)]
        self.env.dovecot.put(msgs)
        originals = set(msgs)
        f = self.env.idlefetch(tls="implicit", name="crash")
        kills = 0
        counts = []
        for delay in (0.15, 0.3, 0.45, 0.6):
            f.start()
            # Wait for the first delivery, then kill at a later moment.
            fx.wait_until(lambda: f.md.count() > 0 or f.proc.poll() is not None,
                          20, step=0.005)
            time.sleep(delay * rnd.random())
            before = f.md.count()
            f.stop(signal.SIGKILL)
            kills += 1
            counts.append(f.md.count())
            got = f.md.contents()
            for body in got:
                self.assertIn(body, originals, "a file in new/ is complete")
            self.assertEqual(len(got), len(set(got)), "no duplicate")
            if f.md.count() >= 500:
                break
            self.assertGreaterEqual(f.md.count(), before)
        print(f"\nkilled {kills} time(s) with {counts} delivered")
        self.assertLess(counts[0], 500, "the first kill hit the backlog")
        self.assertEqual(f.once(), 0, f.log())
        got = f.md.contents()
        self.assertEqual(len(got), 500, "0 lost, 0 duplicated")
        self.assertEqual(set(got), originals)
        self.assertEqual(f.md.files("tmp"), [], "stale tmp/ files removed")

    def test_state_lost_after_delivery_is_reconciled_from_file_names(self):
        self.env.dovecot.put([fx.make_message(i) for i in range(10)])
        f = self.env.idlefetch(tls="implicit", name="reconcile")
        self.assertEqual(f.once(), 0, f.log())
        # Simulate a crash between the rename into new/ and the state save.
        import glob
        import os
        for p in glob.glob(f.state_dir + "/*/*.state"):
            os.unlink(p)
        self.env.dovecot.put([fx.make_message(100 + i) for i in range(2)])
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 12, f.log())
        self.assertIn("delivered before a restart", f.log())

    def test_second_fetcher_on_the_same_account_is_refused(self):
        msgs = [fx.make_message(i, size=20000) for i in range(300)]
        self.env.dovecot.put(msgs)
        f = self.env.idlefetch(tls="implicit", name="twice").start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() > 0, 20), f.log())
        # A --once while the daemon works through the backlog.
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn(f"another idlefetch (pid {f.proc.pid}) is fetching "
                      "this account", f.log())
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 300, 30),
                        f.log())
        # The lock dies with its holder, even by kill -9.
        f.stop(signal.SIGKILL)
        self.env.dovecot.put([fx.make_message(1000)])
        self.assertEqual(f.once(), 0, f.log())
        got = f.md.contents()
        self.assertEqual(len(got), 301)
        self.assertEqual(len(set(got)), 301, "nothing delivered twice")


if __name__ == "__main__":
    unittest.main()
