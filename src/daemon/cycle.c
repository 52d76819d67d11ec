/*
 * cycle: the work of one account's logged-in connection (cycle.h). It
 * owns struct cycle: its state and cycle_enter(), the one place that
 * changes it; the STATUS/NOTIFY/listing rounds and the discovery of
 * folders = *; the poll's timer. It may call conn (IDLE, capabilities),
 * cursor (which folder next; the folders belong to the session), watch,
 * mailbox (untagged responses of the selected folder), rounds, discover
 * and metrics; it reports to the session only through cycle_ops.
 */
#include <stdlib.h>

#include "idlefetch/cycle.h"
#include "idlefetch/discover.h"
#include "idlefetch/log.h"
#include "idlefetch/metrics.h"
#include "idlefetch/rounds.h"
#include "idlefetch/util.h"
#include "idlefetch/watch.h"

struct cycle {
	uv_loop_t *loop;
	struct cycle_opts o;
	enum session_state state;
	struct conn *conn; /* logged in; NULL between connections */
	struct rounds *rounds; /* STATUS, listing and NOTIFY rounds */
	struct discovery *disc; /* folders = * only: the subscribed folders */
	uv_timer_t *poll; /* POLL_WAIT; made at the first poll's wait */
	bool split_asked; /* the session was offered the folders to spread */
	bool stopping;
};

#define LOG(cy, lvl, ...)                                                      \
	log_msg((lvl), (cy)->o.acct->name, cursor_name((cy)->o.cursor),         \
	    __VA_ARGS__)

static struct watch *
folders(const struct cycle *cy)
{
	return cursor_watch(cy->o.cursor);
}

static void idle_over(void *ud, const struct proto_resp *r);
static void poll_over(uv_timer_t *t);

static void
poll_arm(struct cycle *cy, uint64_t ms)
{
	if (cy->poll == NULL) {
		cy->poll = xcalloc(1, sizeof(*cy->poll));
		uv_timer_init(cy->loop, cy->poll);
		cy->poll->data = cy;
	}
	uv_timer_start(cy->poll, poll_over, ms, 0);
}

/*
 * The one way to change state, logged with why: performs the state's entry
 * action (IDLE through the connection, or the poll's timer), unless the
 * session hands the folders to another connection first.
 */
static void
cycle_enter(struct cycle *cy, enum session_state st, const char *why)
{
	if (cy->state != st)
		LOG(cy, LOGL_DEBUG, "state %s -> %s (%s)",
		    schedstate_name(cy->state), schedstate_name(st), why);
	cy->state = st;
	if (cy->poll != NULL)
		uv_timer_stop(cy->poll);
	cy->o.ops->changed(cy->o.ud);
	if (st != S_IDLE && st != S_POLL_WAIT)
		return;
	/* Every folder synced and a replacement READY: it takes over now. */
	if (cy->o.ops->between(cy->o.ud))
		return;
	if (st == S_IDLE)
		conn_idle(cy->conn, rounds_idle_ms(cy->rounds, folders(cy)),
		    idle_over, cy);
	else
		poll_arm(cy, rounds_poll_wait_ms(cy->rounds, folders(cy)));
}

/* The work is over: the session logs out. */
static void
over(struct cycle *cy, const char *why)
{
	cycle_enter(cy, S_LOGOUT, why);
	cy->o.ops->over(cy->o.ud, why);
}

/* ---- folders in turn ---------------------------------------------------- */

static void
sync_folder(struct cycle *cy)
{
	cycle_enter(cy, S_SYNC, "the folder has news");
	cursor_sync(cy->o.cursor, cy->conn);
}

/* NOTIFY (RFC 5465): one connection told of every folder (rounds.h). */
static void
send_notify(struct cycle *cy, bool again)
{
	rounds_notify(cy->rounds, folders(cy), again,
	    cursor_name(cy->o.cursor));
	cycle_enter(cy, S_NOTIFY, "asking to be told of every folder");
}

/* folders = *: lists the subscribed folders (discover.h). */
static void
send_discover(struct cycle *cy, bool login)
{
	rounds_listing(cy->rounds);
	discovery_start(cy->disc, cy->conn, login, cursor_name(cy->o.cursor));
	cycle_enter(cy, S_DISCOVER, "listing the subscribed folders");
}

/* Every folder is synced: wait with a folder selected (cursor_wait). */
static void
cycle_wait(struct cycle *cy)
{
	bool idles = cy->o.acct->idle && (conn_caps(cy->conn) & CAP_IDLE);

	switch (cursor_wait(cy->o.cursor, idles && !watch_notify(folders(cy)),
	    cy->conn)) {
	case CURSOR_FIRST:
		sync_folder(cy);
		return;
	case CURSOR_NONE:
		cy->o.ops->failed(cy->o.ud, IDLEFETCH_EPROTO,
		    "no folder could be opened");
		return;
	case CURSOR_WAIT:
		break;
	}
	if (idles)
		cycle_enter(cy, S_IDLE, "every folder synced");
	else
		cycle_enter(cy, S_POLL_WAIT, "every folder synced; no IDLE");
}

/* Next: the folder with news, NOTIFY set again, or the wait. */
void
cycle_next(struct cycle *cy)
{
	if (cy->stopping) {
		over(cy, "stopping");
		return;
	}
	switch (cursor_next(cy->o.cursor, cy->conn)) {
	case CURSOR_PREPARE:
		cycle_enter(cy, S_PREPARE, "a new folder");
		mailbox_prepare(cursor_cur(cy->o.cursor));
		return;
	case CURSOR_SYNC:
		sync_folder(cy);
		return;
	case CURSOR_SYNCED:
		break;
	}
	if (cy->o.once)
		over(cy, "single pass done");
	else if (rounds_take_renotify(cy->rounds))
		send_notify(cy, true);
	else
		cycle_wait(cy);
}

/* Asks every folder but the selected one for its UIDNEXT. */
static void
poll_status(struct cycle *cy)
{
	if (rounds_poll(cy->rounds, folders(cy),
		cursor_selected(cy->o.cursor),
		cursor_name(cy->o.cursor)) == 0) {
		cycle_next(cy);
		return;
	}
	cycle_enter(cy, S_STATUS, "asking the other folders");
}

/* After the login and its listing: NOTIFY, or the folders in turn. */
static void
login_go(struct cycle *cy)
{
	struct watch *w = folders(cy);
	unsigned caps = conn_caps(cy->conn);

	if (watch_count(w) > 1 && !cy->split_asked && cy->o.splits &&
	    !cy->stopping && !cy->o.once && !(caps & CAP_NOTIFY) &&
	    cy->o.acct->idle && (caps & CAP_IDLE) &&
	    !mailbox_dead(watch_at(w, 0))) {
		cy->split_asked = true;
		cy->o.ops->split(cy->o.ud);
	}
	if ((watch_live(w) > 1 || cy->o.lists) &&
	    (caps & CAP_NOTIFY) && cy->o.acct->idle && !cy->o.once) {
		send_notify(cy, false);
		return;
	}
	cycle_next(cy);
}

/* The subscribed folders are listed: the session may take them. */
static void
discovered(void *ud, const struct proto_resp *r, const char *const *names,
    size_t n)
{
	struct cycle *cy = ud;
	bool login = discovery_at_login(cy->disc);

	if (names == NULL)
		LOG(cy, login ? LOGL_WARN : LOGL_DEBUG,
		    "cannot list the subscribed folders (%s); fetching the "
		    "%zu folder(s) known so far",
		    r->text, watch_count(folders(cy)));
	else
		cy->o.ops->listed(cy->o.ud, names, n);
	if (cy->stopping)
		over(cy, "stopping");
	else if (login)
		login_go(cy);
	else if (watch_polls_others(folders(cy)))
		poll_status(cy);
	else
		cycle_next(cy);
}

/*
 * Out of IDLE or a poll's wait: the selected folder is listed again (new
 * mail, or a refresh), the others asked with STATUS when their poll is due.
 */
static void
woke(struct cycle *cy)
{
	cursor_woke(cy->o.cursor);
	switch (rounds_due(cy->rounds, folders(cy))) {
	case ROUNDS_LIST:
		send_discover(cy, false); /* then the STATUS round */
		return;
	case ROUNDS_STATUS:
		poll_status(cy);
		return;
	case ROUNDS_NONE:
		cycle_next(cy);
		return;
	}
}

static void
poll_over(uv_timer_t *t)
{
	woke(t->data);
}

/* IDLE's tagged reply: the wait is over. */
static void
idle_over(void *ud, const struct proto_resp *r)
{
	struct cycle *cy = ud;

	if (r == NULL)
		return;
	if (cy->stopping)
		over(cy, "stopping");
	else if (!cy->o.ops->between(cy->o.ud)) /* else the replacement lists */
		woke(cy);
}

/* ---- news ---------------------------------------------------------------- */

/* New mail elsewhere while the connection IDLEs: the wait is over. */
static void
wake_idle(struct cycle *cy)
{
	if (cy->state == S_IDLE && conn_state(cy->conn) == CONN_IDLE)
		conn_idle_done(cy->conn);
}

/* News of a folder, from NOTIFY or from polling it with STATUS. */
static void
folder_news(struct cycle *cy, const struct proto_resp *r)
{
	if (rounds_news(cy->rounds, folders(cy), r,
		cursor_selected(cy->o.cursor), cursor_name(cy->o.cursor)))
		wake_idle(cy);
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
	cycle_next(ud);
}

/* NOTIFY: a folder was created, removed or (un)subscribed. */
static void
list_news(void *ud, const struct proto_resp *r)
{
	struct cycle *cy = ud;

	(void)r;
	if (rounds_list_news(cy->rounds, folders(cy)))
		wake_idle(cy);
}

/* The selected folder has more messages: fetch them, now or after. */
static void
exists(struct cycle *cy)
{
	if (cy->state == S_IDLE && conn_state(cy->conn) == CONN_IDLE) {
		metrics_news(cy->o.acct->name,
		    mailbox_name(cursor_selected(cy->o.cursor)));
		conn_idle_done(cy->conn);
		return;
	}
	if (cy->state == S_POLL_WAIT) {
		woke(cy);
		return;
	}
	/* IDLE not yet accepted: it ends as soon as it is. */
	if (cy->state == S_IDLE)
		conn_idle_done(cy->conn);
}

/*
 * Those of the selected folder go to its mailbox, news of others is the
 * cycle's.
 */
void
cycle_untagged(struct cycle *cy, const struct proto_resp *r)
{
	struct mailbox *sel = cursor_selected(cy->o.cursor);

	if (r->has & HAS_STATUS)
		folder_news(cy, r);
	if ((r->has & HAS_OVERFLOW) && watch_notify(folders(cy))) {
		rounds_overflow(cy->rounds, folders(cy),
		    cursor_name(cy->o.cursor));
		wake_idle(cy);
	}
	if (sel != NULL && mailbox_untagged(sel, r))
		exists(cy);
	if (r->has & HAS_LIST)
		list_news(cy, r);
}

/* ---- the session's ------------------------------------------------------ */

struct cycle *
cycle_new(uv_loop_t *loop, const struct cycle_opts *o)
{
	struct cycle *cy = xcalloc(1, sizeof(*cy));

	cy->loop = loop;
	cy->o = *o;
	cy->state = S_CONNECT;
	cy->rounds = rounds_new(loop, &(struct rounds_opts){ .acct = o->acct,
		.lists = o->lists,
		.over = rounds_over,
		.line = status_line,
		.ud = cy });
	if (o->lists)
		cy->disc = discovery_new(loop,
		    &(struct discovery_opts){ .acct = o->acct,
			.state_dir = o->state_dir,
			.done = discovered,
			.news = list_news,
			.ud = cy });
	return cy;
}

static void
poll_closed(uv_handle_t *h)
{
	free(h);
}

void
cycle_close(struct cycle *cy)
{
	if (cy->poll != NULL)
		uv_close((uv_handle_t *)cy->poll, poll_closed);
	cy->poll = NULL;
}

void
cycle_free(struct cycle *cy)
{
	if (cy == NULL)
		return;
	if (cy->disc != NULL)
		discovery_free(cy->disc);
	rounds_free(cy->rounds);
	free(cy);
}

enum session_state
cycle_state(const struct cycle *cy)
{
	return cy->state;
}

void
cycle_login(struct cycle *cy, struct conn *c)
{
	cy->conn = c;
	watch_login(folders(cy));
	rounds_login(cy->rounds, c);
	if (cy->o.lists && !cy->stopping)
		send_discover(cy, true);
	else
		login_go(cy);
}

void
cycle_forget(struct cycle *cy)
{
	cursor_forget(cy->o.cursor);
	rounds_reset(cy->rounds);
	if (cy->disc != NULL)
		discovery_reset(cy->disc);
	cy->conn = NULL;
	cycle_enter(cy, S_CONNECT, "the connection is gone");
}

void
cycle_folders_changed(struct cycle *cy, struct conn *c, bool added)
{
	/* Watching other folders now: NOTIFY SET again, once synced. */
	if (conn_alive(c) && !(cy->disc && discovery_at_login(cy->disc)) &&
	    (conn_caps(c) & CAP_NOTIFY) && cy->o.acct->idle && !cy->o.once &&
	    (watch_notify(folders(cy)) || added))
		rounds_renotify(cy->rounds);
}

void
cycle_wake(struct cycle *cy)
{
	if (cy->state == S_IDLE)
		conn_idle_done(cy->conn); /* at once, or once IDLE is accepted */
}

bool
cycle_may_close(const struct cycle *cy)
{
	struct mailbox *sel = cursor_selected(cy->o.cursor);

	return cy->state == S_SYNC && sel != NULL && mailbox_may_close(sel);
}

enum cycle_stop
cycle_stop(struct cycle *cy)
{
	struct mailbox *sel = cursor_selected(cy->o.cursor);

	cy->stopping = true;
	switch (cy->state) {
	case S_IDLE:
		conn_idle_done(cy->conn); /* its reply leads to LOGOUT */
		return CYCLE_STOP_LATER;
	case S_POLL_WAIT:
		cycle_enter(cy, S_LOGOUT, "stopping");
		return CYCLE_STOP_LOGOUT;
	case S_SYNC:
		/*
		 * Messages still coming: stop after the one in flight (the
		 * session's on_read) and commit what is complete. Only commits
		 * or after-delivery commands left: the sync ends in LOGOUT.
		 */
		return sel == NULL || mailbox_may_close(sel) ? CYCLE_STOP_CLOSE :
								 CYCLE_STOP_LATER;
	case S_PREPARE: /* the job's completion leads to LOGOUT */
	case S_STATUS:
	case S_DISCOVER:
	case S_LOGOUT:
		return CYCLE_STOP_LATER; /* the tagged reply leads to LOGOUT */
	default:
		return CYCLE_STOP_CLOSE;
	}
}
