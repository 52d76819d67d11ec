"""A full disk, a read-only one, a failing rename: fetching stops without
losing or half-writing a message, nothing is deleted on the server, and the
daemon goes on by itself once the cause is gone."""
import os
import subprocess
import unittest

import fixture as fx


class DiskFullTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.mnt = os.path.join(self.env.root, "small")
        os.makedirs(self.mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                            self.mnt], capture_output=True)
        if r.returncode != 0:
            self.env.close()
            self.skipTest("cannot mount a small tmpfs here: "
                          + r.stderr.decode().strip())

    def tearDown(self):
        subprocess.run(["umount", self.mnt])
        self.env.close()

    def test_full_disk_stops_fetching_and_loses_nothing(self):
        msgs = [fx.make_message(i, size=150000) for i in range(20)]
        self.env.dovecot.put(msgs)
        f = self.env.idlefetch(tls="implicit", name="full",
                               maildir=os.path.join(self.mnt, "Maildir"))
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("No space left on device", f.log())
        errors = [l for l in f.log().splitlines() if " error " in l]
        self.assertEqual(len(errors), 1, "one failure, one error line: "
                         + "\n".join(errors))
        got = f.md.contents()
        self.assertGreater(len(got), 0)
        self.assertLess(len(got), 20)
        for body in got:
            self.assertIn(body, msgs, "every file in new/ is complete")
        self.assertEqual(f.md.files("tmp"), [], "the partial message was removed")
        # Room again: the rest arrives, nothing twice.
        subprocess.run(["mount", "-o", "remount,size=20m", self.mnt], check=True)
        self.assertEqual(f.once(), 0, f.log())
        got = f.md.contents()
        self.assertEqual(len(got), 20)
        self.assertEqual(sorted(got), sorted(msgs))

    def test_daemon_resumes_by_itself_after_full_and_read_only(self):
        d = self.env.dovecot
        msgs = [fx.make_message(i, size=150000) for i in range(12)]
        d.put(msgs)
        f = self.env.idlefetch(tls="implicit", name="fullro", after="delete",
                               maildir=os.path.join(self.mnt, "Maildir"))
        f.start()
        self.assertTrue(fx.wait_until(
            lambda: "No space left on device" in f.log(), 30), f.log())
        got = f.md.contents()
        self.assertLess(len(got), 12)
        self.assertGreaterEqual(d.count(), 12 - len(got),
                                "only what is in the Maildir left the server")
        # Room again, but the file system turns read-only.
        subprocess.run(["mount", "-o", "remount,size=20m,ro", self.mnt],
                       check=True)
        self.assertTrue(fx.wait_until(
            lambda: "Read-only file system" in f.log(), 60), f.log())
        self.assertGreaterEqual(d.count(), 12 - f.md.count())
        subprocess.run(["mount", "-o", "remount,rw", self.mnt], check=True)
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 12, 120),
                        f.log())
        self.assertTrue(fx.wait_until(lambda: d.count() == 0, 30))
        self.assertEqual(sorted(f.md.contents()), sorted(msgs))
        self.assertEqual(f.md.files("tmp"), [])
        self.assertEqual(f.stop(), 0)


SLOWDISK = os.environ.get("SLOWDISK_LIB")


@unittest.skipUnless(SLOWDISK, "SLOWDISK_LIB (built by CMake) is not set")
class FailedRenameTest(unittest.TestCase):
    def test_failed_rename_keeps_the_message_on_the_server_and_retries(self):
        env = fx.Env()
        self.addCleanup(env.close)
        msgs = [fx.make_message(i) for i in range(3)]
        env.dovecot.put(msgs)
        f = env.idlefetch(tls="implicit", name="rename", after="delete")
        asan = os.environ.get("ASAN_OPTIONS", "")
        f.start(env={"LD_PRELOAD": SLOWDISK,
                     "BADDISK_RENAME_MATCH": "/Maildir/new/",
                     "BADDISK_RENAME_FAILS": "2",
                     "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"})
        self.assertTrue(fx.wait_until(
            lambda: f.log().count("cannot deliver UID") >= 2, 60), f.log())
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 3, 60), f.log())
        self.assertTrue(fx.wait_until(lambda: env.dovecot.count() == 0, 30))
        self.assertEqual(sorted(f.md.contents()), sorted(msgs))
        self.assertEqual(f.md.files("tmp"), [])
        self.assertEqual(f.stop(), 0)


if __name__ == "__main__":
    unittest.main()
