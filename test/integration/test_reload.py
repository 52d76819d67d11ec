"""SIGHUP reloads the configuration: what changed reconnects with the new
settings, what did not keeps its connection, a broken file changes
nothing."""
import os
import re
import signal
import subprocess
import unittest

import fixture as fx


def selects(log, account, folder):
    """How many times the account selected the folder (one per login)."""
    return len(re.findall(rf'account={account} folder="{re.escape(folder)}" '
                          r'msg="selected', log))


class ReloadTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.f = self.env.idlefetch(tls="implicit", name="a")
        with open(self.f.conf) as c:
            self.base = c.read()
        self.b_maildir = os.path.join(self.env.root, "b-Maildir")
        self.b = fx.account_section("b", self.env.dovecot, "Archive",
                                    self.b_maildir)

    def tearDown(self):
        self.f.stop(signal.SIGKILL)
        self.env.close()

    def rewrite(self, text):
        with open(self.f.conf, "w") as c:
            c.write(text)

    def hup_and_wait(self, needle, n):
        self.f.proc.send_signal(signal.SIGHUP)
        self.assertTrue(fx.wait_until(lambda: self.f.log().count(needle) >= n,
                                      10), self.f.log())

    def test_sighup_applies_what_changed_and_keeps_the_rest(self):
        d, f = self.env.dovecot, self.f
        d.put([fx.make_message(i) for i in range(2)])
        f.start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 15), f.log())

        # A new account starts; the unchanged one keeps its connection.
        self.rewrite(self.base + self.b)
        self.hup_and_wait("configuration reloaded: 1 account(s) unchanged, "
                          "0 restarted, 0 removed, 1 new", 1)
        d.save(fx.make_message(100), "Archive")
        b_archive = fx.Maildir(self.b_maildir + "/.Archive")
        self.assertTrue(fx.wait_until(lambda: b_archive.count() == 1, 15),
                        f.log())
        self.assertEqual(selects(f.log(), "a", "INBOX"), 1)

        # Account a gains a folder: it reconnects, b does not.
        self.rewrite(self.base.replace("folders = INBOX",
                                       "folders = INBOX, Archive") + self.b)
        self.hup_and_wait("1 account(s) unchanged, 1 restarted", 1)
        self.assertIn("account=a msg=\"settings changed: reconnecting\"",
                      f.log())
        a_archive = fx.Maildir(f.maildir_path + "/.Archive")
        self.assertTrue(fx.wait_until(lambda: a_archive.count() == 1, 15),
                        f.log())
        self.assertTrue(fx.wait_until(
            lambda: selects(f.log(), "a", "INBOX") == 2, 15), f.log())
        self.assertEqual(selects(f.log(), "b", "Archive"), 1)

        # A broken file: an error that names it, and nothing changes.
        self.rewrite(self.base + "bogus = 1\n" + self.b)
        self.hup_and_wait("keeping the running configuration", 1)
        self.assertRegex(f.log(), rf"SIGHUP: {re.escape(f.conf)}:\d+: "
                         r"key 'bogus'")
        d.lmtp(fx.make_message(3))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 3, 15), f.log())
        self.assertEqual(selects(f.log(), "a", "INBOX"), 2)
        self.assertEqual(selects(f.log(), "b", "Archive"), 1)

        # Account b removed: it logs out; a stays.
        self.rewrite(self.base.replace("folders = INBOX",
                                       "folders = INBOX, Archive"))
        self.hup_and_wait("1 account(s) unchanged, 0 restarted, 1 removed", 1)
        self.assertIn('account=b msg="no longer configured: stopping"',
                      f.log())
        d.save(fx.make_message(101), "Archive")
        self.assertTrue(fx.wait_until(lambda: a_archive.count() == 2, 15),
                        f.log())
        self.assertEqual(b_archive.count(), 1, "b stopped fetching")
        p = subprocess.run([fx.IDLEFETCH, "status", "--config", f.conf],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertNotIn("b:", p.stdout)

        self.assertEqual(f.stop(), 0)
        for md in (f.md, a_archive, b_archive):
            got = md.contents()
            self.assertEqual(len(got), len(set(got)), "nothing twice")
        self.assertEqual(f.md.count(), 3)

    def test_a_new_exclude_pattern_lets_a_subscribed_folder_go(self):
        d, f = self.env.dovecot, self.f
        for name in ("Work", "Lists"):
            d.doveadm("mailbox", "create", "-s", "-u", fx.USER, name)
        self.rewrite(self.base.replace("folders = INBOX", "folders = *"))
        f.start()
        # Without NOTIFY each folder has a connection: all opened first.
        self.assertTrue(fx.wait_until(
            lambda: selects(f.log(), "a", "Lists") == 1 and
            selects(f.log(), "a", "Work") == 1, 15), f.log())
        self.rewrite(self.base.replace("folders = INBOX", "folders = *\n"
                                       "exclude = Lists"))
        self.hup_and_wait("configuration reloaded: 0 account(s) unchanged, "
                          "1 restarted", 1)
        self.assertTrue(fx.wait_until(
            lambda: selects(f.log(), "a", "Work") == 2, 15), f.log())
        d.save(fx.make_message(1), "Lists")
        d.save(fx.make_message(2), "Work")
        work = fx.Maildir(f.maildir_path + "/.Work")
        self.assertTrue(fx.wait_until(lambda: work.count() == 1, 15),
                        f.log())
        self.assertEqual(fx.Maildir(f.maildir_path + "/.Lists").count(), 0)
        self.assertEqual(selects(f.log(), "a", "Lists"), 1)

    def test_reload_in_the_middle_of_a_backlog_loses_and_repeats_nothing(self):
        d, f = self.env.dovecot, self.f
        # Enough that the reload lands mid-backlog even on a loaded machine
        # (the stop waits for a read that ends between two messages).
        n = 600
        msgs = [fx.make_message(i, size=150000) for i in range(n)]
        d.put(msgs)
        f.start()
        self.assertTrue(fx.wait_until(lambda: "starting" in f.log(), 10,
                                      step=0.002), f.log())
        # Account a changes while its backlog streams in: it stops after
        # the message in flight, commits, and starts again.
        self.rewrite(self.base + "timeout = 61\n")
        self.assertTrue(fx.wait_until(lambda: f.md.count() > 0, 15,
                                      step=0.002), f.log())
        self.hup_and_wait("0 account(s) unchanged, 1 restarted", 1)
        self.assertLess(f.md.count(), n, "the reload came mid-backlog")
        self.assertTrue(fx.wait_until(lambda: f.md.count() == n, 60),
                        f.log())
        self.assertEqual(f.stop(), 0)
        got = f.md.contents()
        self.assertEqual(sorted(got), sorted(msgs), "each message once")
        self.assertEqual(f.md.files("tmp"), [])

    def test_password_file_change_is_picked_up_by_sighup(self):
        pw = os.path.join(self.env.root, "pw")
        with open(pw, "w") as p:
            p.write("wrong\n")
        os.chmod(pw, 0o600)
        self.rewrite(self.base.replace(f"password = {fx.PASSWORD}",
                                       f"password_file = {pw}"))
        f = self.f
        f.start()
        self.assertTrue(fx.wait_until(
            lambda: "reconnecting in" in f.log(), 15), f.log())
        with open(pw, "w") as p:
            p.write(fx.PASSWORD + "\n")
        self.env.dovecot.lmtp(fx.make_message(1))
        self.hup_and_wait("0 account(s) unchanged, 1 restarted", 1)
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 15), f.log())
        self.assertEqual(f.stop(), 0)


if __name__ == "__main__":
    unittest.main()
