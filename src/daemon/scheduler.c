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
 * its state. It owns struct session and may call: conn (the IMAP
 * connection: login, tags, IDLE, timeouts), mailbox (SELECT and SYNC of one
 * folder, with its own phases; it hands the folder back through the
 * mailbox_ops callbacks), watch (the folders and their news: NOTIFY,
 * STATUS), rounds (when the other folders are asked, listed or NOTIFY set,
 * and what their news is), folderset (the folders' mailboxes and changes
 * to the set), schedstate (the states' names and what each shows),
 * discover (folders = *), gate (login slots), backoff (the wait before
 * connecting again) and handover (the connection, and the one that
 * replaces it before its token expires). The daemon above it hears from
 * it only through the callbacks of session.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/backoff.h"
#include "idlefetch/conn.h"
#include "idlefetch/discover.h"
#include "idlefetch/folderset.h"
#include "idlefetch/gate.h"
#include "idlefetch/handover.h"
#include "idlefetch/hook.h"
#include "idlefetch/log.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/metrics.h"
#include "idlefetch/proto.h"
#include "idlefetch/rounds.h"
#include "idlefetch/schedstate.h"
#include "idlefetch/session.h"
#include "idlefetch/util.h"
#include "idlefetch/watch.h"

struct session {
	uv_loop_t *loop;
	struct session_opts o;
	const struct account *a;
	enum session_state state;
	uv_timer_t timer; /* POLL_WAIT, BACKOFF */
	struct conn *conn;
	/*
	 * The folders, in configuration order: one, or several that it syncs
	 * in turn (NOTIFY, or STATUS polling); only one is selected at a time.
	 */
	struct watch *w;
	struct mailbox *cur; /* the one worked on */
	struct mailbox *selected; /* on the connection (SELECT sent or done) */
	bool split_asked; /* the owner was offered the folders to spread */
	struct folderset *fs; /* makes the folders' mailboxes */
	bool back_to_first; /* selecting the first folder again, to IDLE */
	struct rounds *rounds; /* STATUS, listing and NOTIFY rounds */
	struct discovery *disc; /* folders = *: the subscribed folders */
	bool finish_when_idle; /* session_finish waits for the disk */

	/* lifecycle */
	struct gate_waiter *gate_w; /* at o.gate */
	struct backoff *backoff; /* the wait before connecting again */
	bool ok; /* every folder synced in the last pass */
	bool stopping;
	bool fatal_err; /* do not retry (UIDVALIDITY change) */
	bool auth_logged;
	struct handover *ho; /* conn, and its replacement */
	bool quick; /* the server ended an idle session: reconnect at once */
	uint64_t quick_at; /* loop time of the last such reconnect */
	uint64_t up_at; /* loop time of the last login */
};

/*
 * A server's BYE that ends a session idle and logged in this long (not
 * one that fails each IDLE) is followed by a reconnect at once, at most
 * this often.
 */
#define QUICK_UP_MS 2000
#define QUICK_EVERY_MS 5000

#define LOG(s, lvl, ...)                                                       \
	log_msg((lvl), (s)->a->name, cur_name(s), __VA_ARGS__)

/* The folder worked on, for log lines; NULL while the folders change. */
static const char *
cur_name(const struct session *s)
{
	return s->cur ? mailbox_name(s->cur) : NULL;
}

static void session_enter(struct session *s, enum session_state st,
    const char *why);
static void session_fail(struct session *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void session_settle(struct session *s);
static void session_finish(struct session *s);
static void session_connect(struct session *s);
static void session_synced(struct session *s);
static void session_wait(struct session *s);

/* ---- timers and states ------------------------------------------------- */

static void timer_cb(uv_timer_t *t);

/* Makes mb the folder worked on (log lines, the connection's). */
static void
session_use(struct session *s, struct mailbox *mb)
{
	s->cur = mb;
	conn_set_folder(s->conn, mailbox_name(mb));
}

static void
arm(struct session *s, uint64_t ms)
{
	uv_timer_start(&s->timer, timer_cb, ms, 0);
}

/* Logged in and synced, for `idlefetch status`. */
static bool
state_is_up(const struct session *s)
{
	return schedstate_up(s->state, conn_alive(s->conn), s->selected != NULL,
	    s->cur != NULL && mailbox_status(s->cur)->up);
}

static void
show_state(struct session *s)
{
	for (size_t i = 0; i < watch_count(s->w); i++)
		status_set_state(mailbox_status(watch_at(s->w, i)),
		    schedstate_shown(s->state, conn_state(s->conn)),
		    state_is_up(s));
}

static void close_conn(struct session *s);
static void hand_over(struct session *s);
static void idle_over(void *ud, const struct proto_resp *r);
static void logged_out(void *ud, const struct proto_resp *r);

/*
 * The one way to change state, logged with why: performs the state's entry
 * action (sends IDLE or LOGOUT, closes the connection, arms the timer).
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
	/* Every folder synced and a replacement READY: it takes over now. */
	if ((st == S_IDLE || st == S_POLL_WAIT) && handover_ready(s->ho)) {
		hand_over(s);
		return;
	}
	/* The entry action, last: it may call back into the session. */
	switch (st) {
	case S_IDLE:
		conn_idle(s->conn, rounds_idle_ms(s->rounds, s->w), idle_over, s);
		break;
	case S_POLL_WAIT:
		arm(s, rounds_poll_wait_ms(s->rounds, s->w));
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

/* ---- connection teardown --------------------------------------------------- */

/* No folder has disk work in flight. */
static bool
quiet(const struct session *s)
{
	for (size_t i = 0; i < watch_count(s->w); i++)
		if (!mailbox_quiet(watch_at(s->w, i)))
			return false;
	return true;
}

/* The folders let go of the connection: on the next one, all starts over. */
static void
forget_conn(struct session *s)
{
	for (size_t i = 0; i < watch_count(s->w); i++)
		mailbox_detach(watch_at(s->w, i));
	s->selected = NULL;
	watch_set_notify(s->w, false);
	rounds_reset(s->rounds);
	s->back_to_first = false;
	discovery_reset(s->disc);
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
	unsigned retry = conn_take_retry_ms(s->conn), delay;

	/* An idle session the server ended (BYE): nothing to wait for. */
	if (s->quick && retry == 0) {
		s->quick = false;
		s->quick_at = uv_now(s->loop);
		LOG(s, LOGL_INFO, "reconnecting at once");
		session_enter(s, S_BACKOFF, "the server ended the session");
		arm(s, 0);
		return;
	}
	s->quick = false;
	delay = backoff_next(s->backoff, uv_now(s->loop), retry);
	LOG(s, LOGL_INFO, "reconnecting in %.1f s", delay / 1000.0);
	session_enter(s, S_BACKOFF, "the connection failed");
	arm(s, delay);
}

static bool take_spare(struct session *s);

static void
session_finish(struct session *s)
{
	bool ok;

	handover_drop(s->ho);
	/* Files still being removed: the session is done only after. */
	if (!quiet(s)) {
		s->finish_when_idle = true;
		return;
	}
	s->finish_when_idle = false;
	/* A daemon's session ends unasked only when it cannot go on. */
	if (!s->stopping && !s->o.once)
		for (size_t i = 0; i < watch_count(s->w); i++) {
			mailbox_status(watch_at(s->w, i))->gave_up = true;
			status_changed(mailbox_status(watch_at(s->w, i)));
		}
	session_enter(s, S_DONE, "the session is over");
	ok = s->ok && !s->fatal_err;
	for (size_t i = 0; i < watch_count(s->w); i++)
		if (!mailbox_dead(watch_at(s->w, i)) &&
		    !mailbox_sync_ok(watch_at(s->w, i)))
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
	for (size_t i = 0; i < watch_count(s->w); i++)
		busy |= !mailbox_settle(watch_at(s->w, i));
	if (busy)
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
	for (size_t i = 0; i < watch_count(s->w); i++)
		if (!mailbox_dead(watch_at(s->w, i)))
			status_error(mailbox_status(watch_at(s->w, i)), why);
	if (err == IDLEFETCH_EAUTH) {
		if (!s->auth_logged)
			LOG(s, LOGL_ERROR, "%s", why);
		s->auth_logged = true;
		backoff_longest(s->backoff);
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
folder_skip(struct session *s, struct mailbox *mb, const char *why)
{
	s->selected = NULL;
	if (watch_usable_besides(s->w, mb) == 0) {
		session_fail(s, IDLEFETCH_EPROTO, "%s", why);
		return;
	}
	watch_skip(s->w, mb);
	s->ok = false;
	LOG(s, LOGL_ERROR, "%s; trying it again at the next connection",
	    why);
	status_error(mailbox_status(mb), why);
	session_synced(s);
}

/* Syncs mb: SELECTed by its mailbox, or listed again when it is already. */
static void
sync_folder(struct session *s, struct mailbox *mb)
{
	watch_set_pending(s->w, mb, false);
	session_use(s, mb);
	session_enter(s, S_SYNC, "the folder has news");
	if (mb == s->selected) {
		mailbox_again(mb);
		return;
	}
	if (s->selected != NULL)
		mailbox_detach(s->selected);
	s->selected = mb;
	mailbox_select(mb, s->conn);
}

/* ---- folders in turn ---------------------------------------------------------- */

/* NOTIFY (RFC 5465): one connection told of every folder (rounds.h). */
static void
send_notify(struct session *s, bool again)
{
	rounds_notify(s->rounds, s->w, again, cur_name(s));
	session_enter(s, S_NOTIFY, "asking to be told of every folder");
}

/* folders = *: lists the subscribed folders (discover.h). */
static void
send_discover(struct session *s, bool login)
{
	rounds_listing(s->rounds);
	discovery_start(s->disc, s->conn, login, cur_name(s));
	session_enter(s, S_DISCOVER, "listing the subscribed folders");
}

static void logged_in_go(struct session *s);
static void poll_status(struct session *s);
static void folder_news(struct session *s, const struct proto_resp *r);

/* The subscribed folders are listed: the owner may take them. */
static void
discovered(void *ud, const struct proto_resp *r, const char *const *names,
    size_t n)
{
	struct session *s = ud;
	bool login = discovery_at_login(s->disc);

	if (names == NULL)
		LOG(s, login ? LOGL_WARN : LOGL_DEBUG,
		    "cannot list the subscribed folders (%s); fetching the "
		    "%zu folder(s) known so far",
		    r->text, watch_count(s->w));
	else
		s->o.listed(s, s->o.ud, names, n);
	if (s->stopping) {
		session_enter(s, S_LOGOUT, "stopping");
		return;
	}
	if (login)
		logged_in_go(s);
	else if (watch_polls_others(s->w))
		poll_status(s);
	else
		session_synced(s);
}

/* Logged in: every folder is synced once, then the connection waits. */
static void
logged_in(struct session *s)
{
	gate_leave(s->o.gate, s->gate_w);
	s->ok = true;
	watch_login(s->w);
	rounds_login(s->rounds, s->conn);
	if (s->o.listed && !s->stopping) {
		send_discover(s, true);
		return;
	}
	logged_in_go(s);
}

static void
logged_in_go(struct session *s)
{
	if (watch_count(s->w) > 1 && !s->split_asked && s->o.split &&
	    !s->stopping && !s->o.once && !(conn_caps(s->conn) & CAP_NOTIFY) &&
	    s->a->idle && (conn_caps(s->conn) & CAP_IDLE) &&
	    !mailbox_dead(watch_at(s->w, 0))) {
		s->split_asked = true;
		s->o.split(s, s->o.ud);
	}
	if ((watch_live(s->w) > 1 || s->o.listed) &&
	    (conn_caps(s->conn) & CAP_NOTIFY) && s->a->idle && !s->o.once) {
		send_notify(s, false);
		return;
	}
	session_synced(s);
}

/* Asks every folder but the selected one for its UIDNEXT. */
static void
poll_status(struct session *s)
{
	if (rounds_poll(s->rounds, s->w, s->selected, cur_name(s)) == 0) {
		session_synced(s);
		return;
	}
	session_enter(s, S_STATUS, "asking the other folders");
}

/* New mail elsewhere while the connection IDLEs: the wait is over. */
static void
wake_idle(struct session *s)
{
	if (s->state == S_IDLE && conn_state(s->conn) == CONN_IDLE)
		conn_idle_done(s->conn);
}

/* News of a folder, from NOTIFY or from polling it with STATUS. */
static void
folder_news(struct session *s, const struct proto_resp *r)
{
	if (rounds_news(s->rounds, s->w, r, s->selected, cur_name(s)))
		wake_idle(s);
}

/* A STATUS line of a round (rounds.h). */
static void
status_line(void *ud, const struct proto_resp *r)
{
	folder_news(ud, r);
}

/* A STATUS round or NOTIFY SET is over: the folder with news next. */
static void
rounds_over(void *ud)
{
	session_synced(ud);
}

/*
 * Out of IDLE or a poll's wait: the selected folder is listed again (new
 * mail, or a refresh), the others asked with STATUS when their poll is due.
 */
static void
woke(struct session *s)
{
	if (s->selected && watch_usable(s->w, s->selected))
		watch_set_pending(s->w, s->selected, true);
	switch (rounds_due(s->rounds, s->w)) {
	case ROUNDS_LIST:
		send_discover(s, false); /* then the STATUS round */
		return;
	case ROUNDS_STATUS:
		poll_status(s);
		return;
	case ROUNDS_NONE:
		session_synced(s);
		return;
	}
}

/* Next: the folder with news, NOTIFY set again, or the wait. */
static void
session_synced(struct session *s)
{
	struct mailbox *next;

	if (s->stopping) {
		session_enter(s, S_LOGOUT, "stopping");
		return;
	}
	next = watch_next(s->w, s->selected);
	if (next && !mailbox_prepared(next)) {
		/* Found on the server since: its Maildir and state first. */
		session_use(s, next);
		session_enter(s, S_PREPARE, "a new folder");
		mailbox_prepare(next);
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
	if (rounds_take_renotify(s->rounds)) {
		send_notify(s, true);
		return;
	}
	session_wait(s);
}

/*
 * Every folder is synced: wait with a folder selected. Without NOTIFY,
 * IDLE tells only of the selected folder: wait on the first one (INBOX,
 * as a rule), and ask the others with STATUS. A folder the server would
 * not open left none selected: select the first that opens.
 */
static void
session_wait(struct session *s)
{
	bool idles = !watch_notify(s->w) && s->a->idle &&
	    (conn_caps(s->conn) & CAP_IDLE);

	for (size_t i = 0; i < watch_count(s->w); i++) {
		struct mailbox *first = watch_at(s->w, i);

		if (!watch_usable(s->w, first))
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
list_news(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	(void)r;
	if (rounds_list_news(s->rounds, s->w))
		wake_idle(s);
}

/* The selected folder has more messages: fetch them, now or after. */
static void
exists(struct session *s)
{
	if (s->state == S_IDLE && conn_state(s->conn) == CONN_IDLE) {
		metrics_news(s->a->name, mailbox_name(s->selected));
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
	if ((r->has & HAS_OVERFLOW) && watch_notify(s->w)) {
		rounds_overflow(s->rounds, s->w, cur_name(s));
		wake_idle(s);
	}
	if (s->selected != NULL && mailbox_untagged(s->selected, r))
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
	/* A replacement is READY: it lists the folder instead. */
	if (handover_ready(s->ho)) {
		hand_over(s);
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
	struct session *s = ud;

	s->up_at = uv_now(s->loop);
	if (!s->o.once)
		handover_plan(s->ho);
	logged_in(s);
}

static void
on_failed(void *ud, int err, bool final, const char *why)
{
	struct session *s = ud;

	if (final)
		s->fatal_err = true;
	/*
	 * The server ended a session that was up and idle (a shutdown, an
	 * expired token): connecting again at once loses nothing; a server
	 * that ends each session soon after login, or keeps doing so, gets
	 * the usual waits.
	 */
	if (!final && s->state == S_IDLE && conn_bye(s->conn) != NULL &&
	    uv_now(s->loop) - s->up_at >= QUICK_UP_MS &&
	    (s->quick_at == 0 ||
		uv_now(s->loop) - s->quick_at >= QUICK_EVERY_MS))
		s->quick = true;
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

	if (s->stopping && s->state == S_SYNC && s->selected != NULL &&
	    mailbox_may_close(s->selected)) {
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
	uv_timer_stop(&s->timer);
	forget_conn(s);
	handover_swap(s->ho);
	s->conn = handover_conn(s->ho);
	conn_set_folder(s->conn, cur_name(s));
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
	s->quick = false;
	conn_set_folder(s->conn, cur_name(s));
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
 * session hands over now; else once they are (session_enter), or, the
 * old connection gone, once what it brought is committed (session_settle).
 */
static void
spare_ready(void *ud)
{
	struct session *s = ud;

	if (s->stopping) {
		handover_drop(s->ho);
		return;
	}
	if (s->state == S_IDLE)
		conn_idle_done(s->conn); /* then idle_over() hands over */
	else if (s->state == S_POLL_WAIT)
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
	for (size_t i = 0; i < watch_count(s->w); i++)
		if (!mailbox_dead(watch_at(s->w, i))) {
			session_use(s, watch_at(s->w, i));
			break;
		}
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
		watch_set_pending(s->w, m, false);
		if (watch_live(s->w) == 0) {
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
	if (watch_index(s->w, s->cur) + 1 < watch_count(s->w)) {
		session_use(s, watch_at(s->w, watch_index(s->w, s->cur) + 1));
		mailbox_prepare(s->cur);
		return;
	}
	session_connect(s);
}

static void
on_synced(void *ud, struct mailbox *m)
{
	struct session *s = ud;

	backoff_synced(s->backoff, uv_now(s->loop));
	s->auth_logged = false;
	watch_synced(s->w, m);
	session_synced(s);
}

static void
on_refused(void *ud, struct mailbox *m, const char *why)
{
	struct session *s = ud;

	folder_skip(s, m, why);
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

/* ---- public ---------------------------------------------------------------------- */

struct session *
session_new(uv_loop_t *loop, const struct session_opts *o)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->loop = loop;
	s->o = *o;
	s->a = o->acct;
	s->fs = folderset_new(loop, &(struct folderset_opts){ .acct = s->a,
		.state_dir = o->state_dir,
		.ops = &mailbox_ops,
		.ud = s });
	s->w = watch_new();
	for (size_t i = 0; i < o->nfolders; i++)
		watch_add(s->w, folderset_mailbox(s->fs, o->folders[i],
				    &o->status[i]),
		    false);
	s->cur = watch_at(s->w, 0);
	s->ho = handover_new(loop, &(struct conn_opts){ .acct = s->a,
		.ssl_ctx = o->ssl_ctx,
		.oauth = o->oauth,
		.ops = &conn_ops,
		.ud = s }, o->gate, &handover_ops);
	s->conn = handover_conn(s->ho);
	conn_set_folder(s->conn, mailbox_name(s->cur));
	s->rounds = rounds_new(loop, &(struct rounds_opts){ .acct = s->a,
		.lists = o->listed != NULL,
		.over = rounds_over,
		.line = status_line,
		.ud = s });
	s->disc = discovery_new(loop, &(struct discovery_opts){ .acct = s->a,
		.state_dir = o->state_dir,
		.done = discovered,
		.news = list_news,
		.ud = s });
	s->backoff = backoff_new();
	s->gate_w = gate_waiter_new(gate_open, s);
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	s->state = S_PREPARE;
	for (size_t i = 0; i < watch_count(s->w); i++)
		status_set_state(mailbox_status(watch_at(s->w, i)),
		    schedstate_name(S_PREPARE), false);
	return s;
}

void
session_start(struct session *s)
{
	session_use(s, watch_at(s->w, 0));
	mailbox_prepare(s->cur);
}

void
session_keep(struct session *s, size_t n)
{
	if (n == 0 || n > watch_count(s->w) || s->selected != NULL)
		fatal("session_keep(%zu) of %zu folders", n,
		    watch_count(s->w));
	if (watch_index(s->w, s->cur) >= n)
		s->cur = NULL; /* its mailbox is released */
	watch_keep(s->w, n);
	if (s->cur == NULL)
		session_use(s, watch_at(s->w, 0));
}

void
session_set_folders(struct session *s, const char *const *names, size_t n,
    struct status_rec *recs)
{
	struct watch *w, *old = s->w;
	struct mailbox *cur = s->cur, *sel = s->selected;
	bool added, cur_kept, sel_kept = false;

	w = folderset_change(s->fs, old, names, n, recs, !s->stopping,
	    &s->cur, &added);
	cur_kept = s->cur == NULL;
	for (size_t i = 0; i < n; i++)
		sel_kept |= sel != NULL && watch_at(w, i) == sel;
	s->w = w;
	s->cur = cur_kept ? cur : watch_at(w, 0);
	s->selected = sel_kept ? sel : NULL;
	watch_free(old); /* releases the folders gone */
	session_use(s, s->cur);
	/* Watching other folders now: NOTIFY SET again, once synced. */
	if (conn_alive(s->conn) && !discovery_at_login(s->disc) &&
	    (conn_caps(s->conn) & CAP_NOTIFY) && s->a->idle && !s->o.once &&
	    (watch_notify(w) || added))
		rounds_renotify(s->rounds);
	show_state(s);
}

void
session_stop(struct session *s)
{
	if (s->stopping || s->state == S_DONE)
		return;
	s->stopping = true;
	for (size_t i = 0; i < watch_count(s->w); i++)
		mailbox_stop(watch_at(s->w, i));
	switch (s->state) {
	case S_PREPARE:
		break; /* the job's completion finishes */
	case S_QUEUED:
		gate_cancel(s->o.gate, s->gate_w);
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
		if (s->selected == NULL || mailbox_may_close(s->selected)) {
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
	enum session_activity a = schedstate_activity(s->state);

	for (size_t i = 0; i < watch_count(s->w); i++)
		k[mailbox_status(watch_at(s->w, i))->gave_up ? SESSION_STOPPED :
							     a]++;
}

static void
timer_close_cb(uv_handle_t *h)
{
	struct session *s = h->data;

	discovery_free(s->disc);
	rounds_free(s->rounds);
	folderset_free(s->fs);
	backoff_free(s->backoff);
	gate_waiter_free(s->o.gate, s->gate_w);
	free(s);
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	if (!quiet(s))
		fatal("session_free with disk work in flight");
	gate_cancel(s->o.gate, s->gate_w);
	close_conn(s);
	watch_free(s->w);
	handover_free(s->ho);
	uv_close((uv_handle_t *)&s->timer, timer_close_cb);
}
