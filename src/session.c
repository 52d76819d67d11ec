/*
 * session: the state machine of one connection (account + its folders).
 *
 *   PREPARE -> [QUEUED] -> CONNECT -> [TLS] -> GREETING -> [STARTTLS ->
 *   TLS] -> CAPABILITY -> AUTH -> [DISCOVER] -> [NOTIFY] -> (SELECT ->
 *   SYNC) for each folder -> IDLE | POLL_WAIT -> [DISCOVER] [STATUS] ->
 *   SELECT ...; any error -> BACKOFF -> CONNECT; stop -> LOGOUT -> DONE
 *
 * This file drives the connection: commands and their replies, timers,
 * login, IDLE and polling, errors and backoff; session_enter() is the one
 * place that changes its state. SYNC itself (reconcile, verify, what to
 * fetch, batches, commits) is the mailbox sync's, in sync.c: it has its own
 * phases and hands the folder back through session_synced().
 */
#include "session_int.h"

#include <ctype.h>

#include "idlefetch/mutf7.h"
#include "idlefetch/oauth.h"

static const char *state_names[] = { "PREPARE", "CONNECT", "TLS", "GREETING",
	"STARTTLS", "CAPABILITY", "TOKEN", "AUTH", "NOTIFY", "SELECT", "SYNC",
	"IDLE_START", "IDLE", "IDLE_DONE", "POLL_WAIT", "STATUS", "DISCOVER",
	"LOGOUT", "CLOSING", "BACKOFF", "QUEUED", "DONE" };

/*
 * Words kept from a reply for a later log line (a BYE's reason, a refused
 * SELECT's): on the heap only while held, not in every idle connection.
 */
static void
set_text(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? xstrdup(src) : NULL;
}

/* ---- commands ---------------------------------------------------------- */

static struct cmd *
find_cmd(struct session *s, const char *tag)
{
	unsigned n;
	char *end;

	if (tag[0] != 'a')
		return NULL;
	n = (unsigned)strtoul(tag + 1, &end, 10);
	if (*end != '\0')
		return NULL;
	for (size_t i = 0; i < s->ncmds; i++)
		if (s->cmds[i].tag == n)
			return &s->cmds[i];
	return NULL;
}

static void
drop_cmd(struct session *s, struct cmd *c)
{
	free(c->uids);
	if (c->secret)
		secret_free(c->secret);
	*c = s->cmds[--s->ncmds];
}

/*
 * Sends "aN <text>\r\n" and records it. secret: the text holds credentials
 * and is not logged.
 */
struct cmd *
session_send_cmd(struct session *s, enum cmd_kind kind, bool secret,
    const char *fmt, ...)
{
	struct cmd *c;
	char *text, *line;
	va_list ap;
	int r;

	if (s->ncmds == s->capcmds) {
		s->capcmds = s->capcmds ? s->capcmds * 2 : 4;
		s->cmds = xrealloc(s->cmds, s->capcmds * sizeof(*s->cmds));
	}
	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	c = &s->cmds[s->ncmds++];
	memset(c, 0, sizeof(*c));
	c->tag = ++s->next_tag;
	c->kind = kind;
	line = xasprintf("a%u %s\r\n", c->tag, text);
	if (log_enabled(LOGL_DEBUG)) {
		if (secret)
			LOG(s, LOGL_DEBUG, "C: a%u %.*s <credentials hidden>",
			    c->tag, (int)strcspn(text, " "), text);
		else
			LOG(s, LOGL_DEBUG, "C: a%u %s", c->tag, text);
	}
	r = transport_write(s->tr, line, strlen(line));
	OPENSSL_cleanse(line, strlen(line));
	OPENSSL_cleanse(text, strlen(text));
	free(line);
	free(text);
	if (r < 0)
		LOG(s, LOGL_DEBUG, "write failed: %s", err_str(r));
	return c;
}

void
session_send_raw(struct session *s, const char *text, bool secret)
{
	char *line = xasprintf("%s\r\n", text);

	LOG(s, LOGL_DEBUG, "C: %s", secret ? "<credentials hidden>" : text);
	transport_write(s->tr, line, strlen(line));
	OPENSSL_cleanse(line, strlen(line));
	free(line);
}

/* ---- timers and states ------------------------------------------------- */

static void timer_cb(uv_timer_t *t);

/* Not stopped for good, and not refused by the server on this connection. */
static bool
usable_folder(const struct mbox *mb)
{
	return !mb->dead && !mb->skipped;
}

/* Folders that are not stopped for good. */
static size_t
live_folders(const struct session *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->nmbs; i++)
		n += !s->mbs[i].dead;
	return n;
}

/*
 * Whether NOTIFY tells of the folder. Dovecot 2.3 matches and names
 * folders in NOTIFY in UTF-8 instead of modified UTF-7, so it never tells
 * of one whose name is not ASCII: those are asked with STATUS.
 */
static bool
told_of(const struct session *s, const struct mbox *mb)
{
	return s->notify && strcmp(mb->wire, mb->name) == 0;
}

/* Folders other than the one it waits on are asked with STATUS. */
static bool
polls_others(const struct session *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->nmbs; i++)
		n += usable_folder(&s->mbs[i]) && !told_of(s, &s->mbs[i]);
	return s->notify ? n > 0 : n > 1;
}

/*
 * Rounds every poll_interval: the other folders asked with STATUS, the
 * subscribed folders listed (folders = *).
 */
static bool
rounds(const struct session *s)
{
	return polls_others(s) || s->o.listed != NULL;
}

/*
 * Milliseconds until the next round is due: new
 * mail in the selected folder wakes the connection in between, and must
 * not push that round back.
 */
static uint64_t
poll_due_ms(const struct session *s)
{
	uint64_t every = (uint64_t)s->a->poll_interval * 1000,
		 since = uv_now(s->loop) - s->polled_at;

	return since >= every ? 1 : every - since;
}

void
session_use(struct session *s, struct mbox *mb)
{
	s->mb = mb;
	s->lane.maildir = mb->maildir;
}

static void
arm(struct session *s, uint64_t ms)
{
	uv_timer_start(&s->timer, timer_cb, ms, 0);
}

/* States that wait for the answer to a command: `timeout` bounds them. */
static bool
awaits_answer(enum session_state st)
{
	switch (st) {
	case S_STARTTLS:
	case S_CAPABILITY:
	case S_AUTH:
	case S_NOTIFY:
	case S_SELECT:
	case S_STATUS:
	case S_DISCOVER:
	case S_SYNC:
	case S_IDLE_START:
	case S_IDLE_DONE:
		return true;
	default:
		return false;
	}
}

/* Logged in and synced, for `idlefetch status`. */
static bool
state_is_up(const struct session *s, enum session_state st)
{
	switch (st) {
	case S_SYNC:
	case S_IDLE_START:
	case S_IDLE:
	case S_IDLE_DONE:
	case S_POLL_WAIT:
	case S_STATUS:
		return true;
	case S_SELECT:
	case S_DISCOVER:
		/* Between folders the connection stays up. */
		return s->selected != NULL || s->mb->status->up;
	case S_PREPARE:
		/* A folder found on the server is made ready meanwhile. */
		return s->conn_alive &&
		    (s->selected != NULL || s->mb->status->up);
	case S_LOGOUT:
	case S_DONE:
		return s->mb->status->up; /* passing through: no change */
	default:
		return false;
	}
}

static void close_conn(struct session *s);

void
session_enter(struct session *s, enum session_state st)
{
	/* The entry action: what entering st says to the server. */
	switch (st) {
	case S_IDLE_START:
		session_send_cmd(s, CMD_IDLE, false, "IDLE");
		break;
	case S_IDLE_DONE:
		session_send_raw(s, "DONE", false);
		break;
	case S_LOGOUT:
		session_send_cmd(s, CMD_LOGOUT, false, "LOGOUT");
		break;
	case S_CLOSING:
		close_conn(s);
		break;
	default:
		break;
	}
	if (s->state != st)
		LOG(s, LOGL_DEBUG, "state %s -> %s", state_names[s->state],
		    state_names[st]);
	s->state = st;
	for (size_t i = 0; i < s->nmbs; i++)
		status_set_state(s->mbs[i].status, state_names[st],
		    state_is_up(s, st));
	uv_timer_stop(&s->timer);
	if (awaits_answer(st)) {
		s->progress_at = uv_now(s->loop);
		arm(s, TIMEOUT_MS(s));
		return;
	}
	switch (st) {
	case S_CONNECT:
	case S_TLS:
	case S_GREETING:
		arm(s, TIMEOUT_MS(s));
		break;
	case S_IDLE:
		/* The next round, if sooner. */
		if (rounds(s) && poll_due_ms(s) < s->a->idle_refresh * 1000u)
			arm(s, poll_due_ms(s));
		else
			arm(s, (uint64_t)s->a->idle_refresh * 1000);
		break;
	case S_POLL_WAIT:
		arm(s, rounds(s) ? poll_due_ms(s) :
				   (uint64_t)s->a->poll_interval * 1000);
		break;
	case S_LOGOUT:
		arm(s, LOGOUT_TIMEOUT_MS);
		break;
	default:
		break;
	}
}

/*
 * The server moved an answer forward: a tagged reply, a line of the
 * listing, bytes of a message. Only these restart the timeout; an
 * untagged "* OK still here" or a greeting trickled byte by byte does not,
 * so `timeout` bounds the time to each answer, as promised.
 */
void
session_progress(struct session *s)
{
	/*
	 * Message bytes call this for every chunk; the timeout has whole
	 * seconds, so re-arming it once a second is as good and cheaper.
	 */
	if (!awaits_answer(s->state) ||
	    uv_now(s->loop) - s->progress_at < 1000)
		return;
	s->progress_at = uv_now(s->loop);
	arm(s, TIMEOUT_MS(s));
}

/* ---- the gate: a few connections set up at a time ------------------------- */

static void
gate_unqueue(struct session *s)
{
	struct session_gate *g = s->o.gate;
	struct session **p;

	if (!s->gate_queued)
		return;
	for (p = &g->head; *p != s; p = &(*p)->gate_next)
		;
	*p = s->gate_next;
	if (g->tail == s) {
		g->tail = NULL;
		for (struct session *q = g->head; q; q = q->gate_next)
			g->tail = q;
	}
	s->gate_next = NULL;
	s->gate_queued = false;
}

/* Logged in or gone: the slot goes to the next session waiting. */
static void
gate_release(struct session *s)
{
	struct session_gate *g = s->o.gate;
	struct session *next;

	if (!s->gate_held)
		return;
	s->gate_held = false;
	g->busy--;
	next = g->head;
	if (next != NULL) {
		gate_unqueue(next);
		session_connect(next);
	}
}

/* ---- connection teardown --------------------------------------------------- */

static void
close_conn(struct session *s)
{
	gate_release(s);
	if (s->tr) {
		transport_free(s->tr);
		s->tr = NULL;
	}
	s->conn_alive = false;
	framer_reset(s->fr);
	s->o.sync->reset(s);
	for (size_t i = 0; i < s->ncmds; i++) {
		free(s->cmds[i].uids);
		secret_free(s->cmds[i].secret);
	}
	s->ncmds = 0;
	set_text(&s->select_err, NULL);
	set_text(&s->why, NULL);
	if (s->o.oauth)
		oauth_cancel(s->o.oauth, s); /* it may wait for a token */
	s->selected = NULL;
	s->notify = false;
	s->status_wait = 0;
	s->back_to_first = false;
	s->renotify = false;
	s->relist = false;
	s->discover_pass = 0;
	folders_free(&s->found);
}

static void
backoff(struct session *s)
{
	unsigned delay;

	/*
	 * A connection that stayed up or brought mail was healthy: start over
	 * from the shortest delay. One dropped soon after each login (a server
	 * that fails on IDLE, say) keeps backing off instead of logging in
	 * every second.
	 */
	if (s->healthy &&
	    (s->conn_delivered > 0 ||
		uv_now(s->loop) - s->healthy_at >= HEALTHY_MS))
		s->backoff_ms = BACKOFF_MIN_MS;
	s->healthy = false;
	s->conn_delivered = 0;
	/* Full jitter on the upper half spreads many accounts apart. */
	delay =
	    s->backoff_ms / 2 + (unsigned)(random() % (s->backoff_ms / 2 + 1));
	/* A throttling server's suggested wait, at the least. */
	if (s->retry_ms > delay)
		delay = s->retry_ms;
	s->retry_ms = 0;
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS :
							     s->backoff_ms * 2;
	LOG(s, LOGL_INFO, "reconnecting in %.1f s", delay / 1000.0);
	session_enter(s, S_BACKOFF);
	arm(s, delay);
}

void
session_finish(struct session *s)
{
	bool ok;

	/* Files still being removed: the session is done only after. */
	if (!lane_idle(&s->lane)) {
		s->finish_when_idle = true;
		return;
	}
	s->finish_when_idle = false;
	/* A daemon's session ends unasked only when it cannot go on. */
	if (!s->stopping && !s->o.once)
		for (size_t i = 0; i < s->nmbs; i++) {
			s->mbs[i].status->gave_up = true;
			status_changed(s->mbs[i].status);
		}
	session_enter(s, S_DONE);
	ok = s->ok && !s->fatal_err;
	for (size_t i = 0; i < s->nmbs; i++)
		if (!s->mbs[i].dead && !s->mbs[i].sync_ok)
			ok = false;
	s->o.done(s, s->o.ud, ok);
}

/*
 * With the connection gone, commits what arrived and then either retries
 * or finishes. Called again after each job completes.
 */
void
session_settle(struct session *s)
{
	if (s->conn_alive)
		return;
	s->o.sync->pump_commits(s);
	if (s->job_busy || !lane_idle(&s->lane))
		return;
	if (s->state == S_DONE)
		return;
	if (s->stopping || s->o.once || s->fatal_err) {
		session_finish(s);
		return;
	}
	if (s->state == S_CLOSING)
		backoff(s);
}

void
session_fail(struct session *s, int err, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	s->ok = false;
	for (size_t i = 0; i < s->nmbs; i++)
		if (!s->mbs[i].dead)
			status_error(s->mbs[i].status, why);
	if (err == IDLEFETCH_EAUTH) {
		if (!s->auth_logged)
			LOG(s, LOGL_ERROR, "%s", why);
		s->auth_logged = true;
		s->backoff_ms = BACKOFF_MAX_MS;
	} else if (s->stopping && s->state == S_LOGOUT) {
		LOG(s, LOGL_DEBUG, "%s", why);
	} else {
		LOG(s, LOGL_ERROR, "%s", why);
	}
	session_enter(s, S_CLOSING);
	session_settle(s);
}

bool
session_folder_stop(struct session *s, int err, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (live_folders(s) <= 1) {
		s->fatal_err = true;
		session_fail(s, err, "%s", why);
		return false;
	}
	s->mb->dead = true;
	s->mb->pending = false;
	s->ok = false;
	LOG(s, LOGL_ERROR, "%s", why);
	status_error(s->mb->status, why);
	s->mb->status->gave_up = true;
	status_changed(s->mb->status);
	return true;
}

/* ---- connection setup -------------------------------------------------------- */

/*
 * AUTHENTICATE XOAUTH2 or OAUTHBEARER with the token. A refusal comes as
 * a "+" with the server's reasons (base64 JSON), answered with an empty
 * response (XOAUTH2) or %x01 (OAUTHBEARER, RFC 7628 3.2.3), then NO.
 */
static void
send_oauth(struct session *s, const char *token)
{
	bool x = s->a->auth == AUTH_XOAUTH2;
	const char *mech = x ? "XOAUTH2" : "OAUTHBEARER";
	char *b64;

	if (!(s->caps & (x ? CAP_AUTH_XOAUTH2 : CAP_AUTH_OAUTHBEARER))) {
		session_fail(s, IDLEFETCH_ECAPA,
		    "auth = %s but the server does not offer AUTH=%s; not "
		    "logging in",
		    x ? "xoauth2" : "oauthbearer", mech);
		return;
	}
	b64 = oauth_response(s->a->auth, s->a->username, token, s->a->host,
	    s->a->port);
	s->oauth_gen = oauth_generation(s->o.oauth);
	set_text(&s->why, NULL);
	if (s->caps & CAP_SASL_IR) {
		session_send_cmd(s, CMD_AUTH, true, "AUTHENTICATE %s %s", mech,
		    b64);
	} else {
		session_send_cmd(s, CMD_AUTH, false, "AUTHENTICATE %s", mech);
		s->cmds[s->ncmds - 1].secret = xstrdup(b64);
	}
	OPENSSL_cleanse(b64, strlen(b64));
	free(b64);
	session_enter(s, S_AUTH);
}

static void
token_cb(void *ud, const char *token, const char *err)
{
	struct session *s = ud;

	if (s->state != S_TOKEN)
		return;
	if (token == NULL) {
		session_fail(s, IDLEFETCH_EAUTH, "%s", err);
		return;
	}
	s->oauth_fresh = true;
	send_oauth(s, token);
}

/* The server refused the token: its reasons, decoded, for the log. */
static void
oauth_challenge(struct session *s, const char *text)
{
	char why[256];

	oauth_describe_challenge(text, why, sizeof(why));
	set_text(&s->why, why);
	session_send_raw(s, s->a->auth == AUTH_XOAUTH2 ? "" : "AQ==", false);
}

static void
send_auth(struct session *s)
{
	const struct account *a = s->a;
	size_t ul, pl;
	char qu[1024], qp[1024];

	if (s->o.ssl_ctx && !transport_is_tls(s->tr))
		fatal("credentials about to be sent without TLS");
	if (a->auth != AUTH_PASSWORD) {
		const char *token = oauth_token(s->o.oauth);

		s->oauth_fresh = false;
		if (token) {
			send_oauth(s, token);
			return;
		}
		/* Nothing fresh: the command runs, the connection waits. */
		session_enter(s, S_TOKEN);
		oauth_fetch(s->o.oauth, token_cb, s);
		return;
	}
	ul = strlen(a->username);
	pl = strlen(a->password);
	if (s->caps & CAP_AUTH_PLAIN) {
		size_t rawlen = ul + pl + 2;
		unsigned char *raw = xmalloc(rawlen);
		char *b64 = xmalloc(4 * ((rawlen + 2) / 3) + 1);

		raw[0] = '\0';
		memcpy(raw + 1, a->username, ul);
		raw[ul + 1] = '\0';
		memcpy(raw + ul + 2, a->password, pl);
		EVP_EncodeBlock((unsigned char *)b64, raw, (int)rawlen);
		OPENSSL_cleanse(raw, rawlen);
		free(raw);
		if (s->caps & CAP_SASL_IR) {
			session_send_cmd(s, CMD_AUTH, true,
			    "AUTHENTICATE PLAIN %s", b64);
		} else {
			session_send_cmd(s, CMD_AUTH, false,
			    "AUTHENTICATE PLAIN");
			/* The response goes out after the server's "+". */
			s->cmds[s->ncmds - 1].secret = xstrdup(b64);
		}
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
		session_enter(s, S_AUTH);
		return;
	}
	if (s->caps & CAP_LOGINDISABLED) {
		session_fail(s, IDLEFETCH_ECAPA,
		    "server refuses LOGIN "
		    "(LOGINDISABLED) and offers no AUTH=PLAIN; not logging in");
		return;
	}
	if (proto_quote(qu, sizeof(qu), a->username) < 0 ||
	    proto_quote(qp, sizeof(qp), a->password) < 0) {
		s->fatal_err = true;
		session_fail(s, -EINVAL,
		    "username or password has bytes LOGIN "
		    "cannot carry and the server offers no AUTH=PLAIN");
		return;
	}
	session_send_cmd(s, CMD_AUTH, true, "LOGIN %s %s", qu, qp);
	OPENSSL_cleanse(qp, sizeof(qp));
	session_enter(s, S_AUTH);
}

/*
 * A refused token is not used again. One the command had just printed
 * means the account itself is refused (retried slowly); one that was kept
 * from before has merely expired early: a new one, at once.
 */
static void
oauth_rejected(struct session *s, const struct proto_resp *r)
{
	char reason[300];

	oauth_refused(s->o.oauth, s->oauth_gen);
	snprintf(reason, sizeof(reason), "%s%s%s", r->text,
	    s->why ? "; the server says: " : "", s->why ? s->why : "");
	set_text(&s->why, NULL);
	if (s->oauth_fresh) {
		session_fail(s, IDLEFETCH_EAUTH,
		    "login rejected for user %s with a new token: %s",
		    s->a->username, reason);
		return;
	}
	LOG(s, LOGL_WARN,
	    "the server refused the kept token for user %s (%s); running "
	    "oauth_token_command again",
	    s->a->username, reason);
	s->backoff_ms = BACKOFF_MIN_MS;
	session_fail(s, -EKEYEXPIRED, "reconnecting with a new token");
}

/* Capabilities known: STARTTLS if asked for, else log in. */
static void
after_caps(struct session *s)
{
	if (s->a->tls == TLS_MODE_STARTTLS && !transport_is_tls(s->tr)) {
		if (!(s->caps & CAP_STARTTLS)) {
			session_fail(s, IDLEFETCH_ECAPA,
			    "tls = starttls but the server "
			    "does not offer STARTTLS; not logging in");
			return;
		}
		session_send_cmd(s, CMD_STARTTLS, false, "STARTTLS");
		session_enter(s, S_STARTTLS);
		return;
	}
	send_auth(s);
}

/*
 * Whether a name the server listed, with its hierarchy delimiter, is the
 * configured name below some prefix: the configured levels, separated by
 * '/' or '.', are the last levels of the listed name (compared without
 * case), so Archive is INBOX.Archive and Lists/dev is INBOX.Lists.dev, but
 * Archive is not MyArchive.
 */
static bool
names_same_folder(const char *listed, char delim, const char *want)
{
	size_t n = strlen(listed), m = strlen(want);

	if (n <= m)
		return false;
	if (delim == 0 || listed[n - m - 1] != delim)
		return false;
	for (size_t i = 0; i < m; i++) {
		char l = listed[n - m + i], w = want[i];
		bool lsep = l == delim, wsep = w == '/' || w == '.';

		if (lsep || wsep) {
			if (lsep != wsep)
				return false;
		} else if (tolower((unsigned char)l) != tolower((unsigned char)w))
			return false;
	}
	return true;
}

/*
 * A move: target the server does not have fails only after delivery, on
 * every sync. Ask first: LIST it by name, and if it is not there, list
 * "*NAME" with every hierarchy separator ('/' or '.') widened to '*', to
 * name what the server calls it: INBOX.Archive for Archive and
 * INBOX.Lists.dev for Lists/dev on Courier and Cyrus, whose personal
 * namespace is "INBOX." with "." between levels.
 */
static void
send_lookup(struct session *s)
{
	char mbox[512], pattern[300];

	snprintf(pattern, sizeof(pattern), "%s%s", s->lookup_pass ? "*" : "",
	    s->lookup);
	if (s->lookup_pass)
		for (char *p = pattern; *p; p++)
			if (*p == '/' || *p == '.')
				*p = '*';
	if (proto_quote(mbox, sizeof(mbox), pattern) < 0)
		fatal("folder name '%s' cannot be quoted", s->lookup);
	s->lookup_found = false;
	session_send_cmd(s, CMD_LISTMB, false, "LIST \"\" %s", mbox);
	session_enter(s, S_SELECT);
}

static void send_select(struct session *s);

/*
 * A folder the server will not open: with other folders on the
 * connection, it is left out until the next connection and the others go
 * on; alone, the connection fails and is tried again later.
 */
static void __attribute__((format(printf, 2, 3)))
folder_skip(struct session *s, const char *fmt, ...)
{
	char why[512];
	size_t usable = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	for (size_t i = 0; i < s->nmbs; i++)
		usable += usable_folder(&s->mbs[i]) && &s->mbs[i] != s->mb;
	if (usable == 0) {
		session_fail(s, IDLEFETCH_EPROTO, "%s", why);
		return;
	}
	s->mb->skipped = true;
	s->mb->pending = false;
	s->ok = false;
	LOG(s, LOGL_ERROR, "%s; trying it again at the next connection",
	    why);
	status_error(s->mb->status, why);
	session_synced(s);
}

static void
lookup_done(struct session *s, const struct proto_resp *r)
{
	if (r->status != PROTO_OK) {
		session_fail(s, IDLEFETCH_EPROTO, "LIST failed: %s", r->text);
		return;
	}
	if (s->select_err) {
		/* A folder SELECT refused: say what the server calls it. */
		char why[256];

		snprintf(why, sizeof(why), "%s", s->select_err);
		set_text(&s->select_err, NULL);
		s->lookup_pass = 0;
		if (s->lookup_guess)
			folder_skip(s,
			    "cannot open folder %s: %s; the server has '%s' "
			    "(write it so in folders =)",
			    s->mb->name, why, s->lookup_guess);
		else
			folder_skip(s, "cannot open folder %s: %s",
			    s->mb->name, why);
		return;
	}
	if (s->lookup_found) {
		s->move_checked = true;
		send_select(s);
		return;
	}
	if (s->lookup_pass == 0) {
		s->lookup_pass = 1;
		set_text(&s->lookup_guess, NULL);
		send_lookup(s);
		return;
	}
	s->lookup_pass = 0;
	s->fatal_err = true;
	if (s->lookup_guess)
		session_fail(s, IDLEFETCH_EPROTO,
		    "after = move:%s: the server has no folder of that name; it "
		    "has '%s' (write after = move:%s)",
		    s->a->move_to, s->lookup_guess, s->lookup_guess);
	else
		session_fail(s, IDLEFETCH_EPROTO,
		    "after = move:%s: the server has no folder of that name; "
		    "create it, or name one it has",
		    s->a->move_to);
}

static void
send_select(struct session *s)
{
	char mbox[512];

	if (s->a->after == AFTER_MOVE && !s->move_checked) {
		s->lookup = s->move_wire;
		send_lookup(s);
		return;
	}

	/* The configuration allows only names a quoted string can carry. */
	if (proto_quote(mbox, sizeof(mbox), s->mb->wire) < 0)
		fatal("folder name '%s' cannot be quoted", s->mb->wire);
	s->uidvalidity = 0;
	s->uidnext = 0;
	s->exists = 0;
	s->selected = NULL; /* a failed SELECT leaves none selected */
	/*
	 * SELECT even for `keep`: BODY.PEEK[] leaves \Seen alone either way,
	 * and Courier-IMAP saves a folder's UID list only when a client
	 * SELECTs it; with EXAMINE alone its UIDs shift after a restart
	 * (the same UIDVALIDITY, other messages) and mail is lost and
	 * duplicated. SELECT may clear \Recent, which no flag-based reader
	 * of the Maildir relies on. read_only (after = keep) asks for
	 * EXAMINE: Courier's UIDs may then shift, which the sync recovers
	 * from by itself.
	 */
	session_send_cmd(s, CMD_SELECT, false, "%s %s",
	    s->a->read_only ? "EXAMINE" : "SELECT", mbox);
	session_enter(s, S_SELECT);
}

static void
selected(struct session *s)
{
	if (s->uidvalidity == 0) {
		session_fail(s, IDLEFETCH_EPROTO,
		    "server sent no UIDVALIDITY for %s", s->mb->name);
		return;
	}
	s->selected = s->mb;
	s->mb->uidnext = s->uidnext;
	s->mb->status_uidvalidity = s->uidvalidity;
	/* A changed UIDVALIDITY is the sync's to recover from. */
	LOG(s, LOGL_INFO,
	    "selected: %u message(s), UIDVALIDITY %u, last "
	    "delivered UID %u",
	    s->exists, s->uidvalidity, s->mb->st.last_uid);
	session_enter(s, S_SYNC);
	s->o.sync->begin(s);
}

/* ---- folders in turn ---------------------------------------------------------- */

static struct mbox *
find_mbox(struct session *s, const char *name)
{
	for (size_t i = 0; i < s->nmbs; i++) {
		const char *n = s->mbs[i].wire;

		/* INBOX is the one name without case (RFC 3501 5.1). */
		if (strcmp(n, name) == 0 ||
		    (strcasecmp(n, "INBOX") == 0 && strcasecmp(name, n) == 0))
			return &s->mbs[i];
	}
	return NULL;
}

/*
 * NOTIFY (RFC 5465): news of the selected folder as EXISTS, of the others
 * as STATUS with their UIDNEXT, on this one connection.
 */
static void
send_notify(struct session *s, bool again)
{
	size_t cap = 128, len;
	char *line = xmalloc(cap), q[512];

	/*
	 * Dovecot 2.3 tells nothing more after a second NOTIFY SET on one
	 * connection, but does after NOTIFY NONE and SET again.
	 */
	if (again)
		session_send_cmd(s, CMD_NOTIFY_NONE, false, "NOTIFY NONE");
	/*
	 * Set again (new folders, an overflow): mail that came while the
	 * server changed over may have gone untold. STATUS has it tell every
	 * folder's UIDNEXT at once (RFC 5465 3.1); those that moved are synced.
	 */
	len = (size_t)snprintf(line, cap,
	    "NOTIFY SET %s(selected (MessageNew MessageExpunge)) (mailboxes (",
	    again ? "STATUS " : "");
	for (size_t i = 0; i < s->nmbs; i++) {
		if (proto_quote(q, sizeof(q), s->mbs[i].wire) < 0)
			fatal("folder name '%s' cannot be quoted",
			    s->mbs[i].wire);
		if (len + strlen(q) + 128 > cap) {
			cap = 2 * (len + strlen(q) + 128);
			line = xrealloc(line, cap);
		}
		len += (size_t)snprintf(line + len, cap - len, "%s%s",
		    i ? " " : "", q);
	}
	/*
	 * folders = *: news of folders created, removed or (un)subscribed,
	 * as "* LIST", to list them again at once (RFC 5465 5.4, 5.5).
	 */
	snprintf(line + len, cap - len, ") (MessageNew MessageExpunge))%s",
	    s->o.listed ? " (personal (MailboxName SubscriptionChange))" : "");
	session_send_cmd(s, CMD_NOTIFY, false, "%s", line);
	free(line);
	session_enter(s, S_NOTIFY);
}

/*
 * folders = *: LSUB, or LIST (SUBSCRIBED) where LSUB is refused (IMAP4rev2
 * has no LSUB). login: right after logging in, before any folder is synced.
 */
static void
send_discover(struct session *s, bool login)
{
	s->discover_login = login;
	s->relist = false;
	s->polled_at = uv_now(s->loop);
	folders_free(&s->found);
	folders_init(&s->found, s->a);
	s->found_capped = false;
	/*
	 * LIST (SUBSCRIBED) marks a subscribed folder that no longer exists
	 * \NonExistent; LSUB goes on naming it as if it did.
	 */
	session_send_cmd(s, CMD_DISCOVER, false, "%s",
	    (s->discover_pass == 0) != !!(s->caps & CAP_LIST_EXTENDED) ?
		"LSUB \"\" \"*\"" :
		(s->caps & CAP_SPECIAL_USE) ?
		"LIST (SUBSCRIBED) \"\" \"*\" RETURN (SPECIAL-USE)" :
		"LIST (SUBSCRIBED) \"\" \"*\"");
	session_enter(s, S_DISCOVER);
}

static void logged_in_go(struct session *s);
static void poll_status(struct session *s);

/*
 * How strongly a folder's state claims its Maildir++ folder: when the
 * state was last saved (-1: never), since the folder that delivered there
 * last is the one whose mail it holds. Asked only of folders whose names
 * share one, so this stat on the loop is as rare as such names (the
 * account's lock is taken on the loop too).
 */
static int64_t
state_claim(void *ud, const char *wire)
{
	struct session *s = ud;
	char *path = state_path(s->o.state_dir, s->a->name, wire);
	int64_t t = -1;
	uv_fs_t req;

	if (uv_fs_stat(s->loop, &req, path, NULL) == 0)
		t = (int64_t)req.statbuf.st_mtim.tv_sec * 1000000000 +
		    req.statbuf.st_mtim.tv_nsec;
	uv_fs_req_cleanup(&req);
	free(path);
	return t;
}

/*
 * Folders whose mail would go into one Maildir++ folder: only its owner
 * is fetched. Warned of after logging in and when the clashes change,
 * not at every round that lists the same ones again.
 */
static void
settle_found(struct session *s)
{
	uint32_t mark;
	enum log_level lvl;

	folders_settle(&s->found, s->a, state_claim, s);
	mark = folders_clash_mark(&s->found);
	lvl =
	    s->discover_login || mark != s->clash_mark ? LOGL_WARN : LOGL_DEBUG;
	s->clash_mark = mark;
	for (size_t i = 0; i < s->found.nclashes; i++) {
		const struct folders_clash *c = &s->found.clashes[i];

		LOG(s, lvl,
		    "not fetching '%s': its mail would go into %s with "
		    "that of '%s', %s; rename '%s' on the server to fetch it",
		    c->name, c->dir, c->owner,
		    c->by_state ? "whose Maildir folder it is" :
				  "which sorts first and keeps it",
		    c->name);
	}
}

static void
discover_done(struct session *s, const struct proto_resp *r)
{
	if (r->status != PROTO_OK && s->discover_pass == 0) {
		s->discover_pass = 1;
		send_discover(s, s->discover_login);
		return;
	}
	if (r->status != PROTO_OK) {
		LOG(s, s->discover_login ? LOGL_WARN : LOGL_DEBUG,
		    "cannot list the subscribed folders (%s); fetching the "
		    "%zu folder(s) known so far",
		    r->text, s->nmbs);
	} else {
		settle_found(s);
		s->o.listed(s, s->o.ud, (const char *const *)s->found.names,
		    s->found.n);
	}
	folders_free(&s->found);
	if (s->stopping) {
		session_enter(s, S_LOGOUT);
		return;
	}
	if (s->discover_login)
		logged_in_go(s);
	else if (polls_others(s))
		poll_status(s);
	else
		session_synced(s);
}

/* Logged in: every folder is synced once, then the connection waits. */
static void
logged_in(struct session *s)
{
	gate_release(s);
	s->ok = true;
	for (size_t i = 0; i < s->nmbs; i++) {
		s->mbs[i].skipped = false;
		s->mbs[i].pending = !s->mbs[i].dead;
		s->mbs[i].sync_ok = true;
	}
	s->polled_at = uv_now(s->loop);
	if (s->o.listed && !s->stopping) {
		send_discover(s, true);
		return;
	}
	logged_in_go(s);
}

static void
logged_in_go(struct session *s)
{
	if (s->nmbs > 1 && !s->split_asked && s->o.split && !s->stopping &&
	    !s->o.once && !(s->caps & CAP_NOTIFY) && s->a->idle &&
	    (s->caps & CAP_IDLE) && !s->mbs[0].dead) {
		s->split_asked = true;
		s->o.split(s, s->o.ud);
	}
	if ((live_folders(s) > 1 || s->o.listed) && (s->caps & CAP_NOTIFY) &&
	    s->a->idle && !s->o.once) {
		send_notify(s, false);
		return;
	}
	session_synced(s);
}

/* Asks every folder but the selected one for its UIDNEXT. */
static void
poll_status(struct session *s)
{
	char q[512];

	s->polled_at = uv_now(s->loop);
	s->status_wait = 0;
	for (size_t i = 0; i < s->nmbs; i++) {
		struct mbox *mb = &s->mbs[i];

		if (!usable_folder(mb) || mb == s->selected || mb->pending ||
		    told_of(s, mb))
			continue;
		if (proto_quote(q, sizeof(q), mb->wire) < 0)
			fatal("folder name '%s' cannot be quoted", mb->wire);
		session_send_cmd(s, CMD_STATUS, false,
		    "STATUS %s (UIDNEXT UIDVALIDITY)", q);
		s->status_wait++;
	}
	if (s->status_wait == 0) {
		session_synced(s);
		return;
	}
	session_enter(s, S_STATUS);
}

/* News of a folder, from NOTIFY or from polling it with STATUS. */
static void
folder_news(struct session *s, const struct proto_resp *r)
{
	struct mbox *mb = find_mbox(s, r->mailbox);

	if (mb == NULL || !usable_folder(mb) || mb == s->selected)
		return;
	if (!(r->has & HAS_STATUS_UIDNEXT) || mb->uidnext == 0 ||
	    r->status_uidnext != mb->uidnext ||
	    r->status_uidvalidity != mb->status_uidvalidity) {
		if (!mb->pending)
			LOG(s, LOGL_DEBUG, "%s has news (UIDNEXT %u)",
			    mb->name, r->status_uidnext);
		mb->pending = true;
		if (s->state == S_IDLE) {
			session_enter(s, S_IDLE_DONE);
		}
	}
}

/*
 * Out of IDLE or a poll's wait: the selected folder is listed again (new
 * mail, or a refresh), the others asked with STATUS when their poll is due.
 */
static void
woke(struct session *s)
{
	if (s->selected && usable_folder(s->selected))
		s->selected->pending = true;
	if (rounds(s) &&
	    (s->relist ||
		uv_now(s->loop) - s->polled_at + 500 >=
		    (uint64_t)s->a->poll_interval * 1000)) {
		if (s->o.listed)
			send_discover(s, false);
		else
			poll_status(s);
		return;
	}
	session_synced(s);
}

void
session_synced(struct session *s)
{
	struct mbox *next = NULL;

	if (s->stopping) {
		session_enter(s, S_LOGOUT);
		return;
	}
	/* The selected folder first: it needs no SELECT. */
	if (s->selected && s->selected->pending)
		next = s->selected;
	for (size_t i = 0; next == NULL && i < s->nmbs; i++)
		if (s->mbs[i].pending && usable_folder(&s->mbs[i]))
			next = &s->mbs[i];
	if (next && !next->prepared) {
		/* Found on the server since: its Maildir and state first. */
		session_use(s, next);
		session_enter(s, S_PREPARE);
		session_prepare(s);
		return;
	}
	if (next) {
		next->pending = false;
		session_use(s, next);
		if (next == s->selected) {
			session_enter(s, S_SYNC);
			s->o.sync->again(s);
		} else
			send_select(s);
		return;
	}
	if (s->o.once) {
		session_enter(s, S_LOGOUT);
		return;
	}
	if (s->renotify) {
		s->renotify = false;
		send_notify(s, true);
		return;
	}
	/*
	 * Wait with a folder selected. Without NOTIFY, IDLE tells only of the
	 * selected folder: wait on the first one (INBOX, as a rule), and ask
	 * the others with STATUS. A folder the server would not open left
	 * none selected: select the first that opens.
	 */
	for (size_t i = 0; i < s->nmbs; i++) {
		struct mbox *first = &s->mbs[i];
		bool idles = !s->notify && s->a->idle && (s->caps & CAP_IDLE);

		if (!usable_folder(first))
			continue;
		if (first != s->selected && !s->back_to_first &&
		    (idles || s->selected == NULL)) {
			s->back_to_first = true;
			session_use(s, first);
			send_select(s);
			return;
		}
		break;
	}
	if (s->selected == NULL) {
		session_fail(s, IDLEFETCH_EPROTO, "no folder could be opened");
		return;
	}
	s->back_to_first = false;
	session_use(s, s->selected);
	if (s->a->idle && (s->caps & CAP_IDLE)) {
		session_enter(s, S_IDLE_START);
		return;
	}
	session_enter(s, S_POLL_WAIT);
}

/* ---- responses --------------------------------------------------------------- */

/* A busy server's suggested wait, kept for the next backoff. */
static void
server_busy(struct session *s, const struct proto_resp *r)
{
	if ((r->has & HAS_BUSY) && r->retry_ms > s->retry_ms)
		s->retry_ms = r->retry_ms;
}

static void
on_tagged(struct session *s, const struct proto_resp *r)
{
	struct cmd *c = find_cmd(s, r->tag);
	struct cmd copy;

	if (c == NULL) {
		session_fail(s, IDLEFETCH_EPROTO,
		    "server answered unknown tag %s", r->tag);
		return;
	}
	copy = *c;
	c->uids = NULL;
	c->secret = NULL;
	drop_cmd(s, c);
	if (r->has & HAS_CAPS)
		s->caps = r->caps;
	if (r->status != PROTO_OK && (r->has & HAS_BUSY)) {
		/* Not a refusal: not a bad password, not a missing folder. */
		free(copy.uids);
		secret_free(copy.secret);
		server_busy(s, r);
		session_fail(s, -EAGAIN,
		    "the server is busy (%s); trying again later", r->text);
		return;
	}
	switch (copy.kind) {
	case CMD_CAPABILITY:
		if (r->status != PROTO_OK)
			session_fail(s, IDLEFETCH_EPROTO,
			    "CAPABILITY failed: %s", r->text);
		else if (s->state == S_CAPABILITY)
			after_caps(s);
		else
			logged_in(s);
		break;
	case CMD_STARTTLS:
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_ETLS, "STARTTLS refused: %s",
			    r->text);
			break;
		}
		session_enter(s, S_TLS);
		if (transport_start_tls(s->tr, s->o.ssl_ctx, s->a->host) < 0)
			session_fail(s, IDLEFETCH_ETLS, "cannot start TLS");
		break;
	case CMD_AUTH:
		secret_free(copy.secret);
		if (r->status != PROTO_OK && s->a->auth != AUTH_PASSWORD) {
			oauth_rejected(s, r);
			break;
		}
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_EAUTH,
			    "login rejected for user %s: %s", s->a->username,
			    r->text);
			break;
		}
		LOG(s, LOGL_INFO, "logged in as %s%s", s->a->username,
		    transport_is_tls(s->tr) ? " over TLS" : " without TLS");
		if (r->has & HAS_CAPS) {
			logged_in(s);
		} else {
			session_send_cmd(s, CMD_CAPABILITY, false,
			    "CAPABILITY");
			session_enter(s, S_SELECT);
		}
		break;
	case CMD_VERIFY:
		s->o.sync->tagged(s, &copy, r);
		break;
	case CMD_LISTMB:
		lookup_done(s, r);
		break;
	case CMD_DISCOVER:
		discover_done(s, r);
		break;
	case CMD_NOTIFY_NONE:
		break; /* the SET after it tells */
	case CMD_NOTIFY:
		if (r->status == PROTO_OK) {
			s->notify = true;
			LOG(s, LOGL_INFO,
			    "watching %zu folders on one connection (NOTIFY)",
			    live_folders(s));
		} else {
			LOG(s, LOGL_WARN,
			    "NOTIFY refused (%s); polling the other folders "
			    "with STATUS every %u s",
			    r->text, s->a->poll_interval);
		}
		session_synced(s);
		break;
	case CMD_STATUS:
		if (r->status != PROTO_OK)
			LOG(s, LOGL_DEBUG, "STATUS refused: %s", r->text);
		if (s->status_wait > 0 && --s->status_wait == 0)
			session_synced(s);
		break;
	case CMD_SELECT:
		if (r->status != PROTO_OK) {
			/* Look for a name ending in it: INBOX.Lists for Lists. */
			set_text(&s->select_err,
			    r->text[0] ? r->text : "refused");
			s->lookup = s->mb->wire;
			s->lookup_pass = 1;
			set_text(&s->lookup_guess, NULL);
			send_lookup(s);
			break;
		}
		selected(s);
		break;
	case CMD_LIST:
	case CMD_FETCH:
	case CMD_COPY:
	case CMD_MOVE:
	case CMD_STORE:
	case CMD_EXPUNGE:
		/* The mailbox sync's commands: it takes the reply. */
		s->o.sync->tagged(s, &copy, r);
		break;
	case CMD_IDLE:
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_EPROTO, "IDLE failed: %s",
			    r->text);
			break;
		}
		if (s->stopping) {
			session_enter(s, S_LOGOUT);
			break;
		}
		woke(s);
		break;
	case CMD_LOGOUT:
		close_conn(s);
		session_finish(s);
		break;
	default:
		fatal("bad command kind");
	}
}

static void
on_untagged(struct session *s, const struct proto_resp *r)
{
	if (r->status == PROTO_BYE) {
		set_text(&s->bye, r->text);
		server_busy(s, r);
		return;
	}
	if (r->has & HAS_CAPS)
		s->caps = r->caps;
	if (r->has & HAS_UIDVALIDITY)
		s->uidvalidity = r->uidvalidity;
	if (r->has & HAS_UIDNEXT)
		s->uidnext = r->uidnext;
	if (r->has & HAS_STATUS)
		folder_news(s, r);
	if ((r->has & HAS_OVERFLOW) && s->notify) {
		/*
		 * RFC 5465 5.8: the server tells of nothing more until NOTIFY
		 * is set again. Sync every folder, as news may have been lost,
		 * then set it again.
		 */
		LOG(s, LOGL_WARN,
		    "the server stopped notifying (NOTIFICATIONOVERFLOW); "
		    "syncing every folder and asking again");
		s->notify = false;
		s->renotify = true;
		for (size_t i = 0; i < s->nmbs; i++)
			if (usable_folder(&s->mbs[i]))
				s->mbs[i].pending = true;
		if (s->state == S_IDLE)
			session_enter(s, S_IDLE_DONE);
	}
	if (r->has & HAS_EXPUNGE)
		s->expunges++;
	if (r->has & HAS_EXPUNGE && s->exists > 0)
		s->exists--;
	if (r->has & HAS_EXISTS) {
		bool grew = r->exists > s->exists;

		s->exists = r->exists;
		if (grew && s->state == S_IDLE) {
			session_enter(s, S_IDLE_DONE);
		} else if (grew && s->state == S_POLL_WAIT) {
			woke(s);
		} else if (grew) {
			s->more = true;
		}
	}
	if ((r->has & HAS_FETCH) && s->state == S_SYNC)
		s->o.sync->fetch_line(s, r);
	/* Only the subscribed: NOTIFY may slip in news of any other. */
	if ((r->has & HAS_LIST) && s->state == S_DISCOVER &&
	    (r->list_flags & (LISTF_LSUB | LISTF_SUBSCRIBED))) {
		char why[512];

		switch (folders_add(&s->found, s->a, r->mailbox, r->list_delim,
		    r->list_flags, why, sizeof(why))) {
		case FOLDERS_BAD_NAME:
			LOG(s, s->discover_login ? LOGL_WARN : LOGL_DEBUG,
			    "not fetching a subscribed folder: %s", why);
			break;
		case FOLDERS_VIRTUAL:
			LOG(s, s->discover_login ? LOGL_INFO : LOGL_DEBUG,
			    "not fetching a subscribed folder: %s", why);
			break;
		case FOLDERS_TOO_MANY:
			if (!s->found_capped)
				LOG(s, s->discover_login ? LOGL_WARN :
							   LOGL_DEBUG,
				    "the server lists more than %d subscribed "
				    "folders; fetching the first %d",
				    FOLDERS_MAX, FOLDERS_MAX);
			s->found_capped = true;
			break;
		default:
			break;
		}
	} else if ((r->has & HAS_LIST) && s->o.listed && s->notify) {
		/* NOTIFY: a folder was created, removed or (un)subscribed. */
		s->relist = true;
		if (s->state == S_IDLE)
			session_enter(s, S_IDLE_DONE);
	}
	if ((r->has & HAS_LIST) && s->state == S_SELECT && s->lookup) {
		if (strcmp(r->mailbox, s->lookup) == 0)
			s->lookup_found = true;
		else if (s->lookup_guess == NULL &&
		    names_same_folder(r->mailbox, r->list_delim, s->lookup))
			set_text(&s->lookup_guess, r->mailbox);
	}
}

static int
on_unit(void *ud, const char *p, size_t n)
{
	struct session *s = ud;
	struct proto_resp r;
	bool greeting = !s->greeted;
	int pr;

	if (log_enabled(LOGL_DEBUG))
		LOG(s, LOGL_DEBUG, "S: %.*s", (int)(n > 200 ? 200 : n - 2), p);
	pr = proto_parse(p, n, greeting, &r);
	/* A message's FETCH, a line of the listing: the sync's first. */
	if (!greeting && !s->o.sync->unit(s, pr, &r, p, n))
		return 1;
	/* RFC 3501 7.1: an ALERT must be presented to the user. */
	if (pr == 0 && (r.has & HAS_ALERT))
		LOG(s, LOGL_WARN, "server alert: %s", r.text);
	if (greeting) {
		s->greeted = true;
		if (pr < 0 || r.status == PROTO_BYE) {
			session_fail(s, IDLEFETCH_EPROTO,
			    "server refused the "
			    "connection: %s",
			    pr < 0 ? "bad greeting" : r.text);
			return 1;
		}
		if (r.status == PROTO_PREAUTH) {
			session_fail(s, IDLEFETCH_EPROTO,
			    "server sent PREAUTH; refusing "
			    "a connection that skips authentication");
			return 1;
		}
		if (r.has & HAS_CAPS) {
			s->caps = r.caps;
			after_caps(s);
		} else {
			session_send_cmd(s, CMD_CAPABILITY, false,
			    "CAPABILITY");
			session_enter(s, S_CAPABILITY);
		}
		return s->conn_alive ? 0 : 1;
	}
	if (pr < 0 && r.kind != PROTO_TAGGED && r.status != PROTO_BYE) {
		LOG(s, LOGL_DEBUG,
		    "skipping a response the parser does not know");
		return 0;
	}
	switch (r.kind) {
	case PROTO_CONTINUE:
		if (s->state == S_IDLE_START && (s->more || s->stopping)) {
			session_enter(s, S_IDLE_DONE);
		} else if (s->state == S_IDLE_START) {
			session_enter(s, S_IDLE);
		} else if (s->state == S_AUTH && s->ncmds > 0 &&
		    s->cmds[s->ncmds - 1].secret != NULL) {
			struct cmd *c = &s->cmds[s->ncmds - 1];

			session_send_raw(s, c->secret, true);
			secret_free(c->secret);
			c->secret = NULL;
		} else if (s->state == S_AUTH && s->a->auth != AUTH_PASSWORD &&
		    s->why == NULL) {
			oauth_challenge(s, r.text);
		} else {
			session_fail(s, IDLEFETCH_EPROTO,
			    "unexpected continuation");
		}
		break;
	case PROTO_TAGGED:
		on_tagged(s, &r);
		if (s->conn_alive)
			session_progress(s);
		break;
	default:
		on_untagged(s, &r);
		if (s->conn_alive && s->o.sync->progress(s, &r))
			session_progress(s);
		break;
	}
	if (!s->conn_alive)
		return 1;
	/* STARTTLS: whatever followed the OK in plaintext must be dropped. */
	return s->state == S_TLS ? 1 : 0;
}


/* ---- transport events ------------------------------------------------------------ */

static void
on_data(struct session *s, const char *data, size_t len)
{
	int r;

	r = framer_push(s->fr, data, len);
	if (r < 0 && s->conn_alive) {
		session_fail(s, r, "connection closed: %s",
		    r == -EMSGSIZE ?
			"server sent an over-long line or literal" :
			err_str(r));
		return;
	}
	/* A graceful stop waits for the message in flight, then stops reading. */
	if (s->conn_alive && s->stopping && s->state == S_SYNC &&
	    s->o.sync->may_close(s)) {
		transport_pause(s->tr, true);
		session_enter(s, S_CLOSING);
		session_settle(s);
	}
}

static void
on_transport(void *ud, enum transport_event ev, const char *data, size_t len,
    int err, const char *why)
{
	struct session *s = ud;

	switch (ev) {
	case TRANSPORT_CONNECTED:
		s->conn_alive = true;
		LOG(s, LOGL_DEBUG, "connected to %s:%u", s->a->host,
		    s->a->port);
		if (s->a->tls == TLS_MODE_IMPLICIT) {
			session_enter(s, S_TLS);
			if (transport_start_tls(s->tr, s->o.ssl_ctx,
				s->a->host) < 0)
				session_fail(s, IDLEFETCH_ETLS,
				    "cannot start TLS");
		} else {
			session_enter(s, S_GREETING);
		}
		break;
	case TRANSPORT_TLS_READY:
		LOG(s, LOGL_DEBUG, "TLS established, certificate verified");
		if (s->a->tls == TLS_MODE_IMPLICIT) {
			session_enter(s, S_GREETING);
		} else {
			/* RFC 3501: capabilities must be asked for again after TLS. */
			s->caps = 0;
			session_send_cmd(s, CMD_CAPABILITY, false,
			    "CAPABILITY");
			session_enter(s, S_CAPABILITY);
		}
		break;
	case TRANSPORT_DATA:
		on_data(s, data, len);
		break;
	case TRANSPORT_ERROR:
		if (s->state == S_LOGOUT) {
			close_conn(s);
			session_finish(s);
			break;
		}
		if (s->bye)
			session_fail(s, err,
			    "%s:%u: server closed the connection: %s",
			    s->a->host, s->a->port, s->bye);
		else
			session_fail(s, err, "%s:%u: %s", s->a->host,
			    s->a->port, why);
		break;
	default:
		fatal("bad transport event %d", ev);
	}
}

void
session_connect(struct session *s)
{
	struct session_gate *g = s->o.gate;
	int r;

	if (g != NULL && !s->gate_held) {
		if (g->busy >= g->max) {
			s->gate_queued = true;
			if (g->tail)
				g->tail->gate_next = s;
			else
				g->head = s;
			g->tail = s;
			session_enter(s, S_QUEUED);
			return;
		}
		g->busy++;
		s->gate_held = true;
	}
	lane_reset(&s->lane);
	for (size_t i = 0; i < s->nmbs; i++)
		if (!s->mbs[i].dead) {
			session_use(s, &s->mbs[i]);
			break;
		}
	s->greeted = false;
	set_text(&s->bye, NULL);
	s->caps = 0;
	framer_reset(s->fr);
	s->tr = transport_new(s->loop, on_transport, s);
	session_enter(s, S_CONNECT);
	r = transport_connect(s->tr, s->a->host, s->a->port);
	if (r < 0)
		session_fail(s, r, "cannot resolve %s: %s", s->a->host,
		    err_str(r));
}

static void
timer_cb(uv_timer_t *t)
{
	struct session *s = t->data;

	switch (s->state) {
	case S_BACKOFF:
		if (!lane_idle(&s->lane)) { /* a stalled disk: not yet */
			arm(s, BACKOFF_MIN_MS);
			break;
		}
		session_connect(s);
		break;
	case S_IDLE:
		/* Re-issue IDLE: keeps NAT state alive and proves the peer is. */
		session_enter(s, S_IDLE_DONE);
		break;
	case S_POLL_WAIT:
		woke(s);
		break;
	case S_SYNC:
		if (s->ncmds == 0 ||
		    s->lane.paused) { /* waiting for the disk */
			arm(s, TIMEOUT_MS(s));
			break;
		}
		session_fail(s, -ETIMEDOUT,
		    "no answer from the server for %d s", s->a->timeout);
		break;
	case S_LOGOUT:
		close_conn(s);
		session_finish(s);
		break;
	default:
		session_fail(s, -ETIMEDOUT, "%s:%u: timed out in %s",
		    s->a->host, s->a->port, state_names[s->state]);
		break;
	}
}

/* ---- the lane's callbacks ------------------------------------------------------- */

static void
on_lane_pause(void *ud, bool pause)
{
	struct session *s = ud;

	if (s->tr)
		transport_pause(s->tr, pause);
}

static void
on_lane_drained(void *ud, int err)
{
	struct session *s = ud;

	if (s->finish_when_idle) {
		if (lane_idle(&s->lane))
			session_finish(s);
		return;
	}
	if (err < 0 && s->conn_alive) {
		session_fail(s, err, "cannot write to %s/tmp: %s", s->mb->maildir,
		    strerror(-err));
		return;
	}
	/* A batch may have been waiting for these writes. */
	if (s->conn_alive && s->state == S_SYNC)
		s->o.sync->pump(s);
	else
		session_settle(s);
}

static const struct lane_ops lane_ops = {
	.pause = on_lane_pause,
	.drained = on_lane_drained,
};

/* ---- public ---------------------------------------------------------------------- */

/* A folder's paths and names; the configuration or the server checked it. */
static void
mbox_init(struct session *s, struct mbox *mb, const char *name,
    struct status_rec *rec)
{
	mb->name = name;
	mb->wire = mutf7_wire_name(name);
	if (mb->wire == NULL)
		fatal("folder name '%s' is not UTF-8", name);
	/* An MDA or LMTP target: the bodies wait in a spool of the state. */
	if (s->a->target.kind == TARGET_MAILDIR)
		mb->maildir = config_folder_maildir(s->a, name);
	else
		mb->maildir = xasprintf("%s/%s/spool", s->o.state_dir,
		    s->a->name);
	/* Keyed by the server's name: Entwürfe is Entw&APw-rfe. */
	mb->state_path = state_path(s->o.state_dir, s->a->name, mb->wire);
	mb->tag_mark = maildir_tag(s->a->name, name);
	mb->status = rec;
}

struct session *
session_new(uv_loop_t *loop, const struct session_opts *o)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->loop = loop;
	s->o = *o;
	s->a = o->acct;
	s->nmbs = o->nfolders;
	s->mbs = xcalloc(s->nmbs, sizeof(*s->mbs));
	for (size_t i = 0; i < s->nmbs; i++)
		mbox_init(s, &s->mbs[i], o->folders[i], &o->status[i]);
	if (s->a->move_to) {
		s->move_wire = mutf7_wire_name(s->a->move_to);
		if (s->move_wire == NULL)
			fatal("folder name '%s' is not UTF-8", s->a->move_to);
	}
	s->mb = &s->mbs[0];
	lane_init(&s->lane, loop, s->mb->maildir, &lane_ops, s);
	s->fops = (struct framer_ops){
		.literal_begin = o->sync->literal_begin,
		.literal_data = o->sync->literal_data,
		.literal_end = o->sync->literal_end,
		.unit = on_unit,
	};
	s->fr = framer_new(&s->fops, s);
	o->sync->init(s);
	s->backoff_ms = BACKOFF_MIN_MS;
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	s->state = S_PREPARE;
	for (size_t i = 0; i < s->nmbs; i++)
		status_set_state(s->mbs[i].status, state_names[S_PREPARE],
		    false);
	return s;
}

void
session_start(struct session *s)
{
	session_use(s, &s->mbs[0]);
	session_prepare(s);
}

void
session_prepare(struct session *s)
{
	LOG(s, LOGL_DEBUG, "Maildir %s, state %s", s->mb->maildir,
	    s->mb->state_path);
	s->o.sync->start_job(s, COMMIT_PREPARE);
}

/* What a folder owns: its paths and the name the server sees. */
static void
mbox_free(struct mbox *mb)
{
	free(mb->maildir);
	free(mb->state_path);
	free(mb->wire);
}

void
session_keep(struct session *s, size_t n)
{
	if (n == 0 || n > s->nmbs || s->selected != NULL)
		fatal("session_keep(%zu) of %zu folders", n, s->nmbs);
	for (size_t i = n; i < s->nmbs; i++)
		mbox_free(&s->mbs[i]);
	s->nmbs = n;
	if (s->mb >= s->mbs + n)
		session_use(s, &s->mbs[0]);
}

/* The folder's strings, or kept to the end while the lane may use them. */
static void
mbox_drop(struct session *s, struct mbox *mb)
{
	if (mb == s->mb && !lane_idle(&s->lane)) {
		s->graves = xrealloc(s->graves,
		    (s->ngraves + 1) * sizeof(*s->graves));
		s->graves[s->ngraves++] = *mb;
		return;
	}
	mbox_free(mb);
}

void
session_set_folders(struct session *s, const char *const *names, size_t n,
    struct status_rec *recs)
{
	struct mbox *mbs, *mb = NULL, *sel = NULL;
	bool added = false;

	if (n == 0 || s->job_busy)
		fatal("session_set_folders(%zu) with a job in flight", n);
	mbs = xcalloc(n, sizeof(*mbs));
	for (size_t i = 0; i < n; i++) {
		struct mbox *old = NULL;

		for (size_t j = 0; j < s->nmbs && old == NULL; j++)
			if (s->mbs[j].name && strcmp(s->mbs[j].name, names[i]) == 0)
				old = &s->mbs[j];
		if (old == NULL) {
			mbox_init(s, &mbs[i], names[i], &recs[i]);
			mbs[i].pending = !s->stopping;
			mbs[i].sync_ok = true;
			added = true;
			LOG(s, LOGL_INFO, "now fetching folder %s too",
			    names[i]);
			continue;
		}
		mbs[i] = *old;
		mbs[i].name = names[i];
		mbs[i].status = &recs[i];
		if (s->mb == old)
			mb = &mbs[i];
		if (s->selected == old)
			sel = &mbs[i];
		old->name = NULL; /* moved */
	}
	for (size_t j = 0; j < s->nmbs; j++)
		if (s->mbs[j].name) {
			LOG(s, LOGL_INFO,
			    "folder %s is no longer subscribed or no longer "
			    "exists: not fetching it any more",
			    s->mbs[j].name);
			mbox_drop(s, &s->mbs[j]);
		}
	free(s->mbs);
	s->mbs = mbs;
	s->nmbs = n;
	s->selected = sel;
	session_use(s, mb ? mb : &mbs[0]);
	/* Watching other folders now: NOTIFY SET again, once synced. */
	if (s->conn_alive && !s->discover_login && (s->caps & CAP_NOTIFY) &&
	    s->a->idle && !s->o.once && (s->notify || added))
		s->renotify = true;
	for (size_t i = 0; i < n; i++)
		status_set_state(s->mbs[i].status, state_names[s->state],
		    state_is_up(s, s->state));
}

void
session_stop(struct session *s)
{
	if (s->stopping || s->state == S_DONE)
		return;
	s->stopping = true;
	switch (s->state) {
	case S_PREPARE:
		break; /* the job's completion finishes */
	case S_QUEUED:
		gate_unqueue(s);
		/* fall through */
	case S_BACKOFF:
	case S_CLOSING:
		if (!s->job_busy && lane_idle(&s->lane))
			session_finish(s);
		break;
	case S_IDLE:
		session_enter(s, S_IDLE_DONE);
		break;
	case S_POLL_WAIT:
		session_enter(s, S_LOGOUT);
		break;
	case S_SYNC:
		/*
		 * Messages still coming: stop after the one in flight (on_data)
		 * and commit what is complete. Only commits or after-delivery
		 * commands left: let them session_finish; the sync then ends in LOGOUT.
		 */
		if (s->o.sync->may_close(s)) {
			session_enter(s, S_CLOSING);
			session_settle(s);
		}
		break;
	case S_IDLE_START:
	case S_IDLE_DONE:
	case S_STATUS:
	case S_DISCOVER:
	case S_LOGOUT:
		break; /* the tagged reply leads to LOGOUT */
	default:
		session_enter(s, S_CLOSING);
		session_settle(s);
		break;
	}
}

static void
timer_close_cb(uv_handle_t *h)
{
	struct session *s = h->data;

	for (size_t i = 0; i < s->nmbs; i++)
		mbox_free(&s->mbs[i]);
	free(s->mbs);
	for (size_t i = 0; i < s->ngraves; i++)
		mbox_free(&s->graves[i]);
	free(s->graves);
	folders_free(&s->found);
	free(s->move_wire);
	free(s->bye);
	free(s->select_err);
	free(s->why);
	free(s->lookup_guess);
	free(s->cmds);
	framer_free(s->fr);
	free(s);
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	if (s->job_busy || !lane_idle(&s->lane))
		fatal("session_free with disk work in flight");
	gate_unqueue(s);
	close_conn(s);
	s->o.sync->free(s);
	uv_close((uv_handle_t *)&s->timer, timer_close_cb);
}
