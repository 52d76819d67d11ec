"""What an idle idlefetch keeps resident, seen from outside the process."""
import os
import unittest

import fixture as fx

# glibc reserves each arena beyond the main one as a 64 MiB-aligned heap.
ARENA_ALIGN = 64 * 1024 * 1024


def thread_arenas(pid):
    """Anonymous read-write mappings that start on a 64 MiB boundary: the
    heaps glibc gives threads that allocate (the main arena is [heap])."""
    n = 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            lo = int(parts[0].split("-")[0], 16)
            if len(parts) == 5 and parts[1] == "rw-p" and lo % ARENA_ALIGN == 0:
                n += 1
    return n


@unittest.skipIf("ASAN_OPTIONS" in os.environ,
                 "glibc's arenas: a sanitizer's allocator has its own")
class MallocArenaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = fx.Env()
        # Enough mail for the threadpool to write and sync files.
        cls.env.dovecot.put([fx.make_message(i, size=64 * 1024 if i % 10 == 0
                                             else 0) for i in range(200)])

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def test_idle_daemon_keeps_a_single_malloc_arena(self):
        f = self.env.idlefetch(tls="implicit", name="arena")
        f.start()
        try:
            self.assertTrue(fx.wait_until(lambda: len(f.md.files("new")) ==
                                          200, 60), f.log())
            self.assertTrue(f.idle(), f.log())
            self.assertEqual(thread_arenas(f.proc.pid), 0,
                             "the threadpool's threads allocate from the "
                             "main arena, whose free pages are trimmed")
        finally:
            f.stop()

    def test_users_arena_setting_wins(self):
        f = self.env.idlefetch(tls="implicit", name="arena4")
        f.start(env={"MALLOC_ARENA_MAX": "8"})
        try:
            self.assertTrue(fx.wait_until(lambda: len(f.md.files("new")) ==
                                          200, 60), f.log())
            self.assertGreater(thread_arenas(f.proc.pid), 0,
                               "MALLOC_ARENA_MAX=8 from the environment "
                               "is not overridden")
        finally:
            f.stop()


if __name__ == "__main__":
    unittest.main()
