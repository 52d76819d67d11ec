"""The --once, IDLE push, restart and after-delivery tests against
Courier-IMAP and Cyrus IMAP, run from Debian 12's packages (see
test/lib/servers.py). Both name folders below INBOX with "." (INBOX.Archive),
Courier has no MOVE, and Courier numbers messages in an unselected folder
afresh in every session."""
import os
import time
import unittest

import fixture as fx
import servers as sv

WHY_NOT = sv.cannot_run()


class Compat:
    """Tests shared by both servers; SERVER names the fixture class."""

    SERVER = None

    def setUp(self):
        self.env = sv.ServerEnv(self.SERVER)
        self.srv = self.env.dovecot

    def tearDown(self):
        self.env.close()

    def fetcher(self, **kw):
        kw.setdefault("tls", "starttls")
        kw.setdefault("name", "acct")
        return self.env.idlefetch(**kw)

    def test_once_delivers_each_message_once_and_changes_no_flag(self):
        bodies = [fx.make_message(i, size=1024 * 1024 if i == 7 else 0)
                  for i in range(30)]
        self.srv.put(bodies)
        before = fx.permanent(self.srv.flags())
        f = self.fetcher()
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(sorted(f.md.contents()), sorted(bodies),
                         "bytes identical to what was put on the server")
        self.assertEqual(f.md.files("tmp"), [])
        self.assertEqual(fx.permanent(self.srv.flags()), before,
                         "keep mode changes no flag on the server")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 30, "a second run adds nothing")

    def test_idle_delivers_new_mail_promptly(self):
        self.srv.put([fx.make_message(0)])
        # A poll every 600 s cannot explain a delivery within seconds.
        f = self.fetcher(extra="poll_interval = 600\n").start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 20), f.log())
        for i in range(1, 4):
            t0 = time.monotonic()
            self.srv.deliver(fx.make_message(i))
            self.assertTrue(fx.wait_until(lambda: f.md.count() == i + 1, 10),
                            f.log())
            lat = time.monotonic() - t0
            self.assertLess(lat, self.PUSH_WITHIN,
                            "pushed through IDLE, not found by a later poll")
        self.assertEqual(f.stop(), 0)

    def test_server_restart_while_idling_reconnects_and_delivers(self):
        self.srv.put([fx.make_message(i) for i in range(5)])
        f = self.fetcher().start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 5, 20), f.log())
        self.srv.restart()
        self.srv.deliver(fx.make_message(5))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 6, 30), f.log())
        self.srv.deliver(fx.make_message(6))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 7, 15), f.log())
        self.assertEqual(f.stop(), 0)
        ids = f.md.message_ids()
        self.assertEqual(len(ids), len(set(ids)), "no duplicate")
        self.assertEqual(sorted(ids), sorted(self.srv.message_ids()))

    def test_delete_empties_the_server_folder(self):
        self.srv.put([fx.make_message(i) for i in range(25)])
        ids = set(self.srv.message_ids())
        f = self.fetcher(after="delete")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(set(f.md.message_ids()), ids)
        self.assertEqual(self.srv.count(), 0, "every delivered message deleted")
        self.srv.put([fx.make_message(100)])
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 26)
        self.assertEqual(self.srv.count(), 0)

    def test_move_to_the_servers_archive_folder(self):
        self.srv.create("Archive")
        self.srv.put([fx.make_message(i) for i in range(12)])
        ids = set(self.srv.message_ids())
        f = self.fetcher(after="move:INBOX.Archive")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(set(f.md.message_ids()), ids)
        self.assertEqual(self.srv.count(), 0)
        self.assertEqual(set(self.srv.message_ids("Archive")), ids)

    def test_move_target_named_without_its_prefix_is_refused_before_fetching(self):
        self.srv.create("Archive")
        self.srv.put([fx.make_message(i) for i in range(3)])
        f = self.fetcher(after="move:Archive")
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("INBOX.Archive", f.log(), "the server's name is given")
        self.assertEqual(f.md.count(), 0, "nothing fetched for a bad target")
        self.assertEqual(self.srv.count(), 3, "nothing touched on the server")

    def test_nested_folder_named_in_the_configurations_style_is_explained(self):
        self.srv.create("Lists")
        self.srv.create("Lists.dev")
        f = self.fetcher(folders="Lists/dev")
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("the server has 'INBOX.Lists.dev'", f.log())

    def test_folder_below_inbox(self):
        self.srv.create("Lists")
        self.srv.put([fx.make_message(i) for i in range(4)], folder="Lists")
        f = self.fetcher(folders="INBOX.Lists")
        self.assertEqual(f.once(), 0, f.log())
        got = fx.Maildir(f"{f.maildir_path}/.INBOX.Lists").message_ids()
        self.assertEqual(sorted(got), sorted(self.srv.message_ids("Lists")))

    def test_subscribed_folders_below_inbox_but_the_excluded(self):
        for name in ("Lists", "Trash", "Work"):
            self.srv.create(name)
            self.srv.subscribe(name)
        self.srv.create("Hidden")  # there, but not subscribed
        self.srv.put([fx.make_message(i) for i in range(2)], folder="Lists")
        self.srv.put([fx.make_message(10)], folder="Trash")
        self.srv.put([fx.make_message(20)], folder="Hidden")
        self.srv.put([fx.make_message(30)])
        # "Trash" also matches the server's INBOX.Trash.
        f = self.fetcher(folders="*", extra="exclude = Trash\n")
        self.assertEqual(f.once("-v"), 0, f.log())
        self.assertEqual(f.md.count(), 1)
        lists = fx.Maildir(f"{f.maildir_path}/.INBOX.Lists")
        self.assertEqual(sorted(lists.message_ids()),
                         sorted(self.srv.message_ids("Lists")))
        self.assertEqual(fx.Maildir(f"{f.maildir_path}/.INBOX.Work").count(),
                         0)
        self.assertEqual(sorted(n for n in os.listdir(f.maildir_path)
                                if n.startswith(".")),
                         [".INBOX.Lists", ".INBOX.Work"])
        self.assertIn(self.LISTS_WITH, f.log())
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(lists.count(), 2, "a second run adds nothing")


@unittest.skipIf(WHY_NOT, WHY_NOT)
class CourierTest(Compat, unittest.TestCase):
    SERVER = sv.Courier
    # IMAP_ENHANCEDIDLE watches the Maildir through gamin.
    PUSH_WITHIN = 5
    LISTS_WITH = 'LSUB \\"\\" \\"*\\"'  # no LIST-EXTENDED

    def three_restarts(self, f):
        """Six messages, then three Courier restarts, each with a new file
        that sorts first (it takes a low UID) and one that sorts last:
        every message arrives once."""
        self.srv.put([fx.make_message(i) for i in range(6)])
        self.assertEqual(f.once(), 0, f.log())
        n = 6
        for round_ in range(3):
            self.srv.put([fx.make_message(100 + round_)], first=True)
            self.srv.restart()
            self.srv.put([fx.make_message(200 + round_)])
            self.assertEqual(f.once(), 0, f.log())
            n += 2
            ids = f.md.message_ids()
            self.assertEqual(len(ids), n, f"round {round_}: {f.log()}")
            self.assertEqual(len(set(ids)), n, "0 duplicated")
            self.assertEqual(sorted(ids), sorted(self.srv.message_ids()),
                             "0 lost")

    def test_keep_survives_courier_renumbering_new_files(self):
        """Courier keeps its UID list only once a client SELECTs; new files
        whose names sort first then take low UIDs in later sessions. Every
        message arrives once across three restarts."""
        f = self.fetcher()
        self.three_restarts(f)

    def test_examine_only_renumbering_is_recovered_without_a_person(self):
        """With read_only (EXAMINE), Courier never saves its UID list: each
        restart renumbers the folder (a new UIDVALIDITY, or the same one
        with other messages under its UIDs). idlefetch recovers each time
        by matching against the Maildir: every message arrives once."""
        f = self.fetcher(extra="read_only = yes\n")
        self.three_restarts(f)
        self.assertIn("recovered the renumbered folder", f.log())
        self.assertNotIn("error", f.log())

    def test_never_selected_folder_is_fetched_on_every_run(self):
        """Courier gives a folder nobody SELECTed a new UIDVALIDITY in each
        EXAMINE session; idlefetch SELECTs, so runs agree."""
        self.srv.put([fx.make_message(i) for i in range(3)])
        f = self.fetcher()
        for run in range(3):
            self.assertEqual(f.once(), 0, f"run {run}: {f.log()}")
        self.assertEqual(f.md.count(), 3)
        self.assertNotIn("UIDVALIDITY changed", f.log())
        self.assertNotIn("renumbered", f.log())


@unittest.skipIf(WHY_NOT, WHY_NOT)
class CyrusTest(Compat, unittest.TestCase):
    SERVER = sv.Cyrus
    PUSH_WITHIN = 3
    LISTS_WITH = 'LIST (SUBSCRIBED) \\"\\" \\"*\\"'  # LIST-EXTENDED

    def test_implicit_tls(self):
        self.srv.put([fx.make_message(i) for i in range(5)])
        f = self.fetcher(tls="implicit")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 5)


if __name__ == "__main__":
    unittest.main()
