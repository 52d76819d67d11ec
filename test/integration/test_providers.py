"""What large providers do that Dovecot does not, reproduced by scripted
servers as the providers document it or as other fetchers' trackers
report it: Gmail ending IDLE by itself and listing every message again in
[Gmail]/All Mail, Microsoft 365 throttling; and a Dovecot that offers none
of UIDPLUS, MOVE, IDLE, LITERAL+, NOTIFY or LIST-EXTENDED."""
import os
import re
import threading
import time
import unittest

import fixture as fx
import scripted

GMAIL_CAPS = ("IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN "
              "X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE ENABLE MOVE CONDSTORE "
              "ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- "
              "SPECIAL-USE APPENDLIMIT=35651584 AUTH=PLAIN")


def msg(i):
    return (f"From: a@example.org\r\nSubject: {i}\r\nMessage-ID: <p{i}@x>"
            f"\r\n\r\nbody {i}\r\n").encode()


class Gmail(scripted.ScriptedCase):
    fetcher_name = "gmail"

    def test_server_ends_idle_without_done(self):
        """Gmail completes an IDLE itself (a tagged OK nobody asked for)
        after some minutes, here 1 s, sometimes with mail that came
        meanwhile and no EXISTS: idlefetch looks again, IDLEs again, and
        never sends a DONE for an IDLE that is over."""
        mb = scripted.Mailbox([msg(1)])
        ended = []

        def command(conn, tag, rest):
            if rest.upper() != "IDLE":
                return False
            conn.send(b"+ idling\r\n")
            time.sleep(1.0)
            if len(ended) == 1:
                mb.add(msg(2))  # arrived during IDLE, never announced
            ended.append(tag)
            conn.send(f"{tag} OK IDLE terminated (Success)\r\n".encode())
            return True
        srv = self.server(mb, caps=GMAIL_CAPS, hooks={"command": command})
        f = self.fetcher(srv).start("-v")
        self.assertTrue(fx.wait_until(
            lambda: f.md.count() == 2 and len(ended) >= 3, 20), f.log())
        self.assertEqual(f.stop(), 0)
        # Only the IDLE running at the stop is ended with a DONE.
        last = max(i for i, c in enumerate(srv.commands)
                   if c.endswith(" IDLE"))
        self.assertNotIn("DONE", srv.commands[:last],
                         "no DONE for an IDLE the server ended")
        self.assertEqual(srv.connections, 1, "the same connection went on")
        self.assertEqual(sorted(fx.message_id(b) for b in f.md.contents()),
                         ["<p1@x>", "<p2@x>"])

    def test_bye_during_idle_reconnects(self):
        """'* BYE' with a reason in the middle of an IDLE (Gmail after
        about a day, any server on shutdown): logged, a new connection,
        and the mail that came meanwhile delivered once."""
        mb = scripted.Mailbox([msg(1)])

        def command(conn, tag, rest):
            if rest.upper() != "IDLE" or srv.connections > 1:
                return False
            conn.send(b"+ idling\r\n")
            time.sleep(0.5)
            mb.add(msg(2))
            conn.send(b"* BYE Session expired, please login again.\r\n")
            conn.sock.close()
            raise EOFError
        srv = self.server(mb, caps=GMAIL_CAPS, hooks={"command": command})
        f = self.fetcher(srv).start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 20),
                        f.log())
        self.assertEqual(f.stop(), 0)
        self.assertIn("Session expired, please login again", f.log())
        self.assertEqual(srv.connections, 2)

    def test_all_mail_is_not_fetched_twice(self):
        """folders = * on Gmail: INBOX and [Gmail]/Sent Mail are fetched;
        [Gmail]/All Mail (\\All), Starred (\\Flagged) and Important hold
        the same messages again and are left out, with one line saying
        so; the bracketed, spaced names make their Maildir++ folders."""
        mb = scripted.Mailbox([msg(1), msg(2)])
        folders = {"INBOX": "", "[Gmail]/All Mail": "\\All",
                   "[Gmail]/Sent Mail": "\\Sent",
                   "[Gmail]/Starred": "\\Flagged",
                   "[Gmail]/Important": "\\Important",
                   "[Gmail]": "\\Noselect"}

        def command(conn, tag, rest):
            if not rest.upper().startswith("LIST"):
                return False
            for name, flag in folders.items():
                conn.send(f'* LIST (\\HasNoChildren \\Subscribed {flag}) '
                          f'"/" "{name}"\r\n'.encode())
            conn.send(f"{tag} OK Success\r\n".encode())
            return True
        srv = self.server(mb, caps=GMAIL_CAPS, hooks={"command": command})
        f = self.fetcher(srv, folders="*")
        self.assertEqual(f.once(), 0, f.log())
        sent = fx.Maildir(f.maildir_path + "/.[Gmail].Sent Mail")
        self.assertEqual(f.md.count(), 2)
        self.assertEqual(sent.count(), 2)
        for name in ("All Mail", "Starred", "Important"):
            self.assertFalse(os.path.exists(
                f"{f.maildir_path}/.[Gmail].{name}"), name)
            self.assertIn(f"'[Gmail]/{name}' shows messages kept in other "
                          "folders", f.log())
        self.assertFalse(any('SELECT "[Gmail]/All Mail"' in c
                             for c in srv.commands))
        self.assertTrue(any(c.endswith("RETURN (SPECIAL-USE)")
                            for c in srv.commands), srv.commands)


class Microsoft365(scripted.ScriptedCase):
    fetcher_name = "m365"

    def test_throttled_select_waits_as_asked(self):
        """NO 'Request is throttled. Suggested Backoff Time: N
        milliseconds' is a busy server, not a missing folder: the
        connection waits at least N ms and tries again, and the mail is
        delivered."""
        mb = scripted.Mailbox([msg(1)])
        tries = []

        def command(conn, tag, rest):
            if not rest.upper().startswith("SELECT") or len(tries) >= 2:
                return False
            tries.append(time.monotonic())
            conn.send(f"{tag} NO Request is throttled. Suggested Backoff "
                      f"Time: 2500 milliseconds\r\n".encode())
            return True
        srv = self.server(mb, caps="IMAP4rev1 IDLE UIDPLUS MOVE AUTH=PLAIN",
                          hooks={"command": command})
        f = self.fetcher(srv).start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 30),
                        f.log())
        self.assertEqual(f.stop(), 0)
        self.assertEqual(len(tries), 2)
        self.assertGreaterEqual(tries[1] - tries[0], 2.4)
        log = f.log()
        self.assertIn("the server is busy (Request is throttled.", log)
        self.assertNotIn("does not exist", log)
        self.assertNotIn("LIST", " ".join(srv.commands))

    def test_unavailable_login_is_not_a_wrong_password(self):
        """AUTHENTICATE answered 'NO [UNAVAILABLE]' (RFC 5530) is tried
        again soon, not held back as a wrong password is."""
        mb = scripted.Mailbox([msg(1)])
        refused = []

        def command(conn, tag, rest):
            if not rest.upper().startswith(("LOGIN", "AUTHENTICATE")) or \
                    refused:
                return False
            refused.append(tag)
            conn.send(f"{tag} NO [UNAVAILABLE] Server Unavailable. 15\r\n"
                      .encode())
            return True
        srv = self.server(mb, caps="IMAP4rev1 IDLE UIDPLUS AUTH=PLAIN "
                          "SASL-IR", hooks={"command": command})
        f = self.fetcher(srv).start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 10),
                        f.log())
        self.assertEqual(f.stop(), 0)
        self.assertNotIn("login rejected", f.log())
        self.assertIn("the server is busy (Server Unavailable. 15)", f.log())

    def test_throttled_bye_during_fetch(self):
        """'* BYE' for throttling in the middle of a batch: what arrived
        whole is kept, the rest is fetched again after the wait, each
        message once."""
        mb = scripted.Mailbox([msg(i) for i in range(1, 7)])
        cut = []

        def fetch_reply(conn, tag, out, done, body):
            if not body or cut:
                return False
            cut.append(tag)
            conn.send(b"".join(out[:3]) + b"* BYE Request is throttled. "
                      b"Suggested Backoff Time: 1200 milliseconds\r\n")
            conn.sock.close()
            raise EOFError
        srv = self.server(mb, caps="IMAP4rev1 IDLE UIDPLUS MOVE AUTH=PLAIN",
                          hooks={"fetch_reply": fetch_reply})
        f = self.fetcher(srv).start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 6, 20),
                        f.log())
        self.assertEqual(f.stop(), 0)
        got = [fx.message_id(b) for b in f.md.contents()]
        self.assertEqual(sorted(got), sorted(set(got)))
        m = re.search(r"reconnecting in ([0-9.]+) s", f.log())
        self.assertIsNotNone(m, f.log())
        self.assertGreaterEqual(float(m.group(1)), 1.2)


class PlainServer(unittest.TestCase):
    """A Dovecot that offers IMAP4rev1 alone: no UIDPLUS, MOVE, IDLE,
    LITERAL+, NOTIFY, LIST-EXTENDED, SASL-IR or ENABLE."""

    def setUp(self):
        self.env = fx.Env(caps="IMAP4rev1 AUTH=PLAIN")

    def tearDown(self):
        self.env.close()

    def test_polls_and_moves_with_the_base_protocol(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(5)])
        f = self.env.idlefetch(after="move:Archive",
                               extra="poll_interval = 1").start("-v")
        self.assertTrue(fx.wait_until(
            lambda: f.md.count() == 5 and d.count() == 0, 20), f.log())
        d.lmtp(fx.make_message(9))
        self.assertTrue(fx.wait_until(
            lambda: f.md.count() == 6 and d.count() == 0, 20), f.log())
        self.assertEqual(f.stop(), 0)
        self.assertEqual(d.count("Archive"), 6)
        sent = "\n".join(l for l in f.log().splitlines() if "C: " in l)
        for never in ("IDLE", "UID MOVE", "UID EXPUNGE", "NOTIFY", "+}",
                      "LIST (SUBSCRIBED)"):
            self.assertNotIn(never, sent)
        self.assertIn("UID COPY", sent)
        self.assertIn("EXPUNGE", sent)


if __name__ == "__main__":
    unittest.main()
