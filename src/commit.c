/*
 * commit: Maildir and state work on the threadpool (see idlefetch/commit.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "idlefetch/commit.h"
#include "idlefetch/util.h"

/* What dir_is_private() and mkdir found wrong, in words. */
static const char *
dir_problem(int r)
{
	switch (r) {
	case -ELOOP:
		return "a directory in it is a symbolic link; refusing to "
		       "follow it";
	case -EPERM:
		return "a directory in it is writable by other users, who "
		       "could plant links or swap files; refusing it";
	default:
		return strerror(-r);
	}
}

static void
deliver(struct commit_req *j)
{
	size_t i, done = 0;
	int r = 0;
	bool unlinked = false; /* maildir_commit removed the failed file */

	r = maildir_sync_files(j->files, j->ncommit);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot sync %s: %s",
		    j->maildir, strerror(-r));
		j->commit_uid = j->st.last_uid;
	}
	for (i = 0; r == 0 && i < j->ncommit; i++) {
		r = maildir_commit(j->maildir, &j->files[i], j->uidvalidity,
		    j->files[i].uid);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err),
			    "cannot deliver UID %u: %s", j->files[i].uid,
			    strerror(-r));
			j->commit_uid = j->files[i].uid - 1;
			unlinked = true;
			break;
		}
		done++;
	}
	for (i = done + (unlinked ? 1 : 0); i < j->nfiles; i++)
		maildir_discard(j->maildir, &j->files[i]);
	j->ncommit = done;
	if (done > 0) {
		int r2 = maildir_sync_new(j->maildir);

		if (r2 < 0 && r == 0) {
			r = r2;
			snprintf(j->err, sizeof(j->err),
			    "cannot fsync new/: %s", strerror(-r));
			/* Nothing is known durable: record nothing. */
			j->result = r;
			return;
		}
	}
	if (j->commit_uid > j->st.last_uid ||
	    j->st.uidvalidity != j->uidvalidity) {
		struct state_rec st = { j->uidvalidity, j->commit_uid, { 0 } };
		int r3;

		/* The fingerprint of the message the state now ends with. */
		for (i = 0; i < j->nfiles; i++)
			if (j->fps[i].uid == j->commit_uid)
				st.last = j->fps[i].fp;
		r3 = state_save(j->state_path, &st);

		if (r3 < 0) {
			if (r == 0)
				snprintf(j->err, sizeof(j->err),
				    "cannot save state %s: %s", j->state_path,
				    strerror(-r3));
			r = r3;
		} else {
			j->st = st;
		}
	}
	j->result = r;
}

static void
work_cb(uv_work_t *w)
{
	struct commit_req *j = w->data;
	uint32_t max = 0;
	int r;

	switch (j->kind) {
	case COMMIT_PREPARE:
		r = maildir_prepare(j->maildir);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err),
			    "cannot use Maildir %s: %s", j->maildir,
			    dir_problem(r));
			break;
		}
		r = maildir_clean_tmp(j->maildir, j->tag, &j->removed);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err),
			    "cannot clean %s/tmp: %s", j->maildir,
			    strerror(-r));
			break;
		}
		r = state_prepare(j->state_path);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err),
			    "cannot use the state "
			    "directory for %s: %s",
			    j->state_path, dir_problem(r));
			break;
		}
		r = state_load(j->state_path, &j->st);
		if (r == -ENOENT)
			r = 0;
		else if (r < 0)
			snprintf(j->err, sizeof(j->err),
			    "cannot read state %s: %s", j->state_path,
			    r == -EINVAL ? "corrupt file" : strerror(-r));
		break;
	case COMMIT_RECONCILE:
		r = maildir_scan(j->maildir, j->tag, j->uidvalidity, &max);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err), "cannot scan %s: %s",
			    j->maildir, strerror(-r));
			break;
		}
		if (max > j->st.last_uid ||
		    j->st.uidvalidity != j->uidvalidity) {
			struct state_rec st = { j->uidvalidity,
				max > j->st.last_uid ? max : j->st.last_uid,
				j->st.last };

			/* A UID found in the Maildir: its fingerprint is not known. */
			if (max > j->st.last_uid ||
			    j->st.uidvalidity != j->uidvalidity)
				memset(&st.last, 0, sizeof(st.last));

			/* Record only what is durable: new/ may not be. */
			r = max > j->st.last_uid ? maildir_sync_new(j->maildir) :
						   0;
			if (r < 0) {
				snprintf(j->err, sizeof(j->err),
				    "cannot fsync new/: %s", strerror(-r));
				break;
			}
			r = state_save(j->state_path, &st);
			if (r < 0) {
				snprintf(j->err, sizeof(j->err),
				    "cannot save state %s: %s", j->state_path,
				    strerror(-r));
				break;
			}
			j->removed =
			    max > j->st.last_uid ? max - j->st.last_uid : 0;
			j->st = st;
		}
		break;
	case COMMIT_DELIVER:
		deliver(j);
		return;
	default:
		fatal("bad commit kind");
	}
	j->result = r;
}

static void
after_cb(uv_work_t *w, int status)
{
	struct commit_req *j = w->data;

	(void)status;
	j->done(j, j->ud);
}

void
commit_start(uv_loop_t *loop, struct commit_req *req, commit_done_cb *done,
    void *ud)
{
	int r;

	req->done = done;
	req->ud = ud;
	req->result = 0;
	req->work.data = req;
	r = uv_queue_work(loop, &req->work, work_cb, after_cb);
	if (r < 0)
		fatal("uv_queue_work: %s", uv_strerror(r));
}
