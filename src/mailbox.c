/*
 * sync: the SYNC state of a session. It lists the UIDs above the saved
 * last_uid, then fetches them in pipelined batches. Message bodies stream
 * from the framer into Maildir tmp/ files; a batch is committed on the
 * threadpool (sync the files, rename into new/, fsync new/, save state)
 * only after the server's tagged OK, and the server copy is deleted or
 * moved only after that commit. If the connection dies mid-batch, the
 * longest run of received messages in UID order is committed and the rest
 * discarded, so last_uid never passes a message that is not in new/.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "idlefetch/after.h"
#include "idlefetch/commit.h"
#include "idlefetch/foldername.h"
#include "idlefetch/header.h"
#include "idlefetch/lane.h"
#include "idlefetch/log.h"
#include "idlefetch/maildir.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/metrics.h"
#include "idlefetch/msgindex.h"
#include "idlefetch/mutf7.h"
#include "idlefetch/state.h"
#include "idlefetch/uidlist.h"
#include "idlefetch/util.h"

#define BATCH_MAX_MSGS 100
#define BATCH_MAX_BYTES (16u * 1024 * 1024)
#define PIPELINE_DEPTH 2
/*
 * The index is compacted once it may hold twice what the server does and
 * some more: a line is about 75 bytes, never under 60, so counting 60
 * each errs toward compacting early.
 */
#define INDEX_LINE_MIN 60
#define INDEX_SLACK 64

struct batch {
	struct batch *next;
	struct mailbox *mb;
	uint32_t *uids; /* requested, ascending */
	size_t n;
	struct maildir_file *files; /* received, in arrival order */
	size_t nfiles;
	struct commit_fp *fps; /* what the server said of each, by UID */
	bool complete; /* tagged OK seen */
	uint64_t lane_seq; /* its bodies are on disk once the lane is here */
};

static const char *state_names[] = { "NEW", "PREPARE", "READY", "SELECT",
	"RECONCILE", "VERIFY", "RECOVER", "LIST", "MATCH", "FETCH",
	"COMPACT_LIST", "COMPACT", "SYNCED", "DEAD" };

struct mailbox {
	uv_loop_t *loop;
	struct mailbox_opts o;
	const struct account *a;
	enum mailbox_state state;
	/* The folder */
	const char *name; /* borrowed; UTF-8 */
	char *wire; /* ...as the server spells it: modified UTF-7 */
	char *maildir;
	char *state_path;
	uint32_t tag_mark; /* maildir file tag */
	struct status_rec *status; /* borrowed; kept current */
	struct state_rec st; /* durable state */
	char maildir_id[STATE_ID_LEN + 1]; /* the Maildir's binding (state.h) */
	bool reconciled; /* new/ was scanned for unrecorded files */
	bool sync_ok; /* its last sync on this connection lacked nothing */
	unsigned delivered; /* messages this process delivered */
	bool job_busy; /* its disk job is on the threadpool */
	bool released; /* freed once its disk work is done */
	bool stopping;
	struct lane lane; /* its ordered writes into the Maildir */
	struct after *af; /* after = delete or move:; NULL: keep */
	/* On a connection */
	struct conn *conn; /* NULL: on none */
	uint32_t uidvalidity; /* from SELECT */
	uint32_t uidnext; /* from SELECT, 0 when it gave none */
	uint32_t exists;
	bool more; /* new mail announced during a sync */
	bool move_checked; /* the move: target was found on the server */
	bool lookup_found; /* a LIST reply named `lookup` exactly */
	unsigned lookup_pass; /* 0: exact LIST, 1: LIST "*NAME" */
	char *lookup_guess; /* a name the server has that ends in it */
	const char *lookup; /* the name LIST looks for: move_to or folder */
	char *select_err; /* SELECT's refusal, while LIST looks for it */
	/* The sync */
	bool last_found; /* VERIFY: the server still has UID last_uid */
	struct state_fp last_now; /* ... and this is what it says of it */
	bool gap; /* a batch came back short: commit no further */
	unsigned after_retries; /* syncs started again for that, in a row */
	uint32_t gap_uid; /* the UID it lacked, to retry only once */
	struct uidlist *ul; /* what the listing found */
	struct batch *bhead, *btail;
	size_t inflight; /* FETCH batches sent, not complete */
	struct batch *job_batch; /* COMMIT_DELIVER: owned until it is done */
	struct maildir_file cur; /* message being streamed */
	bool streaming; /* a body literal is open */
	bool cur_open; /* ...and it has a tmp/ file */
	bool cur_cr; /* the body so far ended in CR (CRLF cut apart) */
	unsigned next_msgno;
	/*
	 * A recovery (see recover_start): the listing is matched against
	 * what the Maildir holds, and only the rest is fetched.
	 */
	bool recovering;
	bool r_cut; /* its listing went over UIDLIST_MAX */
	struct msgindex_set *rset; /* what it listed, until it is matched */
	unsigned r_matched, r_new, r_noid;
	uint32_t r_max, r_last; /* highest UID listed; the last line's */
	struct state_fp r_max_fp; /* ...and what UID r_max holds */
	/* The folder's index: its size after this sync's last job (0: none). */
	uint64_t index_bytes;
	uint32_t *cuids; /* COMPACT_LIST: the server's UIDs */
	size_t ncuids, capcuids;
	bool c_over; /* ...over MSGINDEX_SET_MAX of them */
	uint32_t c_distinct, c_top; /* ...how many ascending, the last */
	uint32_t c_uidvalidity; /* ...under this UIDVALIDITY */
	bool c_warned; /* a compaction was skipped and said so */
};

#define LOG(mb, lvl, ...) log_msg((lvl), (mb)->a->name, (mb)->name, __VA_ARGS__)

/* The one way to change state; logged. */
static void
mailbox_enter(struct mailbox *mb, enum mailbox_state st, const char *why)
{
	if (mb->state != st)
		LOG(mb, LOGL_DEBUG, "mailbox %s -> %s (%s)",
		    state_names[mb->state], state_names[st], why);
	mb->state = st;
}

/* On a connection that is up. */
static bool
on_conn(const struct mailbox *mb)
{
	return mb->conn != NULL && conn_alive(mb->conn);
}

/* On its connection, in the state a reply or job was waited for in. */
static bool
in(const struct mailbox *mb, enum mailbox_state st)
{
	return mb->conn != NULL && on_conn(mb) && mb->state == st;
}

static void __attribute__((format(printf, 4, 5)))
fail_as(struct mailbox *mb, int err, bool final, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	mb->o.ops->failed(mb->o.ud, mb, err, final, why);
}

#define mb_fail(mb, err, ...) fail_as((mb), (err), false, __VA_ARGS__)

static void mailbox_free(struct mailbox *mb);

/* Disk work ended: the owner decides what comes next. */
static void
mb_settled(struct mailbox *mb)
{
	if (mb->released) { /* its owner let it go */
		if (mailbox_quiet(mb))
			mailbox_free(mb);
		return;
	}
	mb->o.ops->settled(mb->o.ud, mb);
}

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

static void pump(struct mailbox *mb);
static void pump_commits(struct mailbox *mb);
static void start_job(struct mailbox *mb, enum commit_kind kind);
static void sync_batch_free(struct batch *b);
static void fetch_line(void *ud, const struct proto_resp *r);
static void listed(void *ud, const struct proto_resp *r);
static void verify_done(void *ud, const struct proto_resp *r);
static void batch_done(void *ud, const struct proto_resp *r);
static void batch_line(void *ud, const struct proto_resp *r);
static void recover_match(struct mailbox *mb);
static int sync_list_finish(struct mailbox *mb);
static void sync_start(struct mailbox *mb);
static void sync_complete(struct mailbox *mb);
static void recover_start(struct mailbox *mb);
static void fingerprint(const struct proto_resp *r, struct state_fp *fp,
    uint64_t *key);
static void recover_listed(struct mailbox *mb);
static void recover_matched(struct mailbox *mb, struct commit_req *j);
static void recover_done(struct mailbox *mb, struct commit_req *j);
static void compact_done(struct mailbox *mb, struct commit_req *j);
static void sync_verify_last(struct mailbox *mb);
static void recover_free_set(struct mailbox *mb);
static void list_done(struct mailbox *mb);
static bool compact_due(const struct mailbox *mb);
static void compact_start(struct mailbox *mb);
static void compact_add(struct mailbox *mb, uint32_t uid);
static void compact_listed(struct mailbox *mb, const struct proto_resp *r);
static void sync_verify_done(struct mailbox *mb, const struct proto_resp *r);
static void sync_fetch_body(struct mailbox *mb, const struct proto_resp *r);

/* ---- batches ------------------------------------------------------------ */

static void
sync_batch_free(struct batch *b)
{
	if (b == NULL)
		return;
	free(b->uids);
	free(b->files);
	free(b->fps);
	free(b);
}

static int
cmp_file_uid(const void *x, const void *y)
{
	const struct maildir_file *a = x, *b = y;

	return a->uid < b->uid ? -1 : a->uid > b->uid;
}

static int
cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

	return a < b ? -1 : a > b;
}

/*
 * Decides what of the head batch can be committed: the leading run of
 * requested UIDs that all arrived. A UID missing from a confirmed batch
 * (expunged meanwhile, or a server that skipped it) ends the run too: the
 * rest is discarded and fetched again by the next sync, which lists only
 * what still exists. So last_uid never passes a message that is not in new/.
 */
static void
plan_commit(struct mailbox *mb, struct batch *b, struct commit_req *j)
{
	size_t k = 0, i;

	if (b->nfiles > 0)
		qsort(b->files, b->nfiles, sizeof(*b->files), cmp_file_uid);
	j->commit_uid = mb->st.last_uid;
	j->ncommit = 0;
	if (mb->gap)
		return; /* an earlier batch stopped short */
	for (i = 0; i < b->n; i++) {
		if (k == b->nfiles || b->files[k].uid != b->uids[i])
			break;
		if (mb->lane.failed_msgno != 0 &&
		    b->files[k].msgno >= mb->lane.failed_msgno)
			break; /* its body did not reach the disk whole */
		j->commit_uid = b->uids[i];
		k++;
	}
	j->ncommit = k;
	if (i < b->n && b->complete) {
		mb->gap = true;
		if (mb->gap_uid != b->uids[i]) {
			LOG(mb, LOGL_WARN,
			    "server did not return UID %u; fetching again "
			    "from there",
			    b->uids[i]);
			mb->more = true; /* re-list: it may have been expunged */
		}
		mb->gap_uid = b->uids[i];
	}
}

/* Starts the next commit if the head batch is ready for one. */
static void
pump_commits(struct mailbox *mb)
{
	struct batch *b = mb->bhead;

	if (mb->job_busy || b == NULL)
		return;
	if (!b->complete && on_conn(mb))
		return;
	/* Its bodies must be written out first (all of it, once cut off). */
	if (mb->lane.done_seq < (b->complete ? b->lane_seq : mb->lane.enq_seq))
		return;
	mb->bhead = b->next;
	if (mb->bhead == NULL)
		mb->btail = NULL;
	mb->job_batch = b;
	start_job(mb, COMMIT_DELIVER);
}

/* ---- after-delivery actions ---------------------------------------------- */

/* The UIDs as an IMAP sequence set; the caller frees it. */
static char *
uid_set(const uint32_t *uids, size_t n)
{
	char *set = xmalloc(n * 24 + 1);

	if (proto_uid_set(set, n * 24 + 1, uids, n) < 0)
		fatal("uid set overflow");
	return set;
}

/* ---- commit results -------------------------------------------------------- */

/* Its Maildir and state are read: READY, or DEAD when unusable. */
static void
job_done_prepare(struct mailbox *mb, struct commit_req *j)
{
	if (j->result < 0) {
		mailbox_enter(mb, MB_DEAD, "its Maildir or state is unusable");
		LOG(mb, LOGL_ERROR, "%s", j->err);
		status_error(mb->status, j->err);
		mb->status->gave_up = true;
		status_changed(mb->status);
		mb->o.ops->prepared(mb->o.ud, mb, j->result, j->err);
		return;
	}
	if (j->removed)
		LOG(mb, LOGL_INFO, "removed %u unfinished file(s) from tmp/",
		    j->removed);
	mb->st = j->st;
	if (mb->st.pending > mb->st.last_uid)
		LOG(mb, LOGL_WARN,
		    "UID %u was handed to the delivery target when "
		    "idlefetch stopped, before its answer was recorded: "
		    "it is handed over again and may arrive twice",
		    mb->st.pending);
	mb->st.pending = 0;
	memcpy(mb->maildir_id, j->id, sizeof(mb->maildir_id));
	mailbox_enter(mb, MB_READY, "its Maildir and state are read");
	mb->o.ops->prepared(mb->o.ud, mb, 0, NULL);
}

static void
job_done_commit(struct mailbox *mb, struct commit_req *j)
{
	struct batch *b = mb->job_batch;
	uint32_t *uids;
	size_t n = 0;

	metrics_committed(mb->a->name, mb->name, j);
	if (j->ncommit > j->nrefused) {
		unsigned ok = (unsigned)j->ncommit - j->nrefused;

		mb->delivered += ok;
		mb->status->delivered = mb->delivered;
		LOG(mb, LOGL_INFO, "delivered %u message(s), UIDs %u..%u", ok,
		    b->files[0].uid, b->files[j->ncommit - 1].uid);
		mb->o.ops->delivered(mb->o.ud, mb, ok);
	}
	if (j->nrefused > 0)
		LOG(mb, LOGL_ERROR,
		    "the target refused %u message(s), UID %u first (%s); "
		    "they stay on the server, and later mail goes on",
		    j->nrefused, j->refused_uid, j->refused_why);
	if (j->result == 0 || j->st.last_uid > mb->st.last_uid)
		mb->st = j->st;
	if (j->result < 0) {
		/*
		 * Files may be in new/ that no state records (a failed fsync of
		 * new/ or of the state): the next connection must scan for
		 * them before it fetches, or it fetches them again.
		 */
		mb->reconciled = false;
		sync_batch_free(b);
		mb->job_batch = NULL;
		if (j->result == -EAGAIN)
			mb_fail(mb, j->result,
			    "delivery deferred: %s; the message stays on the "
			    "server and is tried again",
			    j->err);
		else
			mb_fail(mb, j->result,
			    "%s; fetching stops until this is fixed", j->err);
		return;
	}
	/*
	 * The state that records these messages is durable: act on the
	 * server. Not during a recovery: its state is saved at its end, and
	 * leaves on the server what it listed (keep_to).
	 */
	if (mb->st.recovering) {
		sync_batch_free(b);
		mb->job_batch = NULL;
		return;
	}
	uids = xmalloc((j->ncommit + 1) * sizeof(*uids));
	for (size_t i = 0; i < j->ncommit; i++)
		if (!state_refused(&mb->st, b->files[i].uid))
			uids[n++] = b->files[i].uid;
	if (mb->af != NULL)
		after_queue(mb->af, mb->conn, uids, n);
	free(uids);
	sync_batch_free(b);
	mb->job_batch = NULL;
}

static void job_done(struct mailbox *mb, struct commit_req *j);

static void
job_after(struct commit_req *j, void *ud)
{
	struct mailbox *mb = ud;

	mb->job_busy = false;
	if (j->index_bytes != 0 && j->kind != COMMIT_COMPACT)
		mb->index_bytes = j->index_bytes;
	job_done(mb, j);
	free(j);
}

static void
job_done(struct mailbox *mb, struct commit_req *j)
{
	switch (j->kind) {
	case COMMIT_PREPARE:
		job_done_prepare(mb, j);
		return;
	case COMMIT_RECONCILE:
		if (j->result < 0) {
			mb_fail(mb, j->result, "%s", j->err);
			return;
		}
		if (j->removed)
			LOG(mb, LOGL_INFO,
			    "found %u UID(s) delivered before a restart; "
			    "state updated",
			    j->removed);
		mb->st = j->st;
		mb->reconciled = true;
		if (in(mb, MB_RECONCILE))
			sync_verify_last(mb);
		else
			mb_settled(mb);
		return;
	case COMMIT_DELIVER:
		job_done_commit(mb, j);
		if (in(mb, MB_FETCH))
			pump(mb);
		else
			mb_settled(mb);
		return;
	case COMMIT_RECOVER:
		if (j->result < 0) {
			mb_fail(mb, j->result, "%s", j->err);
			return;
		}
		mb->st = j->st;
		if (in(mb, MB_RECOVER)) {
			recover_listed(mb);
			return;
		}
		mb_settled(mb);
		return;
	case COMMIT_MATCH:
		recover_matched(mb, j);
		return;
	case COMMIT_RECOVERED:
		recover_done(mb, j);
		return;
	case COMMIT_COMPACT:
		compact_done(mb, j);
		return;
	default:
		fatal("bad job kind");
	}
}

/*
 * The one job in flight, on the heap only while it runs: a thousand idle
 * connections need none.
 */
static void
start_job(struct mailbox *mb, enum commit_kind kind)
{
	struct commit_req *j = xcalloc(1, sizeof(*j));

	j->kind = kind;
	j->st = mb->st;
	j->maildir = mb->maildir;
	j->state_path = mb->state_path;
	j->root = mb->a->maildir; /* NULL with another target: no marker */
	j->target = &mb->a->target;
	j->folder = mb->name;
	j->keep_refused = mb->a->after != AFTER_KEEP;
	j->account = mb->a->name;
	memcpy(j->id, mb->maildir_id, sizeof(j->id));
	j->tag = mb->tag_mark;
	j->uidvalidity = mb->uidvalidity;
	j->recovering = mb->st.recovering != 0;
	if (kind == COMMIT_RECOVERED) {
		j->commit_uid = mb->r_max;
		j->st.last = mb->r_max_fp;
	}
	/* The job owns these until it is done (job_done frees them). */
	if (kind == COMMIT_MATCH) {
		j->set = mb->rset;
		mb->rset = NULL;
	}
	if (kind == COMMIT_COMPACT) {
		j->uids = mb->cuids;
		j->nuids = mb->ncuids;
		mb->cuids = NULL;
		mb->ncuids = mb->capcuids = 0;
	}
	if (kind == COMMIT_DELIVER) {
		plan_commit(mb, mb->job_batch, j);
		j->files = mb->job_batch->files;
		j->nfiles = mb->job_batch->nfiles;
		j->fps = mb->job_batch->fps;
	}
	mb->job_busy = true;
	commit_start(mb->loop, j, job_after, mb);
}

/* ---- sync ------------------------------------------------------------------ */

static void
sync_list_add(struct mailbox *mb, uint32_t uid, uint32_t size)
{
	if (uid > mb->st.last_uid) {
		uidlist_add(mb->ul, uid, size);
		return;
	}
	/*
	 * Delivered already but still on the server; left there if a recovery
	 * matched it.
	 */
	if (mb->a->after != AFTER_KEEP && uid > mb->st.keep_to &&
	    !state_refused(&mb->st, uid))
		uidlist_add_stale(mb->ul, uid);
}

/* The listing is complete: what to fetch, in order. */
static int
sync_list_finish(struct mailbox *mb)
{
	if (uidlist_finish(mb->ul, &mb->more) < 0)
		return -1;
	mb->status->queued = mb->status->delivered + uidlist_count(mb->ul);
	return 0;
}

static void
send_batch(struct mailbox *mb)
{
	struct batch *b = xcalloc(1, sizeof(*b));
	uint32_t uids[BATCH_MAX_MSGS];
	size_t n;
	char *set;

	n = uidlist_take(mb->ul, BATCH_MAX_MSGS, BATCH_MAX_BYTES, uids);
	b->n = n;
	b->uids = xmalloc(n * sizeof(*b->uids));
	memcpy(b->uids, uids, n * sizeof(*b->uids));
	b->files = xmalloc(n * sizeof(*b->files));
	b->fps = xcalloc(n, sizeof(*b->fps));
	b->mb = mb;
	set = uid_set(b->uids, n);
	conn_cmd(mb->conn, HAS_FETCH, batch_done, batch_line, b,
	    "UID FETCH %s (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")] BODY.PEEK[])",
	    set);
	free(set);
	if (mb->btail)
		mb->btail->next = b;
	else
		mb->bhead = b;
	mb->btail = b;
	mb->inflight++;
}

/*
 * A finished sync keeps none of its listing: an idle connection would hold
 * 2 KiB or more of it (2 MiB at a thousand accounts).
 */
static void
sync_release(struct mailbox *mb)
{
	uidlist_release(mb->ul);
}

static void
sync_complete(struct mailbox *mb)
{
	sync_release(mb);
	if (mb->recovering) {
		mb->recovering = false;
		/* Not all of it delivered: the next pass recovers again. */
		if (!mb->gap && !mb->r_cut && !mb->stopping) {
			start_job(mb, COMMIT_RECOVERED);
			return;
		}
	}
	if (compact_due(mb)) {
		compact_start(mb); /* comes back here when it is done */
		return;
	}
	mb->status->last_sync = (int64_t)time(NULL);
	status_changed(mb->status);
	/* A UID the server kept skipping is not delivered: not a clean sync. */
	mb->sync_ok = !mb->gap;
	/* Messages an after-action missed: list and act again, a few times. */
	if (mb->af != NULL && after_take_short(mb->af) &&
	    mb->after_retries < 3 && !mb->stopping) {
		mb->after_retries++;
		mb->more = true;
	} else {
		mb->after_retries = 0;
	}
	if (mb->more && !mb->stopping) {
		sync_start(mb);
		return;
	}
	mailbox_enter(mb, MB_SYNCED, "every message listed is delivered");
	mb->o.ops->synced(mb->o.ud, mb);
}

/* Moves the sync forward: more batches, commits, or done. */
static void
pump(struct mailbox *mb)
{
	if (!on_conn(mb))
		return;
	pump_commits(mb);
	if (mb->state != MB_FETCH)
		return;
	/* Chunks keep each command line well under servers' line limits. */
	if (mb->af != NULL) {
		size_t n;
		const uint32_t *stale = uidlist_stale(mb->ul, &n);

		after_queue(mb->af, mb->conn, stale, n);
		after_kick(mb->af, mb->conn);
	}
	uidlist_stale_done(mb->ul);
	while (!mb->stopping && !mb->gap && mb->inflight < PIPELINE_DEPTH &&
	    uidlist_left(mb->ul) > 0)
		send_batch(mb);
	if (mb->bhead == NULL && !mb->job_busy &&
	    (mb->af == NULL || after_idle(mb->af)) &&
	    (uidlist_left(mb->ul) == 0 || mb->stopping || mb->gap))
		sync_complete(mb);
}

/* A listing of the folder from UID from, with these items, starts. */
static void
list_begin(struct mailbox *mb, uint32_t from, const char *items)
{
	mailbox_enter(mb, MB_LIST, mb->recovering ? "a recovery's listing" :
						    "listing new mail");
	mb->more = false;
	mb->gap = false;
	uidlist_clear(mb->ul);
	conn_cmd(mb->conn, HAS_FETCH, listed, fetch_line, mb, "UID FETCH %u:* (%s)",
	    from, items);
}

static void
sync_start(struct mailbox *mb)
{
	uint32_t from = 1;

	if (mb->st.recovering) {
		recover_start(mb); /* one that did not finish */
		return;
	}
	if (mb->a->after == AFTER_KEEP && mb->st.last_uid < UINT32_MAX)
		from = mb->st.last_uid + 1;
	list_begin(mb, from, "UID RFC822.SIZE");
}

/*
 * Before trusting last_uid, ask the server what UID last_uid holds now:
 * a server that renumbered its messages without changing UIDVALIDITY
 * (Courier-IMAP after a restart, when only EXAMINE had touched a folder)
 * would otherwise have us skip new mail and deliver old mail again.
 */
static void
sync_verify_last(struct mailbox *mb)
{
	const struct state_fp *fp = &mb->st.last;

	if (mb->uidnext != 0 && mb->st.last_uid >= mb->uidnext &&
	    mb->st.uidvalidity == mb->uidvalidity) {
		/* UIDs only grow: this is another numbering. */
		LOG(mb, LOGL_WARN,
		    "the server's next UID is %u, yet UID %u was delivered: it "
		    "renumbered this folder without changing UIDVALIDITY %u. "
		    "Matching its messages against the Maildir instead of "
		    "trusting the UIDs",
		    mb->uidnext, mb->st.last_uid, mb->uidvalidity);
		recover_start(mb);
		return;
	}
	if (mb->st.last_uid == 0 || mb->st.uidvalidity != mb->uidvalidity ||
	    (fp->size == 0 && fp->msgid[0] == '\0')) {
		sync_start(mb); /* nothing to check against */
		return;
	}
	mb->last_found = false;
	memset(&mb->last_now, 0, sizeof(mb->last_now));
	mailbox_enter(mb, MB_VERIFY, "checking the last delivered UID");
	conn_cmd(mb->conn, HAS_FETCH, verify_done, fetch_line, mb,
	    "UID FETCH %u (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")])",
	    mb->st.last_uid);
}

static void
sync_verify_fetch(struct mailbox *mb, const struct proto_resp *r)
{
	if (!(r->has & HAS_UID) || r->uid != mb->st.last_uid)
		return;
	mb->last_found = true;
	mb->last_now.size = (r->has & HAS_SIZE) ? r->size : 0;
	fingerprint(r, &mb->last_now, NULL);
}

static void
sync_verify_done(struct mailbox *mb, const struct proto_resp *r)
{
	const struct state_fp *was = &mb->st.last, *now = &mb->last_now;
	bool size_differs, id_differs;

	if (r->status != PROTO_OK) {
		mb_fail(mb, IDLEFETCH_EPROTO,
		    "checking UID %u failed: %s", mb->st.last_uid, r->text);
		return;
	}
	/* Gone (deleted, moved): nothing to compare, nothing renumbered. */
	size_differs = mb->last_found && was->size && now->size &&
	    was->size != now->size;
	id_differs = mb->last_found && was->msgid[0] && now->msgid[0] &&
	    strcmp(was->msgid, now->msgid) != 0;
	if (size_differs || id_differs) {
		char what[2 * STATE_MSGID_MAX + 64];

		if (id_differs)
			snprintf(what, sizeof(what), "Message-ID %s, was %s",
			    now->msgid, was->msgid);
		else
			snprintf(what, sizeof(what), "size %u, was %u",
			    now->size, was->size);
		LOG(mb, LOGL_WARN,
		    "UID %u no longer holds the message delivered under it "
		    "(%s): the server renumbered this folder without "
		    "changing UIDVALIDITY %u. Matching its messages against "
		    "the Maildir instead of trusting the UIDs",
		    mb->st.last_uid, what, mb->uidvalidity);
		recover_start(mb);
		return;
	}
	sync_start(mb);
}

/*
 * What the header fields in r say of a message: its Message-ID into fp,
 * its key into *key (when asked for).
 */
static void
fingerprint(const struct proto_resp *r, struct state_fp *fp, uint64_t *key)
{
	struct header_info h;

	if (!(r->has & HAS_HDR)) {
		fp->msgid[0] = '\0';
		if (key)
			*key = 0;
		return;
	}
	(void)header_parse(r->hdr, r->hdr_len, &h);
	memcpy(fp->msgid, h.msgid, sizeof(fp->msgid));
	if (key)
		*key = header_key(&h);
}

/* ---- recovery ----------------------------------------------------------------- */

/*
 * The folder's UIDs no longer name what was delivered (a new UIDVALIDITY,
 * or last_uid holds another message): its messages are matched against
 * the Maildir's by Message-ID and size (without a Message-ID: by Date,
 * From, Subject and size), and only those without a match are fetched.
 * Nothing is deleted or moved on the server meanwhile. The state is marked
 * first, so a recovery cut short by a crash or a lost connection is done
 * again, and what it delivered is found then in the index or the Maildir.
 */
static void
recover_start(struct mailbox *mb)
{
	mailbox_enter(mb, MB_RECOVER, "the folder was renumbered");
	start_job(mb, COMMIT_RECOVER);
}

/*
 * The state says "recovering": list every message with its header fields.
 * The listing is kept (24 bytes a message) and matched against the index
 * on the threadpool once it is complete, so that the index, which may be
 * far larger than the folder, is never held in memory.
 */
static void
recover_listed(struct mailbox *mb)
{
	recover_free_set(mb);
	mb->rset = xcalloc(1, sizeof(*mb->rset));
	mb->recovering = true;
	mb->r_cut = false;
	mb->r_matched = mb->r_noid = 0;
	mb->r_max = mb->r_last = 0;
	memset(&mb->r_max_fp, 0, sizeof(mb->r_max_fp));
	list_begin(mb, 1,
	    "UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")]");
}

static void
recover_line(struct mailbox *mb, const struct proto_resp *r)
{
	struct state_fp fp;
	uint64_t key;

	if (r->uid == mb->r_last || mb->rset == NULL)
		return; /* a repeated line, or a failed listing */
	mb->r_last = r->uid;
	fingerprint(r, &fp, &key);
	if (r->uid > mb->r_max) {
		mb->r_max = r->uid;
		mb->r_max_fp = fp;
		mb->r_max_fp.size = (r->has & HAS_SIZE) ? r->size : 0;
	}
	if (fp.msgid[0] == '\0')
		mb->r_noid++;
	if (msgindex_set_add(mb->rset, r->uid, key,
		(r->has & HAS_SIZE) ? r->size : 0) < 0) {
		recover_free_set(mb);
		mb_fail(mb, IDLEFETCH_EPROTO,
		    "the server listed over %d messages for a recovery; "
		    "closing the connection", MSGINDEX_SET_MAX);
	}
}

static void
free_set(struct msgindex_set *m)
{
	if (m == NULL)
		return;
	msgindex_set_free(m);
	free(m);
}

static void
recover_free_set(struct mailbox *mb)
{
	free_set(mb->rset);
	mb->rset = NULL;
}

/* The listing is complete: match it against the index, off the loop. */
static void
recover_match(struct mailbox *mb)
{
	mailbox_enter(mb, MB_MATCH, "the recovery's listing is complete");
	start_job(mb, COMMIT_MATCH);
}

/* Only the messages without a delivered file are fetched. */
static void
recover_matched(struct mailbox *mb, struct commit_req *j)
{
	struct msgindex_set *m = j->set;

	if (j->result < 0) {
		free_set(m);
		mb_fail(mb, j->result, "%s", j->err);
		return;
	}
	if (!in(mb, MB_MATCH) || !mb->recovering) {
		free_set(m);
		mb_settled(mb);
		return;
	}
	if (m->from_maildir)
		LOG(mb, LOGL_INFO,
		    "read %u message(s) of the Maildir missing from its index",
		    m->from_maildir);
	mb->r_matched = m->matched;
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].by == 0)
			uidlist_add(mb->ul, m->v[i].uid, m->v[i].size);
	free_set(m);
	list_done(mb);
}

/*
 * Every message the recovery listed is delivered or matched: the state
 * takes the folder's UIDVALIDITY and its highest UID.
 */
static void
recover_done(struct mailbox *mb, struct commit_req *j)
{
	if (j->result < 0) {
		mb_fail(mb, j->result, "%s", j->err);
		return;
	}
	mb->st = j->st;
	metrics_recovery(mb->a->name, mb->name);
	LOG(mb, LOGL_WARN,
	    "recovered the renumbered folder: %u message(s) matched the "
	    "Maildir, %u new delivered, %u without a Message-ID (matched by "
	    "Date, From, Subject and size); nothing was deleted or moved on "
	    "the server. UIDVALIDITY %u, last UID %u",
	    mb->r_matched, mb->r_new, mb->r_noid, j->st.uidvalidity,
	    j->st.last_uid);
	if (!in(mb, MB_FETCH)) {
		mb_settled(mb);
		return;
	}
	mb->more = true; /* what came after its listing */
	sync_complete(mb);
}

/* ---- index compaction -------------------------------------------------------- */

/*
 * Lines of messages deleted or moved on the server (by us, after = delete
 * or move:, or by another client) serve no recovery: once the index may
 * hold far more than the folder, it is rewritten with the lines of the
 * UIDs the server still holds. Once per sync at most, after a sync that
 * trusted the folder's UIDs (not during a recovery).
 */
static bool
compact_due(const struct mailbox *mb)
{
	if (mb->index_bytes == 0 || mb->stopping || !in(mb, MB_FETCH) ||
	    mb->gap || mb->st.recovering ||
	    mb->st.uidvalidity != mb->uidvalidity)
		return false;
	return mb->index_bytes / INDEX_LINE_MIN >
	    2 * (uint64_t)mb->exists + INDEX_SLACK;
}

static void
compact_start(struct mailbox *mb)
{
	LOG(mb, LOGL_DEBUG,
	    "the folder's index (%" PRIu64 " bytes) may hold far more than "
	    "its %u message(s): listing their UIDs to compact it",
	    mb->index_bytes, mb->exists);
	mb->index_bytes = 0; /* once per sync, whatever comes of it */
	mailbox_enter(mb, MB_COMPACT_LIST, "compacting the index");
	mb->ncuids = mb->c_distinct = mb->c_top = 0;
	mb->c_over = false;
	mb->c_uidvalidity = mb->uidvalidity;
	if (mb->exists == 0) {
		/*
		 * The server says the folder is empty (at SELECT, or after
		 * the EXPUNGEs it sent): nothing to list, and some servers
		 * refuse 1:* on an empty folder.
		 */
		mailbox_enter(mb, MB_COMPACT, "the folder is empty");
		start_job(mb, COMMIT_COMPACT);
		return;
	}
	conn_cmd(mb->conn, HAS_FETCH, listed, fetch_line, mb,
	    "UID FETCH 1:* (UID)");
}

static void
compact_add(struct mailbox *mb, uint32_t uid)
{
	if (mb->ncuids == MSGINDEX_SET_MAX) {
		mb->c_over = true;
		return;
	}
	if (mb->ncuids == mb->capcuids) {
		mb->capcuids = mb->capcuids ? mb->capcuids * 2 : 256;
		mb->cuids = xrealloc(mb->cuids, mb->capcuids * sizeof(*mb->cuids));
	}
	mb->cuids[mb->ncuids++] = uid;
	/* A lower bound of the distinct UIDs: a server lists 1:* ascending. */
	if (mb->ncuids == 1 || uid > mb->c_top) {
		mb->c_distinct++;
		mb->c_top = uid;
	}
}

/* The sync ends as it would have without the compaction. */
static void
compact_end(struct mailbox *mb)
{
	free(mb->cuids);
	mb->cuids = NULL;
	mb->ncuids = mb->capcuids = 0;
	mailbox_enter(mb, MB_FETCH, "the compaction is over");
	sync_complete(mb);
}

/*
 * An index not compacted is only larger: it is not worth failing for, nor
 * worth a warning at every sync.
 */
static void
compact_listed(struct mailbox *mb, const struct proto_resp *r)
{
	const char *why = NULL;

	if (r->status != PROTO_OK)
		why = r->text;
	else if (mb->c_over)
		why = "the folder holds too many messages";
	else if (mb->uidvalidity != mb->c_uidvalidity)
		why = "the folder's UIDVALIDITY changed";
	else if (mb->c_distinct < mb->exists)
		why = "the server listed fewer UIDs than it holds messages";
	if (why == NULL) {
		mailbox_enter(mb, MB_COMPACT, "the server's UIDs are listed");
		start_job(mb, COMMIT_COMPACT);
		return;
	}
	LOG(mb, mb->c_warned ? LOGL_DEBUG : LOGL_WARN,
	    "not compacting the folder's index: %s", why);
	mb->c_warned = true;
	compact_end(mb);
}

static void
compact_done(struct mailbox *mb, struct commit_req *j)
{
	free(j->uids);
	if (j->result < 0)
		LOG(mb, LOGL_WARN, "cannot compact the folder's index: %s",
		    j->err);
	else
		LOG(mb, LOGL_INFO,
		    "compacted the folder's index: %u line(s) kept, %u of "
		    "messages no longer on the server dropped",
		    j->counts.kept, j->counts.dropped);
	if (!in(mb, MB_COMPACT)) {
		mb_settled(mb);
		return;
	}
	compact_end(mb);
}

static void
sync_fetch_body(struct mailbox *mb, const struct proto_resp *r)
{
	struct batch *b;

	/*
	 * Servers may interleave the responses of pipelined commands, so the
	 * UID, not the order, says which batch a body belongs to.
	 */
	for (b = mb->bhead; b; b = b->next)
		if (!b->complete && (r->has & HAS_UID) &&
		    bsearch(&r->uid, b->uids, b->n, sizeof(*b->uids),
			cmp_u32) != NULL)
			break;
	mb->cur_open = false;
	if (b == NULL) {
		LOG(mb, LOGL_WARN,
		    "ignoring a message body the client did not ask "
		    "for (UID %u)",
		    r->uid);
		lane_discard(&mb->lane, &mb->cur);
		return;
	}
	for (size_t i = 0; i < b->nfiles; i++)
		if (b->files[i].uid == r->uid) {
			lane_discard(&mb->lane, &mb->cur);
			return;
		}
	mb->cur.uid = r->uid;
	b->fps[b->nfiles].uid = r->uid;
	b->fps[b->nfiles].fp.size = (r->has & HAS_SIZE) ? r->size : 0;
	fingerprint(r, &b->fps[b->nfiles].fp, &b->fps[b->nfiles].key);
	b->files[b->nfiles++] = mb->cur;
}

static int
sink_begin(void *ud, const char *prefix, size_t len, uint64_t size)
{
	struct mailbox *mb = ud;
	const char *end = prefix + len;
	int r;

	/* prefix ends in "{n}\r\n": look at what precedes the brace. */
	while (end > prefix && end[-1] != '{')
		end--;
	if (end > prefix)
		end--;
	while (end > prefix && end[-1] == ' ')
		end--;
	if (len < 2 || prefix[0] != '*' || end - prefix < 6 ||
	    (strncasecmp(end - 6, "BODY[]", 6) != 0 &&
		(end - prefix < 6 || strncasecmp(end - 6, "RFC822", 6) != 0)))
		return 0;
	if (mb->cur_open) {
		/*
		 * One FETCH response, one message: a second body would open a
		 * second file while the first is in flight, and which of the
		 * two is the message cannot be known.
		 */
		mb_fail(mb, IDLEFETCH_EPROTO,
		    "two message bodies in one FETCH response; closing the "
		    "connection");
		return IDLEFETCH_EPROTO;
	}
	mb->streaming = true;
	if (mb->state != MB_FETCH || mb->bhead == NULL)
		return 1; /* streamed to nowhere */
	r = maildir_create(mb->maildir, mb->tag_mark, &mb->cur);
	if (r < 0) {
		/* Decided and logged here, once; the framer only stops. */
		mb_fail(mb, r, "cannot create a file in %s/tmp: %s",
		    mb->maildir, strerror(-r));
		return r;
	}
	mb->cur.msgno = ++mb->next_msgno;
	mb->cur_open = true;
	mb->cur_cr = false;
	return 1;
}

/* A full conversion buffer goes to the lane (which copies it). */
/* Body bytes, CRLF made LF, on their way to the lane (the loop's only). */
static struct maildir_writer shared_writer;

static int
lane_sink(void *ud, const char *p, size_t n)
{
	struct mailbox *mb = ud;

	lane_write(&mb->lane, &mb->cur, p, n);
	return 0;
}

static int
sink_data(void *ud, const char *p, size_t n)
{
	struct mailbox *mb = ud;

	struct maildir_writer *w = &shared_writer;
	int r;

	if (!mb->cur_open)
		return 0;
	/*
	 * One buffer for every connection on the loop: it holds nothing
	 * between two chunks, only the mailbox's pending CR does.
	 */
	w->len = 0;
	w->cr = mb->cur_cr;
	r = maildir_feed(w, p, n, lane_sink, mb);
	if (r == 0 && w->len > 0)
		lane_write(&mb->lane, &mb->cur, w->buf, w->len);
	w->len = 0;
	mb->cur_cr = w->cr;
	return r;
}

static int
sink_end(void *ud)
{
	struct mailbox *mb = ud;

	struct maildir_writer *w = &shared_writer;

	mb->streaming = false;
	if (!mb->cur_open)
		return 0;
	w->len = 0;
	w->cr = mb->cur_cr;
	maildir_convert_end(w);
	lane_write(&mb->lane, &mb->cur, w->buf, w->len);
	w->len = 0;
	return 0;
}

/*
 * The folder was just SELECTed: files a crash left in new/ unrecorded are
 * found first (once per folder and process), then last_uid is checked,
 * then new mail is listed and fetched.
 */
static void
mailbox_begin(struct mailbox *mb)
{
	const struct state_rec *st = &mb->st;

	mb->index_bytes = 0; /* another folder's, or an older one */
	if (st->recovering) {
		LOG(mb, LOGL_WARN,
		    "a recovery of this folder was cut short; doing it again");
		recover_start(mb);
		return;
	}
	if (st->uidvalidity != 0 && st->uidvalidity != mb->uidvalidity) {
		LOG(mb, LOGL_WARN,
		    "UIDVALIDITY changed from %u to %u: the server renumbered "
		    "this folder. Matching its messages against the Maildir "
		    "instead of fetching them all again",
		    st->uidvalidity, mb->uidvalidity);
		recover_start(mb);
		return;
	}
	if (!mb->reconciled) {
		mailbox_enter(mb, MB_RECONCILE, "looking for unrecorded files");
		start_job(mb, COMMIT_RECONCILE);
		return;
	}
	sync_verify_last(mb);
}

/* The listing is complete (and matched, in a recovery): fetch. */
static void
list_done(struct mailbox *mb)
{
	if (mb->recovering)
		mb->r_cut = uidlist_cut(mb->ul);
	if (sync_list_finish(mb) < 0) {
		mb_fail(mb, IDLEFETCH_EPROTO,
		    "the server listed over %d messages without a "
		    "new one; closing the connection", UIDLIST_MAX);
		return;
	}
	if (mb->recovering)
		mb->r_new = (unsigned)uidlist_count(mb->ul);
	if (uidlist_count(mb->ul) > 0)
		LOG(mb, LOGL_INFO, "%zu new message(s) to fetch",
		    uidlist_count(mb->ul));
	mailbox_enter(mb, MB_FETCH, "the listing is complete");
	pump(mb);
}

/* An untagged FETCH of the sync's commands: a listing's, or the verify's. */
static void
fetch_line(void *ud, const struct proto_resp *r)
{
	struct mailbox *mb = ud;

	if (mb->state == MB_VERIFY)
		sync_verify_fetch(mb, r);
	else if (!(r->has & HAS_UID))
		return;
	else if (mb->state == MB_COMPACT_LIST)
		compact_add(mb, r->uid);
	else if (mb->state == MB_LIST && mb->recovering)
		recover_line(mb, r);
	else if (mb->state == MB_LIST)
		sync_list_add(mb, r->uid, r->size);
}

/*
 * Stopping: before the listing, nothing is on its way; during it, close
 * once no message is halfway in (what is complete is committed).
 */
bool
mailbox_may_close(const struct mailbox *mb)
{
	if (mb->state != MB_LIST && mb->state != MB_FETCH)
		return true;
	return !mb->streaming && (mb->inflight > 0 || mb->state == MB_LIST);
}

/* The listing's tagged reply (of new mail, a recovery's or compaction's). */
static void
listed(void *ud, const struct proto_resp *r)
{
	struct mailbox *mb = ud;

	if (r == NULL)
		return;
	if (mb->state == MB_COMPACT_LIST) {
		compact_listed(mb, r);
		return;
	}
	if (r->status != PROTO_OK) {
		mb_fail(mb, IDLEFETCH_EPROTO,
		    "listing new messages failed: %s", r->text);
		return;
	}
	if (mb->recovering)
		recover_match(mb);
	else
		list_done(mb);
}

static void
verify_done(void *ud, const struct proto_resp *r)
{
	if (r != NULL)
		sync_verify_done(ud, r);
}

/* A batch's tagged reply: its bodies are all in (or never will be). */
static void
batch_done(void *ud, const struct proto_resp *r)
{
	struct batch *b = ud;
	struct mailbox *mb = b->mb;

	if (r == NULL)
		return; /* the batch is the sync's, freed with it */
	if (r->status != PROTO_OK) {
		mb_fail(mb, IDLEFETCH_EPROTO,
		    "fetching messages failed: %s", r->text);
		return;
	}
	b->complete = true;
	b->lane_seq = mb->lane.enq_seq;
	mb->inflight--;
	pump(mb);
}

static void
batch_line(void *ud, const struct proto_resp *r)
{
	struct batch *b = ud;

	fetch_line(b->mb, r);
}

static bool
sink_unit(void *ud, int pr, const struct proto_resp *r, const char *p,
    size_t n)
{
	struct mailbox *mb = ud;

	if (mb->cur_open) {
		if (pr < 0 || !(r->has & HAS_BODY)) {
			mb_fail(mb, IDLEFETCH_EPROTO,
			    "cannot parse a FETCH response "
			    "carrying a message; closing the connection");
			return false;
		}
		sync_fetch_body(mb, r);
	}
	if (pr < 0 && (mb->state == MB_LIST || mb->state == MB_COMPACT_LIST) &&
	    (r->has & HAS_FETCH)) {
		/*
		 * A listing line that cannot be read may be a message: skipping
		 * it would let the last delivered UID pass a message never
		 * delivered. The folder stops here instead, and says why.
		 */
		char line[81];
		size_t k;

		for (k = 0; k < n && k + 1 < sizeof(line) && p[k] != '\r'; k++)
			line[k] = (p[k] >= 0x20 && p[k] < 0x7f) ? p[k] : '?';
		line[k] = '\0';
		mb_fail(mb, IDLEFETCH_EPROTO,
		    "cannot read a line of the message listing ('%s'); "
		    "stopping so that no message is skipped", line);
		return false;
	}
	return true;
}

/* ---- SELECT ------------------------------------------------------------------- */

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
 * namespace is "INBOX." with "." between levels. A refused SELECT is
 * looked for the same way, to say what the server calls the folder.
 */
static void lookup_done(void *ud, const struct proto_resp *r);
static void lookup_line(void *ud, const struct proto_resp *r);
static void send_select(struct mailbox *mb);

static void
send_lookup(struct mailbox *mb)
{
	char mbox[512], pattern[300];

	snprintf(pattern, sizeof(pattern), "%s%s", mb->lookup_pass ? "*" : "",
	    mb->lookup);
	if (mb->lookup_pass)
		for (char *p = pattern; *p; p++)
			if (*p == '/' || *p == '.')
				*p = '*';
	if (proto_quote(mbox, sizeof(mbox), pattern) < 0)
		fatal("folder name '%s' cannot be quoted", mb->lookup);
	mb->lookup_found = false;
	conn_cmd(mb->conn, HAS_LIST, lookup_done, lookup_line, mb,
	    "LIST \"\" %s", mbox);
	mailbox_enter(mb, MB_SELECT, "looking for a folder by name");
}

/* The server will not open the folder: the owner decides what follows. */
static void
refused(struct mailbox *mb, const char *why)
{
	mailbox_enter(mb, MB_READY, "the server would not open it");
	mb->o.ops->refused(mb->o.ud, mb, why);
}

/* A refused SELECT, looked for by name: say what the server calls it. */
static void
select_refused(struct mailbox *mb)
{
	char why[512];

	if (mb->lookup_guess)
		snprintf(why, sizeof(why),
		    "cannot open folder %s: %s; the server has '%s' "
		    "(write it so in folders =)",
		    mb->name, mb->select_err, mb->lookup_guess);
	else
		snprintf(why, sizeof(why), "cannot open folder %s: %s",
		    mb->name, mb->select_err);
	set_text(&mb->select_err, NULL);
	mb->lookup_pass = 0;
	refused(mb, why);
}

static void
lookup_done(void *ud, const struct proto_resp *r)
{
	struct mailbox *mb = ud;

	if (r == NULL)
		return;
	if (r->status != PROTO_OK) {
		mb_fail(mb, IDLEFETCH_EPROTO, "LIST failed: %s", r->text);
		return;
	}
	if (mb->select_err) {
		select_refused(mb);
		return;
	}
	if (mb->lookup_found) {
		mb->move_checked = true;
		send_select(mb);
		return;
	}
	if (mb->lookup_pass == 0) {
		mb->lookup_pass = 1;
		set_text(&mb->lookup_guess, NULL);
		send_lookup(mb);
		return;
	}
	mb->lookup_pass = 0;
	if (mb->lookup_guess)
		fail_as(mb, IDLEFETCH_EPROTO, true,
		    "after = move:%s: the server has no folder of that name; it "
		    "has '%s' (write after = move:%s)",
		    mb->a->move_to, mb->lookup_guess, mb->lookup_guess);
	else
		fail_as(mb, IDLEFETCH_EPROTO, true,
		    "after = move:%s: the server has no folder of that name; "
		    "create it, or name one it has",
		    mb->a->move_to);
}

/* A line of LIST looking for a folder by name. */
static void
lookup_line(void *ud, const struct proto_resp *r)
{
	struct mailbox *mb = ud;

	if (strcmp(r->name, mb->lookup) == 0)
		mb->lookup_found = true;
	else if (mb->lookup_guess == NULL &&
	    names_same_folder(r->name, r->list_delim, mb->lookup))
		set_text(&mb->lookup_guess, r->name);
}

static void
selected(struct mailbox *mb)
{
	if (mb->uidvalidity == 0) {
		mb_fail(mb, IDLEFETCH_EPROTO, "server sent no UIDVALIDITY for %s",
		    mb->name);
		return;
	}
	/* A changed UIDVALIDITY is the sync's to recover from. */
	LOG(mb, LOGL_INFO,
	    "selected: %u message(s), UIDVALIDITY %u, last "
	    "delivered UID %u",
	    mb->exists, mb->uidvalidity, mb->st.last_uid);
	mailbox_begin(mb);
}

static void
select_done(void *ud, const struct proto_resp *r)
{
	struct mailbox *mb = ud;

	if (r == NULL)
		return;
	if (r->status != PROTO_OK) {
		/* Look for a name ending in it: INBOX.Lists for Lists. */
		set_text(&mb->select_err, r->text[0] ? r->text : "refused");
		mb->lookup = mb->wire;
		mb->lookup_pass = 1;
		set_text(&mb->lookup_guess, NULL);
		send_lookup(mb);
		return;
	}
	selected(mb);
}

static void
send_select(struct mailbox *mb)
{
	char mbox[512];

	if (mb->a->after == AFTER_MOVE && !mb->move_checked) {
		mb->lookup = mb->o.move_wire;
		send_lookup(mb);
		return;
	}
	/* The configuration allows only names a quoted string can carry. */
	if (proto_quote(mbox, sizeof(mbox), mb->wire) < 0)
		fatal("folder name '%s' cannot be quoted", mb->wire);
	mb->uidvalidity = 0;
	mb->uidnext = 0;
	mb->exists = 0;
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
	conn_cmd(mb->conn, 0, select_done, NULL, mb, "%s %s",
	    mb->a->read_only ? "EXAMINE" : "SELECT", mbox);
	mailbox_enter(mb, MB_SELECT, "opening the folder");
}

/* ---- the lane's and the connection's callbacks ---------------------------------- */

static void
on_lane_pause(void *ud, bool pause)
{
	struct mailbox *mb = ud;

	if (mb->conn != NULL)
		conn_pause(mb->conn, pause);
}

static void
on_lane_drained(void *ud, int err)
{
	struct mailbox *mb = ud;

	if (err < 0 && on_conn(mb)) {
		mb_fail(mb, err, "cannot write to %s/tmp: %s", mb->maildir,
		    strerror(-err));
		return;
	}
	/* A batch may have been waiting for these writes. */
	if (on_conn(mb))
		pump(mb);
	else
		mb_settled(mb);
}

static const struct lane_ops lane_ops = {
	.pause = on_lane_pause,
	.drained = on_lane_drained,
};

static void
on_after_progress(void *ud)
{
	pump(ud);
}

static void
on_after_failed(void *ud, const char *why)
{
	mb_fail((struct mailbox *)ud, IDLEFETCH_EPROTO, "%s", why);
}

static const struct after_ops after_ops = {
	.progress = on_after_progress,
	.failed = on_after_failed,
};

static const struct conn_sink sink = {
	.unit = sink_unit,
	.literal_begin = sink_begin,
	.literal_data = sink_data,
	.literal_end = sink_end,
};

/* ---- public ------------------------------------------------------------------------ */

struct mailbox *
mailbox_new(uv_loop_t *loop, const struct mailbox_opts *o)
{
	struct mailbox *mb = xcalloc(1, sizeof(*mb));

	mb->loop = loop;
	mb->o = *o;
	mb->a = o->acct;
	mb->name = o->name;
	mb->status = o->status;
	mb->wire = mutf7_wire_name(o->name);
	if (mb->wire == NULL)
		fatal("folder name '%s' is not UTF-8", o->name);
	/* An MDA or LMTP target: the bodies wait in a spool of the state. */
	if (mb->a->target.kind == TARGET_MAILDIR)
		mb->maildir = folder_maildir(mb->a->maildir, o->name);
	else
		mb->maildir = xasprintf("%s/%s/spool", o->state_dir,
		    mb->a->name);
	/* Keyed by the server's name: Entwürfe is Entw&APw-rfe. */
	mb->state_path = state_path(o->state_dir, mb->a->name, mb->wire);
	mb->tag_mark = maildir_tag(mb->a->name, o->name);
	mb->sync_ok = true;
	mb->ul = uidlist_new();
	if (mb->a->after != AFTER_KEEP)
		mb->af = after_new(mb->a->after, o->move_wire, &after_ops, mb);
	lane_init(&mb->lane, loop, mb->maildir, &lane_ops, mb);
	return mb;
}

/* Batches never committed, and their files in tmp/, go with it. */
static void
mailbox_free(struct mailbox *mb)
{
	struct batch *b, *next;

	for (b = mb->bhead; b; b = next) {
		next = b->next;
		for (size_t i = 0; i < b->nfiles; i++)
			maildir_discard(mb->maildir, &b->files[i]);
		sync_batch_free(b);
	}
	uidlist_free(mb->ul);
	after_free(mb->af);
	recover_free_set(mb);
	free(mb->cuids);
	free(mb->select_err);
	free(mb->lookup_guess);
	free(mb->maildir);
	free(mb->state_path);
	free(mb->wire);
	free(mb);
}

void
mailbox_release(struct mailbox *mb)
{
	if (mb == NULL)
		return;
	if (mb->conn != NULL || mb->job_busy)
		fatal("mailbox_release of %s with work in flight", mb->name);
	if (!lane_idle(&mb->lane)) {
		mb->released = true; /* freed once the lane has drained */
		return;
	}
	mailbox_free(mb);
}

void
mailbox_rename(struct mailbox *mb, const char *name, struct status_rec *rec)
{
	mb->name = name;
	mb->status = rec;
}

void
mailbox_prepare(struct mailbox *mb)
{
	LOG(mb, LOGL_DEBUG, "Maildir %s, state %s", mb->maildir,
	    mb->state_path);
	mailbox_enter(mb, MB_PREPARE, "reading its Maildir and state");
	start_job(mb, COMMIT_PREPARE);
}

void
mailbox_select(struct mailbox *mb, struct conn *c)
{
	mb->conn = c;
	conn_set_sink(c, &sink, mb);
	/*
	 * What failed on an earlier connection is no reason to stop now; the
	 * owner waits for every lane before it connects again.
	 */
	if (lane_idle(&mb->lane))
		lane_reset(&mb->lane);
	send_select(mb);
}

void
mailbox_again(struct mailbox *mb)
{
	sync_start(mb);
}

bool
mailbox_untagged(struct mailbox *mb, const struct proto_resp *r)
{
	bool grew = false;

	if (r->has & HAS_UIDVALIDITY)
		mb->uidvalidity = r->uidvalidity;
	if (r->has & HAS_UIDNEXT)
		mb->uidnext = r->uidnext;
	if (r->has & HAS_EXPUNGE) {
		if (mb->af != NULL)
			after_expunge_seen(mb->af);
		if (mb->exists > 0)
			mb->exists--;
	}
	if (r->has & HAS_EXISTS) {
		grew = r->exists > mb->exists;
		mb->exists = r->exists;
	}
	if (grew)
		mb->more = true; /* fetched now, or after the sync under way */
	return grew;
}

void
mailbox_stop(struct mailbox *mb)
{
	mb->stopping = true;
}

void
mailbox_detach(struct mailbox *mb)
{
	if (mb->conn == NULL)
		return;
	conn_set_sink(mb->conn, NULL, NULL);
	mb->conn = NULL;
	if (mb->cur_open)
		lane_discard(&mb->lane, &mb->cur);
	mb->cur_open = false;
	mb->streaming = false;
	mb->inflight = 0;
	if (mb->af != NULL)
		after_reset(mb->af);
	uidlist_clear(mb->ul);
	mb->recovering = false; /* its state says to do it again */
	recover_free_set(mb);
	free(mb->cuids);
	mb->cuids = NULL;
	mb->ncuids = mb->capcuids = 0;
	set_text(&mb->select_err, NULL);
	if (mb->state >= MB_SELECT && mb->state <= MB_SYNCED)
		mailbox_enter(mb, MB_READY, "the connection closed");
}

bool
mailbox_settle(struct mailbox *mb)
{
	pump_commits(mb);
	return mailbox_quiet(mb);
}

bool
mailbox_quiet(const struct mailbox *mb)
{
	return !mb->job_busy && lane_idle(&mb->lane);
}

enum mailbox_state
mailbox_state(const struct mailbox *mb)
{
	return mb->state;
}

const char *
mailbox_state_name(enum mailbox_state st)
{
	return state_names[st];
}

const char *
mailbox_name(const struct mailbox *mb)
{
	return mb->name;
}

const char *
mailbox_wire(const struct mailbox *mb)
{
	return mb->wire;
}

struct status_rec *
mailbox_status(const struct mailbox *mb)
{
	return mb->status;
}

bool
mailbox_prepared(const struct mailbox *mb)
{
	return mb->state != MB_NEW && mb->state != MB_PREPARE &&
	    mb->state != MB_DEAD;
}

bool
mailbox_dead(const struct mailbox *mb)
{
	return mb->state == MB_DEAD;
}

bool
mailbox_sync_ok(const struct mailbox *mb)
{
	return mb->sync_ok;
}

void
mailbox_reset_ok(struct mailbox *mb)
{
	mb->sync_ok = true;
}

uint32_t
mailbox_uidnext(const struct mailbox *mb)
{
	return mb->uidnext;
}

uint32_t
mailbox_uidvalidity(const struct mailbox *mb)
{
	return mb->uidvalidity;
}
