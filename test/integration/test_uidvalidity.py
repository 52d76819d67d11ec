"""A folder whose UIDVALIDITY changes is recovered by itself: its messages
are matched against the Maildir, only the new ones are fetched, nothing is
deleted or moved on the server meanwhile."""
import glob
import os
import unittest

import fixture as fx


class UidValidityTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def renumber(self):
        """Dovecot forgets its UIDs: the same messages, a new UIDVALIDITY."""
        d = self.env.dovecot
        d.stop()
        md = d.maildir()
        for p in glob.glob(md + "/dovecot-uidlist") + glob.glob(md + "/dovecot.index*"):
            os.unlink(p)
        d.start()

    def uidvalidity(self, f):
        with open(glob.glob(f.state_dir + "/*/INBOX.state")[0]) as st:
            return st.read().split("\n")[1]

    def test_recreated_folder_delivers_only_the_new_messages(self):
        d = self.env.dovecot
        old = [fx.make_message(i) for i in range(5)]
        d.put(old)
        f = self.env.idlefetch(tls="implicit", name="uidv")
        self.assertEqual(f.once(), 0, f.log())
        was = self.uidvalidity(f)
        # Without its index the Maildir itself is read.
        for p in glob.glob(f.state_dir + "/*/*.index"):
            os.unlink(p)
        self.renumber()
        new = [fx.make_message(i) for i in range(10, 13)]
        d.put(new)
        self.assertEqual(f.once(), 0, f.log())
        log = f.log()
        self.assertIn("UIDVALIDITY changed from", log)
        self.assertIn("read 5 message(s) of the Maildir missing from its "
                      "index", log)
        self.assertIn("recovered the renumbered folder: 5 message(s) matched "
                      "the Maildir, 3 new delivered", log)
        self.assertEqual(sorted(f.md.contents()), sorted(old + new),
                         "exactly the 3 new ones delivered")
        self.assertNotEqual(self.uidvalidity(f), was, "the new one adopted")
        self.assertEqual(d.count(), 8, "the server keeps every message")
        # And on from there, as usual.
        d.put([fx.make_message(20)])
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 9)

    def test_after_delete_loses_nothing_and_deletes_nothing_it_matched(self):
        d = self.env.dovecot
        old = [fx.make_message(i) for i in range(5)]
        d.put(old)
        f = self.env.idlefetch(tls="implicit", name="uidvd", after="delete")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(d.count(), 0)
        # The folder restored from a backup, with 3 new messages, under a
        # new UIDVALIDITY.
        new = [fx.make_message(i) for i in range(10, 13)]
        d.put(old + new)
        self.renumber()
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("5 message(s) matched the Maildir, 3 new delivered",
                      f.log())
        self.assertEqual(sorted(f.md.contents()), sorted(old + new),
                         "nothing lost, nothing twice")
        self.assertEqual(d.count(), 8, "nothing deleted by the recovery")
        # Mail after it is fetched and deleted as configured.
        d.put([fx.make_message(20)])
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 9)
        self.assertEqual(d.count(), 8)


if __name__ == "__main__":
    unittest.main()


class RecoveryCrashTest(unittest.TestCase):
    """kill -9 in the middle of a recovery: the state says so, the next
    run recovers again, and what the first delivered is matched, not
    fetched twice."""

    def test_kill9_during_recovery_then_recover_again(self):
        import faultproxy
        import signal
        env = fx.Env()
        self.addCleanup(env.close)
        d = env.dovecot
        old = [fx.make_message(i) for i in range(100)]
        d.put(old)
        f = env.idlefetch(tls="implicit", name="rcrash")
        self.assertEqual(f.once(), 0, f.log())
        d.stop()
        md = d.maildir()
        for p in glob.glob(md + "/dovecot-uidlist") + glob.glob(md + "/dovecot.index*"):
            os.unlink(p)
        d.start()
        new = [fx.make_message(i, size=20000) for i in range(200, 450)]
        d.put(new)
        # Through a 1 MB/s link each batch of 100 (2 MB) takes 2 s.
        proxy = faultproxy.FaultProxy(d.imaps_port)
        self.addCleanup(proxy.stop)
        proxy.throttle(1024 * 1024, sticky=True)
        g = env.idlefetch(tls="implicit", name="rcrash", port=proxy.port)
        g.start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() > 100, 30),
                        g.log())
        g.stop(signal.SIGKILL)
        got = f.md.count()
        self.assertLess(got, 350, "killed in the middle of it")
        with open(glob.glob(f.state_dir + "/*/INBOX.state")[0]) as st:
            self.assertIn("recovering 1", st.read())
        proxy.clear()
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("a recovery of this folder was cut short", f.log())
        self.assertIn(f"{got} message(s) matched the Maildir, {350 - got} "
                      "new delivered", f.log())
        self.assertEqual(sorted(f.md.contents()), sorted(old + new))
