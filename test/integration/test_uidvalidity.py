"""A folder whose UIDVALIDITY changes is neither re-delivered silently nor
skipped silently."""
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
        d = self.env.dovecot
        d.stop()
        md = d.maildir()
        for p in glob.glob(md + "/dovecot-uidlist") + glob.glob(md + "/dovecot.index*"):
            os.unlink(p)
        d.start()

    def test_uidvalidity_change_stops_the_folder_until_the_user_decides(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(5)])
        f = self.env.idlefetch(tls="implicit", name="uidv")
        self.assertEqual(f.once(), 0, f.log())
        self.renumber()
        d.put([fx.make_message(10)])
        self.assertEqual(f.once(), 1)
        self.assertIn("UIDVALIDITY changed from", f.log())
        self.assertIn("remove " + f.state_dir, f.log())
        self.assertEqual(f.md.count(), 5, "nothing delivered a second time")
        # The user chose to fetch the renumbered folder as new.
        for p in glob.glob(f.state_dir + "/*/*.state"):
            os.unlink(p)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 5 + 6)


if __name__ == "__main__":
    unittest.main()
