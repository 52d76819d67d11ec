"""A connection that must end is replaced without a gap: against a scripted
OAuth2 server whose tokens live 6 s and which ends every session whose
token expired with `* BYE Session invalidated - AccessTokenExpired` (as
Microsoft 365 does), idlefetch logs in a second connection before the
token runs out, and mail that arrives meanwhile lands once, as fast as
with one connection. A server that ends an idle session (a shutdown
announced with BYE) is connected to again at once."""
import socket
import statistics
import subprocess
import time
import unittest

import expiring
import fixture as fx
import scripted


class HandoverTest(scripted.ScriptedCase):
    def test_no_gap_when_the_token_expires(self):
        ts = expiring.ExpiringTokens()
        srv = self.server(scripted.Mailbox(), caps=expiring.CAPS,
                          hooks={"command": ts.hook})
        ts.start(srv)
        f = self.fetcher(srv, name="ms365", password=None,
                         extra=expiring.account_lines(
                             expiring.token_helper(self.root)))
        f.start()
        got = expiring.measure(ts, srv, f, 50)
        self.assertIsNotNone(got, f.log())
        lat, copies = got
        print(f"\n50 messages across {ts.ended} expired-token BYEs, "
              f"{srv.connections} connections, {len(ts.logins)} logins: "
              f"p50 {statistics.median(lat):.0f} ms, max {lat[-1]:.0f} ms")
        self.assertEqual({i: n for i, n in copies.items() if n != 1}, {},
                         "every message exactly once")
        self.assertEqual(f.md.count(), 50)
        self.assertLessEqual(lat[-1], 300, f"latencies {lat}\n{f.log()}")
        self.assertTrue(all(ok for _, ok in ts.logins), ts.logins)
        log = f.log()
        self.assertIn("replacing the connection before its token expires",
                      log)
        self.assertNotIn(" error ", log, "a planned replacement is no error")
        p = subprocess.run([fx.IDLEFETCH, "status", "--config", f.conf],
                           capture_output=True, timeout=30)
        out = p.stdout.decode() + p.stderr.decode()
        self.assertEqual(p.returncode, 0, out)
        self.assertNotIn("last error", out)
        self.assertEqual(f.stop(), 0)

    def test_replacement_still_logging_in_takes_over_at_once(self):
        """The token helper is slow: the server ends the old connection
        before its replacement has a token. The replacement goes on in
        its place, with no backoff wait, and the mail meanwhile lands
        once."""
        ts = expiring.ExpiringTokens()
        srv = self.server(scripted.Mailbox(), caps=expiring.CAPS,
                          hooks={"command": ts.hook})
        ts.start(srv)
        f = self.fetcher(srv, name="slow", password=None,
                         extra=expiring.account_lines(
                             expiring.token_helper(self.root, slow=2.5)))
        f.start()
        try:
            self.assertTrue(fx.wait_until(lambda: len(srv.idling) == 1, 15),
                            f.log())
            self.assertTrue(fx.wait_until(lambda: ts.ended == 1, 10),
                            f.log())
            t = ts.append(fx.make_message(1))
            self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 10,
                                          step=0.01), f.log())
            took = time.monotonic() - t
        finally:
            ts.stop.set()
        print(f"\nthe message appended after the BYE landed in "
              f"{took * 1000:.0f} ms")
        self.assertLess(took, 2.0, f.log())
        self.assertTrue(fx.wait_until(lambda: len(srv.idling) == 1, 5),
                        f.log())
        self.assertEqual(f.md.count(), 1)
        log = f.log()
        self.assertIn("going on with the replacement connection", log)
        self.assertNotIn("reconnecting in", log)
        self.assertEqual(srv.connections, 2)
        self.assertEqual(f.stop(), 0)

    def test_server_bye_during_idle_reconnects_at_once(self):
        """No expiry known (a password): the server announces its end
        with BYE while it stays up; the reconnect does not wait."""
        mb = scripted.Mailbox([fx.make_message(0)])
        srv = self.server(mb)
        f = self.fetcher(srv, name="bye")
        f.start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1 and
                                      len(srv.idling) == 1, 15), f.log())
        time.sleep(2.5)  # up a while: not a server that fails each IDLE
        with srv.lock:
            for c in list(srv.idling):
                c.send(b"* BYE Server shutting down\r\n")
                c.sock.shutdown(socket.SHUT_RDWR)
            mb.add(fx.make_message(1))
            t = time.monotonic()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 15),
                        f.log())
        took = time.monotonic() - t
        print(f"\nafter the BYE the new message landed in {took * 1000:.0f} ms")
        self.assertLess(took, 0.4, f.log())
        self.assertTrue(fx.wait_until(lambda: len(srv.idling) == 1, 5),
                        f.log())
        self.assertEqual(sorted(fx.message_id(b) for b in f.md.contents()),
                         sorted(fx.message_id(m) for m in
                                (mb.msgs[1], mb.msgs[2])))
        self.assertEqual(srv.connections, 2)
        self.assertEqual(f.stop(), 0)


if __name__ == "__main__":
    unittest.main()
