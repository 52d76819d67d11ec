"""The Message-ID index (state_dir/ACCOUNT/FOLDER.index) that a recovery
matches a renumbered folder against stays proportional to what the server
holds: lines of messages deleted on the server (by another client, or by
after = delete) are dropped. A recovery reads it as a stream: its memory
does not grow with the index, and it still delivers nothing twice."""
import glob
import os
import random
import shutil
import unittest

import fixture as fx
import scripted

# A recovery may take this much private writable memory (RLIMIT_DATA)
# beyond what the idle daemon holds: far less than 500,000 index lines take
# to hold (48 bytes each, plus the array's growth).
HEADROOM = 8 * 1024 * 1024


def vm_data(pid):
    """What RLIMIT_DATA counts of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def sanitized():
    """An ASan build maps terabytes of shadow memory at its start: no
    RLIMIT_DATA fits it, so its runs go without the limit."""
    if "ASAN_OPTIONS" in os.environ:
        return True
    with open(shutil.which(fx.IDLEFETCH) or fx.IDLEFETCH, "rb") as f:
        return b"__asan_init" in f.read()


class IndexCase(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.d = self.env.dovecot

    def tearDown(self):
        self.env.close()

    def index(self, f):
        return glob.glob(f.state_dir + "/*/INBOX.index")[0]

    def lines(self, f):
        """The index's entry lines: "UIDVALIDITY UID SIZE KEY FILE"."""
        with open(self.index(f)) as fh:
            return [l.split() for l in fh if not l.startswith("#")]

    def expunge(self, uids):
        self.d.doveadm("expunge", "-u", fx.USER, "mailbox", "INBOX", "uid",
                       uids)

    def age(self, f, secs):
        """As if idlefetch had delivered its files secs ago: their names
        (and the index's FILE fields) start with the time they were
        named."""
        for sub in ("new", "cur"):
            for n in os.listdir(f"{f.md.path}/{sub}"):
                sec, rest = n.split(".", 1)
                new = f"{int(sec) - secs}.{rest}"
                os.rename(f"{f.md.path}/{sub}/{n}", f"{f.md.path}/{sub}/{new}")
        out = []
        with open(self.index(f)) as fh:
            for line in fh:
                p = line.split()
                if not line.startswith("#"):
                    sec, rest = p[4].split(".", 1)
                    p[4] = f"{int(sec) - secs}.{rest}"
                out.append(" ".join(p) + "\n")
        with open(self.index(f), "w") as fh:
            fh.writelines(out)

    def renumber(self):
        """Dovecot forgets its UIDs: the same messages, a new UIDVALIDITY."""
        self.d.stop()
        md = self.d.maildir()
        for p in (glob.glob(md + "/dovecot-uidlist") +
                  glob.glob(md + "/dovecot.index*")):
            os.unlink(p)
        self.d.start()


class CompactionTest(IndexCase):
    def test_keep_index_shrinks_to_what_the_server_holds(self):
        msgs = [fx.make_message(i) for i in range(100)]
        self.d.put(msgs)
        f = self.env.idlefetch(name="idxkeep", after="keep")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 100)
        self.assertEqual(len(self.lines(f)), 100)
        # Another client deletes 90 of them on the server.
        self.expunge("1:90")
        self.assertEqual(self.d.count(), 10)
        self.assertEqual(f.once(), 0, f.log())
        got = self.lines(f)
        self.assertEqual(sorted(int(l[1]) for l in got), list(range(91, 101)),
                         "one line for each message the server holds")
        self.assertIn("compacted the folder's index: 10 line(s) kept, 90",
                      f.log())
        self.assertEqual(f.md.count(), 100, "the Maildir keeps every one")
        # The compacted index still serves a recovery: nothing twice.
        self.renumber()
        new = [fx.make_message(i) for i in range(200, 203)]
        self.d.put(new)
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("recovered the renumbered folder: 10 message(s) "
                      "matched the Maildir, 3 new delivered", f.log())
        self.assertEqual(sorted(f.md.contents()), sorted(msgs + new))

    def test_after_delete_index_does_not_keep_growing(self):
        f = self.env.idlefetch(name="idxdel", after="delete")
        sent = []
        for r in range(3):
            batch = [fx.make_message(r * 100 + i) for i in range(80)]
            sent += batch
            self.d.put(batch)
            self.assertEqual(f.once(), 0, f.log())
            self.assertEqual(self.d.count(), 0, "deleted after delivery")
            self.assertLess(len(self.lines(f)), 80,
                            f"round {r}: no line of a message the server "
                            "deleted stays")
        self.assertEqual(sorted(f.md.contents()), sorted(sent))
        size = os.path.getsize(self.index(f))
        self.assertLess(size, 80 * 100, "240 deliveries leave a small index")


class RecoveryMemoryTest(IndexCase):
    def test_recovery_over_a_huge_index_runs_in_little_memory(self):
        old = [fx.make_message(i) for i in range(5)]
        self.d.put(old)
        f = self.env.idlefetch(name="idxmem")
        # What the daemon holds once it has synced and waits (its
        # threadpool's stacks among it), whatever the index.
        f.start("-v")
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 5 and
                                      "conn IDLE_START -> IDLE" in f.log(),
                                      30), f.log())
        idle = vm_data(f.proc.pid)
        self.assertEqual(f.stop(), 0, f.log())
        self.assertGreater(idle, 0)
        # Years of mail since deleted on the server, as an index that was
        # never compacted holds them: 500,000 lines (37 MB).
        rnd = random.Random(7)
        with open(self.index(f), "a") as fh:
            for i in range(500000):
                fh.write(f"1 {i + 1} {1000 + i % 5000} "
                         f"{rnd.getrandbits(64):016x} "
                         f"1600000000.M{i:06d}P1Q{i}X0000abcd\n")
        self.renumber()
        new = [fx.make_message(i) for i in range(10, 12)]
        self.d.put(new)
        if not sanitized():
            f.wrap = ["prlimit", f"--data={idle + HEADROOM}"]
        self.assertEqual(f.once(), 0, f.log())
        f.wrap = []
        self.assertIn("recovered the renumbered folder: 5 message(s) matched "
                      "the Maildir, 2 new delivered", f.log())
        self.assertEqual(sorted(f.md.contents()), sorted(old + new),
                         "nothing delivered twice, nothing lost")
        self.assertEqual(len(self.lines(f)), 7,
                         "the index holds what the server holds")
        # And on from there, as usual.
        self.d.put([fx.make_message(20)])
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 8)


class RestoredFolderTest(IndexCase):
    def test_folder_recreated_empty_then_restored_is_not_fetched_again(self):
        """An admin recreates a broken mailbox (empty, a new UIDVALIDITY);
        idlefetch recovers against the empty folder and syncs it again;
        then the mailbox comes back from a backup (another UIDVALIDITY):
        every message matches the Maildir, none is delivered twice."""
        msgs = [fx.make_message(i) for i in range(100)]
        self.d.put(msgs)
        f = self.env.idlefetch(name="idxrestore", after="keep")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 100)
        self.age(f, 7200)
        md = self.d.maildir()
        backup = self.env.root + "/backup"
        os.makedirs(backup)
        # Recreated empty: the messages go to the backup.
        self.d.stop()
        for sub in ("new", "cur"):
            shutil.move(f"{md}/{sub}", f"{backup}/{sub}")
            os.makedirs(f"{md}/{sub}")
        for p in (glob.glob(md + "/dovecot-uidlist") +
                  glob.glob(md + "/dovecot.index*")):
            os.unlink(p)
        self.d.start()
        self.d.put([])
        self.assertEqual(self.d.count(), 0)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.once(), 0, f.log())  # a sync of the empty folder
        # Restored from the backup.
        self.d.stop()
        for sub in ("new", "cur"):
            shutil.rmtree(f"{md}/{sub}")
            shutil.move(f"{backup}/{sub}", f"{md}/{sub}")
        for p in (glob.glob(md + "/dovecot-uidlist") +
                  glob.glob(md + "/dovecot.index*")):
            os.unlink(p)
        self.d.start()
        self.d.put([])
        self.assertEqual(self.d.count(), 100)
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("recovered the renumbered folder: 100 message(s) "
                      "matched the Maildir, 0 new delivered", f.log())
        self.assertEqual(f.md.count(), 100, "nothing delivered twice")
        self.assertEqual(sorted(f.md.contents()), sorted(msgs))


class PartialListingTest(scripted.ScriptedCase):
    fetcher_name = "idxpart"

    def test_partial_uid_listing_does_not_compact_the_index(self):
        """A server that answers the compaction's UID FETCH 1:* with OK
        but only some of its UIDs: the index keeps the lines of every
        message still there, and a recovery after it fetches none again."""
        mb = scripted.Mailbox([fx.make_message(i) for i in range(100)],
                              uidvalidity=7)

        def partial(conn, tag, out, done, body):
            if conn.srv.commands[-1].endswith("UID FETCH 1:* (UID)"):
                conn.send(b"".join(out[:3]) + done)
                return True
            return None
        srv = self.server(mb, hooks={"fetch_reply": partial})
        f = self.fetcher(srv, after="keep")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 100)
        # 90 deleted on the server: the index may hold far more.
        for u in range(1, 91):
            del mb.msgs[u]
        self.assertEqual(f.once(), 0, f.log())
        index = glob.glob(f.state_dir + "/*/INBOX.index")[0]
        with open(index) as fh:
            uids = {int(l.split()[1]) for l in fh if not l.startswith("#")}
        self.assertTrue(set(range(91, 101)) <= uids, sorted(uids))
        self.assertIn("not compacting the folder's index: the server listed "
                      "fewer UIDs than it holds messages", f.log())
        # Renumbered: all ten still match.
        old = dict(mb.msgs)
        mb.msgs.clear()
        mb.uidvalidity = 8
        mb.next_uid = 1
        for u in sorted(old):
            mb.msgs[mb.next_uid] = old[u]
            mb.next_uid += 1
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("recovered the renumbered folder: 10 message(s) "
                      "matched the Maildir, 0 new delivered", f.log())
        self.assertEqual(f.md.count(), 100, "nothing delivered twice")


if __name__ == "__main__":
    unittest.main()
