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
#include <inttypes.h>

#include "session_int.h"
#include "idlefetch/header.h"
#include "idlefetch/hook.h"
#include "idlefetch/msgindex.h"

struct batch {
	struct batch *next;
	struct session *s;
	uint32_t *uids; /* requested, ascending */
	size_t n;
	struct maildir_file *files; /* received, in arrival order */
	size_t nfiles;
	struct commit_fp *fps; /* what the server said of each, by UID */
	bool complete; /* tagged OK seen */
	uint64_t lane_seq; /* its bodies are on disk once the lane is here */
};

/*
 * What the mailbox sync does with the selected folder while the connection
 * is in S_SYNC: find files delivered before a crash, check that last_uid
 * still holds what was delivered, then list and fetch; at the end, drop
 * from the folder's index what the server no longer holds.
 */
enum sync_phase {
	PHASE_RECONCILE,
	PHASE_VERIFY,
	PHASE_RECOVER,
	PHASE_FETCH,
	PHASE_COMPACT
};

/*
 * The index is compacted once it may hold twice what the server does and
 * some more: a line is about 75 bytes, never under 60, so counting 60
 * each errs toward compacting early.
 */
#define INDEX_LINE_MIN 60
#define INDEX_SLACK 64

/* The mailbox sync's own state, one per connection (session.ms). */
struct msync {
	enum sync_phase phase;
	bool last_found; /* PHASE_VERIFY: the server still has UID last_uid */
	struct state_fp last_now; /* ... and this is what it says of it */
	bool gap; /* a batch came back short: commit no further */
	bool after_short; /* an after-action removed fewer than it was sent */
	unsigned after_retries; /* syncs started again for that, in a row */
	uint32_t gap_uid; /* the UID it lacked, to retry only once */
	uint32_t *list; /* UIDs to fetch, then sizes */
	uint32_t *sizes;
	size_t nlist, caplist, next_list;
	uint32_t list_cut; /* over LIST_MAX: lowest UID left out; 0: none */
	uint32_t *stale; /* delivered, still on the server */
	size_t nstale, capstale;
	uint32_t *after_wait; /* delivered, their after-action not yet sent */
	size_t nwait, capwait;
	bool listing;
	struct batch *bhead, *btail;
	size_t inflight; /* FETCH batches sent, not complete */
	unsigned after_pending;
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
	bool r_cut; /* its listing went over LIST_MAX */
	struct msgindex_set *rset; /* what it listed, until it is matched */
	unsigned r_matched, r_new, r_noid;
	uint32_t r_max, r_last; /* highest UID listed; the last line's */
	struct state_fp r_max_fp; /* ...and what UID r_max holds */
	/* The folder's index: its size after this sync's last job (0: none). */
	uint64_t index_bytes;
	uint32_t *cuids; /* PHASE_COMPACT: the server's UIDs */
	size_t ncuids, capcuids;
	bool c_over; /* ...over MSGINDEX_SET_MAX of them */
	uint32_t c_distinct, c_top; /* ...how many ascending, the last */
	uint32_t c_uidvalidity; /* ...under this UIDVALIDITY */
	bool c_warned; /* a compaction was skipped and said so */
};


/* What the connection calls, through mailbox_sync_ops (at the end). */
static void sync_batch_free(struct batch *b);
static void fetch_line(void *ud, const struct proto_resp *r);
static void listed(void *ud, const struct proto_resp *r);
static void verify_done(void *ud, const struct proto_resp *r);
static void batch_done(void *ud, const struct proto_resp *r);
static void batch_line(void *ud, const struct proto_resp *r);
static void recover_match(struct session *s);
static int sync_list_finish(struct session *s);
static void sync_start(struct session *s);
static void sync_complete(struct session *s);
static void recover_start(struct session *s);
static void fingerprint(const struct proto_resp *r, struct state_fp *fp,
    uint64_t *key);
static void recover_listed(struct session *s);
static void recover_matched(struct session *s, struct commit_req *j);
static void recover_done(struct session *s, struct commit_req *j);
static void compact_done(struct session *s, struct commit_req *j);
static void sync_verify_last(struct session *s);
static void recover_free_set(struct session *s);
static void list_done(struct session *s);
static bool compact_due(const struct session *s);
static void compact_start(struct session *s);
static void compact_add(struct session *s, uint32_t uid);
static void compact_listed(struct session *s, const struct proto_resp *r);
static void sync_verify_done(struct session *s, const struct proto_resp *r);
static void sync_fetch_body(struct session *s, const struct proto_resp *r);

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

static int
cmp_u32_pair(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

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
plan_commit(struct session *s, struct batch *b, struct commit_req *j)
{
	size_t k = 0, i;

	if (b->nfiles > 0)
		qsort(b->files, b->nfiles, sizeof(*b->files), cmp_file_uid);
	j->commit_uid = s->mb->st.last_uid;
	j->ncommit = 0;
	if (s->ms->gap)
		return; /* an earlier batch stopped short */
	for (i = 0; i < b->n; i++) {
		if (k == b->nfiles || b->files[k].uid != b->uids[i])
			break;
		if (s->lane.failed_msgno != 0 &&
		    b->files[k].msgno >= s->lane.failed_msgno)
			break; /* its body did not reach the disk whole */
		j->commit_uid = b->uids[i];
		k++;
	}
	j->ncommit = k;
	if (i < b->n && b->complete) {
		s->ms->gap = true;
		if (s->ms->gap_uid != b->uids[i]) {
			LOG(s, LOGL_WARN,
			    "server did not return UID %u; fetching again "
			    "from there",
			    b->uids[i]);
			s->more = true; /* re-list: it may have been expunged */
		}
		s->ms->gap_uid = b->uids[i];
	}
}

/* Starts the next commit if the head batch is ready for one. */
void
mailbox_pump_commits(struct session *s)
{
	struct batch *b = s->ms->bhead;

	if (s->job_busy || b == NULL)
		return;
	if (!b->complete && conn_alive(s->conn))
		return;
	/* Its bodies must be written out first (all of it, once cut off). */
	if (s->lane.done_seq < (b->complete ? b->lane_seq : s->lane.enq_seq))
		return;
	s->ms->bhead = b->next;
	if (s->ms->bhead == NULL)
		s->ms->btail = NULL;
	s->ms->job_batch = b;
	mailbox_start_job(s, COMMIT_DELIVER);
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

/*
 * An after-action command in flight: the UIDs it acts on (a COPY's, to
 * delete once copied) and how many "* n EXPUNGE" it should bring.
 */
struct after_cmd {
	struct session *s;
	uint32_t *uids; /* COPY only */
	size_t n;
};

static void after_copied(void *ud, const struct proto_resp *r);
static void after_expunged(void *ud, const struct proto_resp *r);
static void after_stored(void *ud, const struct proto_resp *r);

static struct after_cmd *
after_cmd_new(struct session *s, const uint32_t *uids, size_t n)
{
	struct after_cmd *ac = xcalloc(1, sizeof(*ac));

	ac->s = s;
	ac->n = n;
	if (uids) {
		ac->uids = xmalloc(n * sizeof(*uids));
		memcpy(ac->uids, uids, n * sizeof(*uids));
	}
	s->ms->after_pending++;
	return ac;
}

/* \Deleted, then expunge just those UIDs where UIDPLUS allows. */
static void
send_delete(struct session *s, const char *set, size_t n)
{
	struct after_cmd *ac = after_cmd_new(s, NULL, n);

	s->ms->after_pending++;
	conn_cmd(s->conn, 0, after_stored, NULL, s,
	    "UID STORE %s +FLAGS.SILENT (\\Deleted)", set);
	/* ac->n: how many "* n EXPUNGE" to expect at least */
	if (conn_caps(s->conn) & CAP_UIDPLUS)
		conn_cmd(s->conn, 0, after_expunged, NULL, ac,
		    "UID EXPUNGE %s", set);
	else
		conn_cmd(s->conn, 0, after_expunged, NULL, ac, "EXPUNGE");
	s->expunges = 0;
}

static void
after_send(struct session *s, const uint32_t *uids, size_t n)
{
	char mbox[512];
	char *set;

	set = uid_set(uids, n);
	/* The configuration allows only names a quoted string can carry. */
	if (s->a->after == AFTER_MOVE &&
	    proto_quote(mbox, sizeof(mbox), s->move_wire) < 0)
		fatal("folder name '%s' cannot be quoted", s->move_wire);
	if (s->a->after == AFTER_DELETE) {
		send_delete(s, set, n);
	} else if (conn_caps(s->conn) & CAP_MOVE) {
		conn_cmd(s->conn, 0, after_expunged, NULL,
		    after_cmd_new(s, NULL, n), "UID MOVE %s %s", set, mbox);
		s->expunges = 0;
	} else {
		/* No MOVE: copy, and delete the originals once the copy is done. */
		conn_cmd(s->conn, 0, after_copied, NULL,
		    after_cmd_new(s, uids, n), "UID COPY %s %s", set, mbox);
	}
	free(set);
}

/*
 * One after-action (a STORE + EXPUNGE pair, a MOVE, a COPY and its
 * delete) at a time, for at most BATCH_MAX_MSGS messages: Dovecot runs
 * pipelined commands in parallel, and a STORE \Deleted that overlapped an
 * earlier EXPUNGE was answered OK and lost (100 of 1,500 messages stayed).
 */
static void
after_kick(struct session *s)
{
	size_t k;

	if (s->ms->after_pending > 0 || s->ms->nwait == 0 || !conn_alive(s->conn))
		return;
	k = s->ms->nwait < BATCH_MAX_MSGS ? s->ms->nwait : BATCH_MAX_MSGS;
	after_send(s, s->ms->after_wait, k);
	memmove(s->ms->after_wait, s->ms->after_wait + k,
	    (s->ms->nwait - k) * sizeof(*s->ms->after_wait));
	s->ms->nwait -= k;
}

/* Queues the after-action of messages whose delivery is durable. */
static void
after_delivery(struct session *s, const uint32_t *uids, size_t n)
{
	if (n == 0 || s->a->after == AFTER_KEEP || !conn_alive(s->conn))
		return;
	if (s->ms->nwait + n > s->ms->capwait) {
		s->ms->capwait = (s->ms->nwait + n) * 2;
		s->ms->after_wait = xrealloc(s->ms->after_wait,
		    s->ms->capwait * sizeof(*s->ms->after_wait));
	}
	memcpy(s->ms->after_wait + s->ms->nwait, uids, n * sizeof(*uids));
	s->ms->nwait += n;
	after_kick(s);
}

/*
 * The reply to an after-action command. A refusal: the messages are
 * delivered and recorded, so nothing is lost; the action is tried again
 * at the next sync (the UIDs are below last_uid). A failure, not a quiet
 * log line: --once exits 1 and status shows it. Returns whether it went.
 */
static bool
after_reply(struct session *s, const struct proto_resp *r)
{
	s->ms->after_pending--;
	if (r->status != PROTO_OK) {
		session_fail(s, IDLEFETCH_EPROTO,
		    "after-delivery action failed (messages "
		    "stay on the server): %s",
		    r->text);
		return false;
	}
	return true;
}

static void
after_stored(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r && after_reply(s, r))
		mailbox_pump(s);
}

/* EXPUNGE or MOVE: answered OK, yet did the messages go? */
static void
after_expunged(void *ud, const struct proto_resp *r)
{
	struct after_cmd *ac = ud;
	struct session *s = ac->s;
	size_t n = ac->n;

	free(ac);
	if (r == NULL || !after_reply(s, r))
		return;
	/*
	 * Fewer messages went than were asked (Dovecot can drop a STORE
	 * \Deleted under load): list again, they are still below last_uid.
	 */
	if (s->expunges < n)
		s->ms->after_short = true;
	mailbox_pump(s);
}

/* COPY succeeded: now the originals may go. */
static void
after_copied(void *ud, const struct proto_resp *r)
{
	struct after_cmd *ac = ud;
	struct session *s = ac->s;

	if (r != NULL && after_reply(s, r)) {
		char *set = uid_set(ac->uids, ac->n);

		send_delete(s, set, ac->n);
		free(set);
		mailbox_pump(s);
	}
	free(ac->uids);
	free(ac);
}

/* ---- commit results -------------------------------------------------------- */

static void
job_done_prepare(struct session *s, struct commit_req *j)
{
	/* A folder found while connected: the connection failed meanwhile. */
	if (s->state != S_PREPARE) {
		session_settle(s);
		return;
	}
	if (j->result < 0) {
		if (!session_folder_stop(s, j->result, "%s", j->err))
			return;
	} else {
		if (j->removed)
			LOG(s, LOGL_INFO,
			    "removed %u unfinished file(s) from tmp/",
			    j->removed);
		s->mb->st = j->st;
		s->mb->prepared = true;
		if (s->mb->st.pending > s->mb->st.last_uid)
			LOG(s, LOGL_WARN,
			    "UID %u was handed to the delivery target when "
			    "idlefetch stopped, before its answer was recorded: "
			    "it is handed over again and may arrive twice",
			    s->mb->st.pending);
		s->mb->st.pending = 0;
		memcpy(s->maildir_id, j->id, sizeof(s->maildir_id));
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
	if (s->mb + 1 < s->mbs + s->nmbs) {
		session_use(s, s->mb + 1);
		session_prepare(s);
		return;
	}
	session_connect(s);
}

static void
job_done_commit(struct session *s, struct commit_req *j)
{
	struct batch *b = s->ms->job_batch;
	uint32_t *uids;
	size_t n = 0;

	if (j->ncommit > j->nrefused) {
		unsigned ok = (unsigned)j->ncommit - j->nrefused;

		s->mb->delivered += ok;
		s->conn_delivered += ok;
		s->mb->status->delivered = s->mb->delivered;
		LOG(s, LOGL_INFO, "delivered %u message(s), UIDs %u..%u", ok,
		    b->files[0].uid, b->files[j->ncommit - 1].uid);
		hook_delivered(s->o.hook, s->mb->name, ok);
	}
	if (j->nrefused > 0)
		LOG(s, LOGL_ERROR,
		    "the target refused %u message(s), UID %u first (%s); "
		    "they stay on the server, and later mail goes on",
		    j->nrefused, j->refused_uid, j->refused_why);
	if (j->result == 0 || j->st.last_uid > s->mb->st.last_uid)
		s->mb->st = j->st;
	if (j->result < 0) {
		/*
		 * Files may be in new/ that no state records (a failed fsync of
		 * new/ or of the state): the next connection must scan for
		 * them before it fetches, or it fetches them again.
		 */
		s->mb->reconciled = false;
		sync_batch_free(b);
		s->ms->job_batch = NULL;
		if (j->result == -EAGAIN)
			session_fail(s, j->result,
			    "delivery deferred: %s; the message stays on the "
			    "server and is tried again",
			    j->err);
		else
			session_fail(s, j->result,
			    "%s; fetching stops until this is fixed", j->err);
		return;
	}
	/*
	 * The state that records these messages is durable: act on the
	 * server. Not during a recovery: its state is saved at its end, and
	 * leaves on the server what it listed (keep_to).
	 */
	if (s->mb->st.recovering) {
		sync_batch_free(b);
		s->ms->job_batch = NULL;
		return;
	}
	uids = xmalloc((j->ncommit + 1) * sizeof(*uids));
	for (size_t i = 0; i < j->ncommit; i++)
		if (!state_refused(&s->mb->st, b->files[i].uid))
			uids[n++] = b->files[i].uid;
	after_delivery(s, uids, n);
	free(uids);
	sync_batch_free(b);
	s->ms->job_batch = NULL;
}

static void job_done(struct session *s, struct commit_req *j);

static void
job_after(struct commit_req *j, void *ud)
{
	struct session *s = ud;

	s->job_busy = false;
	if (j->index_bytes != 0 && j->kind != COMMIT_COMPACT)
		s->ms->index_bytes = j->index_bytes;
	job_done(s, j);
	free(j);
}

static void
job_done(struct session *s, struct commit_req *j)
{
	switch (j->kind) {
	case COMMIT_PREPARE:
		job_done_prepare(s, j);
		return;
	case COMMIT_RECONCILE:
		if (j->result < 0) {
			session_fail(s, j->result, "%s", j->err);
			return;
		}
		if (j->removed)
			LOG(s, LOGL_INFO,
			    "found %u UID(s) delivered before a restart; "
			    "state updated",
			    j->removed);
		s->mb->st = j->st;
		s->mb->reconciled = true;
		if (conn_alive(s->conn) && s->state == S_SYNC &&
		    s->ms->phase == PHASE_RECONCILE)
			sync_verify_last(s);
		else
			session_settle(s);
		return;
	case COMMIT_DELIVER:
		job_done_commit(s, j);
		if (conn_alive(s->conn) && s->state == S_SYNC)
			mailbox_pump(s);
		else
			session_settle(s);
		return;
	case COMMIT_RECOVER:
		if (j->result < 0) {
			session_fail(s, j->result, "%s", j->err);
			return;
		}
		s->mb->st = j->st;
		if (conn_alive(s->conn) && s->state == S_SYNC &&
		    s->ms->phase == PHASE_RECOVER) {
			recover_listed(s);
			return;
		}
		session_settle(s);
		return;
	case COMMIT_MATCH:
		recover_matched(s, j);
		return;
	case COMMIT_RECOVERED:
		recover_done(s, j);
		return;
	case COMMIT_COMPACT:
		compact_done(s, j);
		return;
	default:
		fatal("bad job kind");
	}
}

/*
 * The one job in flight, on the heap only while it runs: a thousand idle
 * connections need none.
 */
void
mailbox_start_job(struct session *s, enum commit_kind kind)
{
	struct commit_req *j = xcalloc(1, sizeof(*j));

	j->kind = kind;
	j->st = s->mb->st;
	j->maildir = s->mb->maildir;
	j->state_path = s->mb->state_path;
	j->root = s->a->maildir; /* NULL with another target: no marker */
	j->target = &s->a->target;
	j->folder = s->mb->name;
	j->keep_refused = s->a->after != AFTER_KEEP;
	j->account = s->a->name;
	memcpy(j->id, s->maildir_id, sizeof(j->id));
	j->tag = s->mb->tag_mark;
	j->uidvalidity = s->uidvalidity;
	j->recovering = s->mb->st.recovering != 0;
	if (kind == COMMIT_RECOVERED) {
		j->commit_uid = s->ms->r_max;
		j->st.last = s->ms->r_max_fp;
	}
	/* The job owns these until it is done (job_done frees them). */
	if (kind == COMMIT_MATCH) {
		j->set = s->ms->rset;
		s->ms->rset = NULL;
	}
	if (kind == COMMIT_COMPACT) {
		j->uids = s->ms->cuids;
		j->nuids = s->ms->ncuids;
		s->ms->cuids = NULL;
		s->ms->ncuids = s->ms->capcuids = 0;
	}
	if (kind == COMMIT_DELIVER) {
		plan_commit(s, s->ms->job_batch, j);
		j->files = s->ms->job_batch->files;
		j->nfiles = s->ms->job_batch->nfiles;
		j->fps = s->ms->job_batch->fps;
	}
	s->job_busy = true;
	commit_start(s->loop, j, job_after, s);
}

/* ---- sync ------------------------------------------------------------------ */

static void list_push(struct session *s, uint32_t uid, uint32_t size);

static void
sync_list_add(struct session *s, uint32_t uid, uint32_t size)
{
	if (uid <= s->mb->st.last_uid) {
		/*
		 * Delivered already but still on the server; left there if a
		 * recovery matched it.
		 */
		if (s->a->after == AFTER_KEEP || uid <= s->mb->st.keep_to ||
		    state_refused(&s->mb->st, uid) ||
		    (s->ms->nstale > 0 && s->ms->stale[s->ms->nstale - 1] == uid))
			return;
		if (s->ms->nstale == LIST_MAX)
			return; /* the rest goes at the next sync */
		if (s->ms->nstale == s->ms->capstale) {
			s->ms->capstale = s->ms->capstale ? s->ms->capstale * 2 : 64;
			s->ms->stale =
			    xrealloc(s->ms->stale, s->ms->capstale * sizeof(*s->ms->stale));
		}
		s->ms->stale[s->ms->nstale++] = uid;
		return;
	}
	list_push(s, uid, size);
}

/* One UID to fetch (and its size), up to LIST_MAX of them. */
static void
list_push(struct session *s, uint32_t uid, uint32_t size)
{
	/* Servers list in UID order; a repeated line is dropped at once. */
	if (s->ms->nlist > 0 && s->ms->list[s->ms->nlist - 1] == uid)
		return;
	if (s->ms->nlist == LIST_MAX) {
		/*
		 * Full: this pass delivers only UIDs below every one left out,
		 * so that the last delivered UID cannot pass one of them.
		 */
		if (s->ms->list_cut == 0 || uid < s->ms->list_cut)
			s->ms->list_cut = uid;
		return;
	}
	if (s->ms->nlist == s->ms->caplist) {
		s->ms->caplist = s->ms->caplist ? s->ms->caplist * 2 : 256;
		s->ms->list = xrealloc(s->ms->list, s->ms->caplist * sizeof(*s->ms->list));
		s->ms->sizes = xrealloc(s->ms->sizes, s->ms->caplist * sizeof(*s->ms->sizes));
	}
	s->ms->list[s->ms->nlist] = uid;
	s->ms->sizes[s->ms->nlist++] = size;
}

static bool
ascending(const uint32_t *v, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (v[i] <= v[i - 1])
			return false;
	return true;
}

/*
 * Sorts the listing by UID (sizes follow), drops duplicates and, after a
 * listing cut at LIST_MAX, every UID above the lowest one left out. The
 * usual listing is in order already and costs one pass. Returns -1 when a
 * cut listing leaves nothing to fetch: a server repeating itself.
 */
static int
sync_list_finish(struct session *s)
{
	uint64_t *pairs;
	size_t o = 0;

	if (!ascending(s->ms->list, s->ms->nlist)) {
		pairs = xmalloc(s->ms->nlist * sizeof(*pairs));
		for (size_t i = 0; i < s->ms->nlist; i++)
			pairs[i] = (uint64_t)s->ms->list[i] << 32 | s->ms->sizes[i];
		qsort(pairs, s->ms->nlist, sizeof(*pairs), cmp_u32_pair);
		for (size_t i = 0; i < s->ms->nlist; i++) {
			uint32_t uid = (uint32_t)(pairs[i] >> 32);

			if (o > 0 && s->ms->list[o - 1] == uid)
				continue;
			s->ms->list[o] = uid;
			s->ms->sizes[o++] = (uint32_t)pairs[i];
		}
		s->ms->nlist = o;
		free(pairs);
	}
	if (s->ms->list_cut != 0) {
		while (s->ms->nlist > 0 && s->ms->list[s->ms->nlist - 1] >= s->ms->list_cut)
			s->ms->nlist--;
		s->ms->list_cut = 0;
		if (s->ms->nlist == 0)
			return -1;
		s->more = true; /* the rest in the next pass */
	}
	s->ms->next_list = 0;
	s->mb->status->queued = s->mb->status->delivered + s->ms->nlist;
	if (s->ms->nstale > 0 && !ascending(s->ms->stale, s->ms->nstale))
		qsort(s->ms->stale, s->ms->nstale, sizeof(*s->ms->stale), cmp_u32);
	return 0;
}

static void
send_batch(struct session *s)
{
	struct batch *b = xcalloc(1, sizeof(*b));
	uint64_t bytes = 0;
	size_t n = 0;
	char *set;

	while (s->ms->next_list + n < s->ms->nlist && n < BATCH_MAX_MSGS &&
	    (n == 0 || bytes + s->ms->sizes[s->ms->next_list + n] <= BATCH_MAX_BYTES))
		bytes += s->ms->sizes[s->ms->next_list + n++];
	b->n = n;
	b->uids = xmalloc(n * sizeof(*b->uids));
	memcpy(b->uids, s->ms->list + s->ms->next_list, n * sizeof(*b->uids));
	b->files = xmalloc(n * sizeof(*b->files));
	b->fps = xcalloc(n, sizeof(*b->fps));
	s->ms->next_list += n;
	b->s = s;
	set = uid_set(b->uids, n);
	conn_cmd(s->conn, HAS_FETCH, batch_done, batch_line, b,
	    "UID FETCH %s (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")] BODY.PEEK[])",
	    set);
	free(set);
	if (s->ms->btail)
		s->ms->btail->next = b;
	else
		s->ms->bhead = b;
	s->ms->btail = b;
	s->ms->inflight++;
}

/*
 * A finished sync keeps none of its listing: an idle connection would hold
 * 2 KiB or more of it (2 MiB at a thousand accounts).
 */
static void
sync_release(struct session *s)
{
	struct msync *ms = s->ms;

	free(ms->list);
	free(ms->sizes);
	ms->list = ms->sizes = NULL;
	ms->nlist = ms->next_list = ms->caplist = 0;
	if (ms->nstale == 0) {
		free(ms->stale);
		ms->stale = NULL;
		ms->capstale = 0;
	}
	if (ms->nwait == 0) {
		free(ms->after_wait);
		ms->after_wait = NULL;
		ms->capwait = 0;
	}
}

static void
sync_complete(struct session *s)
{
	sync_release(s);
	if (s->ms->recovering) {
		s->ms->recovering = false;
		/* Not all of it delivered: the next pass recovers again. */
		if (!s->ms->gap && !s->ms->r_cut && !s->stopping) {
			mailbox_start_job(s, COMMIT_RECOVERED);
			return;
		}
	}
	if (compact_due(s)) {
		compact_start(s); /* comes back here when it is done */
		return;
	}
	if (!s->healthy)
		s->healthy_at = uv_now(s->loop);
	s->healthy = true;
	s->mb->status->last_sync = (int64_t)time(NULL);
	status_changed(s->mb->status);
	/* A UID the server kept skipping is not delivered: not a clean sync. */
	s->mb->sync_ok = !s->ms->gap;
	s->auth_logged = false;
	/* Messages an after-action missed: list and act again, a few times. */
	if (s->ms->after_short && s->ms->after_retries < 3 && !s->stopping) {
		s->ms->after_retries++;
		s->more = true;
	} else {
		s->ms->after_retries = 0;
	}
	s->ms->after_short = false;
	if (s->more && !s->stopping) {
		sync_start(s);
		return;
	}
	session_synced(s);
}

/* Moves the sync forward: more batches, commits, or done. */
void
mailbox_pump(struct session *s)
{
	if (s->state != S_SYNC || s->ms->phase != PHASE_FETCH)
		return;
	mailbox_pump_commits(s);
	if (s->ms->listing)
		return;
	/* Chunks keep each command line well under servers' line limits. */
	after_delivery(s, s->ms->stale, s->ms->nstale);
	s->ms->nstale = 0;
	after_kick(s);
	while (!s->stopping && !s->ms->gap && s->ms->inflight < PIPELINE_DEPTH &&
	    s->ms->next_list < s->ms->nlist)
		send_batch(s);
	if (s->ms->bhead == NULL && !s->job_busy && s->ms->after_pending == 0 &&
	    s->ms->nwait == 0 &&
	    (s->ms->next_list >= s->ms->nlist || s->stopping || s->ms->gap))
		sync_complete(s);
}

/* A listing of the folder from UID from, with these items, starts. */
static void
list_begin(struct session *s, uint32_t from, const char *items)
{
	s->ms->phase = PHASE_FETCH;
	s->more = false;
	s->ms->gap = false;
	s->ms->nlist = s->ms->next_list = s->ms->nstale = 0;
	s->ms->list_cut = 0;
	s->ms->listing = true;
	conn_cmd(s->conn, HAS_FETCH, listed, fetch_line, s, "UID FETCH %u:* (%s)",
	    from, items);
}

static void
sync_start(struct session *s)
{
	uint32_t from = 1;

	if (s->mb->st.recovering) {
		recover_start(s); /* one that did not finish */
		return;
	}
	if (s->a->after == AFTER_KEEP && s->mb->st.last_uid < UINT32_MAX)
		from = s->mb->st.last_uid + 1;
	list_begin(s, from, "UID RFC822.SIZE");
}

/*
 * Before trusting last_uid, ask the server what UID last_uid holds now:
 * a server that renumbered its messages without changing UIDVALIDITY
 * (Courier-IMAP after a restart, when only EXAMINE had touched a folder)
 * would otherwise have us skip new mail and deliver old mail again.
 */
static void
sync_verify_last(struct session *s)
{
	const struct state_fp *fp = &s->mb->st.last;

	if (s->uidnext != 0 && s->mb->st.last_uid >= s->uidnext &&
	    s->mb->st.uidvalidity == s->uidvalidity) {
		/* UIDs only grow: this is another numbering. */
		LOG(s, LOGL_WARN,
		    "the server's next UID is %u, yet UID %u was delivered: it "
		    "renumbered this folder without changing UIDVALIDITY %u. "
		    "Matching its messages against the Maildir instead of "
		    "trusting the UIDs",
		    s->uidnext, s->mb->st.last_uid, s->uidvalidity);
		recover_start(s);
		return;
	}
	if (s->mb->st.last_uid == 0 || s->mb->st.uidvalidity != s->uidvalidity ||
	    (fp->size == 0 && fp->msgid[0] == '\0')) {
		sync_start(s); /* nothing to check against */
		return;
	}
	s->ms->last_found = false;
	memset(&s->ms->last_now, 0, sizeof(s->ms->last_now));
	s->ms->phase = PHASE_VERIFY;
	conn_cmd(s->conn, HAS_FETCH, verify_done, fetch_line, s,
	    "UID FETCH %u (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")])",
	    s->mb->st.last_uid);
}

static void
sync_verify_fetch(struct session *s, const struct proto_resp *r)
{
	if (!(r->has & HAS_UID) || r->uid != s->mb->st.last_uid)
		return;
	s->ms->last_found = true;
	s->ms->last_now.size = (r->has & HAS_SIZE) ? r->size : 0;
	fingerprint(r, &s->ms->last_now, NULL);
}

static void
sync_verify_done(struct session *s, const struct proto_resp *r)
{
	const struct state_fp *was = &s->mb->st.last, *now = &s->ms->last_now;
	bool size_differs, id_differs;

	if (r->status != PROTO_OK) {
		session_fail(s, IDLEFETCH_EPROTO,
		    "checking UID %u failed: %s", s->mb->st.last_uid, r->text);
		return;
	}
	/* Gone (deleted, moved): nothing to compare, nothing renumbered. */
	size_differs = s->ms->last_found && was->size && now->size &&
	    was->size != now->size;
	id_differs = s->ms->last_found && was->msgid[0] && now->msgid[0] &&
	    strcmp(was->msgid, now->msgid) != 0;
	if (size_differs || id_differs) {
		char what[2 * STATE_MSGID_MAX + 64];

		if (id_differs)
			snprintf(what, sizeof(what), "Message-ID %s, was %s",
			    now->msgid, was->msgid);
		else
			snprintf(what, sizeof(what), "size %u, was %u",
			    now->size, was->size);
		LOG(s, LOGL_WARN,
		    "UID %u no longer holds the message delivered under it "
		    "(%s): the server renumbered this folder without "
		    "changing UIDVALIDITY %u. Matching its messages against "
		    "the Maildir instead of trusting the UIDs",
		    s->mb->st.last_uid, what, s->uidvalidity);
		recover_start(s);
		return;
	}
	sync_start(s);
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
recover_start(struct session *s)
{
	s->ms->phase = PHASE_RECOVER;
	mailbox_start_job(s, COMMIT_RECOVER);
}

/*
 * The state says "recovering": list every message with its header fields.
 * The listing is kept (24 bytes a message) and matched against the index
 * on the threadpool once it is complete, so that the index, which may be
 * far larger than the folder, is never held in memory.
 */
static void
recover_listed(struct session *s)
{
	recover_free_set(s);
	s->ms->rset = xcalloc(1, sizeof(*s->ms->rset));
	s->ms->recovering = true;
	s->ms->r_cut = false;
	s->ms->r_matched = s->ms->r_noid = 0;
	s->ms->r_max = s->ms->r_last = 0;
	memset(&s->ms->r_max_fp, 0, sizeof(s->ms->r_max_fp));
	list_begin(s, 1,
	    "UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (" HEADER_FIELDS ")]");
}

static void
recover_line(struct session *s, const struct proto_resp *r)
{
	struct state_fp fp;
	uint64_t key;

	if (r->uid == s->ms->r_last || s->ms->rset == NULL)
		return; /* a repeated line, or a failed listing */
	s->ms->r_last = r->uid;
	fingerprint(r, &fp, &key);
	if (r->uid > s->ms->r_max) {
		s->ms->r_max = r->uid;
		s->ms->r_max_fp = fp;
		s->ms->r_max_fp.size = (r->has & HAS_SIZE) ? r->size : 0;
	}
	if (fp.msgid[0] == '\0')
		s->ms->r_noid++;
	if (msgindex_set_add(s->ms->rset, r->uid, key,
		(r->has & HAS_SIZE) ? r->size : 0) < 0) {
		recover_free_set(s);
		session_fail(s, IDLEFETCH_EPROTO,
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
recover_free_set(struct session *s)
{
	free_set(s->ms->rset);
	s->ms->rset = NULL;
}

/* The listing is complete: match it against the index, off the loop. */
static void
recover_match(struct session *s)
{
	s->ms->phase = PHASE_RECOVER;
	mailbox_start_job(s, COMMIT_MATCH);
}

/* Only the messages without a delivered file are fetched. */
static void
recover_matched(struct session *s, struct commit_req *j)
{
	struct msgindex_set *m = j->set;

	if (j->result < 0) {
		free_set(m);
		session_fail(s, j->result, "%s", j->err);
		return;
	}
	if (!conn_alive(s->conn) || s->state != S_SYNC ||
	    s->ms->phase != PHASE_RECOVER || !s->ms->recovering) {
		free_set(m);
		session_settle(s);
		return;
	}
	if (m->from_maildir)
		LOG(s, LOGL_INFO,
		    "read %u message(s) of the Maildir missing from its index",
		    m->from_maildir);
	s->ms->r_matched = m->matched;
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].by == 0)
			list_push(s, m->v[i].uid, m->v[i].size);
	free_set(m);
	s->ms->phase = PHASE_FETCH;
	list_done(s);
}

/*
 * Every message the recovery listed is delivered or matched: the state
 * takes the folder's UIDVALIDITY and its highest UID.
 */
static void
recover_done(struct session *s, struct commit_req *j)
{
	if (j->result < 0) {
		session_fail(s, j->result, "%s", j->err);
		return;
	}
	s->mb->st = j->st;
	LOG(s, LOGL_WARN,
	    "recovered the renumbered folder: %u message(s) matched the "
	    "Maildir, %u new delivered, %u without a Message-ID (matched by "
	    "Date, From, Subject and size); nothing was deleted or moved on "
	    "the server. UIDVALIDITY %u, last UID %u",
	    s->ms->r_matched, s->ms->r_new, s->ms->r_noid, j->st.uidvalidity,
	    j->st.last_uid);
	if (!conn_alive(s->conn) || s->state != S_SYNC) {
		session_settle(s);
		return;
	}
	s->more = true; /* what came after its listing */
	sync_complete(s);
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
compact_due(const struct session *s)
{
	const struct msync *ms = s->ms;

	if (ms->index_bytes == 0 || s->stopping || !conn_alive(s->conn) ||
	    s->state != S_SYNC || ms->gap || s->mb->st.recovering ||
	    s->mb->st.uidvalidity != s->uidvalidity)
		return false;
	return ms->index_bytes / INDEX_LINE_MIN >
	    2 * (uint64_t)s->exists + INDEX_SLACK;
}

static void
compact_start(struct session *s)
{
	LOG(s, LOGL_DEBUG,
	    "the folder's index (%" PRIu64 " bytes) may hold far more than "
	    "its %u message(s): listing their UIDs to compact it",
	    s->ms->index_bytes, s->exists);
	s->ms->index_bytes = 0; /* once per sync, whatever comes of it */
	s->ms->phase = PHASE_COMPACT;
	s->ms->ncuids = s->ms->c_distinct = s->ms->c_top = 0;
	s->ms->c_over = false;
	s->ms->c_uidvalidity = s->uidvalidity;
	if (s->exists == 0) {
		/*
		 * The server says the folder is empty (at SELECT, or after
		 * the EXPUNGEs it sent): nothing to list, and some servers
		 * refuse 1:* on an empty folder.
		 */
		mailbox_start_job(s, COMMIT_COMPACT);
		return;
	}
	s->ms->listing = true;
	conn_cmd(s->conn, HAS_FETCH, listed, fetch_line, s,
	    "UID FETCH 1:* (UID)");
}

static void
compact_add(struct session *s, uint32_t uid)
{
	struct msync *ms = s->ms;

	if (ms->ncuids == MSGINDEX_SET_MAX) {
		ms->c_over = true;
		return;
	}
	if (ms->ncuids == ms->capcuids) {
		ms->capcuids = ms->capcuids ? ms->capcuids * 2 : 256;
		ms->cuids = xrealloc(ms->cuids, ms->capcuids * sizeof(*ms->cuids));
	}
	ms->cuids[ms->ncuids++] = uid;
	/* A lower bound of the distinct UIDs: a server lists 1:* ascending. */
	if (ms->ncuids == 1 || uid > ms->c_top) {
		ms->c_distinct++;
		ms->c_top = uid;
	}
}

/* The sync ends as it would have without the compaction. */
static void
compact_end(struct session *s)
{
	free(s->ms->cuids);
	s->ms->cuids = NULL;
	s->ms->ncuids = s->ms->capcuids = 0;
	s->ms->phase = PHASE_FETCH;
	sync_complete(s);
}

/*
 * An index not compacted is only larger: it is not worth failing for, nor
 * worth a warning at every sync.
 */
static void
compact_listed(struct session *s, const struct proto_resp *r)
{
	struct msync *ms = s->ms;
	const char *why = NULL;

	ms->listing = false;
	if (r->status != PROTO_OK)
		why = r->text;
	else if (ms->c_over)
		why = "the folder holds too many messages";
	else if (s->uidvalidity != ms->c_uidvalidity)
		why = "the folder's UIDVALIDITY changed";
	else if (ms->c_distinct < s->exists)
		why = "the server listed fewer UIDs than it holds messages";
	if (why == NULL) {
		mailbox_start_job(s, COMMIT_COMPACT);
		return;
	}
	LOG(s, ms->c_warned ? LOGL_DEBUG : LOGL_WARN,
	    "not compacting the folder's index: %s", why);
	ms->c_warned = true;
	compact_end(s);
}

static void
compact_done(struct session *s, struct commit_req *j)
{
	free(j->uids);
	if (j->result < 0)
		LOG(s, LOGL_WARN, "cannot compact the folder's index: %s",
		    j->err);
	else
		LOG(s, LOGL_INFO,
		    "compacted the folder's index: %u line(s) kept, %u of "
		    "messages no longer on the server dropped",
		    j->counts.kept, j->counts.dropped);
	if (!conn_alive(s->conn) || s->state != S_SYNC ||
	    s->ms->phase != PHASE_COMPACT) {
		s->ms->phase = PHASE_FETCH;
		session_settle(s);
		return;
	}
	compact_end(s);
}

static void
sync_fetch_body(struct session *s, const struct proto_resp *r)
{
	struct batch *b;

	/*
	 * Servers may interleave the responses of pipelined commands, so the
	 * UID, not the order, says which batch a body belongs to.
	 */
	for (b = s->ms->bhead; b; b = b->next)
		if (!b->complete && (r->has & HAS_UID) &&
		    bsearch(&r->uid, b->uids, b->n, sizeof(*b->uids),
			cmp_u32) != NULL)
			break;
	s->ms->cur_open = false;
	if (b == NULL) {
		LOG(s, LOGL_WARN,
		    "ignoring a message body the client did not ask "
		    "for (UID %u)",
		    r->uid);
		lane_discard(&s->lane, &s->ms->cur);
		return;
	}
	for (size_t i = 0; i < b->nfiles; i++)
		if (b->files[i].uid == r->uid) {
			lane_discard(&s->lane, &s->ms->cur);
			return;
		}
	s->ms->cur.uid = r->uid;
	b->fps[b->nfiles].uid = r->uid;
	b->fps[b->nfiles].fp.size = (r->has & HAS_SIZE) ? r->size : 0;
	fingerprint(r, &b->fps[b->nfiles].fp, &b->fps[b->nfiles].key);
	b->files[b->nfiles++] = s->ms->cur;
}

int
mailbox_literal_begin(void *ud, const char *prefix, size_t len, uint64_t size)
{
	struct session *s = ud;
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
	if (s->ms->cur_open) {
		/*
		 * One FETCH response, one message: a second body would open a
		 * second file while the first is in flight, and which of the
		 * two is the message cannot be known.
		 */
		session_fail(s, IDLEFETCH_EPROTO,
		    "two message bodies in one FETCH response; closing the "
		    "connection");
		return IDLEFETCH_EPROTO;
	}
	s->ms->streaming = true;
	if (s->state != S_SYNC || s->ms->phase != PHASE_FETCH || s->ms->bhead == NULL)
		return 1; /* streamed to nowhere */
	r = maildir_create(s->mb->maildir, s->mb->tag_mark, &s->ms->cur);
	if (r < 0) {
		/* Decided and logged here, once; the framer only stops. */
		session_fail(s, r, "cannot create a file in %s/tmp: %s",
		    s->mb->maildir, strerror(-r));
		return r;
	}
	s->ms->cur.msgno = ++s->ms->next_msgno;
	s->ms->cur_open = true;
	s->ms->cur_cr = false;
	return 1;
}

/* A full conversion buffer goes to the lane (which copies it). */
/* Body bytes, CRLF made LF, on their way to the lane (the loop's only). */
static struct maildir_writer shared_writer;

static int
lane_sink(void *ud, const char *p, size_t n)
{
	struct session *s = ud;

	lane_write(&s->lane, &s->ms->cur, p, n);
	return 0;
}

int
mailbox_literal_data(void *ud, const char *p, size_t n)
{
	struct session *s = ud;

	struct maildir_writer *w = &shared_writer;
	int r;

	if (!s->ms->cur_open)
		return 0;
	/*
	 * One buffer for every connection on the loop: it holds nothing
	 * between two chunks, only the session's pending CR does.
	 */
	w->len = 0;
	w->cr = s->ms->cur_cr;
	r = maildir_feed(w, p, n, lane_sink, s);
	if (r == 0 && w->len > 0)
		lane_write(&s->lane, &s->ms->cur, w->buf, w->len);
	w->len = 0;
	s->ms->cur_cr = w->cr;
	return r;
}

int
mailbox_literal_end(void *ud)
{
	struct session *s = ud;

	struct maildir_writer *w = &shared_writer;

	s->ms->streaming = false;
	if (!s->ms->cur_open)
		return 0;
	w->len = 0;
	w->cr = s->ms->cur_cr;
	maildir_convert_end(w);
	lane_write(&s->lane, &s->ms->cur, w->buf, w->len);
	w->len = 0;
	return 0;
}

/*
 * The folder was just SELECTed: files a crash left in new/ unrecorded are
 * found first (once per folder and process), then last_uid is checked,
 * then new mail is listed and fetched.
 */
void
mailbox_begin(struct session *s)
{
	const struct state_rec *st = &s->mb->st;

	s->ms->index_bytes = 0; /* another folder's, or an older one */
	if (st->recovering) {
		LOG(s, LOGL_WARN,
		    "a recovery of this folder was cut short; doing it again");
		recover_start(s);
		return;
	}
	if (st->uidvalidity != 0 && st->uidvalidity != s->uidvalidity) {
		LOG(s, LOGL_WARN,
		    "UIDVALIDITY changed from %u to %u: the server renumbered "
		    "this folder. Matching its messages against the Maildir "
		    "instead of fetching them all again",
		    st->uidvalidity, s->uidvalidity);
		recover_start(s);
		return;
	}
	if (!s->mb->reconciled) {
		s->ms->phase = PHASE_RECONCILE;
		mailbox_start_job(s, COMMIT_RECONCILE);
		return;
	}
	sync_verify_last(s);
}

/* The listing is complete (and matched, in a recovery): fetch. */
static void
list_done(struct session *s)
{
	if (s->ms->recovering)
		s->ms->r_cut = s->ms->list_cut != 0;
	if (sync_list_finish(s) < 0) {
		session_fail(s, IDLEFETCH_EPROTO,
		    "the server listed over %d messages without a "
		    "new one; closing the connection", LIST_MAX);
		return;
	}
	if (s->ms->recovering)
		s->ms->r_new = (unsigned)s->ms->nlist;
	if (s->ms->nlist)
		LOG(s, LOGL_INFO, "%zu new message(s) to fetch", s->ms->nlist);
	mailbox_pump(s);
}

/* An untagged FETCH of the sync's commands: a listing's, or the verify's. */
static void
fetch_line(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (s->ms->phase == PHASE_VERIFY)
		sync_verify_fetch(s, r);
	else if (s->ms->phase == PHASE_COMPACT && s->ms->listing &&
	    (r->has & HAS_UID))
		compact_add(s, r->uid);
	else if (s->ms->phase == PHASE_FETCH && s->ms->listing &&
	    (r->has & HAS_UID) && s->ms->recovering)
		recover_line(s, r);
	else if (s->ms->phase == PHASE_FETCH && s->ms->listing && (r->has & HAS_UID))
		sync_list_add(s, r->uid, r->size);
}

/*
 * Stopping: before the listing, nothing is on its way; during it, close
 * once no message is halfway in (what is complete is committed).
 */
bool
mailbox_may_close(const struct session *s)
{
	if (s->ms->phase != PHASE_FETCH)
		return true;
	return !s->ms->streaming && (s->ms->inflight > 0 || s->ms->listing);
}

/* The listing's tagged reply (of new mail, a recovery's or compaction's). */
static void
listed(void *ud, const struct proto_resp *r)
{
	struct session *s = ud;

	if (r == NULL)
		return;
	if (s->ms->phase == PHASE_COMPACT) {
		compact_listed(s, r);
		return;
	}
	if (r->status != PROTO_OK) {
		session_fail(s, IDLEFETCH_EPROTO,
		    "listing new messages failed: %s", r->text);
		return;
	}
	s->ms->listing = false;
	if (s->ms->recovering)
		recover_match(s);
	else
		list_done(s);
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
	struct session *s = b->s;

	if (r == NULL)
		return; /* the batch is the sync's, freed with it */
	if (r->status != PROTO_OK) {
		session_fail(s, IDLEFETCH_EPROTO,
		    "fetching messages failed: %s", r->text);
		return;
	}
	b->complete = true;
	b->lane_seq = s->lane.enq_seq;
	s->ms->inflight--;
	mailbox_pump(s);
}

static void
batch_line(void *ud, const struct proto_resp *r)
{
	struct batch *b = ud;

	fetch_line(b->s, r);
}

/* The connection closed: nothing in flight on it is waited for. */
void
mailbox_reset(struct session *s)
{
	if (s->ms->cur_open)
		lane_discard(&s->lane, &s->ms->cur);
	s->ms->cur_open = false;
	s->ms->streaming = false;
	s->ms->inflight = 0;
	s->ms->after_pending = 0;
	s->ms->nwait = 0; /* redone at the next sync: they are below last_uid */
	s->ms->listing = false;
	s->ms->nlist = s->ms->next_list = s->ms->nstale = 0;
	s->ms->recovering = false; /* its state says to do it again */
	recover_free_set(s);
	free(s->ms->cuids);
	s->ms->cuids = NULL;
	s->ms->ncuids = s->ms->capcuids = 0;
}

void
mailbox_init(struct session *s)
{
	s->ms = xcalloc(1, sizeof(*s->ms));
}

/* With the session: batches never committed, and their files in tmp/. */
void
mailbox_free(struct session *s)
{
	struct msync *ms = s->ms;
	struct batch *b, *next;

	for (b = ms->bhead; b; b = next) {
		next = b->next;
		for (size_t i = 0; i < b->nfiles; i++)
			maildir_discard(s->mb->maildir, &b->files[i]);
		sync_batch_free(b);
	}
	ms->nstale = ms->nwait = 0; /* nothing is kept for later now */
	recover_free_set(s);
	free(ms->cuids);
	sync_release(s);
	free(ms);
	s->ms = NULL;
}

bool
mailbox_unit(struct session *s, int pr, const struct proto_resp *r,
    const char *p, size_t n)
{
	struct msync *ms = s->ms;

	if (ms->cur_open) {
		if (pr < 0 || !(r->has & HAS_BODY)) {
			session_fail(s, IDLEFETCH_EPROTO,
			    "cannot parse a FETCH response "
			    "carrying a message; closing the connection");
			return false;
		}
		sync_fetch_body(s, r);
	}
	if (pr < 0 && ms->listing && (r->has & HAS_FETCH)) {
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
		session_fail(s, IDLEFETCH_EPROTO,
		    "cannot read a line of the message listing ('%s'); "
		    "stopping so that no message is skipped", line);
		return false;
	}
	return true;
}

void
mailbox_again(struct session *s)
{
	sync_start(s);
}
