"""The command line: configuration errors, --check-config, environment
configuration, exit codes."""
import os
import subprocess
import tempfile
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


if __name__ == "__main__":
    unittest.main()
