/*
 * handover: the account's connection and its replacement (see
 * idlefetch/handover.h). Each connection's callbacks come here first with
 * its hand, which says whose they are: the owner's connection's go on to
 * the owner, the replacement's and the old one's stay here.
 */
#include <stdlib.h>

#include "idlefetch/gate.h"
#include "idlefetch/handover.h"
#include "idlefetch/log.h"
#include "idlefetch/oauth.h"
#include "idlefetch/util.h"

struct hand {
	struct handover *h;
	struct conn *c;
};

struct handover {
	uv_loop_t *loop;
	struct conn_opts o; /* ops, ud: the owner's */
	struct gate *gate;
	const struct handover_ops *hops;
	uv_timer_t timer; /* when the replacement starts */
	struct hand *cur; /* the owner's connection */
	struct hand *spare; /* the replacement: logging in, or READY */
	bool spare_ready;
	struct gate_waiter *gw; /* the replacement's login slot */
	struct hand *old; /* replaced, saying LOGOUT */
};

#define LOG(h, lvl, ...) log_msg((lvl), (h)->o.acct->name, NULL, __VA_ARGS__)

static const struct conn_ops hand_ops;

static struct hand *
hand_new(struct handover *h)
{
	struct hand *d = xcalloc(1, sizeof(*d));
	struct conn_opts o = h->o;

	o.ops = &hand_ops;
	o.ud = d;
	d->h = h;
	d->c = conn_new(h->loop, &o);
	return d;
}

/* Closes it at once (no callback after); also from its own callbacks. */
static void
hand_free(struct hand *d)
{
	if (d == NULL)
		return;
	conn_free(d->c);
	free(d);
}

/* The replaced connection said LOGOUT (or closed): it is gone. */
static void
retired(void *ud, const struct proto_resp *r)
{
	struct hand *d = ud;

	(void)r;
	if (d->h->old == d)
		d->h->old = NULL;
	hand_free(d);
}

void
handover_drop(struct handover *h)
{
	gate_cancel(h->gate, h->gw);
	gate_leave(h->gate, h->gw);
	hand_free(h->spare);
	h->spare = NULL;
	h->spare_ready = false;
}

static void
spare_failed(struct handover *h, const char *why)
{
	LOG(h, LOGL_WARN,
	    "the replacement connection failed (%s); the old one goes on "
	    "until it ends",
	    why);
	handover_drop(h);
}

static void
spare_open(struct handover *h)
{
	int r = conn_open(h->spare->c);

	if (r < 0)
		spare_failed(h, err_str(r));
}

/* A login slot became the replacement's, at the gate. */
static void
gate_open(void *ud)
{
	struct handover *h = ud;

	if (h->spare != NULL)
		spare_open(h);
}

/* The token runs out soon: a second connection logs in with a new one. */
static void
timer_cb(uv_timer_t *t)
{
	struct handover *h = t->data;

	if (h->spare != NULL || !conn_alive(h->cur->c) ||
	    !h->hops->may_start(h->o.ud))
		return;
	LOG(h, LOGL_INFO, "replacing the connection before its token expires");
	h->spare = hand_new(h);
	if (gate_enter(h->gate, h->gw))
		spare_open(h);
}

static void
spare_logged_in(struct handover *h)
{
	gate_leave(h->gate, h->gw);
	LOG(h, LOGL_DEBUG, "the replacement connection is logged in");
	h->spare_ready = true;
	h->hops->ready(h->o.ud);
}

/* ---- the connections' callbacks ------------------------------------------ */

static void
hand_ready(void *ud)
{
	struct hand *d = ud;
	struct handover *h = d->h;

	if (d == h->spare) {
		spare_logged_in(h);
	} else if (d == h->cur) {
		gate_leave(h->gate, h->gw); /* a replacement that took over */
		h->o.ops->ready(h->o.ud);
	}
}

static void
hand_failed(void *ud, int err, bool final, const char *why)
{
	struct hand *d = ud;
	struct handover *h = d->h;

	if (d == h->spare) {
		spare_failed(h, why);
	} else if (d == h->old) {
		retired(d, NULL);
	} else if (d == h->cur) {
		gate_leave(h->gate, h->gw);
		h->o.ops->failed(h->o.ud, err, final, why);
	}
}

/* What the replacement or the old one hears is the owner's connection's too. */
static void
hand_untagged(void *ud, const struct proto_resp *r)
{
	struct hand *d = ud;

	if (d == d->h->cur)
		d->h->o.ops->untagged(d->h->o.ud, r);
}

static void
hand_read(void *ud)
{
	struct hand *d = ud;

	if (d == d->h->cur)
		d->h->o.ops->read(d->h->o.ud);
}

static void
hand_changed(void *ud)
{
	struct hand *d = ud;

	if (d == d->h->cur)
		d->h->o.ops->changed(d->h->o.ud);
}

static const struct conn_ops hand_ops = {
	.ready = hand_ready,
	.failed = hand_failed,
	.untagged = hand_untagged,
	.read = hand_read,
	.changed = hand_changed,
};

/* ---- public ---------------------------------------------------------------- */

struct handover *
handover_new(uv_loop_t *loop, const struct conn_opts *o, struct gate *gate,
    const struct handover_ops *hops)
{
	struct handover *h = xcalloc(1, sizeof(*h));

	h->loop = loop;
	h->o = *o;
	h->gate = gate;
	h->hops = hops;
	h->gw = gate_waiter_new(gate_open, h);
	uv_timer_init(loop, &h->timer);
	h->timer.data = h;
	h->cur = hand_new(h);
	return h;
}

static void
close_cb(uv_handle_t *t)
{
	free(t->data);
}

void
handover_free(struct handover *h)
{
	if (h == NULL)
		return;
	handover_drop(h);
	gate_waiter_free(h->gate, h->gw);
	hand_free(h->old);
	hand_free(h->cur);
	uv_close((uv_handle_t *)&h->timer, close_cb);
}

struct conn *
handover_conn(const struct handover *h)
{
	return h->cur->c;
}

void
handover_plan(struct handover *h)
{
	uint64_t at, now = uv_now(h->loop);

	if (h->o.oauth == NULL)
		return;
	at = oauth_renew_at(h->o.oauth);
	if (at != 0)
		uv_timer_start(&h->timer, timer_cb, at > now ? at - now : 0, 0);
}

void
handover_cancel(struct handover *h)
{
	uv_timer_stop(&h->timer);
}

bool
handover_ready(const struct handover *h)
{
	return h->spare_ready;
}

void
handover_swap(struct handover *h)
{
	if (!h->spare_ready)
		fatal("handover_swap without a replacement logged in");
	LOG(h, LOGL_INFO, "the new connection takes over; the old one logs out");
	uv_timer_stop(&h->timer);
	hand_free(h->old); /* still saying LOGOUT: cut */
	h->old = h->cur;
	h->cur = h->spare;
	h->spare = NULL;
	h->spare_ready = false;
	conn_logout(h->old->c, retired, h->old);
}

bool
handover_take(struct handover *h, bool *logged_in)
{
	if (h->spare == NULL || conn_state(h->spare->c) == CONN_CLOSED) {
		handover_drop(h);
		return false;
	}
	LOG(h, LOGL_INFO, "going on with the replacement connection");
	uv_timer_stop(&h->timer);
	hand_free(h->cur);
	h->cur = h->spare;
	h->spare = NULL;
	*logged_in = h->spare_ready;
	h->spare_ready = false;
	return true;
}
