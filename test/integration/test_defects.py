"""Defects found in review, each pinned by a test that failed before its
fix: lost or duplicated mail (skipped listing lines, failed commits,
renumbered UIDs, dropped deletes), unbounded memory, leaks, timeouts that
never fire, a password_command that blocks the daemon or runs injected
code, and errors that did not reach the user."""
import os
import re
import signal
import time
import unittest

import fixture as fx
import scripted


class ScriptedCase(scripted.ScriptedCase):
    fetcher_name = "d"


class AlertTest(ScriptedCase):
    def test_alert_is_logged_as_a_warning_without_verbose(self):
        def select(conn, tag, rest):
            if rest.upper().startswith(("SELECT", "EXAMINE")):
                conn.send(b"* OK [ALERT] Mailbox is at 98% of its quota\r\n")
            return None  # the normal reply follows
        srv = self.server(scripted.Mailbox([fx.make_message(1)]),
                          greeting="* OK [ALERT] Maintenance tonight at 22:00",
                          hooks={"command": select})
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        warns = [l for l in f.log().splitlines() if " warn " in l]
        self.assertTrue(any("server alert: Maintenance tonight at 22:00" in l
                            for l in warns), f.log())
        self.assertTrue(any("server alert: Mailbox is at 98% of its quota"
                            in l for l in warns), f.log())
        self.assertEqual(f.md.count(), 1)


class SignalTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def start_idling(self, name):
        f = self.env.idlefetch(name=name).start("-v")
        self.assertTrue(fx.wait_until(
            lambda: "conn IDLE_START -> IDLE" in f.log(), 15), f.log())
        return f

    def test_two_sigterms_at_once_still_log_out_cleanly(self):
        f = self.start_idling("twice")
        os.kill(f.proc.pid, signal.SIGTERM)
        os.kill(f.proc.pid, signal.SIGTERM)
        self.assertEqual(f.stop(), 0, f.log())
        self.assertNotIn("second signal", f.log())
        self.assertRegex(f.log(), r"C: a\d+ LOGOUT")
        self.assertIn("exiting with status 0", f.log())

    def test_a_second_signal_a_second_later_exits_at_once(self):
        f = self.start_idling("later")
        # A stop that cannot finish: the server stops answering.
        self.env.dovecot.lmtp(fx.make_message(1))
        os.kill(f.proc.pid, signal.SIGSTOP)
        os.kill(f.proc.pid, signal.SIGTERM)
        os.kill(f.proc.pid, signal.SIGCONT)
        time.sleep(1.3)
        os.kill(f.proc.pid, signal.SIGINT)
        rc = f.proc.wait(10)
        self.assertIn(rc, (0, 1), f.log())
        # Either the first stop had finished, or the second one cut it.
        self.assertTrue("exiting with status 0" in f.log() or
                        "second signal: exiting now" in f.log(), f.log())


if __name__ == "__main__":
    unittest.main()


class TwoBodiesTest(ScriptedCase):
    """A FETCH response with two message bodies is a protocol error: the
    connection is closed, and neither body leaves a file or a descriptor
    behind (each used to leak both, on every attempt)."""

    def two_bodies_server(self):
        def two(conn, uid, m):
            return (f"* 1 FETCH (UID {uid} BODY[] {{{len(m)}}}\r\n".encode()
                    + m + f" BODY[] {{{len(m)}}}\r\n".encode() + m
                    + b")\r\n")
        return self.server(scripted.Mailbox([fx.make_message(1)]),
                           hooks={"body": two})

    def test_once_refuses_it_and_leaves_nothing_in_tmp(self):
        f = self.fetcher(self.two_bodies_server())
        for _ in range(2):
            self.assertEqual(f.once(), 1, f.log())
            self.assertEqual(f.md.files("tmp"), [], "orphan files in tmp/")
            self.assertEqual(f.md.count(), 0)
        self.assertIn("two message bodies in one FETCH response", f.log())

    def test_daemon_descriptors_do_not_grow_with_attempts(self):
        srv = self.two_bodies_server()
        f = self.fetcher(srv).start()
        self.assertTrue(fx.wait_until(lambda: srv.connections >= 2, 30),
                        f.log())
        time.sleep(0.3)
        fds = len(os.listdir(f"/proc/{f.proc.pid}/fd"))
        self.assertTrue(fx.wait_until(lambda: srv.connections >= 4, 30),
                        f.log())
        time.sleep(0.3)
        self.assertLessEqual(len(os.listdir(f"/proc/{f.proc.pid}/fd")), fds)
        self.assertEqual(f.md.files("tmp"), [])
        self.assertEqual(f.stop(), 0)


class UnreadableListingTest(ScriptedCase):
    def test_unreadable_listing_line_stops_progress_instead_of_skipping(self):
        mb = scripted.Mailbox([fx.make_message(1), fx.make_message(2)])

        def reply(conn, tag, out, done, body):
            if body:
                return None
            # UID 1's size does not fit in 32 bits: the line cannot be read.
            out[0] = b"* 1 FETCH (UID 1 RFC822.SIZE 5000000000)\r\n"
            conn.send(b"".join(out) + done)
            return True
        srv = self.server(mb, hooks={"fetch_reply": reply})
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("cannot read a line of the message listing "
                      "('* 1 FETCH (UID 1 RFC822.SIZE 5000000000)')", f.log())
        # UID 2 was not delivered past the unread UID 1, and no state moved.
        self.assertEqual(f.md.count(), 0)
        state = os.path.join(f.state_dir, "d", "INBOX.state")
        self.assertFalse(os.path.exists(state) and
                         "last_uid 2" in open(state).read())


SLOWDISK = os.environ.get("SLOWDISK_LIB")


@unittest.skipUnless(SLOWDISK, "SLOWDISK_LIB (built by CMake) is not set")
class FailedFsyncTest(ScriptedCase):
    def test_failed_fsync_of_new_is_reconciled_on_every_reconnect(self):
        srv = self.server(scripted.Mailbox([fx.make_message(1),
                                            fx.make_message(2)]))
        f = self.fetcher(srv)
        asan = os.environ.get("ASAN_OPTIONS", "")
        f.start(env={"LD_PRELOAD": SLOWDISK,
                     "BADDISK_FSYNC_MATCH": "/Maildir/new",
                     "BADDISK_FSYNC_FAILS": "3",
                     "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"})
        # Three failed commits, each followed by a reconnect, then one that
        # goes through.
        self.assertTrue(fx.wait_until(
            lambda: f.log().count("cannot fsync new/") >= 3, 60), f.log())
        self.assertTrue(fx.wait_until(
            lambda: "found 2 UID(s) delivered before a restart" in f.log() or
            f.md.count() > 2, 30), f.log())
        with open(os.path.join(f.state_dir, "d", "INBOX.state")) as st:
            self.assertIn("last_uid 2", st.read())
        time.sleep(1)
        self.assertEqual(sorted(f.md.contents()), sorted(set(f.md.contents())),
                         "a message delivered twice")
        self.assertEqual(f.md.count(), 2, f.log())
        self.assertEqual(f.stop(), 0)


class RepeatedListingTest(ScriptedCase):
    def listing_server(self, lines):
        mb = scripted.Mailbox([fx.make_message(i) for i in range(1, 7)])

        def reply(conn, tag, out, done, body):
            if body:
                return None
            for i in range(0, len(lines), 10000):
                conn.send(b"".join(lines[i:i + 10000]))
            conn.send(b"".join(out) + done)
            return True
        return self.server(mb, hooks={"fetch_reply": reply})

    def test_a_line_repeated_3_million_times_costs_no_memory(self):
        srv = self.listing_server(
            [b"* 5 FETCH (UID 5 RFC822.SIZE 10)\r\n"] * 3000000)
        f = self.fetcher(srv).start()
        peak = 0
        end = time.monotonic() + 60
        while f.md.count() < 6 and time.monotonic() < end:
            peak = max(peak, fx.rss_kb(f.proc.pid))
            time.sleep(0.02)
        self.assertEqual(f.md.count(), 6, f.log())
        self.assertEqual(sorted(f.md.contents()), sorted(set(f.md.contents())))
        if "ASAN_OPTIONS" not in os.environ:  # a sanitizer's RSS is its own
            self.assertLess(peak, 20 * 1024, f"peak RSS {peak} KiB")
        self.assertEqual(f.stop(), 0)

    def test_alternating_repeats_close_the_connection(self):
        srv = self.listing_server(
            [b"* 5 FETCH (UID 5 RFC822.SIZE 10)\r\n",
             b"* 6 FETCH (UID 6 RFC822.SIZE 10)\r\n"] * 100000)
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("the server listed over 50000 messages without a new "
                      "one", f.log())
        self.assertEqual(f.md.count(), 0)


class AnswerTimeoutTest(ScriptedCase):
    """`timeout` bounds the time to an answer, not the time between two
    bytes: a trickled greeting or a stream of untagged chatter while a
    command goes unanswered counts as no answer."""

    def timed_fetcher(self, srv):
        return self.fetcher(srv, extra="timeout = 3\n")

    def test_greeting_trickled_one_byte_a_second_times_out(self):
        def trickle(conn):
            for ch in b"* OK [CAPABILITY IMAP4rev1 IDLE] slowly ready\r\n":
                if self.servers[0].stopped:
                    return True
                conn.send(bytes([ch]))
                time.sleep(1)
            return True
        srv = self.server(scripted.Mailbox([fx.make_message(1)]),
                          greeting="", hooks={"after_greeting": trickle})
        f = self.timed_fetcher(srv)
        t0 = time.monotonic()
        self.assertEqual(f.once(timeout=30), 1, f.log())
        took = time.monotonic() - t0
        self.assertLess(took, 8, f.log())
        self.assertIn("timed out in GREETING", f.log())

    def test_untagged_chatter_does_not_stand_for_an_answer(self):
        def stall_login(conn, tag, rest):
            if not rest.upper().startswith(("LOGIN", "AUTHENTICATE")):
                return None
            for _ in range(20):
                if self.servers[0].stopped:
                    break
                conn.send(b"* OK still thinking\r\n")
                time.sleep(1)
            return True
        srv = self.server(scripted.Mailbox([fx.make_message(1)]),
                          hooks={"command": stall_login})
        f = self.timed_fetcher(srv)
        t0 = time.monotonic()
        self.assertEqual(f.once(timeout=60), 1, f.log())
        self.assertLess(time.monotonic() - t0, 8, f.log())
        self.assertIn("timed out in AUTH", f.log())


class PasswordCommandTest(unittest.TestCase):
    """password_command runs off the event loop, with a time limit, and
    ${VAR} in it is expanded by the shell, never pasted in as code."""

    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def fetcher(self, name, command, extra_global="", extra=""):
        f = self.env.idlefetch(name=name, extra=extra)
        with open(f.conf) as c:
            text = c.read()
        text = text.replace(f"password = {fx.PASSWORD}\n",
                            f"password_command = {command}\n", 1)
        text = text.replace("[global]\n", "[global]\n" + extra_global, 1)
        with open(f.conf, "w") as c:
            c.write(text)
        return f

    def test_hung_command_is_killed_at_the_limit_with_file_line_key(self):
        f = self.fetcher("hang", "echo starting >&2; sleep 1000",
                         extra_global="command_timeout = 2\n")
        t0 = time.monotonic()
        self.assertEqual(f.once(timeout=30), 2, f.log())
        self.assertLess(time.monotonic() - t0, 6)
        self.assertRegex(f.log(), r"idlefetch\.conf:\d+: key 'password_command':"
                         r" command did not finish within 2 s; killed")
        self.assertIn('password_command said: starting', f.log())

    def test_sigterm_while_a_command_hangs_stops_at_once(self):
        f = self.fetcher("term", "sleep 1000").start()
        time.sleep(1)
        t0 = time.monotonic()
        f.proc.send_signal(signal.SIGTERM)
        self.assertEqual(f.proc.wait(10), 0, f.log())
        self.assertLess(time.monotonic() - t0, 2, f.log())

    def test_reload_with_a_hung_command_leaves_the_others_running(self):
        pw = os.path.join(self.env.root, "pw-cmd")
        with open(pw, "w") as p:
            p.write(f"#!/bin/sh\necho {fx.PASSWORD}\n")
        os.chmod(pw, 0o755)
        f = self.fetcher("reload", pw).start()
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 20), f.log())
        with open(pw, "w") as p:
            p.write("#!/bin/sh\nsleep 1000\n")
        with open(f.conf, "a") as c:
            c.write("poll_interval = 61\n")  # a change, to read it again
        f.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        # The loop is free: mail is delivered while the command hangs, and
        # a signal is acted on at once.
        self.env.dovecot.lmtp(fx.make_message(2))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 20), f.log())
        t0 = time.monotonic()
        f.proc.send_signal(signal.SIGTERM)
        self.assertEqual(f.proc.wait(10), 0, f.log())
        self.assertLess(time.monotonic() - t0, 2, f.log())

    def test_variable_holding_shell_code_is_not_run(self):
        mark = os.path.join(self.env.root, "injected")
        self.env.dovecot.put([fx.make_message(1)])
        f = self.fetcher("inject", "printf '%s\\n' ${IMAP_PW}")
        env = dict(os.environ, IMAP_PW=f"{fx.PASSWORD} ; touch {mark}")
        import subprocess
        for args in (["--check-config"], ["--once"]):
            p = subprocess.run([fx.IDLEFETCH, "--config", f.conf, *args],
                               env=env, capture_output=True, timeout=60)
            self.assertFalse(os.path.exists(mark), (args, p.stderr))
        # The value reached the command as data: its first word is the
        # password, the rest are arguments printf printed on more lines.
        self.assertEqual(f.md.count(), 1, p.stderr)


class RenumberedTest(ScriptedCase):
    """A server that renumbers its UIDs under the same UIDVALIDITY
    (Courier-IMAP after a restart) is caught by the fingerprint of the last
    delivered message and recovered from: its messages are matched against
    the Maildir, only the new one is fetched, nothing is lost or doubled."""

    def state(self, f):
        with open(os.path.join(f.state_dir, "d", "INBOX.state")) as st:
            return st.read()

    def test_renumbered_folder_is_matched_against_the_maildir(self):
        a, b, c, new, later = (fx.make_message(i) for i in (1, 2, 3, 4, 5))
        mb = scripted.Mailbox([a, b, c], uidvalidity=77)
        srv = self.server(mb)
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 3)
        state = self.state(f)
        self.assertIn("last_uid 3\n", state)
        self.assertRegex(state, r"last_msgid <m3\.\d+@test>")
        # The restart: a new message sorts first and takes UID 1, the old
        # ones move up; UIDVALIDITY stays.
        mb.msgs = {}
        mb.next_uid = 1
        for m in (new, a, b, c):
            mb.add(m)
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("UID 3 no longer holds the message delivered under "
                      "it (Message-ID", f.log())
        self.assertIn("recovered the renumbered folder: 3 message(s) "
                      "matched the Maildir, 1 new delivered", f.log())
        self.assertEqual(sorted(f.md.contents()), sorted([a, b, c, new]),
                         "0 lost, 0 delivered twice")
        self.assertIn("last_uid 4\n", self.state(f))
        self.assertNotIn("recovering", self.state(f))
        mb.add(later)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(sorted(f.md.contents()),
                         sorted([a, b, c, new, later]))

    def test_old_numbering_above_the_new_does_not_skip_later_mail(self):
        """Delivered as UIDs 5..7, renumbered to 1..3: the old files'
        higher UIDs must not pass for delivered ones later."""
        a, b, c, new, x, y = (fx.make_message(i) for i in range(1, 7))
        mb = scripted.Mailbox([], uidvalidity=9)
        mb.next_uid = 5
        for m in (a, b, c):
            mb.add(m)
        srv = self.server(mb)
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        mb.msgs = {}
        mb.next_uid = 1
        for m in (a, b, c, new):
            mb.add(m)
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("1 new delivered", f.log())
        # A later run reconciles the Maildir (files named U5..U7 of the
        # old numbering), then UIDs 5 and 6 arrive.
        mb.add(x)
        mb.add(y)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(sorted(f.md.contents()),
                         sorted([a, b, c, new, x, y]))

    def test_unchanged_folder_and_expunged_last_message_pass_the_check(self):
        mb = scripted.Mailbox([fx.make_message(i) for i in (1, 2)])
        srv = self.server(mb)
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        mb.add(fx.make_message(3))
        self.assertEqual(f.once(), 0, f.log())
        del mb.msgs[3]  # the last delivered message was deleted elsewhere
        mb.add(fx.make_message(4))
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 4)


class UnderstatedSizeTest(ScriptedCase):
    """RFC822.SIZE only plans batches: a body larger than announced (5 MiB
    announced as 20 bytes) is streamed to disk like any other, byte for
    byte, and memory stays bounded by the lane, not by the announcement."""

    def test_body_larger_than_announced_is_delivered_exactly(self):
        big = fx.make_message(1, size=5 * 1024 * 1024)
        mb = scripted.Mailbox([big, fx.make_message(2)])

        def understated(conn, uid, m):
            return (f"* {uid} FETCH (UID {uid} RFC822.SIZE 20 BODY[] "
                    f"{{{len(m)}}}\r\n".encode() + m + b")\r\n")

        def listing(conn, tag, out, done, body):
            if body:
                return None
            conn.send(b"* 1 FETCH (UID 1 RFC822.SIZE 20)\r\n"
                      b"* 2 FETCH (UID 2 RFC822.SIZE 20)\r\n" + done)
            return True
        srv = self.server(mb, hooks={"body": understated,
                                     "fetch_reply": listing})
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(sorted(f.md.contents()),
                         sorted(m.replace(b"\r\n", b"\n")
                                for m in mb.msgs.values()))


class TlsReasonTest(ScriptedCase):
    def test_handshake_failure_names_openssls_reason_in_words(self):
        # A plaintext server behind tls = implicit: the first bytes are
        # "* OK", not a TLS record.
        srv = self.server(scripted.Mailbox([]))
        f = self.fetcher(srv)
        with open(f.conf) as c:
            text = c.read().replace("tls = none", "tls = implicit")
        with open(f.conf, "w") as c:
            c.write(text)
        self.assertEqual(f.once(), 1, f.log())
        self.assertRegex(f.log(), r"TLS handshake failed: (wrong version "
                         r"number|packet length too long|record layer "
                         r"failure)")
        self.assertNotIn("error:0A", f.log(), "OpenSSL's code, not words")


class MoveTargetTest(ScriptedCase):
    def test_missing_move_target_is_found_before_delivery_with_its_real_name(self):
        srv = self.server(scripted.Mailbox([fx.make_message(1)]),
                          caps="IMAP4rev1 IDLE UIDPLUS MOVE AUTH=PLAIN")
        srv.folders = ["INBOX", "INBOX.Archive", "INBOX.Sent"]
        f = self.fetcher(srv, after="move:Archive")
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("after = move:Archive: the server has no folder of that "
                      "name; it has 'INBOX.Archive' (write after = "
                      "move:INBOX.Archive)", f.log())
        self.assertEqual(f.md.count(), 0, "checked before anything is fetched")
        self.assertFalse(any(c.split(" ")[1].upper() == "SELECT"
                             for c in srv.commands if " " in c))

    def test_failed_after_action_fails_the_pass(self):
        def refuse_move(conn, tag, rest):
            if rest.upper().startswith("UID MOVE"):
                conn.send(f"{tag} NO [TRYCREATE] no such mailbox\r\n".encode())
                return True
            return None
        srv = self.server(scripted.Mailbox([fx.make_message(1)]),
                          caps="IMAP4rev1 IDLE UIDPLUS MOVE AUTH=PLAIN",
                          hooks={"command": refuse_move})
        srv.folders = ["INBOX", "Archive"]
        f = self.fetcher(srv, after="move:Archive")
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("after-delivery action failed (messages stay on the "
                      "server): no such mailbox", f.log())
        self.assertEqual(f.md.count(), 1, "delivered, and once")
        self.assertEqual(f.once(), 1, f.log())
        self.assertEqual(f.md.count(), 1)


class MissingFolderTest(ScriptedCase):
    def test_nested_folder_is_named_with_the_servers_prefix_and_delimiter(self):
        srv = self.server(scripted.Mailbox([fx.make_message(1)]))
        srv.folders = ["INBOX", "INBOX.Lists", "INBOX.Lists.dev"]
        srv.strict_select = True
        f = self.fetcher(srv, folders="Lists/dev")
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("the server has 'INBOX.Lists.dev'", f.log())

    def test_a_name_that_only_ends_alike_is_not_suggested(self):
        srv = self.server(scripted.Mailbox([fx.make_message(1)]),
                          caps="IMAP4rev1 IDLE UIDPLUS MOVE AUTH=PLAIN")
        srv.folders = ["INBOX", "INBOX.MyArchive"]
        f = self.fetcher(srv, after="move:Archive")
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("the server has no folder of that name; create it",
                      f.log())
        self.assertNotIn("MyArchive", f.log())


    def test_missing_folder_is_named_as_the_server_spells_it(self):
        srv = self.server(scripted.Mailbox([fx.make_message(1)]))
        srv.folders = ["INBOX", "INBOX.Lists"]
        srv.strict_select = True
        f = self.fetcher(srv, folders="Lists")
        self.assertEqual(f.once(), 1, f.log())
        self.assertIn("cannot open folder Lists: Mailbox doesn't exist; the "
                      "server has 'INBOX.Lists' (write it so in folders =)",
                      f.log())
