"""`idlefetch import-fetchmailrc`: realistic fetchmailrc files become an
idlefetch.conf that idlefetch accepts, with a comment on what has no
counterpart; the common set-up then fetches from Dovecot as fetchmail
did."""
import os
import re
import subprocess
import unittest

import fixture as fx


def run(*args):
    return subprocess.run([fx.IDLEFETCH, *args], capture_output=True,
                          text=True, timeout=60)


class ImportTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.addCleanup(self.env.close)
        self.d = os.path.join(self.env.root, "import")
        os.makedirs(self.d)

    def rc(self, text):
        path = os.path.join(self.d, "fetchmailrc")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def conf(self, text):
        """The output, made to run here: its state directory in the
        test's, written private."""
        text = text.replace("state_dir = /var/lib/idlefetch",
                            f"state_dir = {self.d}/state")
        path = os.path.join(self.d, "idlefetch.conf")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def test_the_common_setup_fetches_like_fetchmail_did(self):
        dv = self.env.dovecot
        msgs = [fx.make_message(i) for i in range(4)]
        dv.put(msgs[:2], seen=True)  # read on the phone already
        dv.put(msgs[2:])
        rc = self.rc(f"""set daemon 60
poll 127.0.0.1 protocol IMAP port {dv.imap_port}
    user "{fx.USER}" there with password "{fx.PASSWORD}" is alice here
    options keep sslcertfile "{dv.certs.ca}"
    mda "/usr/bin/procmail -d %T"
""")
        md = os.path.join(self.d, "Maildir")
        p = run("import-fetchmailrc", rc, "--maildir", md,
                "--secrets-dir", self.d)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertIn(f"port = {dv.imap_port}\ntls = starttls\n", out)
        self.assertIn(f"ca_file = {dv.certs.ca}\n", out)
        self.assertIn(f"password_file = {self.d}/{fx.USER}.password\n", out)
        self.assertNotIn("\npassword = ", out, "no password unless asked")
        self.assertIn("after = keep\n", out)
        self.assertIn("poll_interval = 60\n", out)
        self.assertIn("fetchmail skipped messages already read", out)
        self.assertRegex(out, r"; mda \"/usr/bin/procmail -d %T\": idlefetch "
                              r"writes the Maildir itself")
        # The password file, as the comment says to make it.
        cmd = re.search(r";   (\( umask 077; .*\))", out).group(1)
        subprocess.run(["sh", "-c", cmd.replace("PASSWORD", fx.PASSWORD)],
                       check=True)
        conf = self.conf(out)
        p = run("--check-config", "--config", conf)
        self.assertEqual(p.returncode, 0, p.stderr)
        before = fx.permanent(dv.flags())
        p = run("--once", "--config", conf)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(fx.Maildir(md).contents()), sorted(msgs),
                         "read ones too, unlike fetchmail's keep")
        self.assertEqual(fx.permanent(dv.flags()), before, "keep: no flag")

    def test_realistic_files_translate_with_their_comments(self):
        rc = self.rc("""# ~/.fetchmailrc
set daemon 300
set syslog
set postmaster "alice"
set no bouncemail

defaults proto IMAP timeout 120

poll imap.gmail.com
       user 'bob@gmail.com' there with password 'p w' is 'bob' here
       options ssl sslcertck sslproto TLS1.2+ fetchall nokeep
       folder "INBOX", "Lists/dev" idle limit 5000000

poll mx.example.org via 10.0.0.5 port 993 auth password
    user "carol" password "c" sslfingerprint "12:34:56" keep
    user "dave" password "d" no keep

skip pop.example.net protocol POP3
    user "erin" password "x"
""")
        p = run("import-fetchmailrc", rc, "--maildir", "/srv/mail/x",
                "--keep-passwords")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertIn("log = syslog\n", out)
        self.assertIn("; set postmaster alice: no counterpart", out)
        self.assertIn("[account bob]\nhost = imap.gmail.com\ntls = implicit\n",
                      out)
        self.assertIn("password = p w\n", out)
        self.assertIn("folders = INBOX, Lists/dev\n", out)
        self.assertIn("; sslproto TLS1.2+: idlefetch uses TLS 1.2 or newer",
                      out)
        self.assertIn("; fetchall: not needed", out)
        self.assertIn("; limit 5000000: no counterpart", out)
        self.assertIn("timeout = 120\n", out)  # from defaults
        self.assertIn("[account carol]\nhost = 10.0.0.5\n; via 10.0.0.5: "
                      "idlefetch connects there, as fetchmail did\n"
                      "port = 993\ntls = implicit\n", out)
        self.assertIn("; sslfingerprint 12:34:56 is MD5", out)
        self.assertIn("[account dave]", out)
        self.assertRegex(out, r"\[account dave\](.|\n)*?after = delete\n")
        self.assertIn("; protocol POP3: idlefetch speaks IMAP only", out)
        self.assertIn("; [account erin]\n; host = pop.example.net\n", out)
        # What it wrote is a configuration idlefetch accepts.
        os.makedirs(os.path.join(self.d, "state"))
        p = run("--check-config", "--config", self.conf(out))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(re.findall(r"^\[account (\w+)\]", p.stdout, re.M),
                         ["bob", "carol", "dave"])

    def test_broken_file_names_its_line(self):
        rc = self.rc('poll a.example\n  user "x password "y"\n')
        p = run("import-fetchmailrc", rc)
        self.assertEqual(p.returncode, 2)
        self.assertIn(f"{rc}:2: a quoted string is not closed", p.stderr)
        rc = self.rc("set daemon 60\n")
        p = run("import-fetchmailrc", rc)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no poll entry with a user", p.stderr)


if __name__ == "__main__":
    unittest.main()
