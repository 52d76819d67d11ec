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
#include "session_int.h"

/* What the connection calls, through mailbox_sync_ops (at the end). */
static void sync_batch_free(struct batch *b);
static void sync_pump_commits(struct session *s);
static void sync_after_copy(struct session *s, struct cmd *c);
static void sync_start_job(struct session *s, enum commit_kind kind);
static void sync_fetch_line(struct session *s, const struct proto_resp *r);
static bool sync_may_close(const struct session *s);
static void sync_begin(struct session *s);
static int sync_list_finish(struct session *s);
static void sync_pump(struct session *s);
static void sync_start(struct session *s);
static void sync_verify_last(struct session *s);
static void sync_verify_done(struct session *s, const struct proto_resp *r);
static void sync_fetch_body(struct session *s, const struct proto_resp *r);
static int sync_literal_begin(void *ud, const char *prefix, size_t len,
    uint64_t size);
static int sync_literal_data(void *ud, const char *p, size_t n);
static int sync_literal_end(void *ud);

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
	if (s->gap)
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
		s->gap = true;
		if (s->gap_uid != b->uids[i]) {
			LOG(s, LOGL_WARN,
			    "server did not return UID %u; fetching again "
			    "from there",
			    b->uids[i]);
			s->more = true; /* re-list: it may have been expunged */
		}
		s->gap_uid = b->uids[i];
	}
}

/* Starts the next commit if the head batch is ready for one. */
static void
sync_pump_commits(struct session *s)
{
	struct batch *b = s->bhead;

	if (s->job_busy || b == NULL)
		return;
	if (!b->complete && s->conn_alive)
		return;
	/* Its bodies must be written out first (all of it, once cut off). */
	if (s->lane.done_seq < (b->complete ? b->lane_seq : s->lane.enq_seq))
		return;
	s->bhead = b->next;
	if (s->bhead == NULL)
		s->btail = NULL;
	s->job_batch = b;
	sync_start_job(s, COMMIT_DELIVER);
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

/* \Deleted, then expunge just those UIDs where UIDPLUS allows. */
static void
send_delete(struct session *s, const char *set, size_t n)
{
	struct cmd *c;

	session_send_cmd(s, CMD_STORE, false,
	    "UID STORE %s +FLAGS.SILENT (\\Deleted)", set);
	if (s->caps & CAP_UIDPLUS)
		c = session_send_cmd(s, CMD_EXPUNGE, false, "UID EXPUNGE %s",
		    set);
	else
		c = session_send_cmd(s, CMD_EXPUNGE, false, "EXPUNGE");
	c->nuids = n; /* how many "* n EXPUNGE" to expect at least */
	s->expunges = 0;
	s->after_pending += 2;
}

static void
after_send(struct session *s, const uint32_t *uids, size_t n)
{
	char mbox[512];
	struct cmd *c;
	char *set;

	set = uid_set(uids, n);
	/* The configuration allows only names a quoted string can carry. */
	if (s->a->after == AFTER_MOVE &&
	    proto_quote(mbox, sizeof(mbox), s->move_wire) < 0)
		fatal("folder name '%s' cannot be quoted", s->move_wire);
	if (s->a->after == AFTER_DELETE) {
		send_delete(s, set, n);
	} else if (s->caps & CAP_MOVE) {
		c = session_send_cmd(s, CMD_MOVE, false, "UID MOVE %s %s", set,
		    mbox);
		c->nuids = n;
		s->expunges = 0;
		s->after_pending++;
	} else {
		/* No MOVE: copy, and delete the originals once the copy is done. */
		c = session_send_cmd(s, CMD_COPY, false, "UID COPY %s %s", set,
		    mbox);
		c->uids = xmalloc(n * sizeof(*uids));
		memcpy(c->uids, uids, n * sizeof(*uids));
		c->nuids = n;
		s->after_pending++;
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

	if (s->after_pending > 0 || s->nwait == 0 || !s->conn_alive)
		return;
	k = s->nwait < BATCH_MAX_MSGS ? s->nwait : BATCH_MAX_MSGS;
	after_send(s, s->after_wait, k);
	memmove(s->after_wait, s->after_wait + k,
	    (s->nwait - k) * sizeof(*s->after_wait));
	s->nwait -= k;
}

/* Queues the after-action of messages whose delivery is durable. */
static void
after_delivery(struct session *s, const uint32_t *uids, size_t n)
{
	if (n == 0 || s->a->after == AFTER_KEEP || !s->conn_alive)
		return;
	if (s->nwait + n > s->capwait) {
		s->capwait = (s->nwait + n) * 2;
		s->after_wait = xrealloc(s->after_wait,
		    s->capwait * sizeof(*s->after_wait));
	}
	memcpy(s->after_wait + s->nwait, uids, n * sizeof(*uids));
	s->nwait += n;
	after_kick(s);
}

/* COPY succeeded: now the originals may go. */
static void
sync_after_copy(struct session *s, struct cmd *c)
{
	char *set = uid_set(c->uids, c->nuids);

	send_delete(s, set, c->nuids);
	free(set);
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
	}
	if (s->conn_alive) {
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
	struct batch *b = s->job_batch;
	uint32_t *uids;

	if (j->ncommit > 0) {
		s->mb->delivered += (unsigned)j->ncommit;
		s->conn_delivered += (unsigned)j->ncommit;
		s->mb->status->delivered = s->mb->delivered;
		LOG(s, LOGL_INFO, "delivered %zu message(s), UIDs %u..%u",
		    j->ncommit, b->files[0].uid, b->files[j->ncommit - 1].uid);
	}
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
		s->job_batch = NULL;
		session_fail(s, j->result,
		    "%s; fetching stops until this is fixed", j->err);
		return;
	}
	/* The state that records these messages is durable: act on the server. */
	uids = xmalloc((j->ncommit + 1) * sizeof(*uids));
	for (size_t i = 0; i < j->ncommit; i++)
		uids[i] = b->files[i].uid;
	after_delivery(s, uids, j->ncommit);
	free(uids);
	sync_batch_free(b);
	s->job_batch = NULL;
}

static void job_done(struct session *s, struct commit_req *j);

static void
job_after(struct commit_req *j, void *ud)
{
	struct session *s = ud;

	s->job_busy = false;
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
		if (s->conn_alive && s->state == S_SYNC &&
		    s->phase == PHASE_RECONCILE)
			sync_verify_last(s);
		else
			session_settle(s);
		return;
	case COMMIT_DELIVER:
		job_done_commit(s, j);
		if (s->conn_alive && s->state == S_SYNC)
			sync_pump(s);
		else
			session_settle(s);
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
sync_start_job(struct session *s, enum commit_kind kind)
{
	struct commit_req *j = xcalloc(1, sizeof(*j));

	j->kind = kind;
	j->st = s->mb->st;
	j->maildir = s->mb->maildir;
	j->state_path = s->mb->state_path;
	j->tag = s->mb->tag_mark;
	j->uidvalidity = s->uidvalidity;
	if (kind == COMMIT_DELIVER) {
		plan_commit(s, s->job_batch, j);
		j->files = s->job_batch->files;
		j->nfiles = s->job_batch->nfiles;
		j->fps = s->job_batch->fps;
	}
	s->job_busy = true;
	commit_start(s->loop, j, job_after, s);
}

/* ---- sync ------------------------------------------------------------------ */

static void
sync_list_add(struct session *s, uint32_t uid, uint32_t size)
{
	if (uid <= s->mb->st.last_uid) {
		/* Delivered already but still on the server. */
		if (s->a->after == AFTER_KEEP ||
		    (s->nstale > 0 && s->stale[s->nstale - 1] == uid))
			return;
		if (s->nstale == LIST_MAX)
			return; /* the rest goes at the next sync */
		if (s->nstale == s->capstale) {
			s->capstale = s->capstale ? s->capstale * 2 : 64;
			s->stale =
			    xrealloc(s->stale, s->capstale * sizeof(*s->stale));
		}
		s->stale[s->nstale++] = uid;
		return;
	}
	/* Servers list in UID order; a repeated line is dropped at once. */
	if (s->nlist > 0 && s->list[s->nlist - 1] == uid)
		return;
	if (s->nlist == LIST_MAX) {
		/*
		 * Full: this pass delivers only UIDs below every one left out,
		 * so that the last delivered UID cannot pass one of them.
		 */
		if (s->list_cut == 0 || uid < s->list_cut)
			s->list_cut = uid;
		return;
	}
	if (s->nlist == s->caplist) {
		s->caplist = s->caplist ? s->caplist * 2 : 256;
		s->list = xrealloc(s->list, s->caplist * sizeof(*s->list));
		s->sizes = xrealloc(s->sizes, s->caplist * sizeof(*s->sizes));
	}
	s->list[s->nlist] = uid;
	s->sizes[s->nlist++] = size;
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

	if (!ascending(s->list, s->nlist)) {
		pairs = xmalloc(s->nlist * sizeof(*pairs));
		for (size_t i = 0; i < s->nlist; i++)
			pairs[i] = (uint64_t)s->list[i] << 32 | s->sizes[i];
		qsort(pairs, s->nlist, sizeof(*pairs), cmp_u32_pair);
		for (size_t i = 0; i < s->nlist; i++) {
			uint32_t uid = (uint32_t)(pairs[i] >> 32);

			if (o > 0 && s->list[o - 1] == uid)
				continue;
			s->list[o] = uid;
			s->sizes[o++] = (uint32_t)pairs[i];
		}
		s->nlist = o;
		free(pairs);
	}
	if (s->list_cut != 0) {
		while (s->nlist > 0 && s->list[s->nlist - 1] >= s->list_cut)
			s->nlist--;
		s->list_cut = 0;
		if (s->nlist == 0)
			return -1;
		s->more = true; /* the rest in the next pass */
	}
	s->next_list = 0;
	s->mb->status->queued = s->mb->status->delivered + s->nlist;
	if (s->nstale > 0 && !ascending(s->stale, s->nstale))
		qsort(s->stale, s->nstale, sizeof(*s->stale), cmp_u32);
	return 0;
}

static void
send_batch(struct session *s)
{
	struct batch *b = xcalloc(1, sizeof(*b));
	uint64_t bytes = 0;
	size_t n = 0;
	char *set;
	struct cmd *c;

	while (s->next_list + n < s->nlist && n < BATCH_MAX_MSGS &&
	    (n == 0 || bytes + s->sizes[s->next_list + n] <= BATCH_MAX_BYTES))
		bytes += s->sizes[s->next_list + n++];
	b->n = n;
	b->uids = xmalloc(n * sizeof(*b->uids));
	memcpy(b->uids, s->list + s->next_list, n * sizeof(*b->uids));
	b->files = xmalloc(n * sizeof(*b->files));
	b->fps = xcalloc(n, sizeof(*b->fps));
	s->next_list += n;
	set = uid_set(b->uids, n);
	c = session_send_cmd(s, CMD_FETCH, false,
	    "UID FETCH %s (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] BODY.PEEK[])",
	    set);
	free(set);
	c->batch = b;
	b->tag = c->tag;
	if (s->btail)
		s->btail->next = b;
	else
		s->bhead = b;
	s->btail = b;
	s->inflight++;
}

/*
 * A finished sync keeps none of its listing: an idle connection would hold
 * 2 KiB or more of it (2 MiB at a thousand accounts).
 */
static void
sync_release(struct session *s)
{
	free(s->list);
	free(s->sizes);
	s->list = s->sizes = NULL;
	s->nlist = s->next_list = s->caplist = 0;
	if (s->nstale == 0) {
		free(s->stale);
		s->stale = NULL;
		s->capstale = 0;
	}
	if (s->nwait == 0) {
		free(s->after_wait);
		s->after_wait = NULL;
		s->capwait = 0;
	}
}

static void
sync_complete(struct session *s)
{
	sync_release(s);
	if (!s->healthy)
		s->healthy_at = uv_now(s->loop);
	s->healthy = true;
	s->mb->status->last_sync = (int64_t)time(NULL);
	status_changed(s->mb->status);
	/* A UID the server kept skipping is not delivered: not a clean sync. */
	s->mb->sync_ok = !s->gap;
	s->auth_logged = false;
	/* Messages an after-action missed: list and act again, a few times. */
	if (s->after_short && s->after_retries < 3 && !s->stopping) {
		s->after_retries++;
		s->more = true;
	} else {
		s->after_retries = 0;
	}
	s->after_short = false;
	if (s->more && !s->stopping) {
		sync_start(s);
		return;
	}
	session_synced(s);
}

/* Moves the sync forward: more batches, commits, or done. */
static void
sync_pump(struct session *s)
{
	if (s->state != S_SYNC || s->phase != PHASE_FETCH)
		return;
	sync_pump_commits(s);
	if (s->listing)
		return;
	/* Chunks keep each command line well under servers' line limits. */
	after_delivery(s, s->stale, s->nstale);
	s->nstale = 0;
	after_kick(s);
	while (!s->stopping && !s->gap && s->inflight < PIPELINE_DEPTH &&
	    s->next_list < s->nlist)
		send_batch(s);
	if (s->bhead == NULL && !s->job_busy && s->after_pending == 0 &&
	    s->nwait == 0 &&
	    (s->next_list >= s->nlist || s->stopping || s->gap))
		sync_complete(s);
}

static void
sync_start(struct session *s)
{
	uint32_t from = 1;

	if (s->a->after == AFTER_KEEP && s->mb->st.last_uid < UINT32_MAX)
		from = s->mb->st.last_uid + 1;

	s->phase = PHASE_FETCH;
	s->more = false;
	s->gap = false;
	s->nlist = s->next_list = s->nstale = 0;
	s->list_cut = 0;
	s->listing = true;
	session_send_cmd(s, CMD_LIST, false, "UID FETCH %u:* (UID RFC822.SIZE)",
	    from);
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

	if (s->mb->st.last_uid == 0 || s->mb->st.uidvalidity != s->uidvalidity ||
	    (fp->size == 0 && fp->msgid[0] == '\0')) {
		sync_start(s); /* nothing to check against */
		return;
	}
	s->last_found = false;
	memset(&s->last_now, 0, sizeof(s->last_now));
	s->phase = PHASE_VERIFY;
	session_send_cmd(s, CMD_VERIFY, false,
	    "UID FETCH %u (UID RFC822.SIZE "
	    "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
	    s->mb->st.last_uid);
}

static void
sync_verify_fetch(struct session *s, const struct proto_resp *r)
{
	if (!(r->has & HAS_UID) || r->uid != s->mb->st.last_uid)
		return;
	s->last_found = true;
	s->last_now.size = (r->has & HAS_SIZE) ? r->size : 0;
	if (r->has & HAS_MSGID)
		snprintf(s->last_now.msgid, sizeof(s->last_now.msgid), "%s",
		    r->msgid);
}

static void
sync_verify_done(struct session *s, const struct proto_resp *r)
{
	const struct state_fp *was = &s->mb->st.last, *now = &s->last_now;
	bool size_differs, id_differs;

	if (r->status != PROTO_OK) {
		session_fail(s, IDLEFETCH_EPROTO,
		    "checking UID %u failed: %s", s->mb->st.last_uid, r->text);
		return;
	}
	/* Gone (deleted, moved): nothing to compare, nothing renumbered. */
	size_differs = s->last_found && was->size && now->size &&
	    was->size != now->size;
	id_differs = s->last_found && was->msgid[0] && now->msgid[0] &&
	    strcmp(was->msgid, now->msgid) != 0;
	if (size_differs || id_differs) {
		char what[2 * STATE_MSGID_MAX + 64];

		if (id_differs)
			snprintf(what, sizeof(what), "Message-ID %s, was %s",
			    now->msgid, was->msgid);
		else
			snprintf(what, sizeof(what), "size %u, was %u",
			    now->size, was->size);
		if (session_folder_stop(s, IDLEFETCH_EPROTO,
		    "UID %u no longer holds the message delivered under it "
		    "(%s): the server renumbered this folder without "
		    "changing UIDVALIDITY %u. Not fetching it, to avoid "
		    "losing and duplicating mail; after checking the "
		    "Maildir, remove %s to fetch the folder as new",
		    s->mb->st.last_uid, what, s->uidvalidity,
		    s->mb->state_path))
			session_synced(s);
		return;
	}
	sync_start(s);
}

static void
sync_fetch_body(struct session *s, const struct proto_resp *r)
{
	struct batch *b;

	/*
	 * Servers may interleave the responses of pipelined commands, so the
	 * UID, not the order, says which batch a body belongs to.
	 */
	for (b = s->bhead; b; b = b->next)
		if (!b->complete && (r->has & HAS_UID) &&
		    bsearch(&r->uid, b->uids, b->n, sizeof(*b->uids),
			cmp_u32) != NULL)
			break;
	s->cur_open = false;
	if (b == NULL) {
		LOG(s, LOGL_WARN,
		    "ignoring a message body the client did not ask "
		    "for (UID %u)",
		    r->uid);
		lane_discard(&s->lane, &s->cur);
		return;
	}
	for (size_t i = 0; i < b->nfiles; i++)
		if (b->files[i].uid == r->uid) {
			lane_discard(&s->lane, &s->cur);
			return;
		}
	s->cur.uid = r->uid;
	b->fps[b->nfiles].uid = r->uid;
	b->fps[b->nfiles].fp.size = (r->has & HAS_SIZE) ? r->size : 0;
	if (r->has & HAS_MSGID)
		snprintf(b->fps[b->nfiles].fp.msgid,
		    sizeof(b->fps[b->nfiles].fp.msgid), "%s", r->msgid);
	b->files[b->nfiles++] = s->cur;
}

static int
sync_literal_begin(void *ud, const char *prefix, size_t len, uint64_t size)
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
	if (s->cur_open) {
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
	s->streaming = true;
	if (s->state != S_SYNC || s->phase != PHASE_FETCH || s->bhead == NULL)
		return 1; /* streamed to nowhere */
	r = maildir_create(s->mb->maildir, s->mb->tag_mark, &s->cur);
	if (r < 0) {
		/* Decided and logged here, once; the framer only stops. */
		session_fail(s, r, "cannot create a file in %s/tmp: %s",
		    s->mb->maildir, strerror(-r));
		return r;
	}
	s->cur.msgno = ++s->next_msgno;
	s->cur_open = true;
	s->cur_cr = false;
	return 1;
}

/* A full conversion buffer goes to the lane (which copies it). */
/* Body bytes, CRLF made LF, on their way to the lane (the loop's only). */
static struct maildir_writer shared_writer;

static int
lane_sink(void *ud, const char *p, size_t n)
{
	struct session *s = ud;

	lane_write(&s->lane, &s->cur, p, n);
	return 0;
}

static int
sync_literal_data(void *ud, const char *p, size_t n)
{
	struct session *s = ud;

	struct maildir_writer *w = &shared_writer;
	int r;

	session_progress(s); /* message bytes: the answer is coming */
	if (!s->cur_open)
		return 0;
	/*
	 * One buffer for every connection on the loop: it holds nothing
	 * between two chunks, only the session's pending CR does.
	 */
	w->len = 0;
	w->cr = s->cur_cr;
	r = maildir_feed(w, p, n, lane_sink, s);
	if (r == 0 && w->len > 0)
		lane_write(&s->lane, &s->cur, w->buf, w->len);
	w->len = 0;
	s->cur_cr = w->cr;
	return r;
}

static int
sync_literal_end(void *ud)
{
	struct session *s = ud;

	struct maildir_writer *w = &shared_writer;

	s->streaming = false;
	if (!s->cur_open)
		return 0;
	w->len = 0;
	w->cr = s->cur_cr;
	maildir_convert_end(w);
	lane_write(&s->lane, &s->cur, w->buf, w->len);
	w->len = 0;
	return 0;
}

/*
 * The folder was just SELECTed: files a crash left in new/ unrecorded are
 * found first (once per folder and process), then last_uid is checked,
 * then new mail is listed and fetched.
 */
static void
sync_begin(struct session *s)
{
	if (!s->mb->reconciled) {
		s->phase = PHASE_RECONCILE;
		sync_start_job(s, COMMIT_RECONCILE);
		return;
	}
	sync_verify_last(s);
}

static void
sync_fetch_line(struct session *s, const struct proto_resp *r)
{
	if (s->phase == PHASE_VERIFY)
		sync_verify_fetch(s, r);
	else if (s->phase == PHASE_FETCH && s->listing && (r->has & HAS_UID))
		sync_list_add(s, r->uid, r->size);
}

/*
 * Stopping: before the listing, nothing is on its way; during it, close
 * once no message is halfway in (what is complete is committed).
 */
static bool
sync_may_close(const struct session *s)
{
	if (s->phase != PHASE_FETCH)
		return true;
	return !s->streaming && (s->inflight > 0 || s->listing);
}

const struct sync_ops mailbox_sync_ops = {
	.literal_begin = sync_literal_begin,
	.literal_data = sync_literal_data,
	.literal_end = sync_literal_end,
	.begin = sync_begin,
	.again = sync_start,
	.may_close = sync_may_close,
	.pump = sync_pump,
	.pump_commits = sync_pump_commits,
	.start_job = sync_start_job,
	.fetch_line = sync_fetch_line,
	.list_finish = sync_list_finish,
	.verify_done = sync_verify_done,
	.after_copy = sync_after_copy,
	.batch_free = sync_batch_free,
	.fetch_body = sync_fetch_body,
};
