/*
 * session: the scheduler of one account's connection and its folders.
 *
 *   PREPARE -> [QUEUED] -> CONNECT (the connection logs in) -> [DISCOVER]
 *   -> [NOTIFY] -> (SELECT -> SYNC) for each folder -> IDLE | POLL_WAIT ->
 *   [DISCOVER] [STATUS] -> SELECT ...; any error -> BACKOFF -> CONNECT;
 *   stop -> LOGOUT -> DONE
 *
 * This file decides which folder is worked on and when: it selects them in
 * turn, waits (IDLE through the connection, or a poll timer), asks the
 * other folders with STATUS or NOTIFY, lists the subscribed folders, and
 * backs off after errors; session_enter() is the one place that changes
 * its state. The IMAP connection itself (login, tags, IDLE, timeouts) is
 * conn.c's, reached through conn.h; SYNC (reconcile, verify, what to
 * fetch, batches, commits) is the mailbox sync's, in sync.c: it has its own
 * phases and hands the folder back through session_synced().
 */
#include "session_int.h"

#include <ctype.h>

#include "idlefetch/foldername.h"
#include "idlefetch/mutf7.h"

static const char *state_names[] = { "PREPARE", "CONNECT", "NOTIFY",
	"SELECT", "SYNC", "IDLE", "POLL_WAIT", "STATUS", "DISCOVER", "LOGOUT",
	"CLOSING", "BACKOFF", "QUEUED", "DONE" };

/*
 * Words kept from a reply for a later log line (a refused SELECT's): on
 * the heap only while held, not in every idle connection.
 */
static void
set_text(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? xstrdup(src) : NULL;
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
	conn_set_folder(s->conn, mb->name);
}

static void
arm(struct session *s, uint64_t ms)
{
	uv_timer_start(&s->timer, timer_cb, ms, 0);
}

/* Logged in and synced, for `idlefetch status`. */
static bool
state_is_up(const struct session *s, enum session_state st)
{
	switch (st) {
	case S_SYNC:
	case S_IDLE:
	case S_POLL_WAIT:
	case S_STATUS:
		return true;
	case S_SELECT:
	case S_DISCOVER:
		/* Between folders the connection stays up. */
		return s->selected != NULL || s->mb->status->up;
	case S_PREPARE:
		/* A folder found on the server is made ready meanwhile. */
		return conn_alive(s->conn) &&
		    (s->selected != NULL || s->mb->status->up);
	case S_LOGOUT:
	case S_DONE:
		return s->mb->status->up; /* passing through: no change */
	default:
		return false;
	}
}

/*
 * What `idlefetch status` shows: while the connection logs in or IDLEs,
 * its own state (GREETING, AUTH, IDLE ...), as the daemon counts them.
 */
static const char *
shown_state(const struct session *s)
{
	enum conn_state cs = conn_state(s->conn);

	if (s->state == S_CONNECT && cs != CONN_CLOSED)
		return conn_state_name(cs);
	if (s->state == S_IDLE && cs != CONN_READY && cs != CONN_CLOSED)
		return conn_state_name(cs);
	return state_names[s->state];
}

static void
show_state(struct session *s)
{
	for (size_t i = 0; i < s->nmbs; i++)
		status_set_state(s->mbs[i].status, shown_state(s),
		    state_is_up(s, s->state));
}

static void close_conn(struct session *s);
static void idle_over(void *ud, const struct proto_resp *r);
static void logged_out(void *ud, const struct proto_resp *r);

/* IDLE until the next round, if sooner than idle_refresh. */
static uint64_t
idle_wait_ms(const struct session *s)
{
	if (rounds(s) && poll_due_ms(s) < s->a->idle_refresh * 1000u)
		return poll_due_ms(s);
	return (uint64_t)s->a->idle_refresh * 1000;
}

void
session_enter(struct session *s, enum session_state st)
{
	if (s->state != st)
		LOG(s, LOGL_DEBUG, "state %s -> %s", state_names[s->state],
		    state_names[st]);
	s->state = st;
	uv_timer_stop(&s->timer);
	show_state(s);
	/* The entry action, last: it may call back into the session. */
	switch (st) {
	case S_IDLE:
		conn_idle(s->conn, idle_wait_ms(s), idle_over, s);
		break;
	case S_POLL_WAIT:
		arm(s, rounds(s) ? poll_due_ms(s) :
				   (uint64_t)s->a->poll_interval * 1000);
		break;
	case S_LOGOUT:
		conn_logout(s->conn, logged_out, s);
		break;
	case S_CLOSING:
		close_conn(s);
		break;
	default:
		break;
	}
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
	conn_close(s->conn);
	mailbox_reset(s);
	set_text(&s->select_err, NULL);
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
	unsigned delay, retry_ms;

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
	retry_ms = conn_take_retry_ms(s->conn);
	if (retry_ms > delay)
		delay = retry_ms;
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
	if (conn_alive(s->conn))
		return;
	mailbox_pump_commits(s);
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
static void lookup_done(void *ud, const struct proto_resp *r);
static void lookup_line(void *ud, const struct proto_resp *r);

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
	conn_cmd(s->conn, HAS_LIST, lookup_done, lookup_line, s,
	    "LIST \"\" %s", mbox);
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
lookup_done(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r == NULL)
		return;
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

static void select_done(void *ud, const struct proto_resp *r);

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
	conn_cmd(s->conn, 0, select_done, NULL, s, "%s %s",
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
	mailbox_begin(s);
}

static void
select_done(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r == NULL)
		return;
	if (r->status != PROTO_OK) {
		/* Look for a name ending in it: INBOX.Lists for Lists. */
		set_text(&s->select_err, r->text[0] ? r->text : "refused");
		s->lookup = s->mb->wire;
		s->lookup_pass = 1;
		set_text(&s->lookup_guess, NULL);
		send_lookup(s);
		return;
	}
	selected(s);
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

static void
notify_done(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r == NULL)
		return;
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
		conn_cmd(s->conn, 0, NULL, NULL, NULL, "NOTIFY NONE");
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
	conn_cmd(s->conn, 0, notify_done, NULL, s, "%s", line);
	free(line);
	session_enter(s, S_NOTIFY);
}

/*
 * folders = *: LSUB, or LIST (SUBSCRIBED) where LSUB is refused (IMAP4rev2
 * has no LSUB). login: right after logging in, before any folder is synced.
 */
static void discover_done(void *ud, const struct proto_resp *r);
static void discover_line(void *ud, const struct proto_resp *r);

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
	conn_cmd(s->conn, HAS_LIST, discover_done, discover_line, s, "%s",
	    (s->discover_pass == 0) != !!(conn_caps(s->conn) & CAP_LIST_EXTENDED) ?
		"LSUB \"\" \"*\"" :
		(conn_caps(s->conn) & CAP_SPECIAL_USE) ?
		"LIST (SUBSCRIBED) \"\" \"*\" RETURN (SPECIAL-USE)" :
		"LIST (SUBSCRIBED) \"\" \"*\"");
	session_enter(s, S_DISCOVER);
}

static void logged_in_go(struct session *s);
static void poll_status(struct session *s);
static void folder_news(struct session *s, const struct proto_resp *r);

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
discover_done(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r == NULL)
		return;
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
	    !s->o.once && !(conn_caps(s->conn) & CAP_NOTIFY) && s->a->idle &&
	    (conn_caps(s->conn) & CAP_IDLE) && !s->mbs[0].dead) {
		s->split_asked = true;
		s->o.split(s, s->o.ud);
	}
	if ((live_folders(s) > 1 || s->o.listed) && (conn_caps(s->conn) & CAP_NOTIFY) &&
	    s->a->idle && !s->o.once) {
		send_notify(s, false);
		return;
	}
	session_synced(s);
}

static void
status_done(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r == NULL)
		return;
	if (r->status != PROTO_OK)
		LOG(s, LOGL_DEBUG, "STATUS refused: %s", r->text);
	if (s->status_wait > 0 && --s->status_wait == 0)
		session_synced(s);
}

static void
status_line(void *ud, const struct proto_resp *r)
{
	folder_news(ud, r);
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
		conn_cmd(s->conn, HAS_STATUS, status_done, status_line, s,
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
		if (s->state == S_IDLE && conn_state(s->conn) == CONN_IDLE)
			conn_idle_done(s->conn);
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
			mailbox_again(s);
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
		bool idles = !s->notify && s->a->idle && (conn_caps(s->conn) & CAP_IDLE);

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
	if (s->a->idle && (conn_caps(s->conn) & CAP_IDLE)) {
		session_enter(s, S_IDLE);
		return;
	}
	session_enter(s, S_POLL_WAIT);
}

/* ---- responses --------------------------------------------------------------- */

/* NOTIFY: a folder was created, removed or (un)subscribed. */
static void
list_news(struct session *s, const struct proto_resp *r)
{
	if (!s->o.listed || !s->notify)
		return;
	s->relist = true;
	if (s->state == S_IDLE && conn_state(s->conn) == CONN_IDLE)
		conn_idle_done(s->conn);
}

/* A line of the subscribed folders' listing (or NOTIFY's news). */
static void
discover_line(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;
	enum log_level quiet = s->discover_login ? LOGL_WARN : LOGL_DEBUG;
	char why[512];

	/* Only the subscribed: NOTIFY may slip in news of any other. */
	if (!(r->list_flags & (LISTF_LSUB | LISTF_SUBSCRIBED))) {
		list_news(s, r);
		return;
	}
	switch (folders_add(&s->found, s->a, r->mailbox, r->list_delim,
	    r->list_flags, why, sizeof(why))) {
	case FOLDERS_BAD_NAME:
		LOG(s, quiet, "not fetching a subscribed folder: %s", why);
		break;
	case FOLDERS_VIRTUAL:
		LOG(s, s->discover_login ? LOGL_INFO : LOGL_DEBUG,
		    "not fetching a subscribed folder: %s", why);
		break;
	case FOLDERS_TOO_MANY:
		if (!s->found_capped)
			LOG(s, quiet,
			    "the server lists more than %d subscribed "
			    "folders; fetching the first %d",
			    FOLDERS_MAX, FOLDERS_MAX);
		s->found_capped = true;
		break;
	default:
		break;
	}
}

/* A line of LIST looking for a folder by name. */
static void
lookup_line(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	list_news(s, r);
	if (strcmp(r->mailbox, s->lookup) == 0)
		s->lookup_found = true;
	else if (s->lookup_guess == NULL &&
	    names_same_folder(r->mailbox, r->list_delim, s->lookup))
		set_text(&s->lookup_guess, r->mailbox);
}

/*
 * RFC 5465 5.8: the server tells of nothing more until NOTIFY is set
 * again. Sync every folder, as news may have been lost, then set it again.
 */
static void
notify_overflow(struct session *s)
{
	LOG(s, LOGL_WARN,
	    "the server stopped notifying (NOTIFICATIONOVERFLOW); "
	    "syncing every folder and asking again");
	s->notify = false;
	s->renotify = true;
	for (size_t i = 0; i < s->nmbs; i++)
		if (usable_folder(&s->mbs[i]))
			s->mbs[i].pending = true;
	if (s->state == S_IDLE && conn_state(s->conn) == CONN_IDLE)
		conn_idle_done(s->conn);
}

/* The selected folder has more messages: fetch them, now or after. */
static void
exists(struct session *s, uint32_t n)
{
	bool grew = n > s->exists;

	s->exists = n;
	if (!grew)
		return;
	if (s->state == S_IDLE && conn_state(s->conn) == CONN_IDLE) {
		conn_idle_done(s->conn);
		return;
	}
	if (s->state == S_POLL_WAIT) {
		woke(s);
		return;
	}
	s->more = true;
	/* IDLE not yet accepted: it ends as soon as it is. */
	if (s->state == S_IDLE)
		conn_idle_done(s->conn);
}

/* Untagged responses no command asked for (conn_ops.untagged). */
static void
on_untagged(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r->has & HAS_UIDVALIDITY)
		s->uidvalidity = r->uidvalidity;
	if (r->has & HAS_UIDNEXT)
		s->uidnext = r->uidnext;
	if (r->has & HAS_STATUS)
		folder_news(s, r);
	if ((r->has & HAS_OVERFLOW) && s->notify)
		notify_overflow(s);
	if (r->has & HAS_EXPUNGE)
		s->expunges++;
	if (r->has & HAS_EXPUNGE && s->exists > 0)
		s->exists--;
	if (r->has & HAS_EXISTS)
		exists(s, r->exists);
	if (r->has & HAS_LIST)
		list_news(s, r);
}

/* IDLE's tagged reply: the wait is over. */
static void
idle_over(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r == NULL)
		return;
	if (s->stopping) {
		session_enter(s, S_LOGOUT);
		return;
	}
	woke(s);
}

/* LOGOUT answered (or not in time): the connection is closed. */
static void
logged_out(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	(void)r;
	close_conn(s);
	session_finish(s);
}

/* ---- the connection's callbacks ------------------------------------------------ */

static void
on_ready(void *ud)
{
	logged_in(ud);
}

static void
on_failed(void *ud, int err, bool final, const char *why)
{
	struct session *s = ud;

	if (final)
		s->fatal_err = true;
	/* A kept token refused: a new one, at once. */
	if (err == -EKEYEXPIRED)
		s->backoff_ms = BACKOFF_MIN_MS;
	session_fail(s, err, "%s", why);
}

static bool
on_unit(void *ud, int pr, const struct proto_resp *r, const char *p,
    size_t n)
{
	return mailbox_unit(ud, pr, r, p, n);
}

/* A graceful stop waits for the message in flight, then stops reading. */
static void
on_read(void *ud)
{
	struct session *s = ud;

	if (s->stopping && s->state == S_SYNC && mailbox_may_close(s)) {
		conn_pause(s->conn, true);
		session_enter(s, S_CLOSING);
		session_settle(s);
	}
}

static void
on_changed(void *ud)
{
	show_state(ud);
}

static const struct conn_ops conn_ops = {
	.ready = on_ready,
	.failed = on_failed,
	.untagged = on_untagged,
	.unit = on_unit,
	.read = on_read,
	.changed = on_changed,
	.literal_begin = mailbox_literal_begin,
	.literal_data = mailbox_literal_data,
	.literal_end = mailbox_literal_end,
};

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
	session_enter(s, S_CONNECT);
	r = conn_open(s->conn);
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
	case S_POLL_WAIT:
		woke(s);
		break;
	default:
		fatal("session timer in %s", state_names[s->state]);
	}
}

/* ---- the lane's callbacks ------------------------------------------------------- */

static void
on_lane_pause(void *ud, bool pause)
{
	struct session *s = ud;

	conn_pause(s->conn, pause);
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
	if (err < 0 && conn_alive(s->conn)) {
		session_fail(s, err, "cannot write to %s/tmp: %s", s->mb->maildir,
		    strerror(-err));
		return;
	}
	/* A batch may have been waiting for these writes. */
	if (conn_alive(s->conn) && s->state == S_SYNC)
		mailbox_pump(s);
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
		mb->maildir = folder_maildir(s->a->maildir, name);
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
	s->conn = conn_new(loop, &(struct conn_opts){ .acct = s->a,
		.ssl_ctx = o->ssl_ctx,
		.oauth = o->oauth,
		.ops = &conn_ops,
		.ud = s });
	conn_set_folder(s->conn, s->mb->name);
	mailbox_init(s);
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
	mailbox_start_job(s, COMMIT_PREPARE);
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
	if (conn_alive(s->conn) && !s->discover_login && (conn_caps(s->conn) & CAP_NOTIFY) &&
	    s->a->idle && !s->o.once && (s->notify || added))
		s->renotify = true;
	show_state(s);
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
		conn_idle_done(s->conn); /* its reply leads to LOGOUT */
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
		if (mailbox_may_close(s)) {
			session_enter(s, S_CLOSING);
			session_settle(s);
		}
		break;
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
	free(s->select_err);
	free(s->lookup_guess);
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
	mailbox_free(s);
	conn_free(s->conn);
	uv_close((uv_handle_t *)&s->timer, timer_close_cb);
}
