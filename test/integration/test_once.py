"""--once against a real Dovecot over plaintext, STARTTLS and implicit TLS."""
import unittest

import fixture as fx


class OnceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = fx.Env()
        d = cls.env.dovecot
        # 250 unread (three of them 2 MB) then 50 already \Seen: 300 in all.
        unread = [fx.make_message(i, size=2 * 1024 * 1024 if i in (3, 100, 200)
                                  else 0) for i in range(250)]
        seen = [fx.make_message(250 + i) for i in range(50)]
        # One message with CR bytes that are not part of a line end.
        unread[7] = (b"From: a@example.org\nSubject: cr\n\n"
                     b"bare\rcarriage return\n")
        d.put(unread)
        d.put(seen, seen=True)
        cls.expected = sorted(unread + seen)
        cls.flags_before = d.flags()

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def check_transport(self, tls):
        f = self.env.idlefetch(tls=tls, name=f"once-{tls}")
        self.assertEqual(f.once(), 0, f.log())
        got = f.md.contents()
        self.assertEqual(len(got), 300, "each message delivered exactly once")
        self.assertEqual(sorted(got), self.expected,
                         "bytes identical to the server copy (CRLF -> LF)")
        self.assertEqual(f.md.files("tmp"), [], "nothing left in tmp/")
        # \Recent is a session flag (gone from IMAP4rev2) that any SELECT
        # clears; every stored flag, \Seen first, stays as it was.
        self.assertEqual(fx.permanent(self.env.dovecot.flags()),
                         fx.permanent(self.flags_before),
                         "keep mode changes no flag on the server")
        # A second run adds nothing.
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 300)
        self.assertNotIn("password", f.log().lower().replace(
            "password_", ""), "no password in the log")
        return f

    def test_plaintext_delivers_each_message_once(self):
        f = self.check_transport("none")
        self.assertIn("without TLS", f.log())

    def test_starttls_delivers_each_message_once(self):
        f = self.check_transport("starttls")
        self.assertIn("over TLS", f.log())

    def test_implicit_tls_delivers_each_message_once(self):
        f = self.check_transport("implicit")
        self.assertIn("over TLS", f.log())

    def test_seen_messages_are_fetched_in_keep_mode(self):
        f = self.env.idlefetch(tls="implicit", name="seen")
        self.assertEqual(f.once(), 0, f.log())
        subjects = [c for c in f.md.contents() if b"test message 29" in c]
        self.assertTrue(any(b"Subject: test message 299\n" in c
                            for c in subjects), "a \\Seen message was fetched")

    def test_new_mail_between_runs_is_fetched_once(self):
        f = self.env.idlefetch(tls="implicit", name="incremental",
                               folders="Lists/dev")
        d = self.env.dovecot
        d.put([fx.make_message(1000 + i) for i in range(3)], folder="Lists/dev")
        self.assertEqual(f.once(), 0, f.log())
        sub = fx.Maildir(f.maildir_path + "/.Lists.dev")
        self.assertEqual(sub.count(), 3, "non-INBOX folder is a Maildir++ "
                         "subfolder")
        d.put([fx.make_message(2000 + i) for i in range(2)], folder="Lists/dev")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(sub.count(), 5)

    def test_progress_bar_on_a_terminal_only(self):
        import os
        import pty
        import subprocess
        f = self.env.idlefetch(tls="implicit", name="bar")
        master, slave = pty.openpty()
        p = subprocess.Popen([fx.IDLEFETCH, "--config", f.conf, "--once"],
                             stdout=slave, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        self.assertEqual(p.wait(60), 0, out)
        text = out.decode()
        self.assertRegex(text, r"\[#{30}\] 300/300 messages 100%")
        # Each log line is written above the bar, never into it.
        for line in text.replace("\r\033[K", "\n").splitlines():
            self.assertFalse("msg=" in line and "[#" in line, line)
        # The final count stays on the screen, above the last log line.
        self.assertRegex(text, r"\[#{30}\] 300/300 messages 100%\r?\n"
                         r"[^\033]*exiting with status 0\"\r?\n$")
        self.assertEqual(f.md.count(), 300)
        # Not on a terminal (a file here): the log stays plain lines.
        g = self.env.idlefetch(tls="implicit", name="nobar")
        self.assertEqual(g.once(), 0, g.log())
        self.assertNotIn("\033", g.log())
        self.assertNotIn("messages 100%", g.log())


if __name__ == "__main__":
    unittest.main()
