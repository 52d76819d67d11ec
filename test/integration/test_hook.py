"""on_delivery: a command run after new mail was delivered, against a real
Dovecot. notmuch indexes every delivered message; deliveries during a run
are told by exactly one more run; a failing or hanging hook is logged and
delays nothing; --once tells every delivery before it exits."""
import glob
import os
import shutil
import signal
import subprocess
import time
import unittest

import fixture as fx

FOLDERS_EXTRA = ("namespace inbox {\n  mailbox Lists/dev {\n"
                 "    auto = create\n  }\n}\n")


def write_script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


class Recorder:
    """A hook script that records its environment at its start (run.N)
    and its end (end.N), sleeping `sleep` seconds in between."""

    def __init__(self, d, sleep=0):
        self.d = d
        os.makedirs(d, exist_ok=True)
        self.script = write_script(os.path.join(d, "hook.sh"), f"""
n=$(date +%s%N)
env -0 > "{d}/tmp.$n" && mv "{d}/tmp.$n" "{d}/run.$n"
sleep {sleep}
touch "{d}/end.$n"
""")

    def runs(self):
        """[(start name, env dict)] in the order they started."""
        out = []
        for p in sorted(glob.glob(os.path.join(self.d, "run.*"))):
            with open(p, "rb") as f:
                items = f.read().split(b"\0")
            env = dict(i.decode().split("=", 1) for i in items if b"=" in i)
            out.append((os.path.basename(p)[4:], env))
        return out

    def ended(self, name):
        return os.path.exists(os.path.join(self.d, "end." + name))

    def all_ended(self):
        runs = self.runs()
        return bool(runs) and all(self.ended(n) for n, _ in runs)


def maildir_files(root):
    """The delivered files under a Maildir root (its subfolders too)."""
    n = 0
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) == "new":
            n += len(files)
    return n


class HookTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env(extra=FOLDERS_EXTRA)
        self.dir = os.path.join(self.env.root, "hook")
        os.makedirs(self.dir)

    def tearDown(self):
        self.env.close()

    def fetcher(self, name, hook, glob_lines="", folders="INBOX, Lists/dev"):
        return self.env.idlefetch(name=name, folders=folders,
                                  extra=f"on_delivery = {hook}\n",
                                  glob=glob_lines)

    def wait_idle(self, f, n=2):
        self.assertTrue(fx.wait_until(
            lambda: f.log().count("conn IDLE_START -> IDLE") >= n, 20),
            f.log())

    def test_notmuch_new_indexes_every_delivered_message(self):
        if shutil.which("notmuch") is None:
            self.skipTest("notmuch is not installed (scripts/deps.sh --test)")
        home = os.path.join(self.dir, "home")
        os.makedirs(home)
        f = self.fetcher("notmuch", "notmuch new")
        with open(os.path.join(home, ".notmuch-config"), "w") as c:
            c.write(f"[database]\npath={f.maildir_path}\n"
                    "[new]\ntags=unread;inbox;\n"
                    "[maildir]\nsynchronize_flags=false\n")
        f.start("-v", env={"HOME": home})
        self.wait_idle(f)
        for i in range(6):
            self.env.dovecot.lmtp(fx.make_message(i))
            self.env.dovecot.save(fx.make_message(100 + i), "Lists/dev")
        self.assertTrue(fx.wait_until(
            lambda: maildir_files(f.maildir_path) == 12, 20), f.log())

        def indexed():
            p = subprocess.run(["notmuch", "count", "*"], capture_output=True,
                               text=True, env=dict(os.environ, HOME=home))
            return p.stdout.strip() == "12"
        self.assertTrue(fx.wait_until(indexed, 30, step=0.2),
                        "notmuch count '*' != 12\n" + f.log())
        self.assertEqual(maildir_files(f.maildir_path), 12)
        self.assertEqual(f.stop(), 0)
        self.assertNotIn("on_delivery exited", f.log())

    def test_deliveries_during_a_run_make_exactly_one_more_run(self):
        rec = Recorder(self.dir, sleep=4)
        f = self.fetcher("coalesce", rec.script).start("-v")
        self.wait_idle(f)
        self.env.dovecot.lmtp(fx.make_message(0))
        self.assertTrue(fx.wait_until(lambda: len(rec.runs()) == 1, 10),
                        f.log())
        first = rec.runs()[0][0]
        for i in range(3):
            self.env.dovecot.lmtp(fx.make_message(1 + i))
        for i in range(2):
            self.env.dovecot.save(fx.make_message(10 + i), "Lists/dev")
        self.assertTrue(fx.wait_until(
            lambda: maildir_files(f.maildir_path) == 6, 10), f.log())
        # Delivered while the first run still sleeps: they must wait.
        self.assertFalse(rec.ended(first), "the first run ended too soon "
                         "for this test to show coalescing")
        self.assertEqual(len(rec.runs()), 1, "a second run during the first")
        self.assertTrue(fx.wait_until(
            lambda: len(rec.runs()) == 2 and rec.all_ended(), 20), f.log())
        time.sleep(1.5)  # no third run follows
        runs = rec.runs()
        self.assertEqual(len(runs), 2, runs)
        (n1, e1), (n2, e2) = runs
        self.assertEqual((e1["IDLEFETCH_COUNT"], e2["IDLEFETCH_COUNT"]),
                         ("1", "5"))
        self.assertEqual(e1["IDLEFETCH_FOLDERS"], "INBOX")
        self.assertEqual(sorted(e2["IDLEFETCH_FOLDERS"].split("\n")),
                         ["INBOX", "Lists/dev"])
        for e in (e1, e2):
            self.assertEqual(e["IDLEFETCH_ACCOUNT"], "coalesce")
            self.assertEqual(e["IDLEFETCH_MAILDIR"], f.maildir_path)
            self.assertNotIn("IDLEFETCH_PASSWORD", e)
        self.assertGreaterEqual(int(n2), int(n1) + 4 * 10**9,
                                "the second run started before the first "
                                "ended")
        self.assertEqual(f.stop(), 0)

    def test_failing_hook_is_logged_and_fetching_goes_on(self):
        script = write_script(os.path.join(self.dir, "fail.sh"),
                              'echo "index is broken: disk full" >&2\n'
                              'echo "second line" >&2\nexit 1\n')
        f = self.fetcher("fail", script).start()
        self.env.dovecot.lmtp(fx.make_message(0))
        line = "on_delivery exited with status 1: index is broken: disk full"
        self.assertTrue(fx.wait_until(lambda: line in f.log(), 15), f.log())
        for i in range(3):
            self.env.dovecot.lmtp(fx.make_message(1 + i))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 4, 10), f.log())
        self.assertTrue(fx.wait_until(lambda: f.log().count(line) >= 2, 10),
                        f.log())
        self.assertNotIn("second line", f.log())
        self.assertIsNone(f.proc.poll(), "idlefetch still runs")
        self.assertEqual(f.stop(), 0)

    def test_hanging_hook_is_killed_and_delays_no_delivery(self):
        pidfile = os.path.join(self.dir, "pids")
        script = write_script(os.path.join(self.dir, "hang.sh"),
                              f'echo $$ >> "{pidfile}"\nexec sleep 60\n')
        f = self.fetcher("hang", script, glob_lines="command_timeout = 3\n",
                         folders="INBOX").start("-v")
        self.wait_idle(f, 1)
        self.env.dovecot.lmtp(fx.make_message(0))
        self.assertTrue(fx.wait_until(lambda: os.path.exists(pidfile), 10),
                        f.log())
        with open(pidfile) as p:
            pid = int(p.read().split()[0])
        t0 = time.monotonic()
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 5,
                                      step=0.01), f.log())
        delay = time.monotonic() - t0
        print(f"\ndelivery while the hook hangs: {delay:.3f} s")
        self.assertLess(delay, 2.0)
        self.assertFalse(fx.gone(pid), "the hook was not hanging meanwhile")
        killed = ("on_delivery took longer than 3 s (command_timeout) and "
                  "was killed")
        self.assertTrue(fx.wait_until(lambda: killed in f.log(), 10), f.log())
        self.assertTrue(fx.wait_until(lambda: fx.gone(pid), 5))
        # The second message is told by one more run, which hangs too:
        # SIGTERM waits for it at most command_timeout.
        def runs():
            with open(pidfile) as p:
                return len(p.read().split())
        self.assertTrue(fx.wait_until(lambda: runs() == 2, 5), f.log())
        t0 = time.monotonic()
        self.assertEqual(f.stop(), 0)
        self.assertLess(time.monotonic() - t0, 6)
        with open(pidfile) as p:
            self.assertTrue(all(fx.gone(int(x)) for x in p.read().split()))

    def test_once_runs_the_hook_before_it_exits(self):
        rec = Recorder(self.dir, sleep=1)
        self.env.dovecot.put([fx.make_message(i) for i in range(4)])
        self.env.dovecot.put([fx.make_message(10)], folder="Lists/dev")
        f = self.fetcher("once", rec.script)
        self.assertEqual(f.once(), 0, f.log())
        runs = rec.runs()
        self.assertTrue(runs, f.log())
        self.assertTrue(rec.all_ended(), "--once exited before the hook "
                        "ended")
        self.assertEqual(sum(int(e["IDLEFETCH_COUNT"]) for _, e in runs), 5)
        folders = set()
        for _, e in runs:
            folders.update(e["IDLEFETCH_FOLDERS"].split("\n"))
        self.assertEqual(folders, {"INBOX", "Lists/dev"})

    def test_reload_picks_up_a_changed_hook(self):
        old = Recorder(os.path.join(self.dir, "old"))
        new = Recorder(os.path.join(self.dir, "new"))
        f = self.fetcher("reload", old.script, folders="INBOX").start("-v")
        self.wait_idle(f, 1)
        self.env.dovecot.lmtp(fx.make_message(0))
        self.assertTrue(fx.wait_until(old.all_ended, 10), f.log())
        with open(f.conf) as c:
            text = c.read()
        with open(f.conf, "w") as c:
            c.write(text.replace(old.script, new.script))
        f.proc.send_signal(signal.SIGHUP)
        self.assertTrue(fx.wait_until(
            lambda: "configuration reloaded" in f.log() and
            f.log().count("conn IDLE_START -> IDLE") >= 2, 20), f.log())
        self.env.dovecot.lmtp(fx.make_message(1))
        self.assertTrue(fx.wait_until(new.all_ended, 10), f.log())
        self.assertEqual([e["IDLEFETCH_COUNT"] for _, e in old.runs()], ["1"])
        self.assertEqual([e["IDLEFETCH_COUNT"] for _, e in new.runs()], ["1"])
        self.assertEqual(f.stop(), 0)

    def test_mda_target_gets_the_hook_without_a_maildir(self):
        rec = Recorder(os.path.join(self.dir, "rec"))
        out = os.path.join(self.dir, "mda-out")
        os.makedirs(out)
        mda = write_script(os.path.join(self.dir, "mda.sh"),
                           f'cat > "{out}/$$"\n')
        self.env.dovecot.put([fx.make_message(i) for i in range(3)])
        f = self.env.idlefetch(name="mda", deliver=f"deliver = mda:{mda}",
                               extra=f"on_delivery = {rec.script}\n")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(len(os.listdir(out)), 3)
        runs = rec.runs()
        self.assertEqual(sum(int(e["IDLEFETCH_COUNT"]) for _, e in runs), 3)
        for _, e in runs:
            self.assertNotIn("IDLEFETCH_MAILDIR", e)
            self.assertEqual(e["IDLEFETCH_FOLDERS"], "INBOX")

    def test_empty_account_value_turns_the_global_hook_off(self):
        rec = Recorder(self.dir)
        f = self.env.idlefetch(name="off", glob=f"on_delivery = {rec.script}\n",
                               extra="on_delivery =\n")
        self.env.dovecot.put([fx.make_message(0)])
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 1)
        self.assertEqual(rec.runs(), [])
        g = self.env.idlefetch(name="on", glob=f"on_delivery = {rec.script}\n")
        self.assertEqual(g.once(), 0, g.log())
        self.assertEqual([e["IDLEFETCH_ACCOUNT"] for _, e in rec.runs()],
                         ["on"])


if __name__ == "__main__":
    unittest.main()
