"""`idlefetch status`: what a container health check or an administrator
sees of a running daemon, and its exit code."""
import fcntl
import os
import struct
import subprocess
import time
import unittest

import fixture as fx


def status(f, *args):
    p = subprocess.run([fx.IDLEFETCH, "status", "--config", f.conf, *args],
                       capture_output=True, timeout=30)
    return p.returncode, p.stdout.decode() + p.stderr.decode()


def folder_line(out, folder):
    """The folder's line of the report; "" before the daemon wrote one."""
    return next((l for l in out.splitlines() if l.split()[:1] == [folder]),
                "")


class StatusTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def test_status_follows_the_daemon(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(3)])
        f = self.env.idlefetch(tls="implicit", name="st",
                               folders="INBOX, Archive")
        rc, out = status(f)
        self.assertEqual(rc, 1, out)
        self.assertIn("st: not running", out)

        f.start()
        self.assertTrue(fx.wait_until(
            lambda: "IDLE " in folder_line(status(f)[1], "Archive") and
            "IDLE " in folder_line(status(f)[1], "INBOX"), 15), status(f))
        rc, out = status(f)
        self.assertEqual(rc, 0, out)
        self.assertIn(f"st: idlefetch pid {f.proc.pid}, running for", out)
        self.assertRegex(folder_line(out, "INBOX"),
                         r"up +IDLE .*last sync \d+s ago; 3 delivered")
        self.assertIn("healthy: 2 folder(s)", out)

        # The server goes away: down with the reason, still healthy within
        # the grace period (a restart of the server is no reason to alarm).
        d.stop()
        self.assertTrue(fx.wait_until(
            lambda: "connection refused" in folder_line(status(f)[1],
                                                        "INBOX"), 15),
            status(f))
        rc, out = status(f)
        self.assertEqual(rc, 0, out)
        self.assertRegex(folder_line(out, "INBOX"),
                         r"down +(BACKOFF|CONNECT) .*last error \d+s ago: "
                         r"127\.0\.0\.1:\d+: connect failed: connection refused")
        d.start()
        self.assertTrue(fx.wait_until(
            lambda: status(f)[1].count(" up ") == 2, 40), status(f))

        # A folder added to the configuration is not watched until reload.
        with open(f.conf) as c:
            text = c.read().replace("folders = INBOX, Archive",
                                    "folders = INBOX, Archive, Sent")
        with open(f.conf, "w") as c:
            c.write(text)
        rc, out = status(f)
        self.assertEqual(rc, 1, out)
        self.assertIn("Sent", out)
        self.assertIn("not watched: reload idlefetch (SIGHUP)", out)
        self.assertEqual(status(f, "--account", "nosuch")[0], 2)

        self.assertEqual(f.stop(), 0)
        rc, out = status(f)
        self.assertEqual(rc, 1, out)
        self.assertIn("st: not running", out)

    def test_a_single_pass_is_not_a_running_daemon(self):
        f = self.env.idlefetch(tls="implicit", name="pass")
        self.assertEqual(f.once(), 0, f.log())
        rc, out = status(f)
        self.assertEqual(rc, 1, out)
        self.assertIn("pass: not running", out)
        self.assertFalse(os.path.exists(f.state_dir + "/pass/status"),
                         "--once writes no daemon status")

    def test_folder_that_gave_up_is_unhealthy(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(2)])
        f = self.env.idlefetch(tls="implicit", name="gone",
                               folders="INBOX, Archive")
        self.assertEqual(f.once(), 0, f.log())
        # INBOX's Maildir becomes writable by anyone: the daemon must stop
        # that folder, not deliver into it; Archive goes on.
        os.chmod(os.path.join(f.maildir_path, "new"), 0o777)
        f.start()
        self.assertTrue(fx.wait_until(lambda: status(f)[0] == 1 and
                                      " stopped " in status(f)[1], 15),
                        status(f))
        rc, out = status(f)
        self.assertIn("writable by other users", folder_line(out, "INBOX"))
        self.assertRegex(folder_line(out, "Archive"), r"up +IDLE ")
        self.assertIn("unhealthy: 1 of 2 folder(s)", out)
        self.assertEqual(f.md.count(), 2)
        self.assertEqual(f.stop(), 0)


def lock_offset(name):
    """The account's byte in its lock file (state.h): splitmix64's
    finaliser over FNV-1a 64 of the name, its top 62 bits."""
    m = 0xFFFFFFFFFFFFFFFF
    h = 0xcbf29ce484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001b3) & m
    h ^= h >> 30
    h = (h * 0xbf58476d1ce4e5b9) & m
    h ^= h >> 27
    h = (h * 0x94d049bb133111eb) & m
    h ^= h >> 31
    return h >> 2


def lock_file(state, name):
    """STATE_DIR/.accounts.lock.X, X the offset's top 4 of 62 bits."""
    return f"{state}/.accounts.lock.{lock_offset(name) >> 58:x}"


class VerdictTest(unittest.TestCase):
    """The verdict on a status file as a long-running daemon leaves it;
    the daemon is played by this process, holding the account lock."""

    def setUp(self):
        import tempfile
        self.root = tempfile.mkdtemp(prefix="idlefetch-status-")
        self.state = os.path.join(self.root, "state")
        os.makedirs(self.state + "/acct")
        self.conf = os.path.join(self.root, "idlefetch.conf")
        with open(self.conf, "w") as c:
            c.write(f"[global]\nstate_dir = {self.state}\n\n[account acct]\n"
                    "host = 127.0.0.1\ntls = none\nusername = u\n"
                    "password = p\nmaildir = /tmp/unused\n"
                    "folders = INBOX, Lists\n")
        os.chmod(self.conf, 0o600)
        # As idlefetch locks an account: one byte of the shared lock file,
        # the holder recorded in a symlink.
        self.lock = open(lock_file(self.state, "acct"), "w+")
        lk = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET,
                         lock_offset("acct"), 1, 0)
        fcntl.fcntl(self.lock, fcntl.F_OFD_SETLK, lk)
        os.symlink(f"{os.getpid()} daemon", self.state + "/acct/lock")

    def tearDown(self):
        self.lock.close()
        import shutil
        shutil.rmtree(self.root, ignore_errors=True)

    def write_status(self, lists_since, written_ago=0):
        now = int(time.time())
        with open(self.state + "/acct/status", "w") as s:
            s.write(f"idlefetch-status 1\npid {os.getpid()}\n"
                    f"started {now - 7200}\nwritten {now - written_ago}\n"
                    "stopped 0\n"
                    f"folder\tINBOX\tIDLE\t1\t0\t{now - 3600}\t{now - 60}\t"
                    f"12\t0\t\n"
                    f"folder\tLists\tBACKOFF\t0\t0\t{lists_since}\t"
                    f"{now - 4000}\t3\t{now - 5}\tmail.example.org:993: "
                    "connection timed out\n")

    def run_status(self):
        p = subprocess.run([fx.IDLEFETCH, "status", "--config", self.conf],
                           capture_output=True, timeout=30)
        return p.returncode, p.stdout.decode()

    def test_folder_down_longer_than_the_grace_period_is_unhealthy(self):
        self.write_status(int(time.time()) - 301)
        rc, out = self.run_status()
        self.assertEqual(rc, 1, out)
        self.assertIn(f"acct: idlefetch pid {os.getpid()}, running for 2h00m",
                      out)
        # The clock may tick between writing the file and reading it.
        self.assertRegex(out, r"INBOX +up +IDLE +for 1h00m; last sync "
                         r"1m0[01]s ago; 12 delivered\n")
        self.assertRegex(out, r"Lists +down +BACKOFF +for 5m0[123]s; .*"
                         r"last error [56]s ago: mail.example.org:993: "
                         r"connection timed out")
        self.assertIn("unhealthy: 1 of 2 folder(s)", out)

    def test_folder_down_within_the_grace_period_is_healthy(self):
        self.write_status(int(time.time()) - 200)
        rc, out = self.run_status()
        self.assertEqual(rc, 0, out)
        self.assertIn("healthy: 2 folder(s)", out)

    def test_daemon_whose_status_is_not_refreshed_is_not_responding(self):
        self.write_status(int(time.time()), written_ago=31 * 60 + 5)
        rc, out = self.run_status()
        self.assertEqual(rc, 1, out)
        self.assertIn(f"idlefetch pid {os.getpid()} is not responding: its "
                      "status was last written 31m0", out)
        # Within the heartbeat and its margin: fine.
        self.write_status(int(time.time()), written_ago=20 * 60)
        self.assertEqual(self.run_status()[0], 0)

    def test_status_of_another_process_is_not_believed(self):
        self.write_status(int(time.time()))
        with open(self.state + "/acct/status") as s:
            text = s.read().replace(f"pid {os.getpid()}\n", "pid 1\n")
        with open(self.state + "/acct/status", "w") as s:
            s.write(text)
        rc, out = self.run_status()
        self.assertIn(f"idlefetch pid {os.getpid()} is starting", out)
        self.assertNotIn("INBOX", out)

    def test_lock_of_another_account_says_nothing_of_this_one(self):
        self.write_status(int(time.time()))
        self.lock.close()
        self.lock = open(lock_file(self.state, "other"), "w+")
        lk = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET,
                         lock_offset("other"), 1, 0)
        fcntl.fcntl(self.lock, fcntl.F_OFD_SETLK, lk)
        rc, out = self.run_status()
        self.assertEqual(rc, 1, out)
        self.assertIn("acct: not running", out)

    def test_daemon_of_an_earlier_version_is_seen(self):
        """During an upgrade an earlier version may still run: it locked
        STATE_DIR/ACCOUNT/lock itself, a regular file."""
        self.lock.close()
        os.unlink(self.state + "/acct/lock")
        self.lock = open(self.state + "/acct/lock", "w+")
        lk = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        fcntl.fcntl(self.lock, fcntl.F_OFD_SETLK, lk)
        self.lock.write(f"{os.getpid()} daemon\n")
        self.lock.flush()
        self.write_status(int(time.time()) - 200)
        rc, out = self.run_status()
        self.assertEqual(rc, 0, out)
        self.assertIn(f"acct: idlefetch pid {os.getpid()}, running for", out)

    def test_garbled_status_file_is_not_believed(self):
        with open(self.state + "/acct/status", "w") as s:
            s.write("idlefetch-status 1\npid x\n")
        rc, out = self.run_status()
        self.assertIn("is starting", out)


if __name__ == "__main__":
    unittest.main()
