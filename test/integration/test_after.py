"""after = delete and after = move:Archive change the server only for
messages that are delivered and recorded."""
import signal
import time
import unittest

import fixture as fx


class AfterTest(unittest.TestCase):
    def setUp(self):
        self.env = fx.Env()

    def tearDown(self):
        self.env.close()

    def test_delete_removes_delivered_messages_from_the_server(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(30)])
        d.put([fx.make_message(100 + i) for i in range(5)], seen=True)
        f = self.env.idlefetch(tls="implicit", name="delete", after="delete")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 35)
        self.assertEqual(d.count(), 0, "server INBOX emptied")
        d.put([fx.make_message(200)])
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 36)
        self.assertEqual(d.count(), 0)

    def test_switching_keep_to_delete_removes_what_was_delivered(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(1500)])
        f = self.env.idlefetch(tls="implicit", name="switch", after="keep")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(d.count(), 1500, "keep changed nothing")
        with open(f.conf) as c:
            text = c.read().replace("after = keep", "after = delete")
        with open(f.conf, "w") as c:
            c.write(text)
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 1500, "nothing fetched twice")
        self.assertEqual(d.count(), 0, "every delivered message deleted")

    def test_move_archives_delivered_messages(self):
        d = self.env.dovecot
        d.put([fx.make_message(i) for i in range(20)])
        ids = set(d.message_ids())
        f = self.env.idlefetch(tls="starttls", name="move",
                               after="move:Archive")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(f.md.count(), 20)
        self.assertEqual(d.count(), 0)
        self.assertEqual(set(d.message_ids("Archive")), ids)
        self.assertEqual(set(f.md.message_ids()), ids)

    def test_move_without_move_capability_copies_then_deletes(self):
        d = self.env.dovecot
        d.stop()
        d.caps = d.caps.replace(" MOVE", "")
        d.write_conf()
        d.start()
        d.put([fx.make_message(i) for i in range(10)])
        f = self.env.idlefetch(tls="implicit", name="copy", after="move:Archive",
                               extra="")
        self.assertEqual(f.once("-v"), 0, f.log())
        self.assertIn("UID COPY", f.log())
        self.assertEqual(d.count(), 0)
        self.assertEqual(d.count("Archive"), 10)

    def test_kill9_with_delete_never_deletes_an_undelivered_message(self):
        d = self.env.dovecot
        msgs = [fx.make_message(i, size=60000) for i in range(300)]
        d.put(msgs)
        all_ids = {fx.message_id(m) for m in msgs}
        f = self.env.idlefetch(tls="implicit", name="delkill", after="delete")
        for delay in (0.05, 0.2, 0.4):
            f.start()
            fx.wait_until(lambda: f.md.count() > 0 or f.proc.poll() is not None,
                          20, step=0.005)
            time.sleep(delay)
            f.stop(signal.SIGKILL)
            on_server = set(d.message_ids())
            delivered = set(f.md.message_ids())
            self.assertTrue(all_ids - on_server <= delivered,
                            "every message gone from the server is delivered")
            self.assertEqual(len(delivered), f.md.count(), "no duplicate")
        self.assertEqual(f.once(), 0, f.log())
        self.assertEqual(set(f.md.message_ids()), all_ids)
        self.assertEqual(f.md.count(), 300)
        self.assertEqual(d.count(), 0, "leftovers deleted on the next run")


if __name__ == "__main__":
    unittest.main()
