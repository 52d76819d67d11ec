"""A Maildir unmounted or replaced, or a state directory lost, is refused:
nothing is written to the wrong place and nothing is deleted on the server
from a state that may be lost. A Maildir that comes back is used again."""
import os
import shutil
import unittest

import fixture as fx


class LostTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.addCleanup(self.env.close)

    def test_unmounted_maildir_is_refused_and_nothing_deleted(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(3)])
        f = self.env.idlefetch(tls="implicit", name="lost", after="delete")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(d.count(), 0)
        # The disk is not mounted: its mount point is an empty directory.
        away = f.maildir_path + ".mounted"
        os.rename(f.maildir_path, away)
        os.mkdir(f.maildir_path)
        d.put([fx.make_message(i) for i in range(10, 12)])
        self.assertEqual(f.once(), 1)
        self.assertIn("the Maildir has lost", f.log())
        self.assertEqual(os.listdir(f.maildir_path), [],
                         "nothing made in the mount point")
        self.assertEqual(d.count(), 2, "nothing deleted on the server")
        # Mounted again.
        os.rmdir(f.maildir_path)
        os.rename(away, f.maildir_path)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 5)
        self.assertEqual(d.count(), 0)

    def test_lost_state_directory_is_refused(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(3)])
        f = self.env.idlefetch(tls="implicit", name="nostate", after="delete")
        self.assertEqual(f.once(), 0, f.log())
        shutil.rmtree(f.state_dir)
        os.mkdir(f.state_dir)
        d.put([fx.make_message(9)])
        self.assertEqual(f.once(), 1)
        self.assertIn("belongs to another state", f.log())
        self.assertEqual(d.count(), 1, "nothing deleted on the server")
        self.assertEqual(f.md.count(), 3)
        # The way out the error names.
        os.unlink(os.path.join(f.maildir_path, "idlefetch-nostate.id"))
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 4)

    def test_maildir_replaced_while_running_resumes_when_it_is_back(self):
        d = self.env.dovecot
        f = self.env.idlefetch(tls="implicit", name="swap", after="delete")
        f.start()
        d.put([fx.make_message(1)])
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 20), f.log())
        # Replaced by an empty Maildir (the disk swapped under it).
        away = f.maildir_path + ".real"
        os.rename(f.maildir_path, away)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(f.maildir_path, sub))
        d.put([fx.make_message(2)])
        self.assertTrue(fx.wait_until(
            lambda: "unmounted or replaced" in f.log(), 20), f.log())
        self.assertEqual(os.listdir(os.path.join(f.maildir_path, "new")), [])
        self.assertEqual(d.count(), 1, "kept on the server")
        shutil.rmtree(f.maildir_path)
        os.rename(away, f.maildir_path)
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 60), f.log())
        self.assertTrue(fx.wait_until(lambda: d.count() == 0, 20))
        self.assertEqual(f.stop(), 0)


if __name__ == "__main__":
    unittest.main()
