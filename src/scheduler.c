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
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/conn.h"
#include "idlefetch/folders.h"
#include "idlefetch/hook.h"
#include "idlefetch/log.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/metrics.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/proto.h"
#include "idlefetch/session.h"
#include "idlefetch/state.h"
#include "idlefetch/util.h"

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 300000
/* A connection up this long after its first sync counts as healthy. */
#define HEALTHY_MS 60000

/*
 * The scheduler's states. CONNECT and IDLE are the connection's (conn.h)
 * phases: `idlefetch status` shows the connection's state name there.
 */
enum session_state {
	S_PREPARE,
	S_CONNECT, /* the connection logs in */
	S_NOTIFY,
	S_SYNC, /* the mailbox selects and syncs the folder (mailbox.h) */
	S_IDLE, /* the connection IDLEs */
	S_POLL_WAIT,
	S_STATUS, /* asking the other folders for UIDNEXT */
	S_DISCOVER, /* folders = *: listing the subscribed folders */
	S_LOGOUT,
	S_CLOSING,
	S_BACKOFF,
	S_QUEUED, /* waiting for a slot at the gate */
	S_DONE,
};

/*
 * One folder as the scheduler sees it: its mailbox, and what decides when
 * it is synced. A connection holds one folder, or several that it syncs
 * in turn (NOTIFY, or STATUS polling); only one is selected at a time.
 */
struct slot {
	struct mailbox *mb;
	bool pending; /* to sync: at login, after news of it */
	bool skipped; /* the server would not open it, this connection */
	uint32_t uidnext; /* the last UIDNEXT seen, 0: unknown */
	uint32_t status_uidvalidity; /* ...and UIDVALIDITY with it */
};

struct session {
	uv_loop_t *loop;
	struct session_opts o;
	const struct account *a;
	enum session_state state;
	uv_timer_t timer; /* POLL_WAIT, BACKOFF */
	struct conn *conn;
	struct slot *slots; /* the folders, in configuration order */
	size_t nslots;
	struct slot *cur; /* the one worked on */
	struct slot *selected; /* on the connection (SELECT sent or done) */
	bool notify; /* NOTIFY SET accepted: the server tells of every folder */
	bool renotify; /* NOTIFY overflowed: set it again before waiting */
	bool split_asked; /* the owner was offered the folders to spread */
	char *move_wire; /* after = move: its target, as the server spells it */
	uint64_t polled_at; /* loop time of the last STATUS round */
	bool back_to_first; /* selecting the first folder again, to IDLE */
	unsigned status_wait; /* STATUS replies still to come */
	struct folder_set found; /* S_DISCOVER: what the server listed */
	bool found_capped; /* ...and it listed over FOLDERS_MAX */
	uint32_t clash_mark; /* folders_clash_mark() last warned of */
	unsigned discover_pass; /* 1: the other of LSUB, LIST (SUBSCRIBED) */
	bool discover_login; /* listing right after login, not a round */
	bool relist; /* NOTIFY told of a folder created or removed */
	bool finish_when_idle; /* session_finish waits for the disk */

	/* lifecycle */
	struct session *gate_next; /* in the gate's queue */
	bool gate_held; /* one of the gate's slots is this session's */
	bool gate_queued;
	unsigned backoff_ms;
	bool healthy; /* a sync completed on this connection */
	uint64_t healthy_at; /* loop time of that first completed sync */
	unsigned conn_delivered; /* messages delivered on this connection */
	bool ok; /* every folder synced in the last pass */
	bool stopping;
	bool fatal_err; /* do not retry (UIDVALIDITY change) */
	bool auth_logged;
};

#define LOG(s, lvl, ...)                                                       \
	log_msg((lvl), (s)->a->name, cur_name(s), __VA_ARGS__)

/* The folder worked on, for log lines; NULL while the folders change. */
static const char *
cur_name(const struct session *s)
{
	return s->cur && s->cur->mb ? mailbox_name(s->cur->mb) : NULL;
}

static void session_enter(struct session *s, enum session_state st,
    const char *why);
static void session_fail(struct session *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void session_settle(struct session *s);
static void session_finish(struct session *s);
static void session_connect(struct session *s);
static void session_synced(struct session *s);

static const char *state_names[] = { "PREPARE", "CONNECT", "NOTIFY",
	"SYNC", "IDLE", "POLL_WAIT", "STATUS", "DISCOVER", "LOGOUT",
	"CLOSING", "BACKOFF", "QUEUED", "DONE" };

/* ---- timers and states ------------------------------------------------- */

static void timer_cb(uv_timer_t *t);

/* Not stopped for good, and not refused by the server on this connection. */
static bool
usable_folder(const struct slot *mb)
{
	return !mailbox_dead(mb->mb) && !mb->skipped;
}

/* Folders that are not stopped for good. */
static size_t
live_folders(const struct session *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->nslots; i++)
		n += !mailbox_dead(s->slots[i].mb);
	return n;
}

/*
 * Whether NOTIFY tells of the folder. Dovecot 2.3 matches and names
 * folders in NOTIFY in UTF-8 instead of modified UTF-7, so it never tells
 * of one whose name is not ASCII: those are asked with STATUS.
 */
static bool
told_of(const struct session *s, const struct slot *mb)
{
	return s->notify &&
	    strcmp(mailbox_wire(mb->mb), mailbox_name(mb->mb)) == 0;
}

/* Folders other than the one it waits on are asked with STATUS. */
static bool
polls_others(const struct session *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->nslots; i++)
		n += usable_folder(&s->slots[i]) && !told_of(s, &s->slots[i]);
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

/* Makes mb the folder worked on (log lines, the connection's). */
static void
session_use(struct session *s, struct slot *mb)
{
	s->cur = mb;
	conn_set_folder(s->conn, mailbox_name(mb->mb));
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
	case S_DISCOVER:
		/* Between folders the connection stays up. */
		return s->selected != NULL || mailbox_status(s->cur->mb)->up;
	case S_PREPARE:
		/* A folder found on the server is made ready meanwhile. */
		return conn_alive(s->conn) &&
		    (s->selected != NULL || mailbox_status(s->cur->mb)->up);
	case S_LOGOUT:
	case S_DONE:
		/* passing through: no change */
		return mailbox_status(s->cur->mb)->up;
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
	for (size_t i = 0; i < s->nslots; i++)
		status_set_state(mailbox_status(s->slots[i].mb), shown_state(s),
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

/*
 * The one way to change state, logged with why: performs the state's entry
 * action (sends IDLE or LOGOUT, closes the connection, arms the timer).
 */
static void
session_enter(struct session *s, enum session_state st, const char *why)
{
	if (s->state != st)
		LOG(s, LOGL_DEBUG, "state %s -> %s (%s)", state_names[s->state],
		    state_names[st], why);
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

/* No folder has disk work in flight. */
static bool
quiet(const struct session *s)
{
	for (size_t i = 0; i < s->nslots; i++)
		if (!mailbox_quiet(s->slots[i].mb))
			return false;
	return true;
}

static void
close_conn(struct session *s)
{
	gate_release(s);
	conn_close(s->conn);
	for (size_t i = 0; i < s->nslots; i++)
		mailbox_detach(s->slots[i].mb);
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
	session_enter(s, S_BACKOFF, "the connection failed");
	arm(s, delay);
}

static void
session_finish(struct session *s)
{
	bool ok;

	/* Files still being removed: the session is done only after. */
	if (!quiet(s)) {
		s->finish_when_idle = true;
		return;
	}
	s->finish_when_idle = false;
	/* A daemon's session ends unasked only when it cannot go on. */
	if (!s->stopping && !s->o.once)
		for (size_t i = 0; i < s->nslots; i++) {
			mailbox_status(s->slots[i].mb)->gave_up = true;
			status_changed(mailbox_status(s->slots[i].mb));
		}
	session_enter(s, S_DONE, "the session is over");
	ok = s->ok && !s->fatal_err;
	for (size_t i = 0; i < s->nslots; i++)
		if (!mailbox_dead(s->slots[i].mb) &&
		    !mailbox_sync_ok(s->slots[i].mb))
			ok = false;
	s->o.done(s, s->o.ud, ok);
}

/*
 * With the connection gone, commits what arrived and then either retries
 * or finishes. Called again after each job completes.
 */
static void
session_settle(struct session *s)
{
	bool busy = false;

	if (conn_alive(s->conn))
		return;
	for (size_t i = 0; i < s->nslots; i++)
		busy |= !mailbox_settle(s->slots[i].mb);
	if (busy)
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

static void
session_fail(struct session *s, int err, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	s->ok = false;
	metrics_reconnect(s->a->name, err);
	for (size_t i = 0; i < s->nslots; i++)
		if (!mailbox_dead(s->slots[i].mb))
			status_error(mailbox_status(s->slots[i].mb), why);
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
	session_enter(s, S_CLOSING, "it failed");
	session_settle(s);
}

/*
 * A folder the server will not open: with other folders on the
 * connection, it is left out until the next connection and the others go
 * on; alone, the connection fails and is tried again later.
 */
static void
folder_skip(struct session *s, struct slot *mb, const char *why)
{
	size_t usable = 0;

	s->selected = NULL;
	for (size_t i = 0; i < s->nslots; i++)
		usable += usable_folder(&s->slots[i]) && &s->slots[i] != mb;
	if (usable == 0) {
		session_fail(s, IDLEFETCH_EPROTO, "%s", why);
		return;
	}
	mb->skipped = true;
	mb->pending = false;
	s->ok = false;
	LOG(s, LOGL_ERROR, "%s; trying it again at the next connection",
	    why);
	status_error(mailbox_status(mb->mb), why);
	session_synced(s);
}

/* Syncs mb: SELECTed by its mailbox, or listed again when it is already. */
static void
sync_folder(struct session *s, struct slot *mb)
{
	mb->pending = false;
	session_use(s, mb);
	session_enter(s, S_SYNC, "the folder has news");
	if (mb == s->selected) {
		mailbox_again(mb->mb);
		return;
	}
	if (s->selected != NULL)
		mailbox_detach(s->selected->mb);
	s->selected = mb;
	mailbox_select(mb->mb, s->conn);
}

/* ---- folders in turn ---------------------------------------------------------- */

static struct slot *
find_slot(struct session *s, const char *name)
{
	for (size_t i = 0; i < s->nslots; i++) {
		const char *n = mailbox_wire(s->slots[i].mb);

		/* INBOX is the one name without case (RFC 3501 5.1). */
		if (strcmp(n, name) == 0 ||
		    (strcasecmp(n, "INBOX") == 0 && strcasecmp(name, n) == 0))
			return &s->slots[i];
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
	for (size_t i = 0; i < s->nslots; i++) {
		if (proto_quote(q, sizeof(q), mailbox_wire(s->slots[i].mb)) < 0)
			fatal("folder name '%s' cannot be quoted",
			    mailbox_wire(s->slots[i].mb));
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
	session_enter(s, S_NOTIFY, "asking to be told of every folder");
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
	session_enter(s, S_DISCOVER, "listing the subscribed folders");
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
		    r->text, s->nslots);
	} else {
		settle_found(s);
		s->o.listed(s, s->o.ud, (const char *const *)s->found.names,
		    s->found.n);
	}
	folders_free(&s->found);
	if (s->stopping) {
		session_enter(s, S_LOGOUT, "stopping");
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
	for (size_t i = 0; i < s->nslots; i++) {
		s->slots[i].skipped = false;
		s->slots[i].pending = !mailbox_dead(s->slots[i].mb);
		mailbox_reset_ok(s->slots[i].mb);
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
	if (s->nslots > 1 && !s->split_asked && s->o.split && !s->stopping &&
	    !s->o.once && !(conn_caps(s->conn) & CAP_NOTIFY) && s->a->idle &&
	    (conn_caps(s->conn) & CAP_IDLE) && !mailbox_dead(s->slots[0].mb)) {
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
	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *mb = &s->slots[i];

		if (!usable_folder(mb) || mb == s->selected || mb->pending ||
		    told_of(s, mb))
			continue;
		if (proto_quote(q, sizeof(q), mailbox_wire(mb->mb)) < 0)
			fatal("folder name '%s' cannot be quoted",
			    mailbox_wire(mb->mb));
		conn_cmd(s->conn, HAS_STATUS, status_done, status_line, s,
		    "STATUS %s (UIDNEXT UIDVALIDITY)", q);
		s->status_wait++;
	}
	if (s->status_wait == 0) {
		session_synced(s);
		return;
	}
	session_enter(s, S_STATUS, "asking the other folders");
}

/* News of a folder, from NOTIFY or from polling it with STATUS. */
static void
folder_news(struct session *s, const struct proto_resp *r)
{
	struct slot *mb = find_slot(s, r->name);

	if (mb == NULL || !usable_folder(mb) || mb == s->selected)
		return;
	if (!(r->has & HAS_STATUS_UIDNEXT) || mb->uidnext == 0 ||
	    r->status_uidnext != mb->uidnext ||
	    r->status_uidvalidity != mb->status_uidvalidity) {
		if (!mb->pending)
			LOG(s, LOGL_DEBUG, "%s has news (UIDNEXT %u)",
			    mailbox_name(mb->mb), r->status_uidnext);
		mb->pending = true;
		metrics_news(s->a->name, mailbox_name(mb->mb));
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

static void
session_synced(struct session *s)
{
	struct slot *next = NULL;

	if (s->stopping) {
		session_enter(s, S_LOGOUT, "stopping");
		return;
	}
	/* The selected folder first: it needs no SELECT. */
	if (s->selected && s->selected->pending)
		next = s->selected;
	for (size_t i = 0; next == NULL && i < s->nslots; i++)
		if (s->slots[i].pending && usable_folder(&s->slots[i]))
			next = &s->slots[i];
	if (next && !mailbox_prepared(next->mb)) {
		/* Found on the server since: its Maildir and state first. */
		session_use(s, next);
		session_enter(s, S_PREPARE, "a new folder");
		mailbox_prepare(next->mb);
		return;
	}
	if (next) {
		sync_folder(s, next);
		return;
	}
	if (s->o.once) {
		session_enter(s, S_LOGOUT, "single pass done");
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
	for (size_t i = 0; i < s->nslots; i++) {
		struct slot *first = &s->slots[i];
		bool idles = !s->notify && s->a->idle && (conn_caps(s->conn) & CAP_IDLE);

		if (!usable_folder(first))
			continue;
		if (first != s->selected && !s->back_to_first &&
		    (idles || s->selected == NULL)) {
			s->back_to_first = true;
			sync_folder(s, first);
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
		session_enter(s, S_IDLE, "every folder synced");
		return;
	}
	session_enter(s, S_POLL_WAIT, "every folder synced; no IDLE");
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
	switch (folders_add(&s->found, s->a, r->name, r->list_delim,
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
	for (size_t i = 0; i < s->nslots; i++)
		if (usable_folder(&s->slots[i]))
			s->slots[i].pending = true;
	if (s->state == S_IDLE && conn_state(s->conn) == CONN_IDLE)
		conn_idle_done(s->conn);
}

/* The selected folder has more messages: fetch them, now or after. */
static void
exists(struct session *s)
{
	if (s->state == S_IDLE && conn_state(s->conn) == CONN_IDLE) {
		metrics_news(s->a->name, mailbox_name(s->selected->mb));
		conn_idle_done(s->conn);
		return;
	}
	if (s->state == S_POLL_WAIT) {
		woke(s);
		return;
	}
	/* IDLE not yet accepted: it ends as soon as it is. */
	if (s->state == S_IDLE)
		conn_idle_done(s->conn);
}

/*
 * Untagged responses no command asked for (conn_ops.untagged): those of
 * the selected folder go to its mailbox, news of others is the
 * scheduler's.
 */
static void
on_untagged(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r->has & HAS_STATUS)
		folder_news(s, r);
	if ((r->has & HAS_OVERFLOW) && s->notify)
		notify_overflow(s);
	if (s->selected != NULL && mailbox_untagged(s->selected->mb, r))
		exists(s);
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
		session_enter(s, S_LOGOUT, "stopping");
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

/* A graceful stop waits for the message in flight, then stops reading. */
static void
on_read(void *ud)
{
	struct session *s = ud;

	if (s->stopping && s->state == S_SYNC && s->selected != NULL &&
	    mailbox_may_close(s->selected->mb)) {
		conn_pause(s->conn, true);
		session_enter(s, S_CLOSING, "stopping: no message halfway in");
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
	.read = on_read,
	.changed = on_changed,
};

static void
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
			session_enter(s, S_QUEUED, "waiting for a login slot");
			return;
		}
		g->busy++;
		s->gate_held = true;
	}
	for (size_t i = 0; i < s->nslots; i++)
		if (!mailbox_dead(s->slots[i].mb)) {
			session_use(s, &s->slots[i]);
			break;
		}
	session_enter(s, S_CONNECT, "connecting");
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
		if (!quiet(s)) { /* a stalled disk: not yet */
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

/* ---- the mailboxes' callbacks ------------------------------------------------ */

static struct slot *
slot_of(struct session *s, const struct mailbox *m)
{
	for (size_t i = 0; i < s->nslots; i++)
		if (s->slots[i].mb == m)
			return &s->slots[i];
	fatal("a mailbox the session does not hold");
}

/* A folder's Maildir and state are read (or unusable): the next step. */
static void
on_prepared(void *ud, struct mailbox *m, int err, const char *why)
{
	struct session *s = ud;

	if (err < 0) {
		s->ok = false;
		slot_of(s, m)->pending = false;
		if (live_folders(s) == 0) {
			s->fatal_err = true;
			session_fail(s, err, "%s", why);
			return;
		}
		LOG(s, LOGL_ERROR, "%s", why);
	}
	/* A folder found while connected: the connection failed meanwhile. */
	if (s->state != S_PREPARE) {
		session_settle(s);
		return;
	}
	if (conn_alive(s->conn)) {
		session_synced(s); /* it is pending: SELECT it now */
		return;
	}
	if (s->stopping) {
		session_finish(s);
		return;
	}
	/* Each folder's Maildir and state, in turn, before connecting. */
	if (s->cur + 1 < s->slots + s->nslots) {
		session_use(s, s->cur + 1);
		mailbox_prepare(s->cur->mb);
		return;
	}
	session_connect(s);
}

static void
on_synced(void *ud, struct mailbox *m)
{
	struct session *s = ud;
	struct slot *mb = slot_of(s, m);

	if (!s->healthy)
		s->healthy_at = uv_now(s->loop);
	s->healthy = true;
	s->auth_logged = false;
	mb->uidnext = mailbox_uidnext(m);
	mb->status_uidvalidity = mailbox_uidvalidity(m);
	session_synced(s);
}

static void
on_refused(void *ud, struct mailbox *m, const char *why)
{
	struct session *s = ud;

	folder_skip(s, slot_of(s, m), why);
}

static void
on_mailbox_failed(void *ud, struct mailbox *m, int err, bool final,
    const char *why)
{
	struct session *s = ud;

	(void)m;
	if (final)
		s->fatal_err = true;
	session_fail(s, err, "%s", why);
}

static void
on_settled(void *ud, struct mailbox *m)
{
	struct session *s = ud;

	(void)m;
	if (s->finish_when_idle) {
		if (quiet(s))
			session_finish(s);
		return;
	}
	session_settle(s);
}

static void
on_delivered(void *ud, struct mailbox *m, unsigned n)
{
	struct session *s = ud;

	s->conn_delivered += n;
	hook_delivered(s->o.hook, mailbox_name(m), n);
}

static const struct mailbox_ops mailbox_ops = {
	.prepared = on_prepared,
	.synced = on_synced,
	.refused = on_refused,
	.failed = on_mailbox_failed,
	.settled = on_settled,
	.delivered = on_delivered,
};

/* ---- public ---------------------------------------------------------------------- */

static struct mailbox *
slot_mailbox(struct session *s, const char *name, struct status_rec *rec)
{
	return mailbox_new(s->loop, &(struct mailbox_opts){ .acct = s->a,
		.state_dir = s->o.state_dir,
		.name = name,
		.status = rec,
		.move_wire = s->move_wire,
		.ops = &mailbox_ops,
		.ud = s });
}

struct session *
session_new(uv_loop_t *loop, const struct session_opts *o)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->loop = loop;
	s->o = *o;
	s->a = o->acct;
	if (s->a->move_to) {
		s->move_wire = mutf7_wire_name(s->a->move_to);
		if (s->move_wire == NULL)
			fatal("folder name '%s' is not UTF-8", s->a->move_to);
	}
	s->nslots = o->nfolders;
	s->slots = xcalloc(s->nslots, sizeof(*s->slots));
	for (size_t i = 0; i < s->nslots; i++)
		s->slots[i].mb = slot_mailbox(s, o->folders[i], &o->status[i]);
	s->cur = &s->slots[0];
	s->conn = conn_new(loop, &(struct conn_opts){ .acct = s->a,
		.ssl_ctx = o->ssl_ctx,
		.oauth = o->oauth,
		.ops = &conn_ops,
		.ud = s });
	conn_set_folder(s->conn, mailbox_name(s->cur->mb));
	s->backoff_ms = BACKOFF_MIN_MS;
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	s->state = S_PREPARE;
	for (size_t i = 0; i < s->nslots; i++)
		status_set_state(mailbox_status(s->slots[i].mb),
		    state_names[S_PREPARE], false);
	return s;
}

void
session_start(struct session *s)
{
	session_use(s, &s->slots[0]);
	mailbox_prepare(s->cur->mb);
}

void
session_keep(struct session *s, size_t n)
{
	if (n == 0 || n > s->nslots || s->selected != NULL)
		fatal("session_keep(%zu) of %zu folders", n, s->nslots);
	for (size_t i = n; i < s->nslots; i++)
		mailbox_release(s->slots[i].mb);
	s->nslots = n;
	if (s->cur >= s->slots + n)
		session_use(s, &s->slots[0]);
}

/* The slot of a folder that stays, or a new one (made ready and synced). */
static struct slot
keep_or_add(struct session *s, const char *name, struct status_rec *rec,
    bool *added)
{
	struct slot new = { 0 };

	for (size_t j = 0; j < s->nslots; j++) {
		struct slot *old = &s->slots[j];

		if (old->mb == NULL || strcmp(mailbox_name(old->mb), name) != 0)
			continue;
		new = *old;
		mailbox_rename(new.mb, name, rec);
		old->mb = NULL; /* moved */
		return new;
	}
	new.mb = slot_mailbox(s, name, rec);
	new.pending = !s->stopping;
	*added = true;
	LOG(s, LOGL_INFO, "now fetching folder %s too", name);
	return new;
}

void
session_set_folders(struct session *s, const char *const *names, size_t n,
    struct status_rec *recs)
{
	struct slot *slots;
	const struct mailbox *cur = s->cur->mb, *sel = NULL;
	bool added = false;

	if (n == 0)
		fatal("session_set_folders(%zu)", n);
	if (s->selected != NULL)
		sel = s->selected->mb;
	slots = xcalloc(n, sizeof(*slots));
	for (size_t i = 0; i < n; i++)
		slots[i] = keep_or_add(s, names[i], &recs[i], &added);
	for (size_t j = 0; j < s->nslots; j++) {
		struct mailbox *gone = s->slots[j].mb;

		if (gone == NULL)
			continue;
		LOG(s, LOGL_INFO,
		    "folder %s is no longer subscribed or no longer "
		    "exists: not fetching it any more",
		    mailbox_name(gone));
		mailbox_detach(gone);
		mailbox_release(gone);
	}
	free(s->slots);
	s->slots = slots;
	s->nslots = n;
	s->cur = &slots[0];
	s->selected = NULL;
	for (size_t i = 0; i < n; i++) {
		if (slots[i].mb == cur)
			s->cur = &slots[i];
		if (slots[i].mb == sel)
			s->selected = &slots[i];
	}
	session_use(s, s->cur);
	/* Watching other folders now: NOTIFY SET again, once synced. */
	if (conn_alive(s->conn) && !s->discover_login &&
	    (conn_caps(s->conn) & CAP_NOTIFY) && s->a->idle && !s->o.once &&
	    (s->notify || added))
		s->renotify = true;
	show_state(s);
}

void
session_stop(struct session *s)
{
	if (s->stopping || s->state == S_DONE)
		return;
	s->stopping = true;
	for (size_t i = 0; i < s->nslots; i++)
		mailbox_stop(s->slots[i].mb);
	switch (s->state) {
	case S_PREPARE:
		break; /* the job's completion finishes */
	case S_QUEUED:
		gate_unqueue(s);
		/* fall through */
	case S_BACKOFF:
	case S_CLOSING:
		if (quiet(s))
			session_finish(s);
		break;
	case S_IDLE:
		conn_idle_done(s->conn); /* its reply leads to LOGOUT */
		break;
	case S_POLL_WAIT:
		session_enter(s, S_LOGOUT, "stopping");
		break;
	case S_SYNC:
		/*
		 * Messages still coming: stop after the one in flight (on_read)
		 * and commit what is complete. Only commits or after-delivery
		 * commands left: the sync then ends in LOGOUT.
		 */
		if (s->selected == NULL || mailbox_may_close(s->selected->mb)) {
			session_enter(s, S_CLOSING, "stopping: no message halfway in");
			session_settle(s);
		}
		break;
	case S_STATUS:
	case S_DISCOVER:
	case S_LOGOUT:
		break; /* the tagged reply leads to LOGOUT */
	default:
		session_enter(s, S_CLOSING, "stopping");
		session_settle(s);
		break;
	}
}

void
session_tally(const struct session *s, unsigned k[SESSION_ACTIVITIES])
{
	enum session_activity a;

	switch (s->state) {
	case S_IDLE:
		a = SESSION_IDLING;
		break;
	case S_POLL_WAIT:
		a = SESSION_POLLING;
		break;
	case S_BACKOFF:
		a = SESSION_BACKOFF;
		break;
	case S_DONE:
		a = SESSION_STOPPED;
		break;
	default:
		a = SESSION_BUSY;
		break;
	}
	for (size_t i = 0; i < s->nslots; i++)
		k[mailbox_status(s->slots[i].mb)->gave_up ? SESSION_STOPPED :
							     a]++;
}

static void
timer_close_cb(uv_handle_t *h)
{
	struct session *s = h->data;

	folders_free(&s->found);
	free(s->move_wire);
	free(s);
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	if (!quiet(s))
		fatal("session_free with disk work in flight");
	gate_unqueue(s);
	close_conn(s);
	for (size_t i = 0; i < s->nslots; i++)
		mailbox_release(s->slots[i].mb);
	free(s->slots);
	conn_free(s->conn);
	uv_close((uv_handle_t *)&s->timer, timer_close_cb);
}
