"""OAuth2 (auth = xoauth2 | oauthbearer) against a scripted server that
accepts only the current token of a rotating series, as Google's and
Microsoft's do: the token command runs once for all connections, its token
is kept until shortly before it expires, a refused or expired token is
replaced, and a refusal's reasons are decoded into the log."""
import base64
import json
import os
import re
import socket
import stat
import time
import unittest

import fixture as fx
import scripted


class TokenServer:
    """The accepting side: token tok-N is good while N == current."""

    def __init__(self, mech):
        self.mech = mech
        self.current = 1
        self.logins = []  # (token, accepted)
        self.challenges = 0

    def hook(self, conn, tag, rest):
        words = rest.split(" ")
        if words[0].upper() != "AUTHENTICATE":
            return False
        if words[1].upper() != self.mech:
            conn.send(f"{tag} NO [AUTHENTICATIONFAILED] mechanism\r\n".encode())
            return True
        raw = base64.b64decode(words[2]) if len(words) > 2 else b""
        if not raw:
            conn.send(b"+ \r\n")
            raw = base64.b64decode(conn.readline())
        token = re.search(rb"auth=Bearer ([^\x01]+)\x01", raw).group(1).decode()
        if self.mech == "OAUTHBEARER":
            assert raw.startswith(b"n,a=" + fx.USER.encode() + b",\x01host="), raw
        else:
            assert raw.startswith(b"user=" + fx.USER.encode() + b"\x01"), raw
        ok = token == f"tok-{self.current}"
        self.logins.append((token, ok))
        if ok:
            conn.send(f"{tag} OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] "
                      "logged in\r\n".encode())
            return True
        err = json.dumps({"status": "401", "schemes": "Bearer",
                          "scope": "https://mail.google.com/"}).encode()
        conn.send(b"+ " + base64.b64encode(err) + b"\r\n")
        self.challenges += 1
        answer = conn.readline()
        assert answer in ("", "AQ=="), answer
        conn.send(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials "
                  "(Failure)\r\n".encode())
        return True


class OAuthTest(scripted.ScriptedCase):
    def setUp(self):
        super().setUp()
        self.counter = os.path.join(self.root, "issued")
        self.cmd = os.path.join(self.root, "token-helper")
        with open(self.cmd, "w") as f:
            # Prints the next token of the series, as a JSON object the
            # way token helpers do (oama, mutt_oauth2.py --json).
            f.write(f"""#!/bin/sh
n=$(($(cat {self.counter} 2>/dev/null || echo 0) + 1))
echo $n > {self.counter}
echo "{{\\"access_token\\": \\"tok-$n\\", \\"expires_in\\": ${{EXPIRES:-3599}}}}"
""")
        os.chmod(self.cmd, stat.S_IRWXU)

    def issued(self):
        with open(self.counter) as f:
            return int(f.read())

    def oauth_server(self, mech="XOAUTH2"):
        ts = TokenServer(mech)
        mb = scripted.Mailbox([fx.make_message(0)])
        srv = self.server(mb, caps=f"IMAP4rev1 IDLE UIDPLUS SASL-IR "
                          f"AUTH=PLAIN AUTH={mech}",
                          hooks={"command": ts.hook})
        return ts, mb, srv

    def fetcher_for(self, srv, mech, name, extra=""):
        return self.fetcher(srv, name=name, password=None,
                            extra=f"auth = {mech.lower()}\n"
                                  f"oauth_token_command = {self.cmd}\n"
                                  + extra)

    def test_rotating_token_with_expiry_during_idle(self):
        ts, mb, srv = self.oauth_server()
        # A second account with a password on its own server: untouched.
        other_mb = scripted.Mailbox([fx.make_message(50)])
        other = self.server(other_mb)
        f = self.fetcher_for(srv, "XOAUTH2", "gmail")
        with open(f.conf, "a") as c:
            c.write(f"""
[account other]
host = 127.0.0.1
port = {other.port}
tls = none
username = {fx.USER}
password = {fx.PASSWORD}
maildir = {f.maildir_path}-other
""")
        f.start()
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1 and
                                      len(srv.idling) == 1 and
                                      len(other.idling) == 1, 15), f.log())
        self.assertEqual(ts.logins, [("tok-1", True)])
        self.assertEqual(self.issued(), 1)
        # The provider rotates: tok-1 is no good any more, and the idling
        # connection is told so and closed (as Microsoft 365 does when a
        # token expires).
        ts.current = 2
        with srv.lock:
            for c in list(srv.idling):
                c.send(b"* BYE Session invalidated - AccessTokenExpired\r\n")
                c.sock.shutdown(socket.SHUT_RDWR)
        mb.add(fx.make_message(1))
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 2, 30),
                        f.log())
        # The kept token was tried once, refused, and a new one fetched.
        self.assertEqual(ts.logins[-2:], [("tok-1", False), ("tok-2", True)])
        self.assertEqual(self.issued(), 2)
        log = f.log()
        self.assertIn("the server refused the kept token", log)
        self.assertIn("status 401, schemes Bearer, scope "
                      "https://mail.google.com/", log)
        self.assertNotIn("tok-", log, "no token in the log")
        self.assertEqual(other.connections, 1, "the other account stayed")
        self.assertEqual(f.stop(), 0)

    def test_short_lived_token_is_fetched_again_before_it_expires(self):
        """expires_in 4: kept 2 s. A reconnect after that runs the command
        first, so the server never sees an expired token."""
        ts, mb, srv = self.oauth_server("OAUTHBEARER")
        f = self.fetcher_for(srv, "OAUTHBEARER", "short")
        f.start(env={"EXPIRES": "4"})
        self.assertTrue(fx.wait_until(lambda: len(srv.idling) == 1, 15),
                        f.log())
        time.sleep(2.5)
        ts.current = 2
        with srv.lock:
            for c in list(srv.idling):
                c.send(b"* BYE server shutting down\r\n")
                c.sock.shutdown(socket.SHUT_RDWR)
        self.assertTrue(fx.wait_until(lambda: len(ts.logins) == 2 and
                                      len(srv.idling) == 1, 20), f.log())
        self.assertEqual(ts.logins, [("tok-1", True), ("tok-2", True)])
        self.assertEqual(ts.challenges, 0)
        self.assertEqual(f.stop(), 0)

    def test_connections_of_one_account_share_one_command_run(self):
        ts, mb, srv = self.oauth_server()
        srv.folders = ["INBOX", "Work"]
        f = self.fetcher_for(srv, "XOAUTH2", "two")
        f.proc = None
        with open(f.conf) as c:
            conf = c.read().replace("folders = INBOX", "folders = INBOX, Work")
        with open(f.conf, "w") as c:
            c.write(conf)
        f.start()
        self.assertTrue(fx.wait_until(lambda: len(srv.idling) == 2, 15),
                        f.log())
        self.assertEqual(ts.logins, [("tok-1", True), ("tok-1", True)])
        self.assertEqual(self.issued(), 1, "one run for both connections")
        self.assertEqual(f.stop(), 0)

    def test_variable_in_the_command_is_data_not_shell_code(self):
        ts, mb, srv = self.oauth_server()
        mark = os.path.join(self.root, "pasted")
        f = self.fetcher(srv, name="evil", password=None,
                         extra="auth = xoauth2\noauth_token_command = "
                               "echo ${EVIL} >/dev/null; " + self.cmd + "\n")
        f.start(env={"EVIL": f"; touch {mark}"})
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 15),
                        f.log())
        self.assertFalse(os.path.exists(mark), "the value ran as code")
        self.assertEqual(f.stop(), 0)

    def test_command_that_needs_no_shell_runs_without_one(self):
        """No shell character: the program runs directly, and ${ARG} is
        one argument whatever it holds (a shell would split it)."""
        ts, mb, srv = self.oauth_server()
        seen = os.path.join(self.root, "argv")
        wrap = os.path.join(self.root, "wrap.sh")
        with open(wrap, "w") as w:
            w.write(f'#!/bin/sh\nprintf "%s|" "$#" "$@" > {seen}\n'
                    f'exec {self.cmd}\n')
        os.chmod(wrap, 0o755)
        f = self.fetcher(srv, name="direct", password=None,
                         extra="auth = xoauth2\noauth_token_command = "
                               f"{wrap} --for ${{ARG}}\n")
        f.start(env={"ARG": "one two; *"})
        self.assertTrue(fx.wait_until(lambda: f.md.count() == 1, 15),
                        f.log())
        self.assertEqual(f.stop(), 0)
        with open(seen) as s:
            self.assertEqual(s.read(), "2|--for|one two; *|")

    def test_refused_new_token_is_one_error_and_a_slow_retry(self):
        ts, mb, srv = self.oauth_server()
        ts.current = 99  # nothing the helper prints is accepted
        f = self.fetcher_for(srv, "XOAUTH2", "revoked")
        self.assertEqual(f.once(), 1)
        errors = [l for l in f.log().splitlines() if " error " in l]
        self.assertEqual(len(errors), 1, f.log())
        self.assertIn("login rejected for user alice with a new token", errors[0])
        self.assertIn("status 401", errors[0])
        self.assertEqual(self.issued(), 1)

    def test_failing_command_is_an_error_naming_it(self):
        ts, mb, srv = self.oauth_server()
        with open(self.cmd, "w") as f:
            f.write("#!/bin/sh\necho 'refresh token revoked' >&2\nexit 3\n")
        f = self.fetcher_for(srv, "XOAUTH2", "failing")
        self.assertEqual(f.once(), 1)
        self.assertIn("oauth_token_command exited with status 3: refresh "
                      "token revoked", f.log())
        self.assertEqual(ts.logins, [], "no login without a token")

    def test_server_without_the_mechanism_is_refused_before_login(self):
        mb = scripted.Mailbox([fx.make_message(0)])
        srv = self.server(mb)  # AUTH=PLAIN only
        f = self.fetcher_for(srv, "XOAUTH2", "nomech")
        self.assertEqual(f.once(), 1)
        self.assertIn("does not offer AUTH=XOAUTH2", f.log())


if __name__ == "__main__":
    unittest.main()
