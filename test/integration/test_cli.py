"""The command line: configuration errors, --check-config, environment
configuration, exit codes."""
import os
import pwd
import signal
import subprocess
import tempfile
import time
import unittest

import fixture as fx


def run(*args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("IDLEFETCH_")}
    e.update(env or {})
    p = subprocess.run([fx.IDLEFETCH, *args], capture_output=True, env=e,
                       cwd=cwd, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class CliTest(unittest.TestCase):
    def setUp(self):
        self.d = tempfile.mkdtemp(prefix="idlefetch-cli-")
        self.conf = os.path.join(self.d, "idlefetch.conf")

    def write(self, text):
        with open(self.conf, "w") as f:
            f.write(text)
        os.chmod(self.conf, 0o600)

    def test_check_config_prints_effective_config_with_password_masked(self):
        self.write("[account a]\nhost = h.example\nusername = u\n"
                   "password = ${SECRET_PW}\nmaildir = /m\nafter = move:Old\n")
        rc, out, err = run("--config", self.conf, "--check-config",
                           env={"SECRET_PW": "hunter2"})
        self.assertEqual(rc, 0, err)
        self.assertNotIn("hunter2", out + err)
        self.assertIn("password = ********", out)
        self.assertIn("port = 993", out)
        self.assertIn("after = move:Old", out)

    def test_config_error_names_file_line_key_and_exits_2(self):
        self.write("[account a]\nhost = h\nusername = u\npassword = p\n"
                   "maildir = /m\nport = 99999\n")
        rc, out, err = run("--config", self.conf, "--once")
        self.assertEqual(rc, 2)
        self.assertEqual(err.strip(), f"idlefetch: {self.conf}:6: key 'port': "
                         "'99999' is not a number in 1..65535")

    def test_json_log_lines_are_json(self):
        import json
        self.write(f"[global]\nlog = json\nstate_dir = {self.d}/state\n"
                   f"[account a]\nhost = 127.0.0.1\nport = {fx.free_port()}\n"
                   f"username = u\npassword = p\nmaildir = {self.d}/unused-md\n"
                   "tls = none\n")
        rc, _, err = run("--config", self.conf, "--once")
        self.assertEqual(rc, 1)
        lines = [json.loads(l) for l in err.splitlines()]
        self.assertTrue(any(l.get("level") == "error" and l.get("account") == "a"
                            and "connection refused" in l["msg"] for l in lines),
                        err)

    def test_unknown_key_is_an_error(self):
        self.write("[account a]\nhost = h\nusername = u\npassword = p\n"
                   "maildir = /m\nkeep = yes\n")
        rc, _, err = run("--config", self.conf, "--check-config")
        self.assertEqual(rc, 2)
        self.assertIn(":6: key 'keep': unknown key in [account a]", err)

    def test_environment_configures_one_account(self):
        rc, out, err = run("--check-config", env={
            "IDLEFETCH_HOST": "imap.example.org", "IDLEFETCH_USERNAME": "bob",
            "IDLEFETCH_PASSWORD": "pw-from-env", "IDLEFETCH_MAILDIR": "/mail",
            "IDLEFETCH_CONFIG": "", "IDLEFETCH_ACCOUNT": "side"})
        if rc == 2 and "IDLEFETCH_CONFIG" in err:
            self.fail(err)
        self.assertEqual(rc, 0, err)
        self.assertIn("[account side]", out)
        self.assertIn("host = imap.example.org", out)
        self.assertNotIn("pw-from-env", out)

    def test_no_configuration_at_all_is_explained(self):
        if os.path.exists("/etc/idlefetch/idlefetch.conf"):
            self.skipTest("a system configuration exists")
        rc, _, err = run("--once")
        self.assertEqual(rc, 2)
        self.assertIn("no configuration", err)

    def test_usage_errors(self):
        rc, _, err = run("--bogus")
        self.assertEqual(rc, 2)
        rc, out, _ = run("--help")
        self.assertEqual(rc, 0)
        self.assertIn("--once", out)
        rc, out, _ = run("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^idlefetch \d+\.\d+\.\d+")
        self.write("[account a]\nhost = h\nusername = u\npassword = p\n"
                   "maildir = /m\n")
        rc, _, err = run("--config", self.conf, "--account", "zzz", "--once")
        self.assertEqual(rc, 2)
        self.assertIn("no [account zzz]", err)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to become a user")
    def test_check_config_runs_password_command_as_user_like_the_daemon(self):
        """--check-config with `user = nobody`, started as root: the
        configuration (root's alone) is read as root, the password_command
        runs as nobody, with stdin on /dev/null instead of the caller's,
        in a process group of its own, and is killed after
        command_timeout, which is a configuration error naming the file,
        the line and the key."""
        nobody = pwd.getpwnam("nobody")
        os.chmod(self.d, 0o755)  # nobody reaches its directories
        out = os.path.join(self.d, "out")
        os.mkdir(out)
        os.chmod(out, 0o777)
        cmd = os.path.join(self.d, "pw-cmd")
        with open(cmd, "w") as f:
            f.write("#!/bin/sh\n"
                    f"id -u > {out}/uid\n"
                    f"readlink /proc/$$/fd/0 > {out}/stdin\n"
                    f"cat /proc/$$/stat > {out}/stat\n"
                    "echo asking the keyring >&2\n"
                    "exec sleep 20\n")
        os.chmod(cmd, 0o755)
        self.write("[global]\nuser = nobody\ncommand_timeout = 2\n"
                   f"state_dir = {self.d}/state\n"
                   "[account a]\nhost = h.example\nusername = u\n"
                   f"password_command = {cmd}\n"
                   f"maildir = {self.d}/md\n")
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("IDLEFETCH_")}
        t0 = time.monotonic()
        # The caller's stdin is a pipe the command must not get; its output
        # goes to files, which a command left running cannot hold open.
        with open(os.path.join(self.d, "stdout"), "w+") as outf, \
             open(os.path.join(self.d, "stderr"), "w+") as errf:
            p = subprocess.Popen([fx.IDLEFETCH, "--config", self.conf,
                                  "--check-config"], stdin=subprocess.PIPE,
                                 stdout=outf, stderr=errf, env=e)
            try:
                p.wait(timeout=12)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            took = time.monotonic() - t0
            p.stdin.close()
            outf.seek(0)
            errf.seek(0)
            stdout, err = outf.read(), errf.read()
        with open(os.path.join(out, "stat")) as f:
            stat = f.read()
        pid = int(stat.split()[0])
        pgid = int(stat.rsplit(")", 1)[1].split()[2])
        try:
            os.kill(pid, signal.SIGKILL)  # the old way left it running
        except ProcessLookupError:
            pass
        with open(os.path.join(out, "uid")) as f:
            self.assertEqual(int(f.read()), nobody.pw_uid, err)
        with open(os.path.join(out, "stdin")) as f:
            self.assertEqual(f.read().strip(), "/dev/null", err)
        self.assertEqual(pgid, pid, "not in a process group of its own")
        self.assertLess(took, 10, err)
        self.assertEqual(p.returncode, 2, err)
        self.assertEqual(err.strip().splitlines()[-1],
                         f"idlefetch: {self.conf}:8: key 'password_command': "
                         "command did not finish within 2 s; killed "
                         "(it said: asking the keyring)")
        self.assertEqual(stdout, "")

    def test_check_config_stopped_by_a_signal_kills_its_password_command(self):
        """In a process group of its own, the command no longer gets the
        terminal's ^C: a SIGTERM or SIGINT to --check-config kills it, and
        nothing is left running."""
        pidfile = os.path.join(self.d, "pid")
        self.write("[account a]\nhost = h.example\nusername = u\n"
                   f"password_command = echo $$ > {pidfile}; exec sleep 30\n"
                   "maildir = /m\n")
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("IDLEFETCH_")}
        # Files, not pipes: a command left running would hold a pipe open.
        with open(os.path.join(self.d, "stderr"), "w+") as errf:
            p = subprocess.Popen([fx.IDLEFETCH, "--config", self.conf,
                                  "--check-config"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=errf, env=e)
            self.assertTrue(fx.wait_until(
                lambda: os.path.exists(pidfile)
                and os.path.getsize(pidfile) > 0, 10))
            with open(pidfile) as f:
                pid = int(f.read())
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
            gone = fx.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 5)
            if not gone:
                os.kill(pid, signal.SIGKILL)
            errf.seek(0)
            stderr = errf.read()
        self.assertTrue(gone, "the password_command outlived --check-config")
        self.assertEqual(p.returncode, 2, stderr)
        self.assertEqual(stderr.strip(),
                         f"idlefetch: {self.conf}:4: key 'password_command': "
                         "command stopped")

    def test_username_with_control_character_is_refused(self):
        """\\x01 separates XOAUTH2's fields and CR LF ends an IMAP LOGIN: a
        user name with a control character is a configuration error with
        the file, the line and the key (or the variable)."""
        self.write("[account a]\nhost = h.example\nusername = u\x01x\n"
                   "auth = xoauth2\noauth_token_command = echo t\n"
                   "maildir = /m\n")
        rc, out, err = run("--config", self.conf, "--check-config")
        self.assertEqual(rc, 2, out)
        self.assertEqual(err.strip(),
                         f"idlefetch: {self.conf}:3: key 'username': a control "
                         "character (byte 0x01) cannot be sent in a login")
        rc, out, err = run("--check-config", env={
            "IDLEFETCH_HOST": "imap.example.org",
            "IDLEFETCH_USERNAME": "bob\r\nA1 LOGOUT",
            "IDLEFETCH_PASSWORD": "pw", "IDLEFETCH_MAILDIR": "/mail",
            "IDLEFETCH_CONFIG": ""})
        self.assertEqual(rc, 2, out)
        self.assertEqual(err.strip(),
                         "idlefetch: IDLEFETCH_USERNAME: key 'username': a "
                         "control character (byte 0x0d) cannot be sent in a "
                         "login")


    def test_check_config_reads_only_the_accounts_it_would_fetch(self):
        """--check-config --account a runs a's password_command alone, and
        --shard I/N only those of the accounts replica I takes: another
        replica's secrets need not be here."""
        names = [f"acct{i}" for i in range(6)]
        ran = os.path.join(self.d, "ran")
        os.mkdir(ran)
        text = ""
        for n in names:
            text += (f"[account {n}]\nhost = h.example\nusername = u\n"
                     f"password_command = touch {ran}/{n}; echo pw\n"
                     "maildir = /m\n")
        self.write(text + "[account broken]\nhost = h.example\n"
                   "username = u\npassword_command = false\nmaildir = /m\n")
        rc, out, err = run("--config", self.conf, "--check-config",
                           "--account", "acct1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(os.listdir(ran), ["acct1"])
        self.assertIn("[account broken]", out)  # still parsed and printed
        os.unlink(os.path.join(ran, "acct1"))
        # Without --account, broken's command fails: a configuration error.
        rc, _, err = run("--config", self.conf, "--check-config")
        self.assertEqual(rc, 2, err)
        self.assertIn("key 'password_command': command failed (exit status 1)",
                      err)
        # Each replica of two runs the commands of its own accounts only.
        with open(self.conf, "w") as f:
            f.write(text)
        taken = []
        for i in range(2):
            for n in os.listdir(ran):
                os.unlink(os.path.join(ran, n))
            rc, _, err = run("--config", self.conf, "--check-config",
                             "--shard", f"{i}/2")
            self.assertEqual(rc, 0, err)
            taken.append(set(os.listdir(ran)))
        self.assertTrue(taken[0] and taken[1], taken)
        self.assertEqual(taken[0] & taken[1], set())
        self.assertEqual(taken[0] | taken[1], set(names))

    @unittest.skipUnless(os.geteuid() == 0, "needs root to become a user")
    def test_check_config_as_root_creates_no_directory(self):
        """Started as root with user =, --check-config becomes that user
        and checks the directories the daemon writes into, but creates
        none: it says which ones the daemon would create. An existing one
        the user cannot write is a configuration error."""
        os.chmod(self.d, 0o755)
        self.write("[global]\nuser = nobody\n"
                   f"state_dir = {self.d}/state\n"
                   "[account a]\nhost = h.example\nusername = u\n"
                   "password_command = echo pw\n"
                   f"maildir = {self.d}/mail/typo\nfolders = INBOX, Lists/dev\n")
        rc, out, err = run("--config", self.conf, "--check-config")
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(os.listdir(self.d)), ["idlefetch.conf"])
        self.assertEqual(err.splitlines(), [
            f"idlefetch: state_dir {self.d}/state does not exist: the daemon "
            "would create it, owned by user nobody",
            f"idlefetch: [account a] maildir {self.d}/mail/typo does not "
            "exist: the daemon would create it, owned by user nobody",
            f"idlefetch: [account a] maildir {self.d}/mail/typo/.Lists.dev "
            "does not exist: the daemon would create it, owned by user "
            "nobody"])
        self.assertIn("[account a]", out)
        os.mkdir(os.path.join(self.d, "state"), 0o755)  # root's
        rc, out, err = run("--config", self.conf, "--check-config")
        self.assertEqual(rc, 2, err)
        self.assertEqual(err.strip(),
                         f"idlefetch: state_dir {self.d}/state is not "
                         "writable by user nobody: permission denied")
        self.assertEqual(out, "")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to switch users")
    def test_check_config_as_another_user_checks_the_parse_and_exits_3(self):
        """Neither root nor the user = user: the configuration is checked,
        the passwords are not read (they are that user's to read), and the
        exit status says so: 3, not 0 and not 2."""
        nobody = pwd.getpwnam("nobody")
        os.chmod(self.d, 0o755)
        ran = os.path.join(self.d, "ran")
        self.write("[global]\nuser = daemon\n"
                   f"state_dir = {self.d}/state\n"
                   "[account a]\nhost = h.example\nusername = u\n"
                   f"password_command = touch {ran}; echo pw\n"
                   "maildir = /m\n")
        os.chmod(self.conf, 0o644)
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("IDLEFETCH_")}
        p = subprocess.run([fx.IDLEFETCH, "--config", self.conf,
                            "--check-config"], capture_output=True, env=e,
                           user=nobody.pw_uid, group=nobody.pw_gid,
                           extra_groups=[], timeout=60)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 3, err)
        self.assertEqual(err.strip(),
                         "idlefetch: warning: passwords not read and "
                         "directories not checked: the daemon reads them as "
                         f"user daemon, which uid {nobody.pw_uid} cannot "
                         "become; run --check-config as root or as daemon")
        self.assertIn("[account a]", p.stdout.decode())
        self.assertFalse(os.path.exists(ran))
        self.assertFalse(os.path.exists(os.path.join(self.d, "state")))
        # A configuration error is still one.
        with open(self.conf, "a") as f:
            f.write("port = 0\n")
        p = subprocess.run([fx.IDLEFETCH, "--config", self.conf,
                            "--check-config"], capture_output=True, env=e,
                           user=nobody.pw_uid, group=nobody.pw_gid,
                           extra_groups=[], timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)

if __name__ == "__main__":
    unittest.main()
