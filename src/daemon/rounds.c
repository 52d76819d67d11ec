/*
 * rounds: when the scheduler asks its other folders (STATUS), lists the
 * subscribed ones (folders = *) and sets NOTIFY (rounds.h). It owns struct
 * rounds: the loop time of the last STATUS round and listing, the replies
 * still to come, and whether a listing or NOTIFY SET is asked for again.
 * It may call conn (capabilities), watch (to send STATUS and NOTIFY, and
 * to weigh their news) and metrics (news counted);
 * it reports to the scheduler only through the callbacks of rounds_opts.
 */
#include <stdlib.h>

#include "idlefetch/log.h"
#include "idlefetch/metrics.h"
#include "idlefetch/proto.h"
#include "idlefetch/rounds.h"
#include "idlefetch/util.h"

struct rounds {
	uv_loop_t *loop;
	struct rounds_opts o;
	struct conn *conn; /* logged in; NULL between connections */
	uint64_t polled_at; /* loop time of the last STATUS round */
	uint64_t listed_at; /* loop time of the last listing (folders = *) */
	unsigned status_wait; /* STATUS replies still to come */
	bool relist; /* NOTIFY told of a folder created or removed */
	bool renotify; /* NOTIFY overflowed: set it again before waiting */
	struct watch *notify_w; /* NOTIFY SET sent for these folders */
	const char *folder; /* for log lines, during a round */
};

struct rounds *
rounds_new(uv_loop_t *loop, const struct rounds_opts *o)
{
	struct rounds *r = xcalloc(1, sizeof(*r));

	r->loop = loop;
	r->o = *o;
	return r;
}

void
rounds_free(struct rounds *r)
{
	free(r);
}

void
rounds_login(struct rounds *r, struct conn *c)
{
	r->conn = c;
	r->polled_at = r->listed_at = uv_now(r->loop);
}

void
rounds_reset(struct rounds *r)
{
	r->conn = NULL;
	r->status_wait = 0;
	r->renotify = false;
	r->relist = false;
	r->notify_w = NULL;
}

/*
 * Rounds on timers: the other folders asked with STATUS (every
 * status_interval), the subscribed folders listed (folders = *, every
 * poll_interval).
 */
static bool
any(const struct rounds *r, const struct watch *w)
{
	return watch_polls_others(w) || r->o.lists;
}

/*
 * How often the other folders are asked with STATUS. While the connection
 * IDLEs, a folder without a connection of its own hears of mail only so:
 * status_interval, a cheap round. Without IDLE, the wait is the poll's.
 */
uint64_t
rounds_status_every_ms(const struct rounds *r)
{
	const struct account *a = r->o.acct;
	unsigned every = a->poll_interval;

	if (a->idle && r->conn && (conn_caps(r->conn) & CAP_IDLE) &&
	    a->status_interval > 0 && a->status_interval < every)
		every = a->status_interval;
	return (uint64_t)every * 1000;
}

/* Milliseconds until a round last run at `at`, every `every` ms, is due. */
static uint64_t
due_ms(const struct rounds *r, uint64_t at, uint64_t every)
{
	uint64_t since = uv_now(r->loop) - at;

	return since >= every ? 1 : every - since;
}

/*
 * Milliseconds until the next round is due: new
 * mail in the selected folder wakes the connection in between, and must
 * not push that round back.
 */
static uint64_t
poll_due_ms(const struct rounds *r, const struct watch *w)
{
	uint64_t ms = UINT64_MAX;

	if (watch_polls_others(w))
		ms = due_ms(r, r->polled_at, rounds_status_every_ms(r));
	if (r->o.lists) {
		uint64_t l = due_ms(r, r->listed_at,
		    (uint64_t)r->o.acct->poll_interval * 1000);

		ms = l < ms ? l : ms;
	}
	return ms;
}

/* A round last run at `at` is due (half a second early is on time). */
static bool
round_due(const struct rounds *r, uint64_t at, uint64_t every)
{
	return uv_now(r->loop) - at + 500 >= every;
}

uint64_t
rounds_idle_ms(const struct rounds *r, const struct watch *w)
{
	uint64_t refresh = (uint64_t)r->o.acct->idle_refresh * 1000;

	if (any(r, w) && poll_due_ms(r, w) < refresh)
		return poll_due_ms(r, w);
	return refresh;
}

uint64_t
rounds_poll_wait_ms(const struct rounds *r, const struct watch *w)
{
	return any(r, w) ? poll_due_ms(r, w) :
			   (uint64_t)r->o.acct->poll_interval * 1000;
}

enum rounds_due
rounds_due(const struct rounds *r, const struct watch *w)
{
	if (r->o.lists &&
	    (r->relist ||
		round_due(r, r->listed_at,
		    (uint64_t)r->o.acct->poll_interval * 1000)))
		return ROUNDS_LIST;
	if (watch_polls_others(w) &&
	    round_due(r, r->polled_at, rounds_status_every_ms(r)))
		return ROUNDS_STATUS;
	return ROUNDS_NONE;
}

void
rounds_listing(struct rounds *r)
{
	r->relist = false;
	r->listed_at = uv_now(r->loop);
}

bool
rounds_news(struct rounds *r, struct watch *w, const struct proto_resp *resp,
    const struct mailbox *selected, const char *folder)
{
	bool fresh;
	struct mailbox *mb = watch_news(w, resp, selected, &fresh);

	if (mb == NULL)
		return false;
	metrics_news(r->o.acct->name, mailbox_name(mb));
	if (fresh)
		log_msg(LOGL_DEBUG, r->o.acct->name, folder,
		    "%s has news (UIDNEXT %u)", mailbox_name(mb),
		    resp->status_uidnext);
	return true;
}

bool
rounds_list_news(struct rounds *r, const struct watch *w)
{
	if (!r->o.lists || !watch_notify(w))
		return false;
	r->relist = true;
	return true;
}

void
rounds_overflow(struct rounds *r, struct watch *w, const char *folder)
{
	log_msg(LOGL_WARN, r->o.acct->name, folder,
	    "the server stopped notifying (NOTIFICATIONOVERFLOW); "
	    "syncing every folder and asking again");
	watch_overflow(w);
	r->renotify = true;
}

void
rounds_renotify(struct rounds *r)
{
	r->renotify = true;
}

bool
rounds_take_renotify(struct rounds *r)
{
	bool again = r->renotify;

	r->renotify = false;
	return again;
}

static void
status_done(void *ud, const struct proto_resp *resp)
{
	struct rounds *r = ud;

	if (resp == NULL)
		return;
	if (resp->status != PROTO_OK)
		log_msg(LOGL_DEBUG, r->o.acct->name, r->folder,
		    "STATUS refused: %s", resp->text);
	if (r->status_wait > 0 && --r->status_wait == 0)
		r->o.over(r->o.ud);
}

static void
status_line(void *ud, const struct proto_resp *resp)
{
	struct rounds *r = ud;

	r->o.line(r->o.ud, resp);
}

unsigned
rounds_poll(struct rounds *r, struct watch *w, const struct mailbox *selected,
    const char *folder)
{
	r->polled_at = uv_now(r->loop);
	r->folder = folder;
	r->status_wait =
	    watch_poll(w, r->conn, selected, status_done, status_line, r);
	return r->status_wait;
}

static void
notify_done(void *ud, const struct proto_resp *resp)
{
	struct rounds *r = ud;
	struct watch *w = r->notify_w;

	if (resp == NULL || w == NULL)
		return;
	r->notify_w = NULL;
	if (resp->status == PROTO_OK) {
		watch_set_notify(w, true);
		log_msg(LOGL_INFO, r->o.acct->name, r->folder,
		    "watching %zu folders on one connection (NOTIFY)",
		    watch_live(w));
	} else {
		log_msg(LOGL_WARN, r->o.acct->name, r->folder,
		    "NOTIFY refused (%s); polling the other folders "
		    "with STATUS every %u s",
		    resp->text, (unsigned)(rounds_status_every_ms(r) / 1000));
	}
	r->o.over(r->o.ud);
}

void
rounds_notify(struct rounds *r, struct watch *w, bool again, const char *folder)
{
	r->notify_w = w;
	r->folder = folder;
	watch_send_notify(w, r->conn, again, r->o.lists, notify_done, r);
}
