"""`idlefetch import-fetchmailrc`: realistic fetchmailrc files become an
idlefetch.conf that idlefetch accepts, with a comment on what has no
counterpart; the common set-up then fetches from Dovecot as fetchmail
did."""
import os
import re
import resource
import shutil
import stat
import subprocess
import tempfile
import unittest

import fixture as fx


def run(*args, **kw):
    return subprocess.run([fx.IDLEFETCH, *args], capture_output=True,
                          text=True, timeout=60, **kw)


def sanitized():
    """An ASan build maps terabytes of shadow memory at its start: no
    RLIMIT_DATA fits it; it is held to a resident-memory limit instead."""
    with open(shutil.which(fx.IDLEFETCH) or fx.IDLEFETCH, "rb") as f:
        return b"__asan_init" in f.read()


# A password that idlefetch.conf cannot hold as it is: inih cuts a value at
# " ;", and the configuration expands ${NAME}.
ODD_PASSWORD = "p w ;x ${HOME}"

# What a harmless fetchmailrc became before values were checked; it must
# come out the same, byte for byte.
HARMLESS_RC = """# ~/.fetchmailrc
set daemon 120
set logfile "/var/log/fetchmail; old.log"
defaults proto IMAP timeout 90
poll "mail.example.org" via "10.0.0.7" port 993
    user "j.doe@example.org" there with password "s3cr;t\\"x" is 'john doe' here
    options ssl keep sslcertfile "/etc/ssl/my ca.pem"
    folder "INBOX", "Lists/dev;ops", 'Sent Items'
    mda "/usr/bin/procmail -d %T; echo ${done}"
    limit 5000000
"""
HARMLESS_CONF = """; idlefetch.conf made by `idlefetch import-fetchmailrc` from {rc}.
; Read the comments, then check it with: idlefetch --check-config --config FILE

[global]
state_dir = /var/lib/idlefetch
; set logfile /var/log/fetchmail; old.log: idlefetch logs to stderr (the journal under systemd), syslog or JSON lines (log =)
; set daemon 120: idlefetch waits with IDLE and needs no polling; poll_interval = 120 below is for servers without IDLE

; from the poll entry for mail.example.org at {rc}:5
[account j.doe]
host = 10.0.0.7
; via 10.0.0.7: idlefetch connects there, as fetchmail did
port = 993
tls = implicit
ca_file = /etc/ssl/my ca.pem
username = j.doe@example.org
password = s3cr;t"x
folders = INBOX, Lists/dev;ops, Sent Items
maildir = /srv/mail/j
; mda "/usr/bin/procmail -d %T; echo ${{done}}": idlefetch writes the Maildir itself; check that the MDA delivered to /srv/mail/j
; (to keep the MDA, replace maildir = with deliver = mda:PROGRAM ARGS: no shell, %F is the sender)
; is john doe here: the Maildir above is that user's
after = keep
; keep without fetchall: fetchmail skipped messages already read on the server; idlefetch fetches every new one, read or not
timeout = 90
poll_interval = 120
; limit 5000000: no counterpart in idlefetch
"""


class ImportCase(unittest.TestCase):
    dovecot_kw = {}

    def setUp(self):
        self.env = fx.Env(**self.dovecot_kw)
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


class ImportTest(ImportCase):
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

    def test_harmless_values_import_as_before(self):
        """Spaces, ';' without a space before it, quotes and '${' in a
        comment: each reaches the configuration as it did."""
        rc = self.rc(HARMLESS_RC)
        p = run("import-fetchmailrc", rc, "--maildir", "/srv/mail/j",
                "--keep-passwords")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, HARMLESS_CONF.format(rc=rc))

    def test_a_line_break_in_any_value_injects_nothing(self):
        """The audit's rc file: a quoted value that holds a line break
        and an [account evil] with a password_command. Whichever value
        carries it, the import is refused, naming the line and keyword,
        and nothing is printed that --check-config could run."""
        pwned = os.path.join(self.d, "PWNED")
        evil = (f"INBOX\nmaildir = {self.d}/evil\n[account evil]\n"
                f"password_command = touch {pwned}\nfolders = INBOX")
        ok = {"host": "mail.example.org", "user": "u", "pass": "p",
              "folder": "INBOX", "mda": "/usr/bin/procmail",
              "sslcertfile": "/etc/ssl/ca.pem"}
        for key in ok:
            for ctl in ("\n", "\r", "\x1b"):
                with self.subTest(key=key, ctl=repr(ctl)):
                    v = dict(ok, **{key: evil.replace("\n", ctl)})
                    rc = self.rc(
                        'set daemon 60\npoll "{host}"\n'
                        '  user "{user}" password "{pass}"\n'
                        '  folder "{folder}" mda "{mda}"\n'
                        '  sslcertfile "{sslcertfile}"\n'.format(**v))
                    line = {"host": 2, "user": 3, "pass": 3}.get(key, 4)
                    line = 5 if key == "sslcertfile" else line
                    word = {"host": "poll", "pass": "password"}.get(key,
                                                                    key)
                    p = run("import-fetchmailrc", rc, "--keep-passwords")
                    self.assertEqual(p.returncode, 2, p.stdout)
                    self.assertEqual(p.stdout, "")
                    self.assertIn(f"{rc}:{line}: the value after '{word}' "
                                  f"holds a control character (0x"
                                  f"{ord(ctl):02x})", p.stderr)
                    self.assertNotIn("touch", p.stderr)
        self.assertFalse(os.path.exists(pwned))

    def test_a_value_the_configuration_cannot_hold_is_refused(self):
        """idlefetch.conf has no quoting: a value with ' ;', '${', spaces
        at its ends or (in a folder list) ',' would not come back as it
        was; the import says which and where instead."""
        comment = "a ';' after a space or at its start begins a comment"
        cases = [("folder", '"Lists ;x"', comment),
                 ("folder", '"a,b"', "its ',' would split it in two"),
                 ("user", '"${HOME}"',
                  "'${' would be read as an environment variable"),
                 ("sslcertfile", '" /etc/ca.pem"',
                  "the spaces at its start or end would be dropped"),
                 ("via", '";x"', comment)]
        for key, value, why in cases:
            with self.subTest(key=key, value=value):
                rc = self.rc(f'poll mail.example.org\n  user "u"\n'
                             f'  {key} {value}\n')
                p = run("import-fetchmailrc", rc)
                self.assertEqual(p.returncode, 2, p.stdout)
                self.assertEqual(p.stdout, "")
                self.assertIn(f"{rc}:3: {key} '{value[1:-1]}': "
                              "idlefetch.conf cannot hold this value as it "
                              f"is: {why}\n", p.stderr)

    def test_a_huge_rc_file_imports_in_bounded_memory(self):
        """800 KB of 200,000 quoted words: once each took the rest of the
        file (6.4 s, 810 MB). Now it imports under a 32 MiB data limit
        (an ASan build: 128 MiB resident), each word noted up to a cap."""
        n = 200000
        rc = self.rc('poll mail.example.org user "alice" password "pw"\n' +
                     '"a" ' * n + "\n")
        self.assertGreater(os.path.getsize(rc), 800000)
        env, pre = dict(os.environ), None
        if sanitized():
            env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                                   ":hard_rss_limit_mb=128").lstrip(":")
        else:
            limit = 32 << 20

            def pre():
                resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        p = run("import-fetchmailrc", rc, "--maildir", "/srv/mail/a",
                env=env, preexec_fn=pre)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertIn("[account alice]\nhost = mail.example.org\n",
                      p.stdout)
        noted = p.stdout.splitlines().count(
            "; a: no counterpart in idlefetch")
        more = re.search(r"\n; and (\d+) more options with no counterpart "
                         r"in idlefetch: see (.*)\n", p.stdout)
        self.assertIsNotNone(more, p.stdout[-500:])
        self.assertEqual(more.group(2), rc)
        self.assertEqual(noted + int(more.group(1)), n)
        self.assertLess(len(p.stdout), 16384)


    def test_broken_file_names_its_line(self):
        rc = self.rc('poll a.example\n  user "x password "y"\n')
        p = run("import-fetchmailrc", rc)
        self.assertEqual(p.returncode, 2)
        self.assertIn(f"{rc}:2: a quoted string is not closed", p.stderr)
        rc = self.rc("set daemon 60\n")
        p = run("import-fetchmailrc", rc)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no poll entry with a user", p.stderr)


class OddPasswordTest(ImportCase):
    """A Dovecot where alice's password is ODD_PASSWORD (a passwd-file
    tried after the fixture's own password)."""

    def setUp(self):
        self.pwdir = tempfile.mkdtemp(prefix="idlefetch-passwd-")
        self.addCleanup(shutil.rmtree, self.pwdir, True)
        os.chmod(self.pwdir, 0o755)
        users = os.path.join(self.pwdir, "users")
        with open(users, "w") as f:
            f.write(f"{fx.USER}:{{PLAIN}}{ODD_PASSWORD}::::::\n")
        os.chmod(users, 0o644)
        self.dovecot_kw = {"extra": "passdb {\n  driver = passwd-file\n"
                                    f"  args = {users}\n}}\n"}
        super().setUp()

    def test_keep_passwords_puts_an_odd_password_in_a_private_file(self):
        """With --keep-passwords, password "p w ;x ${HOME}" once became
        `password = p w ;x ${HOME}`, read back as "p w". Now it goes to a
        password_file (mode 0600) that the configuration names, and the
        login with it fetches the mail."""
        dv = self.env.dovecot
        msgs = [fx.make_message(i) for i in range(3)]
        dv.put(msgs)
        rc = self.rc(f"""poll 127.0.0.1 protocol IMAP port {dv.imap_port}
    user "{fx.USER}" password "{ODD_PASSWORD}" is alice here
    options keep sslcertfile "{dv.certs.ca}"
""")
        secrets = os.path.join(self.d, "secrets")
        os.mkdir(secrets, 0o700)
        md = os.path.join(self.d, "Maildir")
        args = ("import-fetchmailrc", rc, "--maildir", md, "--secrets-dir",
                secrets, "--keep-passwords")
        p = run(*args)
        self.assertEqual(p.returncode, 0, p.stderr)
        pwfile = os.path.join(secrets, f"{fx.USER}.password")
        self.assertIn(f"\nusername = {fx.USER}\npassword_file = {pwfile}\n"
                      "; the password from the fetchmailrc is in that file "
                      "(mode 0600): idlefetch.conf cannot hold it as it is",
                      p.stdout)
        self.assertNotIn("\npassword =", p.stdout)
        self.assertEqual(stat.S_IMODE(os.stat(pwfile).st_mode), 0o600)
        with open(pwfile) as f:
            self.assertEqual(f.read(), ODD_PASSWORD + "\n")
        conf = self.conf(p.stdout)
        p = run("--once", "--config", conf)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(fx.Maildir(md).contents()), sorted(msgs))
        # The same import again finds its own file and keeps it; a file
        # with another password in it is not overwritten.
        self.assertEqual(run(*args).returncode, 0)
        with open(pwfile, "w") as f:
            f.write("another\n")
        p = run(*args)
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertEqual(p.stdout, "")
        self.assertIn(f"{rc}:2: password of '{fx.USER}': idlefetch.conf "
                      "cannot hold it as it is (a ';' after a space or at "
                      "its start begins a comment), and its password_file "
                      f"cannot be made: {pwfile} holds another password",
                      p.stderr)
        with open(pwfile) as f:
            self.assertEqual(f.read(), "another\n")


if __name__ == "__main__":
    unittest.main()
