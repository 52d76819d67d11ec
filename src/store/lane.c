/*
 * lane: a message stream's disk work, in order, on the threadpool (see
 * idlefetch/lane.h).
 */
#include <stdlib.h>
#include <string.h>

#include "idlefetch/lane.h"
#include "idlefetch/util.h"

struct dop {
	struct dop *next;
	bool discard; /* else write buf */
	const char *maildir; /* the lane's when queued */
	struct maildir_file f; /* a copy: fd, name, msgno */
	char *buf;
	size_t len;
	uint64_t seq;
	int err;
};

struct lane {
	uv_loop_t *loop;
	const char *maildir; /* borrowed; see lane_init() */
	const struct lane_ops *ops;
	void *ud;
	uv_work_t work;
	struct dop *head, *tail; /* queued */
	struct dop *cur; /* in flight: a list, taken whole */
	size_t bytes; /* queued and in flight */
	uint64_t enq_seq, done_seq; /* of the last queued / done operation */
	unsigned failed_msgno; /* first message a write failed for; 0 none */
	int err; /* ...and why */
	bool paused; /* the owner was asked to stop reading */
};

size_t
lane_size(void)
{
	return sizeof(struct lane);
}

struct lane *
lane_init(void *mem, uv_loop_t *loop, const char *maildir,
    const struct lane_ops *ops, void *ud)
{
	struct lane *l = mem;

	memset(l, 0, sizeof(*l));
	l->loop = loop;
	l->maildir = maildir;
	l->ops = ops;
	l->ud = ud;
	return l;
}

static void
work_cb(uv_work_t *w)
{
	struct lane *l = w->data;

	for (struct dop *d = l->cur; d; d = d->next) {
		if (d->discard)
			maildir_discard(d->maildir, &d->f);
		else
			d->err = maildir_append(&d->f, d->buf, d->len);
	}
}

static void after_cb(uv_work_t *w, int status);

static void
kick(struct lane *l)
{
	int r;

	if (l->cur != NULL || l->head == NULL)
		return;
	/* Everything queued goes in one trip: small messages come in runs. */
	l->cur = l->head;
	l->head = l->tail = NULL;
	l->work.data = l;
	r = uv_queue_work(l->loop, &l->work, work_cb, after_cb);
	if (r < 0)
		fatal("uv_queue_work: %s", uv_strerror(r));
}

static void
push(struct lane *l, struct dop *d)
{
	d->seq = ++l->enq_seq;
	if (l->tail)
		l->tail->next = d;
	else
		l->head = d;
	l->tail = d;
	l->bytes += d->len;
	if (!l->paused && l->bytes > LANE_HIGH) {
		l->paused = true;
		l->ops->pause(l->ud, true);
	}
	kick(l);
}

static void
after_cb(uv_work_t *w, int status)
{
	struct lane *l = w->data;
	struct dop *d = l->cur, *next;
	int err = 0;

	(void)status;
	l->cur = NULL;
	for (; d; d = next) {
		next = d->next;
		l->bytes -= d->len;
		l->done_seq = d->seq;
		if (d->err < 0 && l->failed_msgno == 0) {
			l->failed_msgno = d->f.msgno;
			l->err = d->err;
			err = d->err;
		}
		free(d->buf);
		free(d);
	}
	kick(l);
	if (l->paused && l->bytes <= LANE_LOW) {
		l->paused = false;
		l->ops->pause(l->ud, false);
	}
	l->ops->drained(l->ud, err);
}

void
lane_write(struct lane *l, const struct maildir_file *f, const char *p,
    size_t n)
{
	struct dop *d;

	if (n == 0)
		return;
	d = xcalloc(1, sizeof(*d));
	d->maildir = l->maildir;
	d->f = *f;
	d->buf = xmalloc(n);
	memcpy(d->buf, p, n);
	d->len = n;
	push(l, d);
}

void
lane_discard(struct lane *l, const struct maildir_file *f)
{
	struct dop *d = xcalloc(1, sizeof(*d));

	d->discard = true;
	d->maildir = l->maildir;
	d->f = *f;
	push(l, d);
}

bool
lane_idle(const struct lane *l)
{
	return l->cur == NULL && l->head == NULL;
}

void
lane_reset(struct lane *l)
{
	if (!lane_idle(l))
		fatal("lane_reset with disk work queued");
	l->failed_msgno = 0;
	l->err = 0;
	l->paused = false;
}

size_t
lane_bytes(const struct lane *l)
{
	return l->bytes;
}

uint64_t
lane_enq_seq(const struct lane *l)
{
	return l->enq_seq;
}

uint64_t
lane_done_seq(const struct lane *l)
{
	return l->done_seq;
}

unsigned
lane_failed_msgno(const struct lane *l)
{
	return l->failed_msgno;
}
