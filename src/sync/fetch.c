/*
 * fetch: the listing of one folder's sync, its batches and the streaming
 * of their bodies into the lane (fetch.h). It owns the listing (uidlist)
 * and hands the after-action (after.c) what is delivered; it owns the
 * batches, from the FETCH that asks for them to the end of their commit,
 * and the message being streamed. It calls the connection (conn_cmd) to
 * list and send a batch, the lane it was given to write, and maildir to
 * create and convert; it hears of replies through the callbacks it
 * registered with conn_cmd and passes them on to the ones its owner gave.
 * It owns the after-action and hears of the lane's writes (the lane is in
 * the mailbox's memory); it tells the mailbox through fetch_ops. It never
 * changes the mailbox's state nor logs: it returns what happened.
 *
 * A sync lists the UIDs above the saved last_uid, then fetches them in
 * pipelined batches. A batch is committed on the threadpool (sync the
 * files, rename into new/, fsync new/, save state) only after the
 * server's tagged OK, and the server copy is deleted or moved only after
 * that commit. If the connection dies mid-batch, the longest run of
 * received messages in UID order is committed and the rest discarded, so
 * last_uid never passes a message that is not in new/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "idlefetch/after.h"
#include "idlefetch/fetch.h"
#include "idlefetch/header.h"
#include "idlefetch/maildir.h"
#include "idlefetch/recovery.h"
#include "idlefetch/util.h"

#define BATCH_MAX_MSGS 100
#define BATCH_MAX_BYTES (16u * 1024 * 1024)
#define PIPELINE_DEPTH 2

struct batch {
	struct batch *next;
	struct fetch *f;
	conn_done_cb *done; /* the owner's, with ud */
	void *ud;
	uint32_t *uids; /* requested, ascending */
	size_t n;
	struct maildir_file *files; /* received, in arrival order */
	size_t nfiles;
	struct commit_fp *fps; /* what the server said of each, by UID */
	bool complete; /* tagged OK seen */
	uint64_t lane_seq; /* its bodies are on disk once the lane is here */
};

struct fetch {
	struct lane *lane; /* in the mailbox's memory */
	struct after *af; /* NULL: the server copies are kept */
	struct conn *conn; /* the folder is selected on it; NULL: none */
	struct uidlist *ul; /* what the listing found */
	const struct state_rec *st; /* borrowed: what the listing is cut by */
	bool listing; /* its listing's lines are wanted */
	conn_done_cb *list_done; /* the owner's, with list_ud */
	void *list_ud;
	const struct fetch_ops *ops; /* the owner's, with ud */
	void *ud;
	bool want_bodies, want_lines; /* what its owner expects now */
	const char *maildir; /* borrowed */
	uint32_t tag; /* maildir file tag */
	struct batch *bhead, *btail;
	size_t inflight; /* FETCH batches sent, not complete */
	struct batch *job; /* taken for its commit, until it is over */
	bool gap; /* a batch came back short: commit no further */
	uint32_t gap_uid; /* the UID it lacked, to retry only once */
	struct maildir_file cur; /* message being streamed */
	bool streaming; /* a body literal is open */
	bool cur_open; /* ...and it has a tmp/ file */
	bool cur_cr; /* the body so far ended in CR (CRLF cut apart) */
	unsigned next_msgno;
};

/* Body bytes, CRLF made LF, on their way to the lane (the loop's only). */
static struct maildir_writer shared_writer;

static void
batch_free(struct batch *b)
{
	if (b == NULL)
		return;
	free(b->uids);
	free(b->files);
	free(b->fps);
	free(b);
}

/* Up on a connection: what the lane and the after-action report goes on. */
static bool
connected(const struct fetch *f)
{
	return f->conn != NULL && conn_alive(f->conn);
}

static void
lane_paused(void *ud, bool pause)
{
	struct fetch *f = ud;

	if (f->conn != NULL)
		conn_pause(f->conn, pause);
}

static void
lane_drained(void *ud, int err)
{
	struct fetch *f = ud;
	char why[512];

	if (err < 0 && connected(f)) {
		snprintf(why, sizeof(why), "cannot write to %s/tmp: %s",
		    f->maildir, strerror(-err));
		f->ops->failed(f->ud, err, why);
	} else if (connected(f)) {
		f->ops->progress(f->ud); /* a batch may wait for these writes */
	} else {
		f->ops->settled(f->ud);
	}
}

static const struct lane_ops lane_ops = {
	.pause = lane_paused,
	.drained = lane_drained,
};

static void
after_progress(void *ud)
{
	struct fetch *f = ud;

	f->ops->progress(f->ud);
}

static void
after_failed(void *ud, const char *why)
{
	struct fetch *f = ud;

	f->ops->failed(f->ud, IDLEFETCH_EPROTO, why);
}

static const struct after_ops after_ops = {
	.progress = after_progress,
	.failed = after_failed,
};

struct fetch *
fetch_new(uv_loop_t *loop, void *lane, const char *maildir, uint32_t tag,
    enum after_mode after, const char *move_wire,
    const struct fetch_ops *ops, void *ud)
{
	struct fetch *f = xcalloc(1, sizeof(*f));

	f->lane = lane_init(lane, loop, maildir, &lane_ops, f);
	if (after != AFTER_KEEP)
		f->af = after_new(after, move_wire, &after_ops, f);
	f->ops = ops;
	f->ud = ud;
	f->ul = uidlist_new();
	f->maildir = maildir;
	f->tag = tag;
	return f;
}

void
fetch_free(struct fetch *f)
{
	struct batch *b, *next;

	if (f == NULL)
		return;
	for (b = f->bhead; b; b = next) {
		next = b->next;
		for (size_t i = 0; i < b->nfiles; i++)
			maildir_discard(f->maildir, &b->files[i]);
		batch_free(b);
	}
	batch_free(f->job);
	uidlist_free(f->ul);
	after_free(f->af);
	free(f);
}

bool
fetch_may_send(const struct fetch *f)
{
	return !f->gap && f->inflight < PIPELINE_DEPTH;
}

bool
fetch_pending(const struct fetch *f)
{
	return f->bhead != NULL;
}

size_t
fetch_inflight(const struct fetch *f)
{
	return f->inflight;
}

bool
fetch_gap(const struct fetch *f)
{
	return f->gap;
}

void
fetch_restart(struct fetch *f)
{
	f->gap = false;
	uidlist_clear(f->ul);
}

/* A batch's tagged reply: its bodies are all in (or never will be). */
static void
batch_done(void *ud, const struct proto_resp *r)
{
	struct batch *b = ud;
	struct fetch *f = b->f;

	if (r == NULL)
		return; /* the batch is the sync's, freed with it */
	if (r->status == PROTO_OK) {
		b->complete = true;
		b->lane_seq = lane_enq_seq(f->lane);
		f->inflight--;
	}
	b->done(b->ud, r);
}

/* Its bodies come through the connection's sink (fetch_sink_*). */
static void
batch_line(void *ud, const struct proto_resp *r)
{
	(void)ud;
	(void)r;
}

/* Sends the next batch of the listing's UIDs on c. */
static void
fetch_send(struct fetch *f, struct conn *c, conn_done_cb *done, void *ud)
{
	struct batch *b = xcalloc(1, sizeof(*b));
	uint32_t uids[BATCH_MAX_MSGS];
	size_t n, cap;
	char *set;

	n = uidlist_take(f->ul, BATCH_MAX_MSGS, BATCH_MAX_BYTES, uids);
	b->n = n;
	b->uids = xmalloc(n * sizeof(*b->uids));
	memcpy(b->uids, uids, n * sizeof(*b->uids));
	b->files = xmalloc(n * sizeof(*b->files));
	b->fps = xcalloc(n, sizeof(*b->fps));
	b->f = f;
	b->done = done;
	b->ud = ud;
	cap = n * 24 + 1;
	set = xmalloc(cap);
	if (proto_uid_set(set, cap, b->uids, n) < 0)
		fatal("uid set overflow");
	conn_cmd(c, HAS_FETCH, batch_done, batch_line, b,
	    "UID FETCH %s (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")] BODY.PEEK[])",
	    set);
	free(set);
	if (f->btail)
		f->btail->next = b;
	else
		f->bhead = b;
	f->btail = b;
	f->inflight++;
}

/* ---- the listing --------------------------------------------------------- */

static void
list_line(void *ud, const struct proto_resp *r)
{
	struct fetch *f = ud;
	const struct state_rec *st = f->st;

	if (!f->listing || !(r->has & HAS_UID))
		return;
	if (r->uid > st->last_uid) {
		uidlist_add(f->ul, r->uid, r->size);
		return;
	}
	/*
	 * Delivered already but still on the server; left there if a recovery
	 * matched it.
	 */
	if (f->af != NULL && r->uid > st->keep_to && !state_refused(st, r->uid))
		uidlist_add_stale(f->ul, r->uid);
}

static void
list_done(void *ud, const struct proto_resp *r)
{
	struct fetch *f = ud;

	f->listing = false;
	f->list_done(f->list_ud, r);
}

void
fetch_list(struct fetch *f, struct conn *c, uint32_t from,
    const struct state_rec *st, conn_done_cb *done, void *ud)
{
	fetch_restart(f);
	f->st = st;
	f->listing = true;
	f->list_done = done;
	f->list_ud = ud;
	conn_cmd(c, HAS_FETCH, list_done, list_line, f,
	    "UID FETCH %u:* (UID RFC822.SIZE)", from);
}

int
fetch_list_finish(struct fetch *f, bool *more)
{
	return uidlist_finish(f->ul, more);
}

size_t
fetch_count(const struct fetch *f)
{
	return uidlist_count(f->ul);
}

bool
fetch_cut(const struct fetch *f)
{
	return uidlist_cut(f->ul);
}

struct uidlist *
fetch_uidlist(struct fetch *f)
{
	return f->ul;
}

void
fetch_release(struct fetch *f)
{
	uidlist_release(f->ul);
}

bool
fetch_pump(struct fetch *f, struct conn *c, bool stopping,
    conn_done_cb *done, void *ud)
{
	/* Chunks keep each command line well under servers' line limits. */
	if (f->af != NULL) {
		size_t n;
		const uint32_t *stale = uidlist_stale(f->ul, &n);

		after_queue(f->af, c, stale, n);
		after_kick(f->af, c);
	}
	uidlist_stale_done(f->ul);
	while (!stopping && fetch_may_send(f) && uidlist_left(f->ul) > 0)
		fetch_send(f, c, done, ud);
	return f->bhead == NULL && (f->af == NULL || after_idle(f->af)) &&
	    (uidlist_left(f->ul) == 0 || stopping || f->gap);
}

/* ---- commits --------------------------------------------------------------- */

bool
fetch_take(struct fetch *f, bool connected)
{
	struct batch *b = f->bhead;

	if (b == NULL)
		return false;
	if (!b->complete && connected)
		return false;
	/* Its bodies must be written out first (all of it, once cut off). */
	if (lane_done_seq(f->lane) <
	    (b->complete ? b->lane_seq : lane_enq_seq(f->lane)))
		return false;
	f->bhead = b->next;
	if (f->bhead == NULL)
		f->btail = NULL;
	f->job = b;
	return true;
}

static int
cmp_file_uid(const void *x, const void *y)
{
	const struct maildir_file *a = x, *b = y;

	return a->uid < b->uid ? -1 : a->uid > b->uid;
}

/*
 * Decides what of the head batch can be committed: the leading run of
 * requested UIDs that all arrived. A UID missing from a confirmed batch
 * (expunged meanwhile, or a server that skipped it) ends the run too: the
 * rest is discarded and fetched again by the next sync, which lists only
 * what still exists. So last_uid never passes a message that is not in new/.
 */
uint32_t
fetch_plan(struct fetch *f, uint32_t last_uid, struct commit_in *in)
{
	struct batch *b = f->job;
	uint32_t missing = 0;
	size_t k = 0, i;

	if (b->nfiles > 0)
		qsort(b->files, b->nfiles, sizeof(*b->files), cmp_file_uid);
	in->files = b->files;
	in->nfiles = b->nfiles;
	in->fps = b->fps;
	in->commit_uid = last_uid;
	in->ncommit = 0;
	if (f->gap)
		return 0; /* an earlier batch stopped short */
	for (i = 0; i < b->n; i++) {
		if (k == b->nfiles || b->files[k].uid != b->uids[i])
			break;
		if (lane_failed_msgno(f->lane) != 0 &&
		    b->files[k].msgno >= lane_failed_msgno(f->lane))
			break; /* its body did not reach the disk whole */
		in->commit_uid = b->uids[i];
		k++;
	}
	in->ncommit = k;
	if (i < b->n && b->complete) {
		f->gap = true;
		if (f->gap_uid != b->uids[i])
			missing = b->uids[i];
		f->gap_uid = b->uids[i];
	}
	return missing;
}

void
fetch_committed(struct fetch *f, int result, size_t ncommit,
    const struct state_rec *st)
{
	struct conn *c = connected(f) ? f->conn : NULL;
	const struct maildir_file *files = f->job->files;
	uint32_t *uids;
	size_t n = 0;

	/*
	 * The state that records these messages is durable: act on the
	 * server. Not during a recovery: its state is saved at its end, and
	 * leaves on the server what it listed (keep_to). Off the connection
	 * (it closed while the commit ran), nothing is queued: the next
	 * listing finds these UIDs still on the server.
	 */
	if (result >= 0 && !st->recovering && f->af != NULL && c != NULL) {
		uids = xmalloc((ncommit + 1) * sizeof(*uids));
		for (size_t i = 0; i < ncommit; i++)
			if (!state_refused(st, files[i].uid))
				uids[n++] = files[i].uid;
		after_queue(f->af, c, uids, n);
		free(uids);
	}
	batch_free(f->job);
	f->job = NULL;
}

void
fetch_attach(struct fetch *f, struct conn *c)
{
	f->conn = c;
	conn_set_sink(c, &fetch_sink, f);
}

void
fetch_detach(struct fetch *f)
{
	if (f->conn != NULL)
		conn_set_sink(f->conn, NULL, NULL);
	f->conn = NULL;
	if (f->af != NULL)
		after_reset(f->af);
	uidlist_clear(f->ul);
	f->listing = false;
	if (f->cur_open)
		lane_discard(f->lane, &f->cur);
	f->cur_open = false;
	f->streaming = false;
	f->inflight = 0;
}

bool
fetch_streaming(const struct fetch *f)
{
	return f->streaming;
}

void
fetch_expunged(struct fetch *f)
{
	if (f->af != NULL)
		after_expunge_seen(f->af);
}

bool
fetch_again(struct fetch *f, bool stopping)
{
	return f->af != NULL && after_again(f->af, stopping);
}

/* Whether a literal, by the prefix that ends in "{n}\r\n", is a body. */
static bool
fetch_is_body(const char *prefix, size_t len)
{
	const char *end = prefix + len;

	/* prefix ends in "{n}\r\n": look at what precedes the brace. */
	while (end > prefix && end[-1] != '{')
		end--;
	if (end > prefix)
		end--;
	while (end > prefix && end[-1] == ' ')
		end--;
	return !(len < 2 || prefix[0] != '*' || end - prefix < 6 ||
	    (strncasecmp(end - 6, "BODY[]", 6) != 0 &&
		(end - prefix < 6 || strncasecmp(end - 6, "RFC822", 6) != 0)));
}

/*
 * A body begins; wanted: the mailbox fetches now (else, or with no batch,
 * it streams to nowhere). Returns 0, or maildir_create's error.
 */
static int
fetch_body_begin(struct fetch *f, bool wanted)
{
	int r;

	f->streaming = true;
	if (!wanted || f->bhead == NULL)
		return 0; /* streamed to nowhere */
	r = maildir_create(f->maildir, f->tag, &f->cur);
	if (r < 0)
		return r;
	f->cur.msgno = ++f->next_msgno;
	f->cur_open = true;
	f->cur_cr = false;
	return 0;
}

/* A full conversion buffer goes to the lane (which copies it). */
static int
lane_sink(void *ud, const char *p, size_t n)
{
	struct fetch *f = ud;

	lane_write(f->lane, &f->cur, p, n);
	return 0;
}

static int
fetch_body_data(struct fetch *f, const char *p, size_t n)
{
	struct maildir_writer *w = &shared_writer;
	int r;

	if (!f->cur_open)
		return 0;
	/*
	 * One buffer for every connection on the loop: it holds nothing
	 * between two chunks, only the fetch's pending CR does.
	 */
	w->len = 0;
	w->cr = f->cur_cr;
	r = maildir_feed(w, p, n, lane_sink, f);
	if (r == 0 && w->len > 0)
		lane_write(f->lane, &f->cur, w->buf, w->len);
	w->len = 0;
	f->cur_cr = w->cr;
	return r;
}

static void
fetch_body_end(struct fetch *f)
{
	struct maildir_writer *w = &shared_writer;

	f->streaming = false;
	if (!f->cur_open)
		return;
	w->len = 0;
	w->cr = f->cur_cr;
	maildir_convert_end(w);
	lane_write(f->lane, &f->cur, w->buf, w->len);
	w->len = 0;
}

static int
cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

	return a < b ? -1 : a > b;
}

/*
 * The FETCH response r carried the open body: it joins its batch.
 * Returns -1 when no batch asked for its UID (the body is dropped).
 */
static int
fetch_body_done(struct fetch *f, const struct proto_resp *r)
{
	struct batch *b;
	struct commit_fp *fp;

	/*
	 * Servers may interleave the responses of pipelined commands, so the
	 * UID, not the order, says which batch a body belongs to.
	 */
	for (b = f->bhead; b; b = b->next)
		if (!b->complete && (r->has & HAS_UID) &&
		    bsearch(&r->uid, b->uids, b->n, sizeof(*b->uids),
			cmp_u32) != NULL)
			break;
	f->cur_open = false;
	if (b == NULL) {
		lane_discard(f->lane, &f->cur);
		return -1;
	}
	for (size_t i = 0; i < b->nfiles; i++)
		if (b->files[i].uid == r->uid) {
			lane_discard(f->lane, &f->cur);
			return 0;
		}
	f->cur.uid = r->uid;
	fp = &b->fps[b->nfiles];
	fp->uid = r->uid;
	recovery_fingerprint(r, &fp->fp, &fp->key);
	b->files[b->nfiles++] = f->cur;
	return 0;
}

/* ---- the connection's sink ------------------------------------------------ */

/*
 * A literal begins: 1 when it is a body (streamed in; to nowhere unless
 * bodies are expected), 0 when not, or a negative error: the connection
 * must close.
 */
static int
sink_begin(void *ud, const char *prefix, size_t len, uint64_t size)
{
	struct fetch *f = ud;
	char why[512];
	int r;

	(void)size;
	if (!fetch_is_body(prefix, len))
		return 0;
	if (f->cur_open) {
		/*
		 * One FETCH response, one message: a second body would open a
		 * second file while the first is in flight, and which of the
		 * two is the message cannot be known.
		 */
		f->ops->failed(f->ud, IDLEFETCH_EPROTO,
		    "two message bodies in one FETCH response; closing the "
		    "connection");
		return IDLEFETCH_EPROTO;
	}
	r = fetch_body_begin(f, f->want_bodies);
	if (r < 0) {
		snprintf(why, sizeof(why), "cannot create a file in %s/tmp: %s",
		    f->maildir, strerror(-r));
		f->ops->failed(f->ud, r, why);
		return r;
	}
	return 1;
}

static int
sink_data(void *ud, const char *p, size_t n)
{
	return fetch_body_data(ud, p, n);
}

static int
sink_end(void *ud)
{
	fetch_body_end(ud);
	return 0;
}

/*
 * A whole response (pr < 0: it could not be parsed; p[0..n) its text):
 * false when the connection must close.
 */
static bool
sink_unit(void *ud, int pr, const struct proto_resp *r, const char *p,
    size_t n)
{
	struct fetch *f = ud;
	char why[512], line[81];
	size_t k;

	if (f->cur_open) {
		if (pr < 0 || !(r->has & HAS_BODY)) {
			f->ops->failed(f->ud, IDLEFETCH_EPROTO,
			    "cannot parse a FETCH response "
			    "carrying a message; closing the connection");
			return false;
		}
		if (fetch_body_done(f, r) < 0) {
			snprintf(why, sizeof(why),
			    "ignoring a message body the client did not ask "
			    "for (UID %u)",
			    r->uid);
			f->ops->failed(f->ud, 0, why);
		}
		return true;
	}
	if (pr >= 0 || !f->want_lines || !(r->has & HAS_FETCH))
		return true;
	/*
	 * A listing line that cannot be read may be a message: skipping it
	 * would let the last delivered UID pass a message never delivered.
	 * The folder stops here instead, and says why.
	 */
	for (k = 0; k < n && k + 1 < sizeof(line) && p[k] != '\r'; k++)
		line[k] = (p[k] >= 0x20 && p[k] < 0x7f) ? p[k] : '?';
	line[k] = '\0';
	snprintf(why, sizeof(why),
	    "cannot read a line of the message listing ('%s'); "
	    "stopping so that no message is skipped", line);
	f->ops->failed(f->ud, IDLEFETCH_EPROTO, why);
	return false;
}

const struct conn_sink fetch_sink = {
	.unit = sink_unit,
	.literal_begin = sink_begin,
	.literal_data = sink_data,
	.literal_end = sink_end,
};

void
fetch_expect(struct fetch *f, bool bodies, bool lines)
{
	f->want_bodies = bodies;
	f->want_lines = lines;
}
