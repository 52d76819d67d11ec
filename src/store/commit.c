/*
 * commit: Maildir and state work on the threadpool (see idlefetch/commit.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "idlefetch/commit.h"
#include "idlefetch/header.h"
#include "idlefetch/msgindex.h"
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

/*
 * The delivered files' keys, to the folder's index. Best effort: a lost
 * line is read back from the file by the recovery that needs it.
 */
static void
index_add(struct commit_req *j, size_t from, size_t n)
{
	struct msgindex_ent *e;
	char *path;

	if (n == 0)
		return;
	e = xcalloc(n, sizeof(*e));
	for (size_t i = 0; i < n; i++) {
		const struct maildir_file *f = &j->files[from + i];

		e[i].uidvalidity = j->uidvalidity;
		e[i].uid = f->uid;
		e[i].file = f->base;
		for (size_t k = 0; k < j->nfiles; k++)
			if (j->fps[k].uid == f->uid) {
				e[i].key = j->fps[k].key;
				e[i].size = j->fps[k].fp.size;
			}
	}
	path = msgindex_path(j->state_path);
	(void)msgindex_append(path, e, n);
	free(path);
	free(e);
}

/* Saves st; the error in words into j->err. */
static int
save(struct commit_req *j, const struct state_rec *st)
{
	int r = state_save(j->state_path, st);

	if (r < 0)
		snprintf(j->err, sizeof(j->err), "cannot save state %s: %s",
		    j->state_path, strerror(-r));
	return r;
}

/* The state marked: see COMMIT_RECOVER. */
static int
recover(struct commit_req *j)
{
	struct state_rec st = j->st;
	struct timeval tv;
	int r;

	if (st.recovering)
		return 0;
	gettimeofday(&tv, NULL);
	st.recovering = 1;
	st.recovered_at = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
	r = save(j, &st);
	if (r == 0)
		j->st = st;
	return r;
}

/*
 * The index's work of COMMIT_MATCH and COMMIT_COMPACT, then its size for
 * the caller's next decision.
 */
static int
index_work(struct commit_req *j)
{
	char *path = msgindex_path(j->state_path);
	int r;

	if (j->kind == COMMIT_MATCH)
		r = msgindex_recover(j->set, path, j->maildir, j->tag,
		    j->uidvalidity, j->err, sizeof(j->err));
	else
		r = msgindex_compact(path, j->maildir, j->tag, j->uidvalidity,
		    j->uids, j->nuids, &j->counts, j->err, sizeof(j->err));
	j->index_bytes = msgindex_bytes(path);
	free(path);
	return r;
}

/* The index's size after a delivery or a reconcile. */
static void
index_size(struct commit_req *j)
{
	char *path = msgindex_path(j->state_path);

	j->index_bytes = msgindex_bytes(path);
	free(path);
}

/* The server's fingerprint of uid, or an empty one. */
static struct state_fp
fp_of(const struct commit_req *j, uint32_t uid)
{
	struct state_fp none = { 0 };

	for (size_t i = 0; i < j->nfiles; i++)
		if (j->fps[i].uid == uid)
			return j->fps[i].fp;
	return none;
}

/*
 * The envelope sender: the Return-Path of the file's header block, read
 * into buf (HEADER_MAX + 1 bytes, one for the whole batch).
 */
static void
read_sender(int fd, char *buf, char sender[HEADER_SENDER_MAX])
{
	ssize_t n = pread(fd, buf, HEADER_MAX + 1, 0);

	if (n <= 0 || header_return_path(buf, (size_t)n, sender) < 0)
		sender[0] = '\0';
}

/* The size of a message's file, for the metrics (0: unknown). */
static uint64_t
fd_size(int fd)
{
	struct stat sb;

	return fstat(fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/*
 * Hands files[i] to the target: the state first says it is pending, so
 * that a crash before its answer is saved is known at the next start.
 */
static enum target_answer
hand_over(struct commit_req *j, struct target_conn *tc, size_t i,
    struct state_rec *st, char *hdr)
{
	struct maildir_file *f = &j->files[i];
	char sender[HEADER_SENDER_MAX];
	struct target_msg m = { .sender = sender, .account = j->account,
		.folder = j->folder };
	enum target_answer a;
	int r;

	/* The save of the previous answer may have said so already. */
	if (!j->recovering && st->pending != f->uid) {
		st->pending = f->uid;
		r = save(j, st);
		if (r < 0)
			return j->result = r, TARGET_DEFERRED;
	}
	m.fd = maildir_open_tmp(j->maildir, f);
	if (m.fd < 0) {
		snprintf(j->err, sizeof(j->err), "cannot read UID %u: %s",
		    f->uid, strerror(-m.fd));
		j->result = m.fd;
		return TARGET_DEFERRED;
	}
	read_sender(m.fd, hdr, sender);
	f->bytes = fd_size(m.fd);
	a = target_send(tc, &m, j->err, sizeof(j->err));
	close(m.fd);
	if (a != TARGET_DEFERRED)
		return a;
	j->result = -EAGAIN;
	/* Surely not delivered: nothing to warn of at the next start. */
	if (target_answered(tc) && !j->recovering) {
		st->pending = 0;
		/* Best effort: a stale pending UID only warns for nothing. */
		if (state_save(j->state_path, st) == 0)
			j->st = *st;
	}
	return a;
}

/* Records files[i]'s answer in *st, saved (not during a recovery). */
static int
record(struct commit_req *j, size_t i, enum target_answer a,
    struct state_rec *st)
{
	uint32_t uid = j->files[i].uid;
	int r;

	if (a == TARGET_REFUSED) {
		if (j->nrefused++ == 0) {
			j->refused_uid = uid;
			snprintf(j->refused_why, sizeof(j->refused_why), "%.*s",
			    (int)sizeof(j->refused_why) - 1, j->err);
		}
		j->err[0] = '\0';
		j->refused_bytes += j->files[i].bytes;
		if (j->keep_refused)
			st->refused[st->nrefused++] = uid;
	} else {
		index_add(j, i, 1);
	}
	/* One save records this answer and says the next one is pending. */
	st->pending = i + 1 < j->ncommit ? j->files[i + 1].uid : 0;
	st->last_uid = uid;
	st->last = fp_of(j, uid);
	j->commit_uid = uid;
	if (j->recovering)
		return 0;
	r = save(j, st);
	if (r == 0)
		j->st = *st;
	return r;
}

/*
 * COMMIT_DELIVER to an MDA or LMTP target, one file at a time in UID
 * order; stops at the first deferral or error.
 */
static void
deliver_target(struct commit_req *j)
{
	struct target_conn *tc = NULL;
	struct state_rec st = j->st;
	size_t i, done = 0;
	char *hdr = NULL;

	j->result = 0;
	if (st.uidvalidity != j->uidvalidity) {
		memset(&st, 0, sizeof(st));
		st.uidvalidity = j->uidvalidity;
	}
	j->commit_uid = st.last_uid;
	if (j->ncommit > 0) {
		hdr = xmalloc(HEADER_MAX + 1);
		if (target_open(j->target, &tc, j->err, sizeof(j->err)) !=
		    TARGET_ACCEPTED)
			j->result = -EAGAIN;
	}
	for (i = 0; j->result == 0 && i < j->ncommit; i++) {
		enum target_answer a;

		if (j->keep_refused && st.nrefused == STATE_REFUSED_MAX) {
			snprintf(j->err, sizeof(j->err),
			    "the target refused %d messages, which stay on "
			    "the server; see to them (or to the target)",
			    STATE_REFUSED_MAX);
			j->result = -ENOSPC;
			break;
		}
		a = hand_over(j, tc, i, &st, hdr);
		if (a == TARGET_DEFERRED)
			break;
		maildir_discard(j->maildir, &j->files[i]);
		j->result = record(j, i, a, &st);
		done++;
	}
	target_close(tc);
	free(hdr);
	for (i = done; i < j->nfiles; i++)
		maildir_discard(j->maildir, &j->files[i]);
	j->ncommit = done;
}

/*
 * The state after a delivery: last_uid moves on to commit_uid, or a new
 * UIDVALIDITY starts. Returns r (the delivery's result), or the save's
 * error, with err filled unless the delivery's error is there already.
 */
static int
save_delivered(struct commit_req *j, int r)
{
	struct state_rec st = { .uidvalidity = j->uidvalidity,
		.last_uid = j->commit_uid };
	int r3;

	if (j->commit_uid <= j->st.last_uid &&
	    j->st.uidvalidity == j->uidvalidity)
		return r;
	if (j->st.uidvalidity == j->uidvalidity) {
		st.keep_to = j->st.keep_to;
		st.recovered_at = j->st.recovered_at;
	}
	/* The fingerprint of the message the state now ends with. */
	st.last = fp_of(j, j->commit_uid);
	r3 = state_save(j->state_path, &st);
	if (r3 < 0) {
		if (r == 0)
			snprintf(j->err, sizeof(j->err),
			    "cannot save state %s: %s", j->state_path,
			    strerror(-r3));
		return r3;
	}
	j->st = st;
	return r;
}

static void
deliver(struct commit_req *j)
{
	size_t i, done = 0;
	int r = 0;
	bool unlinked = false; /* maildir_commit removed the failed file */
	char *marker = state_marker_path(j->root, j->account);

	r = state_bind_check(marker, j->id, j->err, sizeof(j->err));
	free(marker);
	if (r < 0) {
		for (i = 0; i < j->nfiles; i++)
			maildir_discard(j->maildir, &j->files[i]);
		j->ncommit = 0;
		j->commit_uid = j->st.last_uid;
		j->result = r;
		return;
	}

	r = maildir_sync_files(j->files, j->ncommit);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot sync %s: %s",
		    j->maildir, strerror(-r));
		j->commit_uid = j->st.last_uid;
	}
	for (i = 0; r == 0 && i < j->ncommit; i++) {
		j->files[i].bytes = fd_size(j->files[i].fd);
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
	index_add(j, 0, done);
	if (j->recovering) {
		/* The next recovery finds these in the index or the Maildir. */
		j->result = r;
		return;
	}
	j->result = save_delivered(j, r);
}

/*
 * A bound Maildir is checked before anything is made in it: an unmounted
 * one's empty mount point must not become a Maildir. The first time, the
 * Maildir is made, then bound.
 */
static int
bind_maildir(struct commit_req *j)
{
	char *marker = state_marker_path(j->root, j->account);
	int r = state_bind(j->state_path, marker, j->id, j->err,
	    sizeof(j->err));

	free(marker);
	return r;
}

static int
prepare(struct commit_req *j)
{
	bool bound;
	int r = state_prepare(j->state_path);

	if (r < 0) {
		snprintf(j->err, sizeof(j->err),
		    "cannot use the state directory for %s: %s", j->state_path,
		    dir_problem(r));
		return r;
	}
	/* An MDA or LMTP target's spool: no Maildir to bind. */
	bound = j->root == NULL || state_bound(j->state_path);
	if (j->root != NULL && bound && (r = bind_maildir(j)) < 0)
		return r;
	r = maildir_prepare(j->maildir);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot use Maildir %s: %s",
		    j->maildir, dir_problem(r));
		return r;
	}
	if (!bound && (r = bind_maildir(j)) < 0)
		return r;
	r = maildir_clean_tmp(j->maildir, j->tag, &j->removed);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot clean %s/tmp: %s",
		    j->maildir, strerror(-r));
		return r;
	}
	r = state_load(j->state_path, &j->st);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		snprintf(j->err, sizeof(j->err), "cannot read state %s: %s",
		    j->state_path,
		    r == -EINVAL ? "corrupt file" : strerror(-r));
	return r;
}

struct newest {
	uint32_t uidvalidity, uid;
	uint64_t since; /* recovered_at */
	char path[PATH_MAX];
};

/* When a delivered file was named, from "SEC.MUSEC..." (0: unknown). */
static uint64_t
named_at(const char *path)
{
	const char *base = strrchr(path, '/');
	unsigned long long sec;
	unsigned long usec;

	if (sscanf(base ? base + 1 : path, "%llu.M%lu", &sec, &usec) != 2)
		return 0;
	return (uint64_t)sec * 1000000u + usec;
}

static int
newest_one(void *ud, const char *path, uint32_t uidvalidity, uint32_t uid)
{
	struct newest *n = ud;

	/* Before a recovery, its UID may be of the old numbering. */
	if (n->since != 0 && named_at(path) < n->since)
		return 0;
	if (uidvalidity == n->uidvalidity && uid > n->uid) {
		n->uid = uid;
		snprintf(n->path, sizeof(n->path), "%s", path);
	}
	return 0;
}

/*
 * Files in new/ or cur/ above last_uid (a crash, a failed save) are
 * recorded, with the fingerprint of the highest read from its file: the
 * next check of last_uid then still sees a renumbered folder.
 */
static int
reconcile(struct commit_req *j)
{
	struct newest n = { .uidvalidity = j->uidvalidity,
		.since = j->st.recovered_at };
	struct state_rec st = j->st;
	struct msgindex_ent e;
	int r = maildir_each(j->maildir, j->tag, newest_one, &n);

	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot scan %s: %s",
		    j->maildir, strerror(-r));
		return r;
	}
	if (n.uid <= j->st.last_uid && j->st.uidvalidity == j->uidvalidity)
		return 0;
	if (j->st.uidvalidity != j->uidvalidity) {
		/* A folder seen for the first time. */
		memset(&st, 0, sizeof(st));
		st.uidvalidity = j->uidvalidity;
	}
	if (n.uid > st.last_uid) {
		st.last_uid = n.uid;
		memset(&st.last, 0, sizeof(st.last));
		if (msgindex_read_file(n.path, &e, st.last.msgid) == 0)
			st.last.size = e.size;
		/* Record only what is durable: new/ may not be. */
		r = maildir_sync_new(j->maildir);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err),
			    "cannot fsync new/: %s", strerror(-r));
			return r;
		}
		j->removed = n.uid - (j->st.uidvalidity == j->uidvalidity ?
						j->st.last_uid :
						0);
	}
	r = save(j, &st);
	if (r == 0)
		j->st = st;
	return r;
}

static void
work_cb(uv_work_t *w)
{
	struct commit_req *j = w->data;
	int r;

	switch (j->kind) {
	case COMMIT_PREPARE:
		r = prepare(j);
		break;
	case COMMIT_RECONCILE:
		r = reconcile(j);
		index_size(j);
		break;
	case COMMIT_DELIVER:
		if (j->target != NULL && j->target->kind != TARGET_MAILDIR)
			deliver_target(j);
		else
			deliver(j);
		index_size(j);
		return;
	case COMMIT_RECOVER:
		r = recover(j);
		break;
	case COMMIT_MATCH:
	case COMMIT_COMPACT:
		r = index_work(j);
		break;
	case COMMIT_RECOVERED: {
		/* Refused UIDs were of the numbering it replaced. */
		struct state_rec st = { .uidvalidity = j->uidvalidity,
			.last_uid = j->commit_uid, .last = j->st.last,
			.keep_to = j->commit_uid,
			.recovered_at = j->st.recovered_at };

		r = save(j, &st);
		if (r == 0)
			j->st = st;
		break;
	}
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
