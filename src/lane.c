/*
 * lane: the disk work of one session's message stream, done in order on
 * the libuv threadpool so that the event loop never waits on write(): the
 * chunks of message bodies (already CRLF -> LF) and the removal of files
 * that will not be delivered. One trip to the threadpool is in flight at
 * a time and takes everything queued so far, in order, so a file's writes
 * land in order and its removal comes after them.
 *
 * Backpressure: above LANE_HIGH queued bytes the connection stops reading
 * until the queue is down to LANE_LOW, so memory stays bounded whatever
 * the disk does. A batch is committed only once every operation queued
 * before its end is done (sync_pump_commits compares sequence numbers).
 * A failed write marks its message: the commit stops before it.
 */
#include "session_int.h"

#define LANE_HIGH (1024 * 1024)
#define LANE_LOW (256 * 1024)

struct dop {
	struct dop *next;
	bool discard; /* else write buf */
	struct maildir_file f; /* a copy: fd, name, msgno */
	char *buf;
	size_t len;
	uint64_t seq;
	int err;
};

static void
work_cb(uv_work_t *w)
{
	struct session *s = w->data;

	for (struct dop *d = s->lane.cur; d; d = d->next) {
		if (d->discard)
			maildir_discard(s->maildir, &d->f);
		else
			d->err = maildir_append(&d->f, d->buf, d->len);
	}
}

static void after_cb(uv_work_t *w, int status);

static void
kick(struct session *s)
{
	int r;

	if (s->lane.cur != NULL || s->lane.head == NULL)
		return;
	/* Everything queued goes in one trip: small messages come in runs. */
	s->lane.cur = s->lane.head;
	s->lane.head = s->lane.tail = NULL;
	s->lane.work.data = s;
	r = uv_queue_work(s->loop, &s->lane.work, work_cb, after_cb);
	if (r < 0)
		fatal("uv_queue_work: %s", uv_strerror(r));
}

static void
push(struct session *s, struct dop *d)
{
	d->seq = ++s->lane.enq_seq;
	if (s->lane.tail)
		s->lane.tail->next = d;
	else
		s->lane.head = d;
	s->lane.tail = d;
	s->lane.bytes += d->len;
	if (!s->lane.paused && s->lane.bytes > LANE_HIGH && s->tr) {
		s->lane.paused = true;
		transport_pause(s->tr, true);
	}
	kick(s);
}

static void
after_cb(uv_work_t *w, int status)
{
	struct session *s = w->data;
	struct dop *d = s->lane.cur, *next;
	bool failed = false;

	s->lane.cur = NULL;
	for (; d; d = next) {
		next = d->next;
		s->lane.bytes -= d->len;
		s->lane.done_seq = d->seq;
		if (d->err < 0 && s->lane.failed_msgno == 0) {
			s->lane.failed_msgno = d->f.msgno;
			s->lane.err = d->err;
			failed = true;
		}
		free(d->buf);
		free(d);
	}
	kick(s);
	if (s->lane.paused && s->lane.bytes <= LANE_LOW) {
		s->lane.paused = false;
		if (s->tr)
			transport_pause(s->tr, false);
	}
	if (s->finish_when_idle) {
		if (lane_idle(s))
			session_finish(s);
		return;
	}
	if (failed && s->conn_alive) {
		session_fail(s, s->lane.err, "cannot write to %s/tmp: %s",
		    s->maildir, strerror(-s->lane.err));
		return;
	}
	/* A batch may have been waiting for these writes. */
	if (s->conn_alive && s->state == S_SYNC)
		sync_pump(s);
	else
		session_settle(s);
}

void
lane_write(struct session *s, const struct maildir_file *f, const char *p,
    size_t n)
{
	struct dop *d;

	if (n == 0)
		return;
	d = xcalloc(1, sizeof(*d));
	d->f = *f;
	d->buf = xmalloc(n);
	memcpy(d->buf, p, n);
	d->len = n;
	push(s, d);
}

void
lane_discard(struct session *s, const struct maildir_file *f)
{
	struct dop *d = xcalloc(1, sizeof(*d));

	d->discard = true;
	d->f = *f;
	push(s, d);
}

bool
lane_idle(const struct session *s)
{
	return s->lane.cur == NULL && s->lane.head == NULL;
}

/* A new connection: what failed before is no reason to stop now. */
void
lane_reset(struct session *s)
{
	if (!lane_idle(s))
		fatal("lane_reset with disk work queued");
	s->lane.failed_msgno = 0;
	s->lane.err = 0;
	s->lane.paused = false;
}
