/*
 * session: one account's connection, from the login to its end, and what
 * follows it.
 *
 *   PREPARE -> [QUEUED] -> CONNECT (the connection logs in) -> UP (the
 *   cycle works: cycle.h) -> LOGOUT -> DONE; any error -> CLOSING ->
 *   BACKOFF -> CONNECT; stop -> LOGOUT | CLOSING -> [FINISHING] -> DONE
 *
 * This file decides when the account connects, waits for a login slot,
 * backs off after errors, hands over to a connection that replaces one
 * about to end, and stops; session_enter() is the one place that changes
 * its state. While UP, its cycle (cycle.h) owns the work on the
 * connection: the folders in turn, NOTIFY, STATUS, IDLE. It owns struct
 * session and may call: conn (open, LOGOUT, close), cycle, cursor (the
 * folders: made, prepared, stopped, shown), mailbox (the mailbox_ops
 * callbacks), schedstate (the states' names and what each shows), gate
 * (login slots), backoff (the wait before connecting again), handover
 * (the connection, and the one that replaces it before its token
 * expires), metrics and hook. The daemon above it hears from it only
 * through the callbacks of session.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/backoff.h"
#include "idlefetch/conn.h"
#include "idlefetch/cursor.h"
#include "idlefetch/cycle.h"
#include "idlefetch/gate.h"
#include "idlefetch/handover.h"
#include "idlefetch/hook.h"
#include "idlefetch/log.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/metrics.h"
#include "idlefetch/schedstate.h"
#include "idlefetch/session.h"
#include "idlefetch/util.h"
#include "idlefetch/watch.h"

struct session {
	uv_loop_t *loop;
	struct session_opts o;
	const struct account *a;
	enum session_state state;
	uv_timer_t timer; /* BACKOFF */
	struct conn *conn;
	/*
	 * The folders, in configuration order: one, or several that it syncs
	 * in turn (NOTIFY, or STATUS polling); only one is selected at a time.
	 */
	struct cursor *c;
	struct cycle *cy; /* the work while UP */

	/* lifecycle */
	struct gate_waiter *gate_w; /* at o.gate */
	struct backoff *backoff; /* the wait before connecting again */
	bool ok; /* every folder synced in the last pass */
	bool stopping;
	bool fatal_err; /* do not retry (UIDVALIDITY change) */
	bool auth_logged;
	struct handover *ho; /* conn, and its replacement */
};

#define LOG(s, lvl, ...)                                                       \
	log_msg((lvl), (s)->a->name, cursor_name((s)->c), __VA_ARGS__)

static void session_enter(struct session *s, enum session_state st,
    const char *why);
static void session_fail(struct session *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void session_settle(struct session *s);
static void session_finish(struct session *s);
static void session_connect(struct session *s);

/* ---- timers and states ------------------------------------------------- */

static void timer_cb(uv_timer_t *t);

static void
arm(struct session *s, uint64_t ms)
{
	uv_timer_start(&s->timer, timer_cb, ms, 0);
}

/* The state shown and counted: while UP, the cycle's. */
static enum session_state
shown(const struct session *s)
{
	return s->state == S_UP ? cycle_state(s->cy) : s->state;
}

/* Logged in and synced, for `idlefetch status`. */
static void
show_state(struct session *s)
{
	struct mailbox *cur = cursor_cur(s->c);
	bool up;

	/* Up, its cycle between two connections (a handover): no change. */
	if (s->state == S_UP && cycle_state(s->cy) == S_CONNECT)
		return;
	up = schedstate_up(shown(s), conn_alive(s->conn),
	    cursor_selected(s->c) != NULL,
	    cur != NULL && mailbox_status(cur)->up);
	cursor_show(s->c, schedstate_shown(shown(s), conn_state(s->conn)), up);
}

static void close_conn(struct session *s);
static void logged_out(void *ud, const struct proto_resp *r);

/*
 * The one way to change state, logged with why: performs the state's entry
 * action (sends LOGOUT, closes the connection).
 */
static void
session_enter(struct session *s, enum session_state st, const char *why)
{
	if (s->state != st)
		LOG(s, LOGL_DEBUG, "state %s -> %s (%s)", schedstate_name(s->state),
		    schedstate_name(st), why);
	s->state = st;
	uv_timer_stop(&s->timer);
	show_state(s);
	/* The entry action, last: it may call back into the session. */
	switch (st) {
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

/* ---- connection teardown --------------------------------------------------- */

/* The folders let go of the connection: on the next one, all starts over. */
static void
forget_conn(struct session *s)
{
	cycle_forget(s->cy);
}

static void
close_conn(struct session *s)
{
	gate_leave(s->o.gate, s->gate_w);
	handover_cancel(s->ho);
	conn_close(s->conn);
	forget_conn(s);
}

/* The connection failed: connect again after a while. */
static void
back_off(struct session *s)
{
	unsigned delay = backoff_next(s->backoff, uv_now(s->loop),
	    conn_take_retry_ms(s->conn));

	if (delay == 0) {
		LOG(s, LOGL_INFO, "reconnecting at once");
		session_enter(s, S_BACKOFF, "the server ended the session");
	} else {
		LOG(s, LOGL_INFO, "reconnecting in %.1f s", delay / 1000.0);
		session_enter(s, S_BACKOFF, "the connection failed");
	}
	arm(s, delay);
}

static bool take_spare(struct session *s);

static void
session_finish(struct session *s)
{
	bool ok;

	handover_drop(s->ho);
	/* Files still being removed: the session is done only after. */
	if (!cursor_quiet(s->c)) {
		session_enter(s, S_FINISHING, "files still being written");
		return;
	}
	/* A daemon's session ends unasked only when it cannot go on. */
	if (!s->stopping && !s->o.once)
		cursor_gave_up(s->c);
	session_enter(s, S_DONE, "the session is over");
	ok = s->ok && !s->fatal_err && cursor_synced_ok(s->c);
	s->o.done(s, s->o.ud, ok);
}

/*
 * With the connection gone, commits what arrived and then either retries
 * or finishes. Called again after each job completes.
 */
static void
session_settle(struct session *s)
{
	if (conn_alive(s->conn) || !cursor_settle(s->c))
		return;
	if (s->state == S_DONE)
		return;
	if (s->stopping || s->o.once || s->fatal_err) {
		session_finish(s);
		return;
	}
	if (s->state == S_CLOSING && !take_spare(s))
		back_off(s);
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
	cursor_error(s->c, why);
	if (err == IDLEFETCH_EAUTH) {
		if (!s->auth_logged)
			LOG(s, LOGL_ERROR, "%s", why);
		s->auth_logged = true;
		backoff_longest(s->backoff);
	} else if (s->stopping &&
	    (s->state == S_LOGOUT || s->state == S_FINISHING)) {
		LOG(s, LOGL_DEBUG, "%s", why);
	} else {
		LOG(s, LOGL_ERROR, "%s", why);
	}
	session_enter(s, S_CLOSING, "it failed");
	session_settle(s);
}

/* ---- responses --------------------------------------------------------------- */

/* Untagged responses no command asked for (conn_ops.untagged). */
static void
on_untagged(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	cycle_untagged(s->cy, r);
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
	struct session *s = ud;

	backoff_up(s->backoff, uv_now(s->loop));
	if (!s->o.once)
		handover_plan(s->ho);
	gate_leave(s->o.gate, s->gate_w);
	s->ok = true;
	session_enter(s, S_UP, "logged in");
	cycle_login(s->cy, s->conn);
}

static void
on_failed(void *ud, int err, bool final, const char *why)
{
	struct session *s = ud;

	if (final)
		s->fatal_err = true;
	/* The server ended a session that was up and idle (backoff.h). */
	if (!final && shown(s) == S_IDLE && conn_bye(s->conn) != NULL)
		backoff_ended_idle(s->backoff, uv_now(s->loop));
	/* A kept token refused: a new one, at once. */
	if (err == -EKEYEXPIRED)
		backoff_shortest(s->backoff);
	session_fail(s, err, "%s", why);
}

/* A graceful stop waits for the message in flight, then stops reading. */
static void
on_read(void *ud)
{
	struct session *s = ud;

	if (s->stopping && s->state == S_UP && cycle_may_close(s->cy)) {
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

/* ---- the connection replaced before it ends (handover.h) -------------------- */

/*
 * The replacement takes over with every folder synced: they sync again on
 * it from their durable state, so what arrived in between is fetched
 * once; the old connection ends with LOGOUT on its own.
 */
static void
hand_over(struct session *s)
{
	forget_conn(s);
	handover_swap(s->ho);
	s->conn = handover_conn(s->ho);
	conn_set_folder(s->conn, cursor_name(s->c));
	on_ready(s);
}

/*
 * The connection ended before its replacement took over, and what it
 * brought is committed: the replacement goes on in its place, no wait.
 */
static bool
take_spare(struct session *s)
{
	bool logged_in;

	if (!handover_take(s->ho, &logged_in))
		return false;
	s->conn = handover_conn(s->ho);
	backoff_calm(s->backoff);
	conn_set_folder(s->conn, cursor_name(s->c));
	session_enter(s, S_CONNECT, "the replacement goes on");
	if (logged_in)
		on_ready(s);
	return true;
}

static bool
spare_may_start(void *ud)
{
	struct session *s = ud;

	return !s->stopping && !s->o.once;
}

/*
 * The replacement is logged in. Waiting with every folder synced, the
 * session hands over now; else once they are (the cycle's between()), or,
 * the old connection gone, once what it brought is committed
 * (session_settle).
 */
static void
spare_ready(void *ud)
{
	struct session *s = ud;

	if (s->stopping) {
		handover_drop(s->ho);
		return;
	}
	if (shown(s) == S_IDLE)
		cycle_wake(s->cy); /* then between() hands over */
	else if (shown(s) == S_POLL_WAIT)
		hand_over(s);
	else if (s->state == S_CLOSING)
		session_settle(s);
}

static const struct handover_ops handover_ops = {
	.may_start = spare_may_start,
	.ready = spare_ready,
};

static void
session_connect(struct session *s)
{
	int r;

	if (!gate_enter(s->o.gate, s->gate_w)) {
		session_enter(s, S_QUEUED, "waiting for a login slot");
		return;
	}
	cursor_use_first(s->c, s->conn);
	session_enter(s, S_CONNECT, "connecting");
	r = conn_open(s->conn);
	if (r < 0)
		session_fail(s, r, "cannot resolve %s: %s", s->a->host,
		    err_str(r));
}

/* A login slot became the session's, at the gate. */
static void
gate_open(void *ud)
{
	session_connect(ud);
}

static void
timer_cb(uv_timer_t *t)
{
	struct session *s = t->data;

	switch (s->state) {
	case S_BACKOFF:
		if (!cursor_quiet(s->c)) { /* a stalled disk: not yet */
			arm(s, BACKOFF_MIN_MS);
			break;
		}
		session_connect(s);
		break;
	default:
		fatal("session timer in %s", schedstate_name(s->state));
	}
}

/* ---- the mailboxes' callbacks ------------------------------------------------ */

/* A folder's Maildir and state are read (or unusable): the next step. */
static void
on_prepared(void *ud, struct mailbox *m, int err, const char *why)
{
	struct session *s = ud;

	if (err < 0) {
		s->ok = false;
		watch_set_pending(cursor_watch(s->c), m, false);
		if (watch_live(cursor_watch(s->c)) == 0) {
			s->fatal_err = true;
			session_fail(s, err, "%s", why);
			return;
		}
		LOG(s, LOGL_ERROR, "%s", why);
	}
	/* A folder found while connected: it is pending, SELECT it now. */
	if (s->state == S_UP && cycle_state(s->cy) == S_PREPARE) {
		cycle_next(s->cy);
		return;
	}
	/* ... unless the connection failed meanwhile. */
	if (s->state != S_PREPARE) {
		session_settle(s);
		return;
	}
	if (s->stopping) {
		session_finish(s);
		return;
	}
	/* Each folder's Maildir and state, in turn, before connecting. */
	if (!cursor_prepare_next(s->c, s->conn))
		session_connect(s);
}

static void
on_synced(void *ud, struct mailbox *m)
{
	struct session *s = ud;

	backoff_synced(s->backoff, uv_now(s->loop));
	s->auth_logged = false;
	watch_synced(cursor_watch(s->c), m);
	cycle_next(s->cy);
}

static void
on_refused(void *ud, struct mailbox *m, const char *why)
{
	struct session *s = ud;

	/* With other folders on the connection, it is left out until the next. */
	if (!cursor_skip(s->c, m, why)) {
		session_fail(s, IDLEFETCH_EPROTO, "%s", why);
		return;
	}
	s->ok = false;
	LOG(s, LOGL_ERROR, "%s; trying it again at the next connection",
	    why);
	cycle_next(s->cy);
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
	if (s->state == S_FINISHING) {
		if (cursor_quiet(s->c))
			session_finish(s);
		return;
	}
	session_settle(s);
}

static void
on_delivered(void *ud, struct mailbox *m, unsigned n)
{
	struct session *s = ud;

	backoff_delivered(s->backoff, n);
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

/* ---- the cycle's callbacks ---------------------------------------------------- */

static void
cycle_failed(void *ud, int err, const char *why)
{
	session_fail(ud, err, "%s", why);
}

static void
cycle_over(void *ud, const char *why)
{
	session_enter(ud, S_LOGOUT, why);
}

/* Every folder synced: a replacement READY takes over now. */
static bool
cycle_between(void *ud)
{
	struct session *s = ud;

	if (!handover_ready(s->ho))
		return false;
	hand_over(s);
	return true;
}

static void
cycle_listed(void *ud, const char *const *names, size_t n)
{
	struct session *s = ud;

	s->o.listed(s, s->o.ud, names, n);
}

static void
cycle_split(void *ud)
{
	struct session *s = ud;

	s->o.split(s, s->o.ud);
}

static const struct cycle_ops cycle_ops = {
	.failed = cycle_failed,
	.over = cycle_over,
	.between = cycle_between,
	.changed = on_changed,
	.listed = cycle_listed,
	.split = cycle_split,
};

/* ---- public ---------------------------------------------------------------------- */

struct session *
session_new(uv_loop_t *loop, const struct session_opts *o)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->loop = loop;
	s->o = *o;
	s->a = o->acct;
	s->c = cursor_new(loop, &(struct folderset_opts){ .acct = s->a,
		.state_dir = o->state_dir,
		.ops = &mailbox_ops,
		.ud = s }, o->folders, o->nfolders, o->status);
	s->ho = handover_new(loop, &(struct conn_opts){ .acct = s->a,
		.ssl_ctx = o->ssl_ctx,
		.oauth = o->oauth,
		.ops = &conn_ops,
		.ud = s }, o->gate, &handover_ops);
	s->conn = handover_conn(s->ho);
	conn_set_folder(s->conn, cursor_name(s->c));
	s->cy = cycle_new(loop, &(struct cycle_opts){ .acct = s->a,
		.state_dir = o->state_dir,
		.cursor = s->c,
		.once = o->once,
		.lists = o->listed != NULL,
		.splits = o->split != NULL,
		.ops = &cycle_ops,
		.ud = s });
	s->backoff = backoff_new();
	s->gate_w = gate_waiter_new(gate_open, s);
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	s->state = S_PREPARE;
	cursor_show(s->c, schedstate_name(S_PREPARE), false);
	return s;
}

void
session_start(struct session *s)
{
	cursor_use(s->c, watch_at(cursor_watch(s->c), 0), s->conn);
	mailbox_prepare(cursor_cur(s->c));
}

void
session_keep(struct session *s, size_t n)
{
	cursor_keep(s->c, n, s->conn);
}

void
session_set_folders(struct session *s, const char *const *names, size_t n,
    struct status_rec *recs)
{
	bool added = cursor_set_folders(s->c, names, n, recs, !s->stopping,
	    s->conn);

	cycle_folders_changed(s->cy, s->conn, added);
	show_state(s);
}

void
session_stop(struct session *s)
{
	const char *why = shown(s) == S_SYNC ?
	    "stopping: no message halfway in" : "stopping";
	enum cycle_stop up;

	if (s->stopping || s->state == S_DONE)
		return;
	s->stopping = true;
	cursor_stop(s->c);
	up = cycle_stop(s->cy);
	switch (s->state) {
	case S_PREPARE:
		break; /* the job's completion finishes */
	case S_QUEUED:
		gate_cancel(s->o.gate, s->gate_w);
		/* fall through */
	case S_BACKOFF:
	case S_CLOSING:
		if (cursor_quiet(s->c))
			session_finish(s);
		break;
	case S_LOGOUT:
	case S_FINISHING:
		break; /* its reply, or the disk, finishes */
	case S_UP:
		if (up == CYCLE_STOP_LOGOUT)
			session_enter(s, S_LOGOUT, why);
		if (up != CYCLE_STOP_CLOSE)
			break;
		/* fall through */
	default:
		session_enter(s, S_CLOSING, why);
		session_settle(s);
		break;
	}
}

void
session_tally(const struct session *s, unsigned k[SESSION_ACTIVITIES])
{
	cursor_tally(s->c, schedstate_activity(shown(s)), k);
}

static void
timer_close_cb(uv_handle_t *h)
{
	struct session *s = h->data;

	cycle_free(s->cy);
	cursor_free(s->c);
	backoff_free(s->backoff);
	gate_waiter_free(s->o.gate, s->gate_w);
	free(s);
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	if (!cursor_quiet(s->c))
		fatal("session_free with disk work in flight");
	gate_cancel(s->o.gate, s->gate_w);
	close_conn(s);
	cycle_close(s->cy);
	cursor_release(s->c);
	handover_free(s->ho);
	uv_close((uv_handle_t *)&s->timer, timer_close_cb);
}
