"""A disk that stalls: the account writing to it waits, with bounded
memory, and the other accounts of the process go on delivering."""
import os
import time
import unittest

import fixture as fx

SLOWDISK = os.environ.get("SLOWDISK_LIB")


def read_bytes(pid):
    """Bytes the process has read so far, sockets included."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


@unittest.skipUnless(SLOWDISK, "SLOWDISK_LIB (built by CMake) is not set")
class SlowDiskTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def test_a_stalled_disk_holds_up_only_its_own_account(self):
        d = self.env.dovecot
        big = fx.make_message(0, size=40 * 1024 * 1024)
        d.put([big])
        slow_md = os.path.join(self.env.root, "slowdisk", "Maildir")
        fast_md = os.path.join(self.env.root, "fastdisk", "Maildir")
        f = self.env.idlefetch(tls="implicit", name="slow", maildir=slow_md)
        with open(f.conf, "a") as c:
            c.write(fx.account_section("fast", d, "Archive", fast_md))
        asan = os.environ.get("ASAN_OPTIONS", "")
        f.start(env={"LD_PRELOAD": SLOWDISK, "SLOWDISK_MATCH": "/slowdisk/Maildir/tmp/",
                     "SLOWDISK_SECS": "6",
                     # The preloaded library comes before a sanitizer runtime.
                     "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"})
        self.assertTrue(fx.wait_until(
            lambda: 'account=fast folder="Archive" msg="selected' in f.log()
            and 'account=slow folder="INBOX" msg="1 new message' in f.log(),
            15), f.log())
        time.sleep(0.5)  # the first body write of "slow" is stalled now
        fast = fx.Maildir(fast_md + "/.Archive")
        slow = fx.Maildir(slow_md)
        t0 = time.monotonic()
        d.save(fx.make_message(1), "Archive")
        peak = 0

        def fast_arrived():
            nonlocal peak
            peak = max(peak, fx.rss_kb(f.proc.pid))
            return fast.count() == 1
        self.assertTrue(fx.wait_until(fast_arrived, 10, step=0.02), f.log())
        delay = time.monotonic() - t0
        self.assertEqual(slow.count(), 0, "the slow disk is still stalled")
        # Well into the stall: the 40 MB would long be read by now if the
        # connection had not stopped reading.
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
        read_in_stall = read_bytes(f.proc.pid)
        self.assertEqual(slow.count(), 0)

        def slow_arrived():
            nonlocal peak
            peak = max(peak, fx.rss_kb(f.proc.pid))
            return slow.count() == 1
        self.assertTrue(fx.wait_until(slow_arrived, 60, step=0.02), f.log())
        print(f"\nother account delivered {delay:.2f} s into a 6 s disk "
              f"stall; {read_in_stall / 1e6:.1f} MB read 2 s into it; peak "
              f"RSS {peak / 1024:.1f} MB streaming a 40 MB message")
        self.assertLess(delay, 3.0, "the other account did not wait")
        self.assertLess(read_in_stall, 10e6, "reading stopped while the "
                        "disk was stalled")
        if "ASAN_OPTIONS" not in os.environ:  # a sanitizer's RSS is its own
            self.assertLess(peak, 25 * 1024, "memory stayed bounded")
        self.assertEqual(f.stop(), 0)
        self.assertEqual(slow.contents(), [big])


if __name__ == "__main__":
    unittest.main()
