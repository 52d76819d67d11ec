"""kill -9 in the middle of a backlog: nothing lost, nothing twice, no
partial file in new/."""
import os
import random
import signal
import time
import unittest

import faultproxy
import fixture as fx


class CrashTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def soak(self, after):
        """SOAK_KILLS (default 10) kill -9 at random instants while a
        1,000-message backlog (sizes up to 5 MB, 56 MB) is fetched over a
        link of SOAK_RATE bytes a second, a restart after each. The soak:
        SOAK_KILLS=100 SOAK_RATE=1500000 SOAK_SHORT=0.8. After every kill each message is in the Maildir or
        still on the server, never neither, and every file in new/ is a
        whole message; at the end all 1,000 are there once."""
        kills = int(os.environ.get("SOAK_KILLS", "10"))
        rnd = random.Random(int(os.environ.get("SOAK_SEED", "9")))
        sizes = [rnd.choice((0, 2000, 20000, 60000)) for _ in range(1000)]
        for i in rnd.sample(range(1000), 12):
            sizes[i] = rnd.randint(1, 5) * 1024 * 1024
        msgs = [fx.make_message(i, size=sz) for i, sz in enumerate(sizes)]
        ids = {fx.message_id(m) for m in msgs}
        originals = set(msgs)
        d = self.env.dovecot
        d.put(msgs)
        # A slower link: the 56 MB backlog lasts long enough for the kills.
        rate = int(os.environ.get("SOAK_RATE", str(4 * 1024 * 1024)))
        short = float(os.environ.get("SOAK_SHORT", "0.5"))
        proxy = faultproxy.FaultProxy(d.imaps_port)
        self.addCleanup(proxy.stop)
        proxy.throttle(rate, sticky=True)
        f = self.env.idlefetch(tls="implicit", name=f"soak-{after}",
                               after=after, port=proxy.port)
        counts, t0 = [], time.monotonic()
        for k in range(kills):
            f.start()
            # At a random instant: login, listing, streaming, committing
            # or deleting, whatever it is doing then. A share of the runs
            # (SOAK_SHORT) is short, the rest may be long enough for a
            # whole batch (100 messages or 16 MiB) to arrive.
            if rnd.random() < short:
                time.sleep(rnd.uniform(0.02, 0.4))
            else:
                time.sleep(rnd.uniform(0.4, 0.4 + 18 * 2**20 / rate))
            f.stop(signal.SIGKILL)
            got = f.md.contents() + f.md.contents("cur")
            for body in got:
                self.assertIn(body, originals, "a whole message in new/")
            self.assertEqual(len(got), len(set(got)), f"kill {k}: no duplicate")
            held = {fx.message_id(b) for b in got} | set(d.message_ids())
            self.assertEqual(held, ids, f"kill {k}: in the Maildir or on "
                             "the server, never neither")
            counts.append(len(got))
            if len(got) == len(msgs):
                break
        took = time.monotonic() - t0
        proxy.clear()  # the rest at full speed
        self.assertEqual(f.once(), 0, f.log())
        got = f.md.contents()
        self.assertEqual(len(got), len(msgs), "0 lost, 0 duplicated")
        self.assertEqual(set(got), originals)
        self.assertEqual(f.md.files("tmp"), [], "no partial file in tmp/")
        if after == "delete":
            self.assertEqual(d.count(), 0)
        print(f"\n{after}: {len(counts)} kill(s) in {took:.0f} s, "
              f"delivered after each: {counts}")
        self.assertLess(counts[0], len(msgs), "the first kill hit the backlog")

    def test_kill9_soak_keep(self):
        self.soak("keep")

    def test_kill9_soak_delete(self):
        self.soak("delete")

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
