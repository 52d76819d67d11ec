"""The same delivery tests for each place a message can go: idlefetch's
own Maildir, an MDA (Dovecot's dovecot-lda) and an LMTP server (Dovecot's
LMTP), all real; then the answers only a scripted target gives: refusals,
deferrals, a hung program, an LMTP server that is down."""
import os
import random
import signal
import socket
import subprocess
import threading
import time
import unittest

import fixture as fx

RCPT = "bob"


def sample_messages():
    """Messages that test the way there: a Return-Path, dot-led lines,
    8-bit text, a long line, a 300 KB body, already-read ones."""
    msgs = [b"Return-Path: <bounce@example.org>\n" + fx.make_message(0)]
    msgs.append(fx.make_message(1) + b".\n..\n.leading dot\n")
    msgs.append(fx.make_message(2).replace(b"Body", "Gr\u00fc\u00dfe, \u65e5\u672c".encode()))
    msgs.append(fx.make_message(3) + b"x" * 5000 + b"\n")
    msgs.append(fx.make_message(4, size=300 * 1024))
    return msgs


class Delivery:
    """What every target must do. Subclasses say which target."""
    target = None

    def setUp(self):
        self.env = fx.Env()
        self.d = self.env.dovecot

    def tearDown(self):
        self.env.close()

    def fetcher(self, **kw):
        d = self.d
        if self.target == "lmtp":
            kw["deliver"] = (f"deliver = lmtp:127.0.0.1:{d.lmtp_port}\n"
                             f"lmtp_recipient = {RCPT}")
        elif self.target == "mda":
            kw["deliver"] = (f"deliver = mda:/usr/lib/dovecot/deliver "
                             f"-c {d.conf} -d {RCPT} -f %F")
        return self.env.idlefetch(**kw)

    def delivered(self, f):
        """Every message the target holds, as bytes."""
        md = f.md if self.target == "maildir" else fx.Maildir(
            os.path.join(self.d.mail, RCPT, "Maildir"))
        return md.contents("new") + md.contents("cur")

    def assertHolds(self, got, originals, twice=0):
        """Each original arrived whole (a target may put trace fields
        before it), and no more than `twice` of them more than once."""
        counts = {}
        for body in got:
            match = [o for o in originals if body.endswith(o)]
            self.assertEqual(len(match), 1, body[:400])
            counts[match[0]] = counts.get(match[0], 0) + 1
        self.assertEqual(set(counts), set(originals), "every message arrived")
        extra = sum(n - 1 for n in counts.values())
        self.assertLessEqual(extra, twice, "more duplicates than warned of")

    def test_delivers_every_message_whole(self):
        msgs = sample_messages()
        self.d.put(msgs[:3])
        self.d.put(msgs[3:], seen=True)
        before = fx.permanent(self.d.flags())
        f = self.fetcher()
        self.assertEqual(f.once(), 0, f.log())
        got = self.delivered(f)
        self.assertHolds(got, msgs)
        self.assertEqual(len(got), len(msgs))
        # keep: the server's flags are as they were, read mail included.
        self.assertEqual(fx.permanent(self.d.flags()), before)
        if self.target != "maildir":
            # The envelope sender is the message's Return-Path.
            first = [b for b in got if b.endswith(msgs[0])][0]
            self.assertTrue(first.startswith(
                b"Return-Path: <bounce@example.org>\n"), first[:300])
            spool = os.path.join(f.state_dir, "acct", "spool", "tmp")
            self.assertEqual(os.listdir(spool), [], "the spool is emptied")
        # Once more: nothing new, nothing delivered again.
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(len(self.delivered(f)), len(msgs))

    def test_new_mail_while_idle(self):
        f = self.fetcher().start()
        self.assertTrue(fx.wait_until(lambda: "selected:" in f.log(), 15), f.log())
        msg = fx.make_message(7)
        self.d.lmtp(msg)
        self.assertTrue(fx.wait_until(lambda: len(self.delivered(f)) == 1,
                                      15), f.log())
        # Dovecot's LMTP put its trace fields in front (and smtplib
        # a line end behind).
        self.assertIn(msg.rstrip(b"\n"), self.delivered(f)[0])
        self.assertEqual(f.stop(), 0)

    def test_kill9_loses_nothing(self):
        """kill -9 five times while a 150-message backlog is delivered
        with after = delete, each time once more of it has arrived: at
        the end every message is there, the server is empty, and any
        second copy was announced at the restart that made it."""
        rnd = random.Random(5)
        msgs = [fx.make_message(i, size=rnd.choice((0, 3000, 40000)))
                for i in range(150)]
        self.d.put(msgs)
        f = self.fetcher(after="delete")
        for k in range(5):
            f.start()
            goal = 20 * (k + 1)
            fx.wait_until(lambda: len(self.delivered(f)) >= goal, 30,
                          step=0.002)
            f.stop(signal.SIGKILL)
            for body in self.delivered(f):
                self.assertTrue(any(body.endswith(m) for m in msgs),
                                "a whole message, kill %d" % k)
            # Never neither: each message is delivered or on the server.
            ids = {fx.message_id(m) for m in msgs}
            here = {fx.message_id(b[b.find(b"From: sender"):])
                    for b in self.delivered(f)}
            self.assertEqual(ids - here - set(self.d.message_ids()), set())
        # The last kill may come after everything is in: wait for this
        # start's login too, so that SIGTERM finds the daemon running.
        logins = f.log().count("logged in as")
        f.start()
        self.assertTrue(fx.wait_until(
            lambda: self.d.count() == 0 and
            len({b for b in self.delivered(f)}) >= len(msgs) and
            f.log().count("logged in as") > logins, 60), f.log())
        self.assertEqual(f.stop(), 0)
        warned = f.log().count("may arrive twice")
        if self.target == "maildir":
            self.assertEqual(warned, 0)
        self.assertHolds(self.delivered(f), msgs, twice=warned)


class MaildirDelivery(Delivery, unittest.TestCase):
    target = "maildir"


class LmtpDelivery(Delivery, unittest.TestCase):
    target = "lmtp"


class MdaDelivery(Delivery, unittest.TestCase):
    target = "mda"


MDA_SCRIPT = r"""#!/usr/bin/python3
# A delivery program with moods, read from the message.
import os, sys, time
out, marks = sys.argv[1], sys.argv[2]
body = sys.stdin.buffer.read()
def once(name):
    p = os.path.join(marks, name)
    if os.path.exists(p):
        return False
    open(p, "w").close()
    return True
if b"X-Mood: refuse" in body:
    sys.stderr.write("no such mailbox\nsecond line\n")
    sys.exit(1)
if b"X-Mood: defer" in body and once("defer"):
    sys.exit(75)
if b"X-Mood: hang" in body and once("hang"):
    time.sleep(60)
n = len(os.listdir(out))
with open(os.path.join(out, "%04d" % n), "wb") as f:
    f.write(("argv: %s\nenv: %s\n" % (sys.argv[3:], sorted(os.environ)))
            .encode() + body)
"""


def mood(i, m):
    return fx.make_message(i).replace(b"\n\n", f"\nX-Mood: {m}\n\n".encode(), 1)


class TargetAnswers(unittest.TestCase):
    """Refusals and deferrals, from a program and an LMTP server."""

    def setUp(self):
        self.env = fx.Env()
        self.d = self.env.dovecot
        self.dir = os.path.join(self.env.root, "mda")
        self.out = os.path.join(self.dir, "out")
        self.marks = os.path.join(self.dir, "marks")
        os.makedirs(self.out)
        os.makedirs(self.marks)

    def tearDown(self):
        self.env.close()

    def mda(self, **kw):
        script = os.path.join(self.dir, "deliver.py")
        with open(script, "w") as s:
            s.write(MDA_SCRIPT)
        os.chmod(script, 0o755)
        return self.env.idlefetch(
            deliver=f"deliver = mda:{script} {self.out} {self.marks} "
                    f"-f %F -a %a -f %f 100%%", **kw)

    def outputs(self):
        res = []
        for n in sorted(os.listdir(self.out)):
            with open(os.path.join(self.out, n), "rb") as f:
                res.append(f.read())
        return res

    def test_program_answers(self):
        """after = delete: a refused message stays on the server (and is
        never deleted later), a deferred one and one whose program hung
        are handed over again, later mail goes on, and the program gets
        its words without a shell and none of idlefetch's variables."""
        msgs = [b"Return-Path: <list-bounce@example.org>\n" +
                fx.make_message(0), mood(1, "refuse"), mood(2, "defer"),
                mood(3, "hang"), fx.make_message(4)]
        self.d.put(msgs)
        f = self.mda(after="delete", glob="command_timeout = 2")
        f.start(env={"SECRET_PW": "hunter2"})
        ok = fx.wait_until(lambda: len(self.outputs()) == 4 and
                           self.d.count() == 1, 40)
        self.assertTrue(ok, f.log())
        log = f.log()
        self.assertIn("the target refused 1 message(s), UID 2 first", log)
        self.assertIn("exited with status 1: no such mailbox", log)
        self.assertIn("delivery deferred", log)
        self.assertIn("exited with status 75", log)
        self.assertIn("took longer than 2 s and was killed", log)
        self.assertEqual(self.d.message_ids(), [fx.message_id(msgs[1])])
        got = self.outputs()
        self.assertEqual([fx.message_id(b[b.find(b"From: sender"):])
                          for b in got],
                         [fx.message_id(m) for m in msgs if m != msgs[1]])
        self.assertTrue(got[0].startswith(
            b"argv: ['-f', 'list-bounce@example.org', '-a', 'acct', "
            b"'-f', 'INBOX', '100%']\n"), got[0][:200])
        self.assertIn(b"'-f', '',", got[1][:200])  # no Return-Path
        self.assertNotIn(b"SECRET_PW", got[0][:2000])
        self.assertIn(b"'IDLEFETCH_SENDER'", got[0][:2000])
        # A restart: the refused one is neither deleted nor handed over.
        self.assertEqual(f.stop(), 0)
        with open(os.path.join(f.state_dir, "acct", "INBOX.state")) as st:
            state = st.read()
        self.assertIn("refused 2\n", state)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(self.d.message_ids(), [fx.message_id(msgs[1])])
        self.assertEqual(len(self.outputs()), 4)
        # Deferred by the program's own answer: no false alarm.
        self.assertNotIn("may arrive twice", f.log())

    def test_lmtp_answers(self):
        """A scripted LMTP server: down at first (deferred, tried again),
        then 451 once and 550 for one message; without PIPELINING."""
        srv = ScriptedLmtp()
        self.addCleanup(srv.stop)
        msgs = [mood(0, "refuse"), mood(1, "defer"), fx.make_message(2)]
        self.d.put(msgs)
        f = self.env.idlefetch(after="delete", deliver=(
            f"deliver = lmtp:127.0.0.1:{srv.port}\nlmtp_recipient = bob"))
        f.start()
        self.assertTrue(fx.wait_until(
            lambda: "LMTP cannot connect" in f.log(), 15), f.log())
        self.assertEqual(self.d.count(), 3)
        srv.start()
        self.assertTrue(fx.wait_until(
            lambda: len(srv.got) == 2 and self.d.count() == 1, 40), f.log())
        self.assertEqual(f.stop(), 0)
        log = f.log()
        self.assertIn("LMTP server refused the message: 550 5.2.0 no", log)
        self.assertIn("LMTP server refused the message: 451 4.3.0 later", log)
        self.assertEqual(self.d.message_ids(), [fx.message_id(msgs[0])])
        self.assertEqual([fx.message_id(b) for b in srv.got],
                         [fx.message_id(m) for m in msgs[1:]])
        for body, m in zip(srv.got, msgs[1:]):
            self.assertEqual(body, m, "dot-stuffing undone, LF restored")
        self.assertIn(b"MAIL FROM:<>", srv.commands)
        self.assertNotIn(b"PIPELINING", srv.commands)


MDA_BACKGROUND = r"""#!/bin/sh
# Stores the message, then leaves a child running that holds standard
# error open (as a program that starts an agent does), and exits 0.
n=$(ls "$1" | wc -l)
cat > "$1/$n" || exit 75
sleep 20 &
echo $! >> "$2"
exit 0
"""


class MisbehavingTargets(unittest.TestCase):
    """What a target that misbehaves cannot make idlefetch do: hand a
    message over again and again, hang past its timeout, or send a bare
    CR where the receiver may take it for a line end."""

    def setUp(self):
        self.env = fx.Env()
        self.d = self.env.dovecot

    def tearDown(self):
        self.env.close()

    def lmtp(self, srv, extra=""):
        srv.start()
        self.addCleanup(srv.stop)
        return self.env.idlefetch(extra=extra, deliver=(
            f"deliver = lmtp:127.0.0.1:{srv.port}\nlmtp_recipient = bob"))

    def timed_once(self, f, limit):
        """--once's exit code and seconds; a run past limit fails."""
        t0 = time.monotonic()
        try:
            rc = f.once(timeout=limit)
        except subprocess.TimeoutExpired:
            self.fail(f"--once still running after {limit} s\n" + f.log())
        return rc, time.monotonic() - t0

    def test_lmtp_long_reply_line_delivers_once(self):
        """A 250 answer to the data with 5,000 bytes of text after its
        code: the code counts, so three --once runs hand the message
        over once, and each says it was delivered."""
        srv = ScriptedLmtp(reply=lambda say, body: (
            srv.got.append(body), say(b"250 2.0.0 " + b"x" * 5000)))
        msg = fx.make_message(0)
        self.d.put([msg])
        f = self.lmtp(srv)
        rcs = [f.once() for run in range(3)]
        self.assertEqual(len(srv.got), 1, "stored exactly once\n" + f.log())
        self.assertEqual(srv.got, [msg])
        self.assertEqual(rcs, [0, 0, 0], f.log())
        self.assertNotIn("not LMTP", f.log())

    def test_lmtp_long_greeting_and_lhlo_lines(self):
        """A 5,000-byte greeting and LHLO line: their codes count, and the
        line after the long one is read whole (8BITMIME is seen)."""
        srv = ScriptedLmtp(greeting=b"220 " + b"g" * 5000,
                           lhlo=(b"250-" + b"h" * 5000, b"250 8BITMIME"))
        msg = fx.make_message(0)
        self.d.put([msg])
        f = self.lmtp(srv)
        rcs = [f.once() for run in range(3)]
        self.assertEqual(len(srv.got), 1, "stored exactly once\n" + f.log())
        self.assertEqual(srv.got, [msg])
        self.assertEqual(rcs, [0, 0, 0], f.log())
        self.assertIn(b"BODY=8BITMIME", srv.commands)

    def test_mda_child_holding_stderr_delivers_once(self):
        """An MDA that stores the message and exits 0 but leaves a child
        holding its standard error: judged by its exit, the message is
        stored once over three --once runs, none killed at
        command_timeout = 3."""
        mdadir = os.path.join(self.env.root, "mda")
        out, pids = os.path.join(mdadir, "out"), os.path.join(mdadir, "pids")
        os.makedirs(out)
        script = os.path.join(mdadir, "deliver.sh")
        with open(script, "w") as s:
            s.write(MDA_BACKGROUND)
        os.chmod(script, 0o755)
        self.addCleanup(kill_listed, pids)
        msg = fx.make_message(0)
        self.d.put([msg])
        f = self.env.idlefetch(glob="command_timeout = 3",
                               deliver=f"deliver = mda:{script} {out} {pids}")
        runs = [self.timed_once(f, 60) for run in range(3)]
        stored = sorted(os.listdir(out))
        self.assertEqual(len(stored), 1, "stored exactly once\n" + f.log())
        self.assertEqual([rc for rc, _ in runs], [0, 0, 0], f.log())
        for rc, took in runs:
            self.assertLess(took, 3, "a run waited for the child")
        with open(os.path.join(out, stored[0]), "rb") as m:
            self.assertEqual(m.read(), msg)
        self.assertNotIn("was killed", f.log())

    def test_lmtp_trickling_reply_ends_within_timeout(self):
        """timeout = 5 and a server that answers the data with a line a
        second for 30 s: the whole reply has 5 s, so --once ends within
        twice the timeout, the delivery deferred and the message still
        on the server."""
        def trickle(say, body):
            for i in range(30):
                if srv.stopping:
                    return
                say(b"250-still going %d" % i)
                time.sleep(1)
            srv.got.append(body)
            say(b"250 2.0.0 delivered at last")
        srv = ScriptedLmtp(reply=trickle)
        self.d.put([fx.make_message(0)])
        f = self.lmtp(srv, extra="timeout = 5\n")
        rc, took = self.timed_once(f, 25)
        self.assertNotEqual(rc, 0, f.log())
        self.assertLess(took, 10, f.log())
        self.assertIn("LMTP message data: no whole reply within 5 s", f.log())
        self.assertEqual(self.d.count(), 1, "the message stays on the server")

    def test_lmtp_endless_reply_is_cut_at_line_cap(self):
        """A server that answers the data with continuation lines as fast
        as it can, for 12 s: after 100 lines the reply is no LMTP reply,
        long before timeout = 30 (or the flood's end)."""
        def flood(say, body):
            end = time.monotonic() + 12
            i = 0
            while time.monotonic() < end and not srv.stopping:
                say(b"250-flood %d" % i)
                i += 1
            srv.got.append(body)
            say(b"250 2.0.0 delivered at last")
        srv = ScriptedLmtp(reply=flood)
        self.d.put([fx.make_message(0)])
        f = self.lmtp(srv, extra="timeout = 30\n")
        rc, took = self.timed_once(f, 60)
        self.assertNotEqual(rc, 0, f.log())
        self.assertLess(took, 10, f.log())
        self.assertIn("LMTP message data: the server's reply runs over "
                      "100 lines", f.log())
        self.assertEqual(srv.got, [])

    def test_lmtp_bare_cr_goes_as_line_end(self):
        """A bare CR in a message goes on the wire as CRLF, so that the
        dot after it is doubled; a CR LF that straddles two reads of the
        spooled message stays one line end."""
        head = fx.make_message(0) + b"line1\r.\nline2\r\rline3\n"
        # The spool keeps the message with LF line ends; the first CR of
        # "\r\r\n" stays as a lone CR before the LF, which lands on the
        # first byte of lmtp's second 16 KiB read.
        pad = 16383 - len(head) - len(b"AAAA")
        msg = head + b"p" * (pad - 1) + b"\nAAAA\r\r\nBBBB\n"
        self.d.put([msg])
        srv = ScriptedLmtp()
        f = self.lmtp(srv)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(len(srv.raw), 1, f.log())
        raw = srv.raw[0]
        self.assertIn(b"line1\r\n..\r\nline2\r\n\r\nline3\r\n", raw)
        self.assertIn(b"\r\nAAAA\r\nBBBB\r\n", raw)
        self.assertEqual(raw.count(b"\r"), raw.count(b"\r\n"), "no bare CR")
        self.assertEqual(raw.count(b"\n"), raw.count(b"\r\n"), "no bare LF")


def kill_listed(path):
    """Ends the processes whose ids a test's script wrote to path."""
    try:
        with open(path) as f:
            pids = [int(l) for l in f if l.strip()]
    except FileNotFoundError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ScriptedLmtp:
    """An LMTP server of a few rules, without PIPELINING, on loopback.
    greeting and lhlo: the lines it says first and to LHLO; reply(say,
    body): what it answers to a message's data instead of its rules.
    raw keeps each message's data as it came on the wire."""

    def __init__(self, greeting=b"220 scripted LMTP",
                 lhlo=(b"250-scripted", b"250 8BITMIME"), reply=None):
        self.port = fx.free_port()
        self.got, self.commands, self.deferred = [], b"", False
        self.raw = []
        self.greeting, self.lhlo, self.reply = greeting, lhlo, reply
        self.sock = None
        self.stopping = False

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.sock is not None:
            self.stopping = True
            self.thread.join(5)
            self.sock.close()

    def serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            c.settimeout(10)
            try:
                self.session(c.makefile("rwb"))
            except (OSError, ValueError):
                pass
            c.close()

    def answer(self, say, body):
        if b"X-Mood: refuse" in body:
            say(b"550 5.2.0 no")
        elif b"X-Mood: defer" in body and not self.deferred:
            self.deferred = True
            say(b"451 4.3.0 later")
        else:
            self.got.append(body)
            say(b"250 2.0.0 delivered")

    def session(self, io):
        def say(line):
            io.write(line + b"\r\n")
            io.flush()
        say(self.greeting)
        while True:
            line = io.readline()
            if not line:
                return
            self.commands += line
            verb = line[:4].upper()
            if verb == b"LHLO":
                for l in self.lhlo:
                    say(l)
            elif verb in (b"MAIL", b"RCPT", b"RSET"):
                say(b"250 2.0.0 ok")
            elif verb == b"DATA":
                say(b"354 go on")
                body, raw = b"", b""
                while True:
                    l = io.readline()
                    if l in (b".\r\n", b""):
                        break
                    raw += l
                    body += (l[1:] if l.startswith(b".") else l)
                self.raw.append(raw)
                body = body.replace(b"\r\n", b"\n")
                (self.reply or self.answer)(say, body)
            elif verb == b"QUIT":
                say(b"221 bye")
                return
            else:
                say(b"500 what")


if __name__ == "__main__":
    unittest.main()
