"""A full disk stops fetching without losing or half-writing a message."""
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


if __name__ == "__main__":
    unittest.main()
