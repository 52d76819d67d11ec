"""Servers that misbehave: idlefetch closes the connection with a clear
error, never crashes, and never loses, half-writes or duplicates mail."""
import os
import re
import socket
import time
import unittest

import fixture as fx
import scripted


def msg(i, size=0):
    return fx.make_message(i, size=size)


class Hostile(scripted.ScriptedCase):
    fetcher_name = "h"

    def expect_clean_failure(self, f, needle):
        rc = f.once()
        self.assertEqual(rc, 1, f.log())
        self.assertIn(needle, f.log())
        self.assertNotIn("fatal", f.log())
        self.assertEqual(f.md.files("tmp"), [], "no partial file left")
        return rc

    def test_absurd_literal_size_closes_the_connection(self):
        mb = scripted.Mailbox([msg(1)])
        srv = self.server(mb, hooks={"body": lambda c, u, m:
                                     b"* 1 FETCH (UID 1 BODY[] {99999999999999}\r\n"})
        f = self.fetcher(srv)
        self.expect_clean_failure(f, "over-long line or literal")
        self.assertEqual(f.md.count(), 0)

    def test_overlong_line_closes_the_connection(self):
        srv = self.server(scripted.Mailbox([msg(1)]), hooks={
            "after_greeting": lambda c: c.send(b"* OK " + b"x" * 200000) or None})
        f = self.fetcher(srv)
        self.expect_clean_failure(f, "over-long line")

    def test_garbage_greeting_is_refused(self):
        srv = self.server(scripted.Mailbox(), greeting="HTTP/1.1 400 Bad Request")
        f = self.fetcher(srv)
        self.expect_clean_failure(f, "bad greeting")

    def test_preauth_greeting_is_refused(self):
        srv = self.server(scripted.Mailbox(), greeting="* PREAUTH welcome")
        f = self.fetcher(srv)
        self.expect_clean_failure(f, "PREAUTH")

    def test_hostile_response_codes_do_not_crash(self):
        def cmd(c, tag, rest):
            if rest.upper().startswith(("EXAMINE", "SELECT")):
                c.send(b"* OK [PERMANENTFLAGS (\\]\r\n* FLAGS (\\\r\n"
                       b"* OK [PERMANENTFLAGS ((]\r\n"
                       b"* OK [BADCHARSET (]\r\n* 1 EXISTS\r\n"
                       b"* OK [UIDVALIDITY 5] x\r\n* 1 FETCH ((((((((\r\n"
                       + tag.encode() + b" OK [READ-ONLY] done\r\n")
                return True
            return False
        srv = self.server(scripted.Mailbox([msg(1)]), hooks={"command": cmd})
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 1)

    def test_bodies_in_one_byte_segments_arrive_byte_for_byte(self):
        # CR and LF of one line end land in different reads: the CRLF to
        # LF conversion must carry the CR over from one read to the next,
        # and keep a CR that no LF follows.
        bodies = [msg(i, size=300).replace(b"\n", b"\r\n") +
                  b"a bare \r in a line\r\nand one at the end\r"
                  for i in range(3)]
        mb = scripted.Mailbox(bodies)

        def reply(c, tag, out, done, body):
            if not body:
                return False
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for chunk in out:
                for i in range(len(chunk)):
                    c.send(chunk[i:i + 1])
                    if chunk[i:i + 1] == b"\r":
                        time.sleep(0.002)
            c.send(done)
            return True
        srv = self.server(mb, hooks={"fetch_reply": reply})
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        got = sorted(f.md.contents())
        self.assertEqual(got,
                         sorted(b.replace(b"\r\n", b"\n") for b in bodies))
        self.assertIn(b"a bare \r in a line\nand one at the end\r", got[0])

    def test_subscribed_folders_from_a_hostile_listing(self):
        # folders = *: names that would leave the Maildir, 8-bit or broken
        # modified UTF-7, \Noselect, repeats and a cut-off line are left
        # out with a warning; the good ones are fetched.
        mb = scripted.Mailbox([msg(1)])
        listing = (b'* LSUB () "." "Good"\r\n'
                   b'* LSUB (\\Noselect) "." "Parent"\r\n'
                   b'* LSUB () "." {6}\r\nLit.ok\r\n'
                   b'* LSUB () "." "caf\xe9"\r\n'
                   b'* LSUB () "." "..evil"\r\n'
                   b'* LSUB () "." "a...b"\r\n'
                   b'* LSUB () "." "Bad&-x&"\r\n'
                   b'* LSUB () "." "Good"\r\n'
                   b'* LSUB (\\Noselect "." "Cut"\r\n'
                   b'* LSUB () NIL INBOX\r\n')

        def cmd(c, tag, rest):
            if rest.upper().startswith("LSUB "):
                c.send(listing + f"{tag} OK lsub done\r\n".encode())
                return True
            return False
        srv = self.server(mb, hooks={"command": cmd})
        f = self.fetcher(srv, folders="*")
        self.assertEqual(f.once(), 0, f.log())
        self.assertNotIn("fatal", f.log())
        subdirs = sorted(n for n in os.listdir(f.maildir_path)
                         if n.startswith("."))
        self.assertEqual(subdirs, [".Good", ".Lit.ok"])
        self.assertEqual(f.md.count(), 1)
        for n in subdirs:
            self.assertEqual(fx.Maildir(f"{f.maildir_path}/{n}").count(), 1)
        self.assertIn("not fetching a subscribed folder: invalid folder "
                      "name '..evil'", f.log())
        self.assertIn("'Bad&-x&' is not valid modified UTF-7", f.log())

    def test_notify_overflow_syncs_every_folder_and_asks_again(self):
        # RFC 5465 5.8: after [NOTIFICATIONOVERFLOW] the server tells of
        # nothing until NOTIFY is set again. (This server has one mailbox
        # under every name, so each message lands in both folders.)
        mb = scripted.Mailbox([msg(1)])
        notifies = []

        def cmd(c, tag, rest):
            if rest.upper().startswith("NOTIFY "):
                notifies.append(rest)
                c.send(f"{tag} OK notify set\r\n".encode())
                return True
            return False
        srv = self.server(mb, caps="IMAP4rev1 IDLE UIDPLUS AUTH=PLAIN NOTIFY",
                          hooks={"command": cmd})
        f = self.fetcher(srv, folders="INBOX, Lists",
                         extra="poll_interval = 600\n").start("-v")
        self.assertTrue(fx.wait_until(
            lambda: "conn IDLE_START -> IDLE" in f.log(), 10), f.log())
        self.assertEqual(len(notifies), 1)
        lists = fx.Maildir(f.maildir_path + "/.Lists")
        self.assertEqual((f.md.count(), lists.count()), (1, 1))
        # A message arrives, and the server only says it overflowed.
        mb.add(msg(2))
        with srv.lock:
            for c in list(srv.idling):
                c.send(b"* OK [NOTIFICATIONOVERFLOW] too many\r\n")
        self.assertTrue(fx.wait_until(
            lambda: (f.md.count(), lists.count()) == (2, 2), 10), f.log())
        # Set again after NOTIFY NONE (Dovecot 2.3 falls silent on a
        # second SET otherwise), with STATUS to catch up on every folder.
        self.assertTrue(fx.wait_until(lambda: len(notifies) == 3, 10),
                        f.log())
        self.assertEqual(notifies[1], "NOTIFY NONE")
        self.assertTrue(notifies[2].startswith("NOTIFY SET STATUS ("),
                        notifies)
        self.assertIn("NOTIFICATIONOVERFLOW", f.log())
        self.assertTrue(fx.wait_until(
            lambda: f.log().count("conn IDLE_START -> IDLE") >= 2, 10))
        self.assertEqual(f.stop(), 0)

    def test_interleaved_pipelined_responses_are_matched_by_uid(self):
        mb = scripted.Mailbox([msg(i) for i in range(250)])
        held = {}

        def reply(c, tag, out, done, body):
            if not body:
                return False
            # Hold the first batch's tagged OK until after the second batch.
            held["n"] = held.get("n", 0) + 1
            if held["n"] == 1:
                held["done"] = done
                c.send(b"".join(out))
                return True
            c.send(b"".join(out) + done + held.pop("done", b""))
            return True
        srv = self.server(mb, hooks={"fetch_reply": reply})
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 250)
        self.assertEqual(len(set(f.md.contents())), 250)

    def test_uid_skipped_by_the_server_is_not_lost(self):
        mb = scripted.Mailbox([msg(i) for i in range(6)])
        skipped = []

        def body(c, uid, m):
            if uid == 3 and not skipped:
                skipped.append(uid)
                return b""          # listed, but no body sent this time
            return None
        srv = self.server(mb, hooks={"body": body})
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("did not return UID 3", f.log())
        self.assertEqual(f.md.count(), 6, f.log())
        self.assertEqual(len(set(f.md.contents())), 6)

    def test_connection_cut_mid_message_leaves_no_partial_file(self):
        mb = scripted.Mailbox([msg(i, size=100000) for i in range(5)])
        cut = []

        def reply(c, tag, out, done, body):
            if not body or cut:
                return False
            cut.append(1)
            # Three whole messages, then half of the fourth, then EOF.
            c.send(b"".join(out[:3]) + out[3][:len(out[3]) // 2])
            c.sock.shutdown(socket.SHUT_RDWR)
            raise EOFError
        srv = self.server(mb, hooks={"fetch_reply": reply})
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 1)
        got = f.md.contents()
        self.assertEqual(len(got), 3, "the three complete messages before the "
                         "cut are delivered")
        for g in got:
            self.assertIn(g.replace(b"\n", b"\r\n"), mb.msgs.values())
        self.assertEqual(f.md.files("tmp"), [])
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 5)
        self.assertEqual(len(set(f.md.contents())), 5)

    def test_plaintext_injected_after_starttls_is_dropped(self):
        certs = fx.Certs(os.path.join(self.root, "certs"))
        inject = (b"* BYE injected\r\n* CAPABILITY IMAP4rev1 INJECTED\r\n"
                  b"a99 OK injected\r\n")
        srv = self.server(scripted.Mailbox([msg(1)]),
                          caps="IMAP4rev1 STARTTLS IDLE AUTH=PLAIN",
                          tls_cert=certs.server,
                          hooks={"starttls": lambda c, tag: inject})

        class D:
            pass
        D.certs = certs
        f = fx.Idlefetch(self.root, D(), tls="starttls", name="inject",
                         port=srv.port)
        self.fetchers.append(f)
        self.assertEqual(f.once("-v"), 0, f.log())
        self.assertNotIn("injected", f.log().lower())
        self.assertIn("over TLS", f.log())
        self.assertEqual(f.md.count(), 1)

    def test_starttls_not_offered_means_no_login(self):
        srv = self.server(scripted.Mailbox([msg(1)]),
                          caps="IMAP4rev1 IDLE AUTH=PLAIN")
        f = self.fetcher(srv, tls="starttls")
        self.expect_clean_failure(f, "does not offer STARTTLS")
        self.assertFalse([c for c in srv.commands
                          if " LOGIN " in c or " AUTHENTICATE " in c],
                         srv.commands)

    def test_logindisabled_without_auth_plain_means_no_login(self):
        srv = self.server(scripted.Mailbox([msg(1)]),
                          caps="IMAP4rev1 LOGINDISABLED")
        f = self.fetcher(srv)
        self.expect_clean_failure(f, "LOGINDISABLED")
        self.assertFalse([c for c in srv.commands if "LOGIN" in c.upper()
                          and "CAPABILITY" not in c.upper()], srv.commands)

    def test_login_fallback_quotes_credentials(self):
        srv = self.server(scripted.Mailbox([msg(1)]), caps="IMAP4rev1")
        f = self.fetcher(srv, password='p"a\\ss')
        self.assertEqual(f.once("-v"), 0, f.log())
        self.assertIn('a1 LOGIN "alice" "p\\"a\\\\ss"', srv.commands[:3] +
                      [c for c in srv.commands if "LOGIN" in c])
        self.assertNotIn('p"a', f.log())

    def test_uidvalidity_change_is_recovered_and_says_why(self):
        mb = scripted.Mailbox([msg(i) for i in range(3)], uidvalidity=100)
        srv = self.server(mb)
        f = self.fetcher(srv)
        self.assertEqual(f.once(), 0, f.log())
        mb.uidvalidity = 200
        mb.add(msg(10))
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("UIDVALIDITY changed from 100 to 200", f.log())
        self.assertIn("3 message(s) matched the Maildir, 1 new delivered",
                      f.log())
        self.assertEqual(f.md.count(), 4, "nothing re-delivered, the new one "
                         "fetched under the new numbering")

    def test_exists_during_idle_is_fetched_at_once(self):
        mb = scripted.Mailbox([msg(0)])
        srv = self.server(mb)
        f = self.fetcher(srv).start()
        self.assertTrue(fx.wait_until(lambda: srv.idling and f.md.count() == 1,
                                      10), f.log())
        delays = []
        for i in range(1, 21):
            mb.add(msg(i))
            t0 = srv.notify_exists()
            self.assertTrue(fx.wait_until(lambda: f.md.count() == i + 1, 5,
                                          step=0.001), f.log())
            delays.append(time.monotonic() - t0)
            fx.wait_until(lambda: srv.idling, 5, step=0.001)
        delays.sort()
        print(f"\n* EXISTS -> file in new/: median {delays[10] * 1000:.1f} ms, "
              f"max {delays[-1] * 1000:.1f} ms")
        self.assertEqual(f.stop(), 0)
        self.assertLess(delays[10], 0.5)

    def test_server_that_drops_every_idle_is_not_hammered(self):
        def cmd(c, tag, rest):
            if rest.upper() == "IDLE":
                c.sock.shutdown(socket.SHUT_RDWR)
                raise EOFError
            return False
        srv = self.server(scripted.Mailbox([msg(0)]), hooks={"command": cmd})
        f = self.fetcher(srv).start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 10), f.log())
        # The first connection brought mail: a quick retry. The ones after
        # bring nothing and die at once: 0.5-1 s, then 1-2, 2-4, 4-8 s.
        time.sleep(7)
        n = srv.connections
        self.assertEqual(f.stop(), 0)
        self.assertGreaterEqual(n, 3, f.log())
        self.assertLessEqual(n, 5, f.log())
        delays = [float(d) for d in re.findall(r"reconnecting in ([0-9.]+) s",
                                                f.log())]
        self.assertGreaterEqual(delays[-1], 2 * delays[0], delays)

    def test_silent_server_during_idle_refresh_is_detected(self):
        mb = scripted.Mailbox([msg(0)])

        def cmd(c, tag, rest):
            # After the first IDLE, swallow DONE: the peer looks dead.
            if rest.upper() == "IDLE" and c.srv.connections == 1:
                c.send(b"+ idling\r\n")
                c.readline()
                time.sleep(20)
                return True
            return False
        srv = self.server(mb, hooks={"command": cmd})
        f = self.fetcher(srv, extra="idle_refresh = 10\ntimeout = 3").start()
        # Re-IDLE after 10 s, no answer to DONE within 3 s: reconnect.
        self.assertTrue(fx.wait_until(lambda: srv.connections >= 2, 30), f.log())
        self.assertIn("timed out in IDLE_DONE", f.log())
        f.stop()


if __name__ == "__main__":
    unittest.main()
