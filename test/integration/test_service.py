"""Running under a service manager: the systemd notification protocol
(READY, STATUS, RELOADING, STOPPING, WATCHDOG) received on a socket the test
listens on, and the privilege drop of `user =` for a daemon started as
root."""
import os
import pwd
import grp
import signal
import socket
import subprocess
import time
import unittest

import fixture as fx

ROUNDS = int(os.environ.get("STOP_ROUNDS", "20"))


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, abstract=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.name = f"@idlefetch-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.1)
        self.got = []  # (monotonic time, message)

    def pump(self):
        try:
            while True:
                data = self.sock.recv(4096).decode()
                self.got.append((time.monotonic(), data))
        except (socket.timeout, BlockingIOError):
            pass
        return self.got

    def wait_for(self, needle, timeout, after=0):
        """Index of the first message at or after index `after` holding
        the line `needle`, or None."""
        def find():
            for i, (_, m) in enumerate(self.pump()):
                if i >= after and needle in m.split("\n"):
                    return i + 1
            return None
        r = fx.wait_until(find, timeout)
        return r - 1 if r else None

    def lines(self, prefix):
        return [l for _, m in self.pump() for l in m.split("\n")
                if l.startswith(prefix)]

    def close(self):
        self.sock.close()


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()
        self.n = NotifyListener()

    def tearDown(self):
        self.n.close()
        self.env.close()

    def test_ready_after_first_sync_then_status_reload_stopping(self):
        self.env.dovecot.put([fx.make_message(i) for i in range(30)])
        # A second account whose server refuses: it has failed its first
        # sync, which must not hold READY back.
        dead = (f"\n[account dead]\nhost = 127.0.0.1\nport = {fx.free_port()}\n"
                "tls = none\nusername = u\npassword = p\n"
                f"maildir = {self.env.root}/dead-md\n")
        f = self.env.idlefetch(name="svc", extra=dead)
        f.start(env={"NOTIFY_SOCKET": self.n.name})
        i = self.n.wait_for("READY=1", 20)
        self.assertIsNotNone(i, f"no READY=1: {self.n.got}\n{f.log()}")
        # READY means the first sync is done: all 30 are in new/ by then.
        self.assertEqual(f.md.count(), 30)
        status = self.n.lines("STATUS=")
        self.assertTrue(status and status[-1].startswith(
            "STATUS=2 accounts, 2 folders"), status)
        self.assertTrue(fx.wait_until(
            lambda: any("1 idling" in s and "1 in backoff" in s
                        for s in self.n.lines("STATUS=")), 10),
            self.n.lines("STATUS="))
        # Exactly one READY=1 before any reload.
        self.assertEqual(self.n.lines("READY=1"), ["READY=1"])

        mark = len(self.n.pump())
        f.proc.send_signal(signal.SIGHUP)
        r = self.n.wait_for("RELOADING=1", 10, after=mark)
        self.assertIsNotNone(r, self.n.got)
        self.assertTrue(self.n.got[r][1].split("\n")[1].startswith(
            "MONOTONIC_USEC="), self.n.got[r])
        self.assertIsNotNone(self.n.wait_for("READY=1", 10, after=r + 1),
                             self.n.got)

        mark = len(self.n.pump())
        f.proc.send_signal(signal.SIGTERM)
        self.assertIsNotNone(self.n.wait_for("STOPPING=1", 10, after=mark))
        self.assertEqual(f.stop(), 0)
        # Without a watchdog asked for, none is sent.
        self.assertEqual(self.n.lines("WATCHDOG=1"), [])

    def test_stop_signal_repeated_while_exiting_never_kills_it(self):
        # A supervisor that repeats SIGTERM every few milliseconds: each
        # one in the last moments (the loop's handles closed, the process
        # not yet gone) used to kill it by the signal's default action.
        # STOP_ROUNDS=1000 makes a soak of it.
        for round in range(ROUNDS):
            f = self.env.idlefetch(name=f"rep{round}")
            f.start()
            self.assertTrue(fx.wait_until(
                lambda: os.path.exists(f"{f.state_dir}/rep{round}/status"),
                15), f.log())
            while f.proc.poll() is None:
                try:
                    f.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    break
                time.sleep(0.002)
            rc = f.proc.wait(10)
            f.proc = None
            self.assertEqual(rc, 0, f"round {round}: exit {rc}\n" + f.log())

    def test_watchdog_pings_at_half_the_interval_from_the_loop(self):
        f = self.env.idlefetch(name="wd")
        f.start(env={"NOTIFY_SOCKET": self.n.name, "WATCHDOG_USEC": "1000000"})
        self.assertIsNotNone(self.n.wait_for("READY=1", 20), f.log())
        t0 = time.monotonic()
        time.sleep(3)
        pings = [t for t, m in self.n.pump() if m == "WATCHDOG=1" and t >= t0]
        # Every 0.5 s: about 6 in 3 s.
        self.assertGreaterEqual(len(pings), 5, pings)
        self.assertLessEqual(len(pings), 8, pings)
        # A stopped loop stops the pings: that is what the watchdog is for.
        f.proc.send_signal(signal.SIGSTOP)
        self.n.pump()
        time.sleep(0.3)
        self.n.pump()
        t1 = time.monotonic()
        time.sleep(1.5)
        late = [t for t, m in self.n.pump() if m == "WATCHDOG=1" and t > t1]
        f.proc.send_signal(signal.SIGCONT)
        self.assertEqual(late, [])
        self.assertEqual(f.stop(), 0)

    def test_without_notify_socket_nothing_is_sent(self):
        f = self.env.idlefetch(name="plain").start()
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 15), f.log())
        self.assertEqual(f.stop(), 0)
        self.assertEqual(self.n.pump(), [])

    def test_journal_stream_lines_carry_their_priority(self):
        """stderr on journald's stream (JOURNAL_STREAM names its device and
        inode): each line starts with its level's sd-daemon priority,
        which journald keeps for journalctl -p; JOURNAL_STREAM naming
        another stream (inherited, stderr sent elsewhere): no prefix."""
        dead = (f"\n[account dead]\nhost = 127.0.0.1\nport = {fx.free_port()}\n"
                "tls = none\nusername = u\npassword = p\n"
                f"maildir = {self.env.root}/dead-md\n")
        f = self.env.idlefetch(name="jr", extra=dead)
        open(f.logfile, "w").close()
        st = os.stat(f.logfile)
        for stream in (f"{st.st_dev}:{st.st_ino}", f"{st.st_dev}:1"):
            start = len(f.log())
            f.start(env={"JOURNAL_STREAM": stream})
            self.assertTrue(fx.wait_until(
                lambda: "connect failed" in f.log()[start:], 15), f.log())
            self.assertEqual(f.stop(), 0)
            lines = f.log()[start:].splitlines()
            self.assertTrue(lines)
            for line in lines:
                level = line.split()[1]
                if stream.endswith(":1"):
                    self.assertFalse(line.startswith("<"), line)
                    continue
                want = {"error": "<3>", "warn": "<4>", "info": "<6>",
                        "debug": "<7>"}[level]
                self.assertTrue(line.startswith(want), line)
            if not stream.endswith(":1"):
                self.assertTrue(any(l.startswith("<3>") for l in lines))
                self.assertTrue(any(l.startswith("<4>") for l in lines))
                self.assertTrue(any(l.startswith("<6>") for l in lines))

    def test_debug_stall_signal_blocks_the_loop_and_its_pings(self):
        """debug_stall_signal = yes: SIGUSR2 makes the loop stop answering
        for good, as a bug that blocked it would: the watchdog pings stop,
        a SIGTERM is no longer acted on, only a kill ends it."""
        f = self.env.idlefetch(name="stall", glob="debug_stall_signal = yes")
        f.start(env={"NOTIFY_SOCKET": self.n.name, "WATCHDOG_USEC": "400000"})
        self.assertIsNotNone(self.n.wait_for("READY=1", 20), f.log())
        self.assertIsNotNone(self.n.wait_for("WATCHDOG=1", 5))
        f.proc.send_signal(signal.SIGUSR2)
        self.assertTrue(fx.wait_until(
            lambda: "debug_stall_signal" in f.log(), 10), f.log())
        self.n.pump()
        t1 = time.monotonic()
        f.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        late = [t for t, m in self.n.pump() if m == "WATCHDOG=1" and t > t1]
        self.assertEqual(late, [])
        self.assertIsNone(f.proc.poll(), "it should still be stuck")
        self.assertNotIn("STOPPING=1", [m for _, m in self.n.pump()])
        self.assertEqual(f.stop(signal.SIGKILL), -signal.SIGKILL)

    def test_unit_state_directory_is_the_default_state_dir(self):
        """A configuration without state_dir run by a unit with
        StateDirectory= (STATE_DIRECTORY set) keeps its state there: each
        idlefetch@NAME.service has its own."""
        f = self.env.idlefetch(name="sd")
        with open(f.conf) as c:
            text = c.read()
        with open(f.conf, "w") as c:
            c.write(text.replace(f"state_dir = {f.state_dir}\n", ""))
        unit_dir = os.path.join(self.env.root, "unit-state")
        env = dict(os.environ, STATE_DIRECTORY=unit_dir)
        p = subprocess.run([fx.IDLEFETCH, "--config", f.conf,
                            "--check-config"], capture_output=True,
                           text=True, env=env, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"state_dir = {unit_dir}\n", p.stdout)
        self.env.dovecot.put([fx.make_message(1)])
        p = subprocess.run([fx.IDLEFETCH, "--config", f.conf, "--once"],
                           capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(any(n.endswith(".state")
                            for n in os.listdir(f"{unit_dir}/sd")), p.stderr)
        self.assertEqual(f.md.count(), 1)


NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrnam("nogroup")


def owner(path):
    st = os.stat(path)
    return st.st_uid, st.st_gid


class PrivdropTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def test_root_start_drops_to_user_before_secrets_and_network(self):
        self.env.dovecot.put([fx.make_message(i) for i in range(3)])
        probe = os.path.join(self.env.root, "cmd-ran-as")
        # The password comes from a command: it must run as the user.
        f = self.env.idlefetch(name="drop")
        with open(f.conf) as c:
            text = c.read()
        text = text.replace(
            f"password = {fx.PASSWORD}\n",
            f"password_command = id -u > {probe}; echo {fx.PASSWORD}\n")
        text = text.replace("[global]\n",
                            "[global]\nuser = nobody\ngroup = nogroup\n")
        with open(f.conf, "w") as c:
            c.write(text)
        # Read again as nobody on SIGHUP: root:nogroup 0640.
        os.chown(f.conf, 0, NOGROUP.gr_gid)
        os.chmod(f.conf, 0o640)
        # The probe's directory must be writable by nobody.
        os.chmod(self.env.root, 0o1777)
        f.start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 3, 20), f.log())
        with open(f"/proc/{f.proc.pid}/status") as st:
            ids = {l.split()[0]: l.split()[1:] for l in st
                   if l.startswith(("Uid:", "Gid:", "Groups:"))}
        self.assertEqual(ids["Uid:"], [str(NOBODY.pw_uid)] * 4)
        self.assertEqual(ids["Gid:"], [str(NOGROUP.gr_gid)] * 4)
        self.assertNotIn("0", ids["Groups:"])
        with open(probe) as p:
            self.assertEqual(p.read().strip(), str(NOBODY.pw_uid))
        # What it created as root belongs to the user; the mail too.
        for path in (f.state_dir, f.maildir_path,
                     os.path.join(f.maildir_path, "new", f.md.files("new")[0])):
            self.assertEqual(owner(path), (NOBODY.pw_uid, NOGROUP.gr_gid),
                             path)
        self.assertEqual(os.stat(f.state_dir).st_mode & 0o777, 0o700)
        self.assertIn("running as user nobody", f.log())
        self.assertNotIn("running as root", f.log())
        # A reload re-reads the configuration as the user: still works.
        f.proc.send_signal(signal.SIGHUP)
        self.assertTrue(fx.wait_until(
            lambda: "configuration reloaded" in f.log(), 10), f.log())
        self.env.dovecot.lmtp(fx.make_message(9))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 4, 20), f.log())
        self.assertEqual(f.stop(), 0)

    def test_root_without_user_warns(self):
        self.env.dovecot.put([fx.make_message(1)])
        f = self.env.idlefetch(name="rootwarn")
        self.assertEqual(f.once(), 0, f.log())
        self.assertIn("running as root: set 'user ='", f.log())

    def test_existing_dir_the_user_cannot_write_is_a_clear_error(self):
        f = self.env.idlefetch(name="nowrite")
        os.makedirs(f.state_dir, mode=0o700)  # root's, not nobody's
        with open(f.conf) as c:
            text = c.read().replace("[global]\n", "[global]\nuser = nobody\n")
        with open(f.conf, "w") as c:
            c.write(text)
        self.assertEqual(f.once(), 2)
        self.assertIn(f"state_dir {f.state_dir} is not writable by user nobody",
                      f.log())
        self.assertEqual(f.md.count(), 0)

    def test_unprivileged_start_as_another_user_is_refused(self):
        f = self.env.idlefetch(name="other")
        with open(f.conf) as c:
            text = c.read().replace("[global]\n", "[global]\nuser = root\n")
        with open(f.conf, "w") as c:
            c.write(text)
        os.chmod(f.dir, 0o777)
        # It holds a password: readable by nobody through its group only.
        os.chown(f.conf, 0, NOGROUP.gr_gid)
        os.chmod(f.conf, 0o640)
        p = subprocess.run(["setpriv", f"--reuid={NOBODY.pw_uid}",
                            f"--regid={NOGROUP.gr_gid}", "--clear-groups",
                            fx.IDLEFETCH, "--config", f.conf, "--once"],
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"user = root: running as uid 65534, which cannot "
                      b"become root", p.stderr)


if __name__ == "__main__":
    unittest.main()
