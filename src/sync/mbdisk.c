/*
 * mbdisk: a folder's disk side (mbdisk.h). It owns the folder's paths,
 * its durable state record and binding, and the one job in flight; it
 * calls commit (on the threadpool) and logs what a job found on disk and
 * what a delivery committed or the target refused (counted in metrics).
 * The state record changes only here, from what a job saved.
 */
#include <stdlib.h>
#include <string.h>

#include "idlefetch/foldername.h"
#include "idlefetch/log.h"
#include "idlefetch/maildir.h"
#include "idlefetch/mbdisk.h"
#include "idlefetch/metrics.h"
#include "idlefetch/util.h"

struct mbdisk {
	uv_loop_t *loop;
	const struct account *a; /* borrowed */
	const char *name; /* borrowed; UTF-8 */
	char *maildir;
	char *state_path;
	uint32_t tag; /* maildir file tag */
	bool busy; /* its job is on the threadpool */
	bool reconciled; /* new/ was scanned for unrecorded files */
	struct state_rec st; /* durable state */
	char id[STATE_ID_LEN + 1]; /* the Maildir's binding (state.h) */
	mbdisk_done_cb *done; /* the job's owner */
	void *ud;
};

#define LOG(d, lvl, ...) log_msg((lvl), (d)->a->name, (d)->name, __VA_ARGS__)

size_t
mbdisk_size(void)
{
	return sizeof(struct mbdisk);
}

struct mbdisk *
mbdisk_init(void *mem, uv_loop_t *loop, const struct account *acct,
    const char *state_dir, const char *name, const char *wire)
{
	struct mbdisk *d = mem;

	memset(d, 0, sizeof(*d));
	d->loop = loop;
	d->a = acct;
	d->name = name;
	/* An MDA or LMTP target: the bodies wait in a spool of the state. */
	if (acct->target.kind == TARGET_MAILDIR)
		d->maildir = folder_maildir(acct->maildir, name);
	else
		d->maildir = xasprintf("%s/%s/spool", state_dir, acct->name);
	/* Keyed by the server's name: Entwürfe is Entw&APw-rfe. */
	d->state_path = state_path(state_dir, acct->name, wire);
	d->tag = maildir_tag(acct->name, name);
	return d;
}

void
mbdisk_fini(struct mbdisk *d)
{
	free(d->maildir);
	free(d->state_path);
}

void
mbdisk_rename(struct mbdisk *d, const char *name)
{
	d->name = name;
}

const char *
mbdisk_maildir(const struct mbdisk *d)
{
	return d->maildir;
}

const char *
mbdisk_state_path(const struct mbdisk *d)
{
	return d->state_path;
}

uint32_t
mbdisk_tag(const struct mbdisk *d)
{
	return d->tag;
}

const struct state_rec *
mbdisk_state(const struct mbdisk *d)
{
	return &d->st;
}

bool
mbdisk_reconciled(const struct mbdisk *d)
{
	return d->reconciled;
}

bool
mbdisk_busy(const struct mbdisk *d)
{
	return d->busy;
}

/*
 * The one job in flight, on the heap only while it runs: a thousand idle
 * connections need none.
 */
static struct commit_req *
job_new(const struct mbdisk *d, enum commit_kind kind,
    const struct commit_in *in)
{
	struct commit_req *j = xcalloc(1, sizeof(*j));

	j->kind = kind;
	j->uidvalidity = in->uidvalidity;
	j->files = in->files;
	j->nfiles = in->nfiles;
	j->ncommit = in->ncommit;
	j->fps = in->fps;
	j->commit_uid = in->commit_uid;
	j->set = in->set;
	j->uids = in->uids;
	j->nuids = in->nuids;
	j->st = d->st;
	j->maildir = d->maildir;
	j->state_path = d->state_path;
	j->root = d->a->maildir; /* NULL with another target: no marker */
	j->target = &d->a->target;
	j->folder = d->name;
	j->keep_refused = d->a->after != AFTER_KEEP;
	j->account = d->a->name;
	memcpy(j->id, d->id, sizeof(j->id));
	j->tag = d->tag;
	j->recovering = d->st.recovering != 0;
	if (kind == COMMIT_RECOVERED)
		j->st.last = in->last;
	return j;
}

/* Its Maildir and state are read. */
static void
prepared(struct mbdisk *d, const struct commit_req *j)
{
	if (j->removed)
		LOG(d, LOGL_INFO, "removed %u unfinished file(s) from tmp/",
		    j->removed);
	d->st = j->st;
	if (d->st.pending > d->st.last_uid)
		LOG(d, LOGL_WARN,
		    "UID %u was handed to the delivery target when "
		    "idlefetch stopped, before its answer was recorded: "
		    "it is handed over again and may arrive twice",
		    d->st.pending);
	d->st.pending = 0;
	memcpy(d->id, j->id, sizeof(d->id));
}

/* The index was rewritten; its UIDs were the job's. */
static void
compacted(struct mbdisk *d, const struct commit_req *j)
{
	free(j->uids);
	if (j->result < 0)
		LOG(d, LOGL_WARN, "cannot compact the folder's index: %s",
		    j->err);
	else
		LOG(d, LOGL_INFO,
		    "compacted the folder's index: %u line(s) kept, %u of "
		    "messages no longer on the server dropped",
		    j->counts.kept, j->counts.dropped);
}

/* What a delivery committed, and what the target refused, is counted. */
static void
delivered(struct mbdisk *d, const struct commit_req *j)
{
	metrics_committed(d->a->name, d->name, j);
	if (j->ncommit > j->nrefused)
		LOG(d, LOGL_INFO, "delivered %u message(s), UIDs %u..%u",
		    (unsigned)j->ncommit - j->nrefused, j->files[0].uid,
		    j->files[j->ncommit - 1].uid);
	if (j->nrefused > 0)
		LOG(d, LOGL_ERROR,
		    "the target refused %u message(s), UID %u first (%s); "
		    "they stay on the server, and later mail goes on",
		    j->nrefused, j->refused_uid, j->refused_why);
}

/* The state takes what the job saved, and what the job did is logged. */
static void
take(struct mbdisk *d, const struct commit_req *j)
{
	switch (j->kind) {
	case COMMIT_PREPARE:
		if (j->result >= 0)
			prepared(d, j);
		return;
	case COMMIT_RECONCILE:
		if (j->result < 0)
			return;
		if (j->removed)
			LOG(d, LOGL_INFO,
			    "found %u UID(s) delivered before a restart; "
			    "state updated",
			    j->removed);
		d->st = j->st;
		d->reconciled = true;
		return;
	case COMMIT_DELIVER:
		delivered(d, j);
		if (j->result == 0 || j->st.last_uid > d->st.last_uid)
			d->st = j->st;
		/*
		 * Files may be in new/ that no state records (a failed fsync of
		 * new/ or of the state): the next connection must scan for
		 * them before it fetches, or it fetches them again.
		 */
		if (j->result < 0)
			d->reconciled = false;
		return;
	case COMMIT_RECOVER:
	case COMMIT_RECOVERED:
		if (j->result >= 0)
			d->st = j->st;
		return;
	case COMMIT_COMPACT:
		compacted(d, j);
		return;
	default:
		return;
	}
}

static void
job_after(struct commit_req *j, void *ud)
{
	struct mbdisk *d = ud;

	d->busy = false;
	take(d, j);
	d->done(j, d->ud);
	free(j);
}

void
mbdisk_run(struct mbdisk *d, enum commit_kind kind,
    const struct commit_in *in, mbdisk_done_cb *done, void *ud)
{
	d->done = done;
	d->ud = ud;
	d->busy = true;
	commit_start(d->loop, job_new(d, kind, in), job_after, d);
}
