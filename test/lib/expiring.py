"""An OAuth2 provider whose tokens expire, scripted (scripted.py): tokens
live LIFETIME_S, and a session whose token expired is ended with
`* BYE Session invalidated - AccessTokenExpired`, as Microsoft 365 does;
and a watch on a Maildir's new/ that times each message's arrival. Used by
test_handover.py and bench/handover.py."""
import base64
import os
import random
import re
import socket
import stat
import threading
import time

import fixture as fx
LIFETIME_S = 6


class ExpiringTokens:
    """The server's side: a token (tok-N-ISSUED_MS, printed by the helper)
    is good for LIFETIME_S after it was issued; a session ends when its
    token does (BYE while it IDLEs, or at its next command). Appends go
    through append(), which tells the idling sessions, and IDLE tells of
    what came since the session last heard (as Dovecot does)."""

    def __init__(self):
        self.srv = None
        self.logins = []  # (token, accepted)
        self.expiry = {}  # conn -> monotonic time its token expires
        self.known = {}  # conn -> EXISTS last told
        self.ended = 0  # sessions ended with AccessTokenExpired
        self.stop = threading.Event()
        self.reaper = threading.Thread(target=self._reap, daemon=True)

    def start(self, srv):
        self.srv = srv
        self.reaper.start()

    def _bye(self, conn):
        conn.send(b"* BYE Session invalidated - AccessTokenExpired\r\n")
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.expiry.pop(conn, None)
        self.ended += 1

    def _reap(self):
        while not self.stop.wait(0.01):
            now = time.monotonic()
            with self.srv.lock:
                for c in list(self.srv.idling):
                    if self.expiry.get(c, now + 1) <= now:
                        self.srv.idling.remove(c)
                        self._bye(c)

    def append(self, body):
        """Adds a message and tells the idling sessions; returns the time."""
        mb = self.srv.mailbox
        with self.srv.lock:
            mb.add(body)
            t = time.monotonic()
            for c in list(self.srv.idling):
                c.send(f"* {len(mb.msgs)} EXISTS\r\n".encode())
                self.known[c] = len(mb.msgs)
        return t

    def _login(self, conn, tag, rest):
        words = rest.split(" ")
        raw = base64.b64decode(words[2]) if len(words) > 2 else b""
        if not raw:
            conn.send(b"+ \r\n")
            raw = base64.b64decode(conn.readline())
        token = re.search(rb"auth=Bearer ([^\x01]+)\x01", raw).group(1).decode()
        issued_ms = int(token.rsplit("-", 1)[1])
        left = issued_ms / 1000 + LIFETIME_S - time.time()
        self.logins.append((token, left > 0))
        if left <= 0:
            conn.send(f"{tag} NO [AUTHENTICATIONFAILED] token expired\r\n"
                      .encode())
            return True
        self.expiry[conn] = time.monotonic() + left
        conn.send(f"{tag} OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] "
                  "logged in\r\n".encode())
        return True

    def _idle(self, conn, tag):
        mb = self.srv.mailbox
        conn.send(b"+ idling\r\n")
        with self.srv.lock:
            if len(mb.msgs) > self.known.get(conn, 0):
                conn.send(f"* {len(mb.msgs)} EXISTS\r\n".encode())
                self.known[conn] = len(mb.msgs)
            self.srv.idling.append(conn)
        done = conn.readline()
        with self.srv.lock:
            if conn in self.srv.idling:
                self.srv.idling.remove(conn)
        self.srv.commands.append(done)
        conn.send(f"{tag} OK idle done\r\n".encode())
        return True

    def hook(self, conn, tag, rest):
        cmd = rest.split(" ")[0].upper()
        if cmd == "AUTHENTICATE":
            return self._login(conn, tag, rest)
        with self.srv.lock:
            if self.expiry.get(conn, time.monotonic() + 1) <= time.monotonic():
                self._bye(conn)
                return True
        if cmd in ("SELECT", "EXAMINE"):
            self.known[conn] = len(self.srv.mailbox.msgs)
            return False
        if cmd == "IDLE":
            return self._idle(conn, tag)
        if cmd == "UID":
            # The appending thread adds messages meanwhile.
            with self.srv.lock:
                conn.uid_fetch(tag, rest)
            return True
        return False


class Arrivals:
    """Watches new/ every 5 ms: when each message (by its number) landed,
    and how many copies of it."""

    def __init__(self, maildir):
        self.new = os.path.join(maildir, "new")
        self.seen = set()
        self.at = {}  # message number -> monotonic time of its first copy
        self.copies = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.stop.wait(0.005):
            try:
                names = os.listdir(self.new)
            except FileNotFoundError:
                continue
            now = time.monotonic()
            for n in names:
                if n in self.seen:
                    continue
                self.seen.add(n)
                with open(os.path.join(self.new, n), "rb") as f:
                    m = re.search(rb"Body of message (\d+)\.", f.read())
                i = int(m.group(1))
                self.at.setdefault(i, now)
                self.copies[i] = self.copies.get(i, 0) + 1

    def close(self):
        self.stop.set()
        self.thread.join(2)


def token_helper(root, slow=0):
    """Writes the token helper: a new token each run, tok-PID-ISSUED_MS,
    printed as JSON with expires_in LIFETIME_S; from its second run on it
    first sleeps slow seconds. Returns its path."""
    cmd = os.path.join(root, "token-helper")
    runs = os.path.join(root, "token-runs")
    with open(cmd, "w") as f:
        f.write(f"""#!/bin/sh
echo run >> {runs}
[ $(wc -l < {runs}) -gt 1 ] && sleep {slow}
echo "{{\\"access_token\\": \\"tok-$$-$(date +%s%3N)\\", \\"expires_in\\": {LIFETIME_S}}}"
""")
    os.chmod(cmd, stat.S_IRWXU)
    return cmd


def append_series(ts, n, seed=21, low=0.3, high=1.2):
    """Appends n messages low..high s apart (seeded): their append times."""
    rnd = random.Random(seed)
    appended = {}
    for i in range(n):
        time.sleep(rnd.uniform(low, high))
        appended[i] = ts.append(fx.make_message(i))
    return appended


CAPS = "IMAP4rev1 IDLE UIDPLUS SASL-IR AUTH=XOAUTH2"


def account_lines(helper):
    """The [account] lines that log in with the helper's tokens."""
    return f"auth = xoauth2\noauth_token_command = {helper}\n"


def measure(ts, srv, f, n=50, seed=21):
    """With f started against srv: appends n messages and waits for them
    in f's Maildir. Returns (sorted latencies in ms, {number: copies}),
    or None when they did not all land."""
    arr = Arrivals(f.maildir_path)
    try:
        if not fx.wait_until(lambda: len(srv.idling) == 1, 15):
            return None
        appended = append_series(ts, n, seed)
        if not fx.wait_until(lambda: len(arr.at) == n, 15):
            return None
        time.sleep(0.5)  # a late second copy would show now
    finally:
        arr.close()
        ts.stop.set()
    worst = max(range(n), key=lambda i: arr.at[i] - appended[i])
    wall = time.time() - time.monotonic()
    print(f"\nslowest: message {worst + 1}, appended at "
          f"{time.strftime('%H:%M:%S', time.gmtime(appended[worst] + wall))}"
          f".{int((appended[worst] + wall) % 1 * 1000):03d}Z, landed "
          f"{(arr.at[worst] - appended[worst]) * 1000:.0f} ms later")
    lat = sorted((arr.at[i] - appended[i]) * 1000 for i in range(n))
    return lat, dict(arr.copies)
