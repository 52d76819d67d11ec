/*
 * mailbox: one folder (mailbox.h). It owns the folder's state machine and
 * its one logged mailbox_enter(), and it makes every decision of a sync
 * that changes its state: SELECT, reconcile, verify the last UID, list,
 * fetch, commit, act on the server, recover from a renumbering, compact
 * the index. Its parts keep their own data and say what happened or what
 * comes next: selection (SELECT, what it said, and what follows from the
 * saved state), mbdisk (paths, the durable state record, the one disk job
 * and what it did), the lane (its ordered writes, in the mailbox's
 * memory), fetch (the listing, the batches, the bodies streamed into the
 * lane, the after-delivery actions on what is durable; it hears of the
 * lane's writes and tells through fetch_ops), verify (what the last UID
 * holds now), recovery and compaction (each with its own listing and its
 * next step). It calls those and the connection; it hears of replies
 * through the callbacks it passes with each command, and tells its owner
 * through mailbox_ops. It never changes the connection's state. What a
 * sync guarantees (last_uid never passes a message not in new/, the
 * server's copy is acted on only once committed) is said in fetch.c.
 */
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "idlefetch/commit.h"
#include "idlefetch/compaction.h"
#include "idlefetch/fetch.h"
#include "idlefetch/lane.h"
#include "idlefetch/log.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/mbdisk.h"
#include "idlefetch/recovery.h"
#include "idlefetch/selection.h"
#include "idlefetch/state.h"
#include "idlefetch/uidlist.h"
#include "idlefetch/util.h"
#include "idlefetch/verify.h"

static const char *state_names[] = { "NEW", "PREPARE", "READY", "SELECT",
	"RECONCILE", "VERIFY", "RECOVER", "LIST", "MATCH", "FETCH",
	"COMPACT_LIST", "COMPACT", "SYNCED", "DEAD" };

struct mailbox {
	const struct mailbox_ops *ops; /* borrowed */
	void *ud;
	const struct account *a;
	enum mailbox_state state;
	/* The folder */
	const char *name; /* borrowed; UTF-8 */
	struct status_rec *status; /* borrowed; kept current */
	bool sync_ok; /* its last sync on this connection lacked nothing */
	unsigned delivered; /* messages this process delivered */
	bool released; /* freed once its disk work is done */
	bool stopping;
	/*
	 * After it, in the same allocation (see parts): DISK (paths, durable
	 * state, the disk job), LANE (its ordered writes into the Maildir),
	 * SEL (SELECT and what it said).
	 */
	/* On a connection */
	struct conn *conn; /* NULL: on none */
	bool more; /* new mail announced during a sync */
	/* The sync */
	struct fetch *fe; /* the listing, its batches, the body streamed in */
	struct recovery *rc; /* made at a recovery's listing, freed at its end */
	struct compaction *cp; /* the folder's index and its compaction */
};

/*
 * Where its parts are in its one allocation, each aligned for any type:
 * the same for every mailbox, set by the first mailbox_new.
 */
static struct {
	size_t disk, lane, sel, total;
} parts;

#define PART(mb, off) ((void *)((const char *)(mb) + (off)))
#define DISK(mb) ((struct mbdisk *)PART((mb), parts.disk))
#define LANE(mb) ((struct lane *)PART((mb), parts.lane))
#define SEL(mb) ((struct selection *)PART((mb), parts.sel))

#define LOG(mb, lvl, ...) log_msg((lvl), (mb)->a->name, (mb)->name, __VA_ARGS__)

/* The one way to change state; logged. */
static void
mailbox_enter(struct mailbox *mb, enum mailbox_state st, const char *why)
{
	if (mb->state != st)
		LOG(mb, LOGL_DEBUG, "mailbox %s -> %s (%s)",
		    state_names[mb->state], state_names[st], why);
	mb->state = st;
	/* What the connection's sink expects follows from the state. */
	fetch_expect(mb->fe, st == MB_FETCH,
	    st == MB_LIST || st == MB_COMPACT_LIST);
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
	return on_conn(mb) && mb->state == st;
}

static void __attribute__((format(printf, 4, 5)))
fail_as(struct mailbox *mb, int err, bool final, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	mb->ops->failed(mb->ud, mb, err, final, why);
}

#define mb_fail(mb, err, ...) fail_as((mb), (err), false, __VA_ARGS__)

/* Batches never committed, and their files in tmp/, go with it. */
static void
mailbox_free(struct mailbox *mb)
{
	fetch_free(mb->fe);
	recovery_free(mb->rc);
	compaction_free(mb->cp);
	selection_fini(SEL(mb));
	mbdisk_fini(DISK(mb));
	free(mb);
}

/* Disk work ended: the owner decides what comes next (fetch_ops too). */
static void
mb_settled(void *ud)
{
	struct mailbox *mb = ud;

	if (mb->released) { /* its owner let it go */
		if (mailbox_quiet(mb))
			mailbox_free(mb);
		return;
	}
	mb->ops->settled(mb->ud, mb);
}

/* The sync goes round: a job's end, a batch's, a listing's, the sync's. */
static void job_done(const struct commit_req *j, void *ud);
static void pump(struct mailbox *mb);
static void sync_complete(struct mailbox *mb);

/* ---- batches and jobs ------------------------------------------------------ */

/* The one disk job in flight: what this kind needs beside the state. */
static void
start_job(struct mailbox *mb, enum commit_kind kind)
{
	struct commit_in in = { .uidvalidity = selection_uidvalidity(SEL(mb)) };

	if (kind == COMMIT_RECOVERED)
		in.commit_uid = recovery_max(mb->rc, &in.last);
	/* The job owns these until it is done (then freed). */
	if (kind == COMMIT_MATCH)
		in.set = recovery_take_set(mb->rc);
	if (kind == COMMIT_COMPACT)
		in.uids = compaction_take(mb->cp, &in.nuids);
	if (kind == COMMIT_DELIVER) {
		uint32_t missing = fetch_plan(mb->fe,
		    mbdisk_state(DISK(mb))->last_uid, &in);

		if (missing != 0) {
			LOG(mb, LOGL_WARN,
			    "server did not return UID %u; fetching again "
			    "from there",
			    missing);
			mb->more = true; /* re-list: it may have been expunged */
		}
	}
	mbdisk_run(DISK(mb), kind, &in, job_done, mb);
}

/* The state each kind of job is waited for in. */
static const enum mailbox_state job_waited[] = {
	[COMMIT_PREPARE] = MB_PREPARE,
	[COMMIT_RECONCILE] = MB_RECONCILE,
	[COMMIT_DELIVER] = MB_FETCH,
	[COMMIT_RECOVER] = MB_RECOVER,
	[COMMIT_MATCH] = MB_MATCH,
	[COMMIT_RECOVERED] = MB_FETCH,
	[COMMIT_COMPACT] = MB_COMPACT,
};

/* Enters the state the job is waited for in, and starts it there. */
static void
enter_job(struct mailbox *mb, enum commit_kind kind, const char *why)
{
	mailbox_enter(mb, job_waited[kind], why);
	start_job(mb, kind);
}

/* Starts the next commit if the head batch is ready for one. */
static void
pump_commits(struct mailbox *mb)
{
	if (mbdisk_busy(DISK(mb)) || !fetch_take(mb->fe, on_conn(mb)))
		return;
	start_job(mb, COMMIT_DELIVER);
}

/* A command's tagged reply: true if OK, else the sync fails. */
static bool
replied_ok(struct mailbox *mb, const struct proto_resp *r, const char *what)
{
	if (r->status != PROTO_OK)
		mb_fail(mb, IDLEFETCH_EPROTO, "%s failed: %s", what, r->text);
	return r->status == PROTO_OK;
}

/* A batch's tagged reply: its bodies are all in (or never will be). */
static void
batch_done(void *ud, const struct proto_resp *r)
{
	if (replied_ok(ud, r, "fetching messages"))
		pump(ud);
}

/* ---- listing ----------------------------------------------------------------- */

/* The listing is complete (and matched, in a recovery): fetch. */
static void
list_done(struct mailbox *mb)
{
	bool cut = fetch_cut(mb->fe);

	if (fetch_list_finish(mb->fe, &mb->more) < 0) {
		mb_fail(mb, IDLEFETCH_EPROTO,
		    "the server listed over %d messages without a "
		    "new one; closing the connection", UIDLIST_MAX);
		return;
	}
	mb->status->queued = mb->status->delivered + fetch_count(mb->fe);
	recovery_listed(mb->rc, cut, (unsigned)fetch_count(mb->fe));
	if (fetch_count(mb->fe) > 0)
		LOG(mb, LOGL_INFO, "%zu new message(s) to fetch",
		    fetch_count(mb->fe));
	mailbox_enter(mb, MB_FETCH, "the listing is complete");
	pump(mb);
}

/* The listing's tagged reply. */
static void
listed(void *ud, const struct proto_resp *r)
{
	if (r != NULL && replied_ok(ud, r, "listing new messages"))
		list_done(ud);
}

/* The recovery's listing ended: match it against the index, off the loop. */
static void
recover_listed(void *ud, const char *failed)
{
	struct mailbox *mb = ud;

	if (failed != NULL)
		mb_fail(mb, IDLEFETCH_EPROTO, "%s", failed);
	else
		enter_job(mb, COMMIT_MATCH, "the recovery's listing is complete");
}

/* The state says "recovering": list every message with its header fields. */
static void
recover_list(struct mailbox *mb)
{
	if (mb->rc == NULL)
		mb->rc = recovery_new(mb->a, mb->name);
	mailbox_enter(mb, MB_LIST, "a recovery's listing");
	mb->more = false;
	fetch_restart(mb->fe);
	recovery_list(mb->rc, mb->conn, recover_listed, mb);
}

/* Lists the folder again (and fetches what is new). */
void
mailbox_again(struct mailbox *mb)
{
	const struct state_rec *st = mbdisk_state(DISK(mb));
	uint32_t from = 1;

	if (st->recovering) {
		/* One that did not finish; the state says "recovering" first. */
		enter_job(mb, COMMIT_RECOVER, "the folder was renumbered");
		return;
	}
	if (mb->a->after == AFTER_KEEP && st->last_uid < UINT32_MAX)
		from = st->last_uid + 1;
	mailbox_enter(mb, MB_LIST, "listing new mail");
	mb->more = false;
	fetch_list(mb->fe, mb->conn, from, st, listed, mb);
}

/* ---- the end of a sync ------------------------------------------------------- */

/* The sync ends as it would have without the compaction. */
static void
compact_end(struct mailbox *mb)
{
	mailbox_enter(mb, MB_FETCH, "the compaction is over");
	sync_complete(mb);
}

static void
compact_listed(void *ud, bool compact)
{
	struct mailbox *mb = ud;

	if (compact)
		enter_job(mb, COMMIT_COMPACT, "the server's UIDs are listed");
	else
		compact_end(mb);
}

static void
sync_complete(struct mailbox *mb)
{
	/*
	 * A finished sync keeps none of its listing: an idle connection would
	 * hold 2 KiB or more of it (2 MiB at a thousand accounts).
	 */
	fetch_release(mb->fe);
	if (recovery_synced(mb->rc, fetch_gap(mb->fe) || mb->stopping)) {
		start_job(mb, COMMIT_RECOVERED);
		return;
	}
	/*
	 * Once per sync at most, after a sync that trusted the folder's UIDs;
	 * the compaction comes back here when it is done.
	 */
	if (!mb->stopping && in(mb, MB_FETCH) && !fetch_gap(mb->fe) &&
	    compaction_due(mb->cp, mbdisk_state(DISK(mb)), SEL(mb))) {
		bool listing = compaction_start(mb->cp, SEL(mb));

		mailbox_enter(mb, MB_COMPACT_LIST, "compacting the index");
		if (listing)
			compaction_list(mb->cp, mb->conn, compact_listed, mb);
		else
			enter_job(mb, COMMIT_COMPACT, "the folder is empty");
		return;
	}
	mb->status->last_sync = (int64_t)time(NULL);
	status_changed(mb->status);
	/* A UID the server kept skipping is not delivered: not a clean sync. */
	mb->sync_ok = !fetch_gap(mb->fe);
	/* Messages an after-action missed: list and act again, a few times. */
	if (fetch_again(mb->fe, mb->stopping))
		mb->more = true;
	if (mb->more && !mb->stopping) {
		mailbox_again(mb);
		return;
	}
	mailbox_enter(mb, MB_SYNCED, "every message listed is delivered");
	mb->ops->synced(mb->ud, mb);
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
	if (fetch_pump(mb->fe, mb->conn, mb->stopping, batch_done, mb) &&
	    !mbdisk_busy(DISK(mb)))
		sync_complete(mb);
}

/* ---- the start of a sync ------------------------------------------------------- */

static void
verified(void *ud, const char *failed, bool renumbered)
{
	struct mailbox *mb = ud;

	if (failed != NULL)
		mb_fail(mb, IDLEFETCH_EPROTO, "%s", failed);
	else if (renumbered)
		enter_job(mb, COMMIT_RECOVER, "the folder was renumbered");
	else
		mailbox_again(mb);
}

/* What the selection decided the sync does next. */
static void
sync_next(struct mailbox *mb, enum selection_next next)
{
	const struct state_rec *st = mbdisk_state(DISK(mb));

	switch (next) {
	case SELECTION_RECOVER:
		enter_job(mb, COMMIT_RECOVER, "the folder was renumbered");
		return;
	case SELECTION_RECONCILE:
		enter_job(mb, COMMIT_RECONCILE, "looking for unrecorded files");
		return;
	case SELECTION_VERIFY:
		mailbox_enter(mb, MB_VERIFY, "checking the last delivered UID");
		verify_start(mb->conn, mb->a, mb->name, st,
		    selection_uidvalidity(SEL(mb)), verified, mb);
		return;
	case SELECTION_LIST:
		mailbox_again(mb);
		return;
	default:
		fatal("bad selection");
	}
}

static void
select_ended(void *ud, enum selection_end end, bool final, const char *why)
{
	struct mailbox *mb = ud;

	switch (end) {
	case SELECTION_OK:
		compaction_set_size(mb->cp, 0); /* another folder's, or older */
		sync_next(mb, selection_check(SEL(mb), mbdisk_state(DISK(mb)),
				  mbdisk_reconciled(DISK(mb))));
		return;
	case SELECTION_REFUSED:
		/* The owner decides what follows. */
		mailbox_enter(mb, MB_READY, "the server would not open it");
		mb->ops->refused(mb->ud, mb, why);
		return;
	case SELECTION_FAILED:
		fail_as(mb, IDLEFETCH_EPROTO, final, "%s", why);
		return;
	default:
		fatal("bad selection end");
	}
}

/* ---- commit results -------------------------------------------------------- */

/* Its Maildir and state are read: READY, or DEAD when unusable. */
static void
job_done_prepare(struct mailbox *mb, const struct commit_req *j)
{
	if (j->result < 0) {
		mailbox_enter(mb, MB_DEAD, "its Maildir or state is unusable");
		LOG(mb, LOGL_ERROR, "%s", j->err);
		status_error(mb->status, j->err);
		mb->status->gave_up = true;
		status_changed(mb->status);
		mb->ops->prepared(mb->ud, mb, j->result, j->err);
		return;
	}
	mailbox_enter(mb, MB_READY, "its Maildir and state are read");
	mb->ops->prepared(mb->ud, mb, 0, NULL);
}

/*
 * The state took what the job saved, and what it delivered is logged
 * (mbdisk.c); the after-action gets what is durable (fetch.c).
 */
static void
job_done_commit(struct mailbox *mb, const struct commit_req *j)
{
	if (j->ncommit > j->nrefused) {
		unsigned ok = (unsigned)j->ncommit - j->nrefused;

		mb->delivered += ok;
		mb->status->delivered = mb->delivered;
		mb->ops->delivered(mb->ud, mb, ok);
	}
	fetch_committed(mb->fe, j->result, j->ncommit, mbdisk_state(DISK(mb)));
	if (j->result == -EAGAIN)
		mb_fail(mb, j->result,
		    "delivery deferred: %s; the message stays on the "
		    "server and is tried again",
		    j->err);
	else if (j->result < 0)
		mb_fail(mb, j->result,
		    "%s; fetching stops until this is fixed", j->err);
}

/* The recovery is over: what it found is logged, and it goes. */
static void
recover_done(struct mailbox *mb, const struct commit_req *j)
{
	recovery_done(mb->rc, &j->st);
	recovery_free(mb->rc);
	mb->rc = NULL;
}

/*
 * The disk job ended; the state took what it saved, and what it did is
 * logged (mbdisk.c). A job whose state was left meanwhile settles.
 */
static void
job_done(const struct commit_req *j, void *ud)
{
	struct mailbox *mb = ud;

	if (j->index_bytes != 0 && j->kind != COMMIT_COMPACT)
		compaction_set_size(mb->cp, j->index_bytes);
	switch (j->kind) {
	case COMMIT_PREPARE:
		job_done_prepare(mb, j);
		return;
	case COMMIT_DELIVER:
		job_done_commit(mb, j); /* it fails the sync itself */
		break;
	case COMMIT_COMPACT:
		break; /* a failed one only leaves the index larger */
	default:
		if (j->result < 0) {
			recovery_set_free(j->set); /* a MATCH's */
			mb_fail(mb, j->result, "%s", j->err);
			return;
		}
	}
	if (j->kind == COMMIT_RECOVERED)
		recover_done(mb, j);
	if (!in(mb, job_waited[j->kind]) ||
	    (j->kind == COMMIT_MATCH && !recovery_active(mb->rc))) {
		recovery_set_free(j->set);
		mb_settled(mb);
		return;
	}
	switch (j->kind) {
	case COMMIT_RECONCILE:
		sync_next(mb, selection_check_last(SEL(mb),
				  mbdisk_state(DISK(mb))));
		return;
	case COMMIT_DELIVER:
		pump(mb);
		return;
	case COMMIT_RECOVER:
		recover_list(mb);
		return;
	case COMMIT_MATCH:
		recovery_matched(mb->rc, j->set, fetch_uidlist(mb->fe));
		list_done(mb);
		return;
	case COMMIT_RECOVERED:
		mb->more = true; /* what came after its listing */
		sync_complete(mb);
		return;
	case COMMIT_COMPACT:
		compact_end(mb);
		return;
	default:
		fatal("bad job kind");
	}
}

/* ---- what fetch tells -------------------------------------------------------- */

static void
on_progress(void *ud)
{
	pump(ud);
}

/* Something failed, or the sink ignored something (fetch.h). */
static void
on_failed(void *ud, int err, const char *why)
{
	struct mailbox *mb = ud;

	if (err < 0) /* decided and logged here, once; the framer only stops */
		mb_fail(mb, err, "%s", why);
	else
		LOG(mb, LOGL_WARN, "%s", why);
}

static const struct fetch_ops fetch_ops = {
	.progress = on_progress,
	.failed = on_failed,
	.settled = mb_settled,
};

/* ---- public ------------------------------------------------------------------------ */

#define PART_ALIGN(n) \
	(((n) + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1))

static void
parts_place(void)
{
	parts.disk = PART_ALIGN(sizeof(struct mailbox));
	parts.lane = parts.disk + PART_ALIGN(mbdisk_size());
	parts.sel = parts.lane + PART_ALIGN(lane_size());
	parts.total = parts.sel + selection_size();
}

struct mailbox *
mailbox_new(uv_loop_t *loop, const struct mailbox_opts *o)
{
	struct mailbox *mb;
	const char *maildir;

	if (parts.total == 0)
		parts_place();
	mb = xcalloc(1, parts.total);
	mb->ops = o->ops;
	mb->ud = o->ud;
	mb->a = o->acct;
	mb->name = o->name;
	mb->status = o->status;
	selection_init(SEL(mb), mb->a, o->name, o->move_wire);
	mbdisk_init(DISK(mb), loop, mb->a, o->state_dir, o->name,
	    selection_wire(SEL(mb)));
	maildir = mbdisk_maildir(DISK(mb));
	mb->sync_ok = true;
	mb->fe = fetch_new(loop, LANE(mb), maildir, mbdisk_tag(DISK(mb)),
	    mb->a->after, o->move_wire, &fetch_ops, mb);
	mb->cp = compaction_new(mb->a, o->name);
	return mb;
}

void
mailbox_release(struct mailbox *mb)
{
	if (mb == NULL)
		return;
	if (mb->conn != NULL || mbdisk_busy(DISK(mb)))
		fatal("mailbox_release of %s with work in flight", mb->name);
	if (!lane_idle(LANE(mb))) {
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
	mbdisk_rename(DISK(mb), name);
	selection_rename(SEL(mb), name);
	compaction_rename(mb->cp, name);
	if (mb->rc != NULL)
		recovery_rename(mb->rc, name);
}

void
mailbox_prepare(struct mailbox *mb)
{
	LOG(mb, LOGL_DEBUG, "Maildir %s, state %s", mbdisk_maildir(DISK(mb)),
	    mbdisk_state_path(DISK(mb)));
	enter_job(mb, COMMIT_PREPARE, "reading its Maildir and state");
}

void
mailbox_select(struct mailbox *mb, struct conn *c)
{
	mb->conn = c;
	fetch_attach(mb->fe, c);
	/*
	 * What failed on an earlier connection is no reason to stop now; the
	 * owner waits for every lane before it connects again.
	 */
	if (lane_idle(LANE(mb)))
		lane_reset(LANE(mb));
	mailbox_enter(mb, MB_SELECT, selection_start(SEL(mb), c,
					 mbdisk_state(DISK(mb)), select_ended, mb));
}

bool
mailbox_untagged(struct mailbox *mb, const struct proto_resp *r)
{
	bool grew = selection_untagged(SEL(mb), r);

	if (r->has & HAS_EXPUNGE)
		fetch_expunged(mb->fe);
	if (grew)
		mb->more = true; /* fetched now, or after the sync under way */
	return grew;
}

void
mailbox_stop(struct mailbox *mb)
{
	mb->stopping = true;
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
	return !fetch_streaming(mb->fe) &&
	    (fetch_inflight(mb->fe) > 0 || mb->state == MB_LIST);
}

void
mailbox_detach(struct mailbox *mb)
{
	const char *why;

	if (mb->conn == NULL)
		return;
	why = conn_alive(mb->conn) ? "another folder is selected" :
				     "the connection closed";
	mb->conn = NULL;
	fetch_detach(mb->fe);
	recovery_drop(mb->rc); /* its state says to do it again */
	compaction_clear(mb->cp);
	selection_detach(SEL(mb));
	if (mb->state >= MB_SELECT && mb->state <= MB_SYNCED)
		mailbox_enter(mb, MB_READY, why);
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
	return !mbdisk_busy(DISK(mb)) && lane_idle(LANE(mb));
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

const struct selection *
mailbox_selection(const struct mailbox *mb)
{
	return SEL(mb);
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
