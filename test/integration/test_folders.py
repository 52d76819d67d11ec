"""Many folders of one account: NOTIFY watches them all on one connection;
without it, at most max_connections, the last polling with STATUS. Dovecot
is limited to 10 connections per user and address, as it is by default."""
import imaplib
import os
import re
import subprocess
import time
import unittest

import fixture as fx

NOTIFY_CAPS = fx.DEFAULT_CAPS + " NOTIFY"
FOLDERS = ["INBOX"] + [f"F{i:02d}" for i in range(1, 20)]


def create_folders(dovecot, names):
    for name in names:
        if name != "INBOX":
            dovecot.doveadm("mailbox", "create", "-u", fx.USER, name)


def folder_md(f, name):
    path = f.maildir_path if name == "INBOX" else f"{f.maildir_path}/.{name}"
    return fx.Maildir(path)


class FoldersTest(unittest.TestCase):
    caps = NOTIFY_CAPS

    def setUp(self):
        self.env = fx.Env(caps=self.caps, userip=10)
        create_folders(self.env.dovecot, FOLDERS)

    def tearDown(self):
        self.env.close()

    def start(self, extra="poll_interval = 600\n", **kw):
        f = self.env.idlefetch(name="many", folders=", ".join(FOLDERS),
                               extra=extra, **kw).start("-v")
        self.assertTrue(fx.wait_until(
            lambda: "conn IDLE_START -> IDLE" in f.log(), 30), f.log())
        return f

    def deliver_to_every_folder(self, f, within):
        """One message into each folder; each must land in its own Maildir
        within `within` seconds. Returns the slowest delay."""
        t0 = time.monotonic()
        for i, name in enumerate(FOLDERS):
            self.env.dovecot.save(fx.make_message(100 + i), name)
        ok = fx.wait_until(lambda: all(folder_md(f, n).count() == 1
                                       for n in FOLDERS), within, step=0.05)
        missing = [n for n in FOLDERS if folder_md(f, n).count() != 1]
        self.assertTrue(ok, f"not delivered: {missing}\n" + f.log()[-4000:])
        return time.monotonic() - t0

    def test_notify_watches_20_folders_on_one_connection(self):
        f = self.start()
        self.assertIn("watching 20 folders on one connection (NOTIFY)",
                      f.log())
        self.assertEqual(f.connections(self.env.dovecot.imaps_port), 1)
        # poll_interval is 600 s: only NOTIFY can bring these in time.
        took = self.deliver_to_every_folder(f, 20)
        print(f"\n20 folders over NOTIFY: all delivered in {took:.2f} s")
        # A second round, to the folders in reverse: still one connection.
        for i, name in enumerate(reversed(FOLDERS)):
            self.env.dovecot.save(fx.make_message(200 + i), name)
        self.assertTrue(fx.wait_until(
            lambda: all(folder_md(f, n).count() == 2 for n in FOLDERS), 20),
            f.log()[-4000:])
        self.assertEqual(f.connections(self.env.dovecot.imaps_port), 1)
        self.assertEqual(self.env.dovecot.connections_refused(), 0)
        self.assertEqual(f.stop(), 0)
        for n in FOLDERS:
            self.assertEqual(len(set(folder_md(f, n).message_ids())), 2, n)

    def test_once_syncs_every_folder_over_one_connection(self):
        for i, name in enumerate(FOLDERS):
            self.env.dovecot.save(fx.make_message(i), name)
        f = self.env.idlefetch(name="once", folders=", ".join(FOLDERS))
        self.assertEqual(f.once("-v"), 0, f.log()[-3000:])
        self.assertEqual(f.log().count("logged in as"), 1, f.log()[-3000:])
        for n in FOLDERS:
            self.assertEqual(folder_md(f, n).count(), 1, n)
        self.assertEqual(f.once(), 0)
        self.assertEqual(sum(folder_md(f, n).count() for n in FOLDERS), 20)

    def test_missing_folder_does_not_stop_the_others(self):
        names = ["INBOX", "F01", "Nope", "F02"]
        for i, name in enumerate(["INBOX", "F01", "F02"]):
            self.env.dovecot.save(fx.make_message(i), name)
        f = self.env.idlefetch(name="miss", folders=", ".join(names))
        self.assertEqual(f.once(), 1, "a folder failed: --once exits 1")
        self.assertIn("cannot open folder Nope", f.log())
        for n in ["INBOX", "F01", "F02"]:
            self.assertEqual(folder_md(f, n).count(), 1, n + f.log())

    def test_utf8_folder_names_are_modified_utf7_on_the_wire(self):
        d = self.env.dovecot
        create_folders(d, ["Entwürfe", "日本語"])
        d.save(fx.make_message(1), "Entwürfe")
        d.save(fx.make_message(2), "日本語")
        f = self.env.idlefetch(name="utf8",
                               folders="INBOX, Entwürfe, 日本語",
                               extra="poll_interval = 600\n")
        self.assertEqual(f.once("-v"), 0, f.log()[-3000:])
        self.assertIn('SELECT \\"Entw&APw-rfe\\"', f.log())
        # Maildir++ folders in UTF-8; state keyed by the server's name.
        self.assertEqual(folder_md(f, "Entwürfe").count(), 1)
        self.assertEqual(folder_md(f, "日本語").count(), 1)
        self.assertTrue(os.path.exists(
            f"{f.state_dir}/utf8/Entw%26APw-rfe.state"),
            os.listdir(f"{f.state_dir}/utf8"))
        # New mail in the folder the connection waits on (Dovecot 2.3's NOTIFY
        # tells nothing of non-ASCII names: the others are polled).
        f.start("-v")
        self.assertTrue(fx.wait_until(
            lambda: "conn IDLE_START -> IDLE" in f.log(), 20), f.log())
        d.save(fx.make_message(3), "日本語")
        self.assertTrue(fx.wait_until(
            lambda: folder_md(f, "日本語").count() == 2, 15), f.log())
        self.assertEqual(f.stop(), 0)
        self.assertEqual(folder_md(f, "Entwürfe").count(), 1)

    def test_daemon_with_a_missing_folder_watches_the_others(self):
        names = ["INBOX", "F01", "Nope"]
        f = self.env.idlefetch(name="gap", folders=", ".join(names),
                               extra="poll_interval = 600\n").start("-v")
        self.assertTrue(fx.wait_until(
            lambda: "conn IDLE_START -> IDLE" in f.log(), 20), f.log()[-3000:])
        self.env.dovecot.save(fx.make_message(1), "F01")
        self.env.dovecot.lmtp(fx.make_message(2))
        self.assertTrue(fx.wait_until(
            lambda: folder_md(f, "F01").count() == 1 and
            folder_md(f, "INBOX").count() == 1, 15), f.log()[-3000:])
        self.assertIn("cannot open folder Nope", f.log())
        # Sharing a connection, it is left out until the next one; on a
        # connection of its own (without NOTIFY), that one alone retries.
        reconnects = re.findall(r'folder="([^"]+)" msg="reconnecting',
                                f.log())
        self.assertEqual(set(reconnects),
                         set() if self.caps == NOTIFY_CAPS else {"Nope"})
        self.assertEqual(f.stop(), 0)

    def test_uidvalidity_change_in_one_folder_is_recovered_on_the_side(self):
        names = ["INBOX", "F01", "F02"]
        for i, name in enumerate(names):
            self.env.dovecot.save(fx.make_message(i), name)
        f = self.env.idlefetch(name="uv", folders=", ".join(names))
        self.assertEqual(f.once(), 0, f.log())
        # F01 is recreated: same name, new UIDVALIDITY, only a new message.
        d = self.env.dovecot
        d.doveadm("mailbox", "delete", "-u", fx.USER, "F01")
        d.doveadm("mailbox", "create", "-u", fx.USER, "F01")
        for i, name in enumerate(names):
            d.save(fx.make_message(10 + i), name)
        f.start()
        self.assertTrue(fx.wait_until(
            lambda: folder_md(f, "INBOX").count() == 2 and
            folder_md(f, "F02").count() == 2, 20), f.log())
        # Without NOTIFY, F01 may be on a connection of its own: wait for it.
        self.assertTrue(fx.wait_until(
            lambda: "recovered the renumbered folder" in f.log(), 20),
            f.log()[-3000:])
        self.assertIn('folder="F01" msg="UIDVALIDITY changed', f.log())
        self.assertIn("0 message(s) matched the Maildir, 1 new delivered",
                      f.log())
        self.assertEqual(folder_md(f, "F01").count(), 2)
        # Every folder goes on getting new mail.
        d.save(fx.make_message(20), "F02")
        d.save(fx.make_message(21), "F01")
        self.assertTrue(fx.wait_until(
            lambda: folder_md(f, "F02").count() == 3 and
            folder_md(f, "F01").count() == 3, 20), f.log())
        self.assertEqual(f.stop(), 0)


# Dovecot's Maildir++ layout refuses a '.' in a name when its separator is
# '/'; its fs layout holds both a.b and a/b, as many servers do.
FS_LAYOUT = "mail_location = maildir:%h/Maildir:LAYOUT=fs\n"
CLASH = ["a.b", "a/b"]


class MaildirClashTest(unittest.TestCase):
    """folders = * where the server has both a.b and a/b: Maildir++ spells
    both .a.b. One owner keeps it (the folder whose state has delivered
    there; with no state, the name that sorts first, "a.b"), whatever the
    order the server lists them in; the other is not fetched, and a
    warning names both."""

    def setUp(self):
        self.env = fx.Env(extra=FS_LAYOUT)
        self.d = self.env.dovecot
        for name in CLASH:
            self.d.doveadm("mailbox", "create", "-u", fx.USER, name)
        self.sent = {name: [] for name in CLASH}

    def tearDown(self):
        self.env.close()

    def subscribe(self, *names):
        """Subscribes to names alone, in that order: Dovecot lists the
        subscribed folders in the order of its subscriptions file."""
        for name in CLASH:
            self.d.doveadm("mailbox", "unsubscribe", "-u", fx.USER, name)
        for name in names:
            self.d.doveadm("mailbox", "subscribe", "-u", fx.USER, name)
        self.assertEqual(self.listed(), list(names))

    def listed(self):
        """What LIST (SUBSCRIBED) says, in the server's order."""
        m = imaplib.IMAP4("127.0.0.1", self.d.imap_port)
        try:
            m.login(fx.USER, fx.PASSWORD)
            typ, _ = m._simple_command("LIST", "(SUBSCRIBED)", '""', '"*"')
            self.assertEqual(typ, "OK")
            lines = m.untagged_responses.get("LIST", [])
            return [l.decode().rsplit(" ", 1)[1].strip('"') for l in lines
                    if b"\\NonExistent" not in l and
                    l.decode().rsplit(" ", 1)[1].strip('"') in CLASH]
        finally:
            m.logout()

    def mail(self, name, i):
        msg = fx.make_message(i)
        self.d.save(msg, name)
        self.sent[name].append(fx.message_id(msg))

    def once(self, f):
        """One --once pass; its exit code and the warnings it logged."""
        start = len(f.log()) if os.path.exists(f.logfile) else 0
        rc = f.once()
        return rc, [l for l in f.log()[start:].splitlines()
                    if " warn " in l]

    def clash_warnings(self, warns, left_out, owner):
        return [l for l in warns if f"not fetching '{left_out}'" in l and
                f"that of '{owner}'" in l and "/.a.b" in l]

    def assertHolds(self, f, owner):
        ab = fx.Maildir(f"{f.maildir_path}/.a.b")
        self.assertEqual(sorted(ab.message_ids()), sorted(self.sent[owner]),
                         f.log()[-3000:])
        self.assertEqual(f.md.count(), 0)
        self.assertEqual(sorted(n for n in os.listdir(f.maildir_path)
                                if n.startswith(".")), [".a.b"])

    def test_the_folder_whose_state_owns_the_maildir_folder_keeps_it(self):
        # a/b alone first: it delivers into .a.b, and its state says so.
        self.subscribe("a/b")
        self.mail("a/b", 1)
        self.mail("a/b", 2)
        self.mail("a.b", 3)
        f = self.env.idlefetch(name="clash", folders="*")
        rc, warns = self.once(f)
        self.assertEqual(rc, 0, f.log()[-3000:])
        self.assertEqual([l for l in warns if "not fetching" in l], [])
        self.assertHolds(f, "a/b")
        # a.b subscribed too, listed first, sorting first: a/b keeps .a.b.
        for i, order in enumerate((["a.b", "a/b"], ["a/b", "a.b"])):
            self.subscribe(*order)
            self.mail("a/b", 10 + i)
            self.mail("a.b", 20 + i)
            rc, warns = self.once(f)
            self.assertEqual(rc, 0, f.log()[-3000:])
            self.assertHolds(f, "a/b")
            self.assertEqual(len(self.clash_warnings(warns, "a.b", "a/b")),
                             1, warns)
        self.assertEqual(len(self.sent["a/b"]), 4)

    def test_without_state_the_name_that_sorts_first_keeps_it(self):
        # Listed first: a/b; "a.b" sorts first ('.' before '/').
        self.subscribe("a/b", "a.b")
        self.mail("a.b", 1)
        self.mail("a/b", 2)
        f = self.env.idlefetch(name="clash", folders="*")
        rc, warns = self.once(f)
        self.assertEqual(rc, 0, f.log()[-3000:])
        self.assertHolds(f, "a.b")
        self.assertEqual(len(self.clash_warnings(warns, "a/b", "a.b")), 1,
                         warns)
        # The opposite order next time: the same owner.
        self.subscribe("a.b", "a/b")
        self.mail("a.b", 3)
        self.mail("a/b", 4)
        rc, warns = self.once(f)
        self.assertEqual(rc, 0, f.log()[-3000:])
        self.assertHolds(f, "a.b")
        self.assertEqual(len(self.clash_warnings(warns, "a/b", "a.b")), 1,
                         warns)

    def test_the_daemon_warns_once_not_at_every_round(self):
        self.subscribe("a/b", "a.b")
        self.mail("a.b", 1)
        self.mail("a/b", 2)
        f = self.env.idlefetch(name="clash", folders="*",
                               extra="poll_interval = 1\n").start("-v")
        # Without NOTIFY (not in the test Dovecot's capabilities), the
        # subscribed folders are listed again every poll_interval.
        self.assertTrue(fx.wait_until(
            lambda: f.log().count("LIST (SUBSCRIBED)") >= 4, 30),
            f.log()[-3000:])
        self.mail("a.b", 3)
        self.mail("a/b", 4)
        self.assertTrue(fx.wait_until(
            lambda: fx.Maildir(f"{f.maildir_path}/.a.b").count() == 2, 20),
            f.log()[-3000:])
        self.assertEqual(f.stop(), 0)
        self.assertHolds(f, "a.b")
        warns = [l for l in f.log().splitlines() if " warn " in l]
        self.assertEqual(len(self.clash_warnings(warns, "a/b", "a.b")), 1,
                         warns)


class ManyAccountsTest(unittest.TestCase):
    """Accounts log in a few dozen at a time: the rest wait their turn."""

    def test_sixty_accounts_log_in_32_at_a_time(self):
        env = fx.Env()
        try:
            d = env.dovecot
            extra = "".join(
                fx.account_section(f"acct{i}", d, "INBOX",
                                   os.path.join(env.root, "md", f"{i}"))
                for i in range(1, 60))
            f = env.idlefetch(name="acct0", extra=extra).start("-v")
            self.assertTrue(fx.wait_until(
                lambda: f.log().count("conn IDLE_START -> IDLE") == 60, 60),
                f.log()[-3000:])
            queued = f.log().count("-> QUEUED")
            self.assertGreaterEqual(queued, 28, "at most 32 set up at once")
            d.lmtp(fx.make_message(1))
            self.assertTrue(fx.wait_until(
                lambda: f.md.count() == 1 and all(
                    fx.Maildir(os.path.join(env.root, "md", f"{i}")).count()
                    == 1 for i in range(1, 60)), 20))
            self.assertEqual(f.stop(), 0)
        finally:
            env.close()


class WithoutNotifyTest(FoldersTest):
    """The same Dovecot, NOTIFY taken out of its capabilities."""
    caps = fx.DEFAULT_CAPS

    def test_notify_watches_20_folders_on_one_connection(self):
        pass  # not offered here: see the test below

    def test_20_folders_within_max_connections(self):
        f = self.start(extra="poll_interval = 2\n")
        self.assertIn("the server offers no NOTIFY: 5 connection(s) for 20 "
                      "folder(s)", f.log())
        port = self.env.dovecot.imaps_port
        self.assertTrue(fx.wait_until(
            lambda: f.log().count("conn IDLE_START -> IDLE") >= 5, 30),
            f.log()[-3000:])
        self.assertEqual(f.connections(port), 5)
        # The first 4 folders IDLE: INBOX's message comes at once.
        t0 = time.monotonic()
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(
            lambda: folder_md(f, "INBOX").count() == 1, 5, step=0.02))
        inbox = time.monotonic() - t0
        for i, name in enumerate(FOLDERS[1:]):
            self.env.dovecot.save(fx.make_message(100 + i), name)
        self.assertTrue(fx.wait_until(
            lambda: all(folder_md(f, n).count() == 1 for n in FOLDERS), 20),
            f.log()[-4000:])
        print(f"\nwithout NOTIFY: INBOX in {inbox:.2f} s; 5 connections")
        self.assertLessEqual(f.connections(port), 5)
        self.assertIn("STATUS", f.log())
        self.assertEqual(self.env.dovecot.connections_refused(), 0)
        self.assertEqual(f.stop(), 0)

    def test_mail_in_the_idle_folder_does_not_put_off_the_status_poll(self):
        f = self.start(extra="poll_interval = 6\nmax_connections = 1\n")
        t0 = time.monotonic()
        self.env.dovecot.save(fx.make_message(1), "F05")
        # INBOX, the folder the connection IDLEs on, gets mail 2 s in: it
        # wakes the connection before the STATUS round is due, and the
        # round must stay due 6 s after the last, not 6 s after the wake.
        time.sleep(2)
        t1 = time.monotonic()
        self.env.dovecot.lmtp(fx.make_message(2))
        # It IDLEs on INBOX, the first folder, not on the last one synced.
        self.assertTrue(fx.wait_until(
            lambda: folder_md(f, "INBOX").count() == 1, 10), f.log()[-3000:])
        self.assertLess(time.monotonic() - t1, 2)
        self.assertTrue(fx.wait_until(
            lambda: folder_md(f, "F05").count() == 1, 15), f.log()[-3000:])
        took = time.monotonic() - t0
        print(f"\nF05 polled after {took:.1f} s (poll_interval 6)")
        self.assertLess(took, 7.5)
        self.assertEqual(folder_md(f, "INBOX").count(), 1)
        self.assertEqual(f.stop(), 0)

    def test_status_interval_brings_a_polled_folder_in_seconds(self):
        # poll_interval = 60 would leave F10 (no connection of its own with
        # max_connections = 2) waiting up to a minute: status_interval asks.
        f = self.start(extra="poll_interval = 60\nstatus_interval = 2\n"
                             "max_connections = 2\n")
        self.assertEqual(f.connections(self.env.dovecot.imaps_port), 2)
        worst = 0.0
        for i in range(3):
            t0 = time.monotonic()
            self.env.dovecot.save(fx.make_message(200 + i), "F10")
            self.assertTrue(fx.wait_until(
                lambda: folder_md(f, "F10").count() == i + 1, 10, step=0.02),
                f.log()[-3000:])
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.7 * i)  # land at different points of the round
        print(f"\nstatus_interval = 2: F10 within {worst:.2f} s")
        self.assertLessEqual(worst, 2 + 2)
        self.assertEqual(f.connections(self.env.dovecot.imaps_port), 2)
        self.assertEqual(f.stop(), 0)

    def test_one_connection_polls_every_folder(self):
        f = self.start(extra="poll_interval = 2\nmax_connections = 1\n")
        self.assertEqual(f.connections(self.env.dovecot.imaps_port), 1)
        took = self.deliver_to_every_folder(f, 20)
        print(f"\nmax_connections = 1: 20 folders delivered in {took:.2f} s")
        self.assertEqual(f.connections(self.env.dovecot.imaps_port), 1)
        self.assertEqual(f.stop(), 0)


class NamedFoldersClashTest(unittest.TestCase):
    """Maildir++ writes the server's a.b and a/b into one folder, .a.b:
    named together, they are refused before anything connects, with the
    file, the line and the key. An LMTP target keeps them apart by their
    state, and takes them."""

    def run_idlefetch(self, conf, *args):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("IDLEFETCH_")}
        p = subprocess.run([fx.IDLEFETCH, "--config", conf, *args],
                           capture_output=True, env=e, timeout=60)
        return p.returncode, p.stderr.decode()

    def test_two_names_for_one_maildir_folder_are_refused(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="idlefetch-clash-")
        conf = os.path.join(d, "idlefetch.conf")
        head = (f"[global]\nstate_dir = {d}/state\n[account a]\n"
                f"host = 127.0.0.1\nport = {fx.free_port()}\ntls = none\n"
                "username = u\npassword = p\n")
        with open(conf, "w") as f:
            f.write(head + f"maildir = {d}/Maildir\nfolders = INBOX, a.b, a/b\n")
        os.chmod(conf, 0o600)
        for args in (["--check-config"], ["--once"]):
            rc, err = self.run_idlefetch(conf, *args)
            self.assertEqual(rc, 2, err)
            self.assertEqual(err.strip(),
                             f"idlefetch: {conf}:10: key 'folders': folders "
                             "'a.b' and 'a/b' would both be delivered to "
                             "Maildir folder .a.b; rename one on the server")
        self.assertFalse(os.path.exists(f"{d}/Maildir"))
        with open(conf, "w") as f:
            f.write(head + "deliver = lmtp:127.0.0.1:24\n"
                    "lmtp_recipient = u@example.org\nfolders = a.b, a/b\n")
        rc, err = self.run_idlefetch(conf, "--check-config")
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    unittest.main()
