/*
 * session: the state machine of one connection (account + folder).
 *
 *   PREPARE -> CONNECT -> [TLS] -> GREETING -> [STARTTLS -> TLS] ->
 *   CAPABILITY -> AUTH -> SELECT -> [RECONCILE] -> SYNC -> IDLE | POLL_WAIT
 *   -> SYNC -> ...; any error -> BACKOFF -> CONNECT; stop -> LOGOUT -> DONE
 *
 * SYNC lists the UIDs above the saved last_uid, then fetches them in
 * pipelined batches. Message bodies stream from the framer into Maildir
 * tmp/ files; a batch is committed on the threadpool (fsync, rename into
 * new/, fsync new/, save state) only after the server's tagged OK, and the
 * server copy is deleted or moved only after that commit. If the connection
 * dies mid-batch, the longest run of received messages in UID order is
 * committed and the rest discarded, so last_uid never passes a message that
 * is not in new/.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "idlefetch/framer.h"
#include "idlefetch/log.h"
#include "idlefetch/maildir.h"
#include "idlefetch/proto.h"
#include "idlefetch/session.h"
#include "idlefetch/state.h"
#include "idlefetch/transport.h"
#include "idlefetch/util.h"

#define LOGOUT_TIMEOUT_MS	3000
#define TIMEOUT_MS(s)		((uint64_t)(s)->a->timeout * 1000)
#define BACKOFF_MIN_MS		1000
#define BACKOFF_MAX_MS		300000
#define BATCH_MAX_MSGS		100
#define BATCH_MAX_BYTES		(16u * 1024 * 1024)
#define PIPELINE_DEPTH		2
#define MAX_CMDS		32

enum session_state {
	S_PREPARE, S_CONNECT, S_TLS, S_GREETING, S_STARTTLS, S_CAPABILITY,
	S_AUTH, S_SELECT, S_RECONCILE, S_SYNC, S_IDLE_START, S_IDLE,
	S_IDLE_DONE, S_POLL_WAIT, S_LOGOUT, S_CLOSING, S_BACKOFF, S_DONE,
};

static const char *state_names[] = {
	"PREPARE", "CONNECT", "TLS", "GREETING", "STARTTLS", "CAPABILITY",
	"AUTH", "SELECT", "RECONCILE", "SYNC", "IDLE_START", "IDLE",
	"IDLE_DONE", "POLL_WAIT", "LOGOUT", "CLOSING", "BACKOFF", "DONE",
};

enum cmd_kind {
	CMD_CAPABILITY, CMD_STARTTLS, CMD_AUTH, CMD_SELECT, CMD_LIST,
	CMD_FETCH, CMD_COPY, CMD_STORE, CMD_EXPUNGE, CMD_MOVE, CMD_IDLE,
	CMD_LOGOUT,
};

struct batch {
	struct batch	*next;
	uint32_t	*uids;		/* requested, ascending */
	size_t		 n;
	struct maildir_file *files;	/* received, in arrival order */
	size_t		 nfiles;
	bool		 complete;	/* tagged OK seen */
	unsigned	 tag;
};

struct cmd {
	unsigned	 tag;
	enum cmd_kind	 kind;
	struct batch	*batch;		/* CMD_FETCH */
	uint32_t	*uids;		/* CMD_COPY: the set to delete after */
	size_t		 nuids;
	char		*secret;	/* CMD_AUTH: response sent after "+" */
};

enum job_kind { JOB_PREPARE, JOB_RECONCILE, JOB_COMMIT };

struct job {
	uv_work_t	 work;
	enum job_kind	 kind;
	struct session	*s;
	struct batch	*batch;		/* JOB_COMMIT: owned by the job */
	size_t		 ncommit;	/* files[0..ncommit) go to new/ */
	uint32_t	 commit_uid;	/* last_uid once they are in */
	struct state_rec st;		/* in: current, out: saved */
	uint32_t	 uidvalidity;	/* JOB_RECONCILE */
	int		 result;
	unsigned	 removed;
	char		 err[160];
};

struct session {
	uv_loop_t	*loop;
	struct session_opts o;
	const struct account *a;
	enum session_state state;
	uv_timer_t	 timer;
	struct transport *tr;
	struct framer	*fr;
	char		*maildir;
	char		*state_path;
	uint32_t	 tag_mark;	/* maildir file tag */

	/* connection */
	uint32_t	 caps;
	unsigned	 next_tag;
	struct cmd	 cmds[MAX_CMDS];
	size_t		 ncmds;
	bool		 conn_alive;
	char		 bye[256];
	bool		 greeted;

	/* mailbox */
	struct state_rec st;		/* durable state */
	uint32_t	 uidvalidity;	/* from SELECT */
	uint32_t	 exists;
	bool		 reconciled;
	bool		 more;		/* new mail announced during a sync */
	bool		 gap;		/* a batch came back short: commit no further */
	uint32_t	 gap_uid;	/* the UID it lacked, to retry only once */

	/* sync */
	uint32_t	*list;		/* UIDs to fetch, then sizes */
	uint32_t	*sizes;
	size_t		 nlist, caplist, next_list;
	uint32_t	*stale;		/* delivered, still on the server */
	size_t		 nstale, capstale;
	bool		 listing;
	struct batch	*bhead, *btail;
	size_t		 inflight;	/* FETCH batches sent, not complete */
	unsigned	 after_pending;
	struct job	 job;
	bool		 job_busy;
	struct maildir_file cur;	/* message being streamed */
	bool		 streaming;	/* a body literal is open */
	bool		 cur_open;	/* ...and it has a tmp/ file */
	struct maildir_writer *writer;
	unsigned	 delivered;	/* messages this process delivered */

	/* lifecycle */
	unsigned	 backoff_ms;
	bool		 healthy;	/* a sync completed on this connection */
	bool		 ok;		/* the last sync completed */
	bool		 stopping;
	bool		 fatal_err;	/* do not retry (UIDVALIDITY change) */
	bool		 auth_logged;
	int		 pending_close;	/* libuv handles still closing */
};

static void set_state(struct session *s, enum session_state st);
static void session_fail(struct session *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void settle(struct session *s);
static void sync_pump(struct session *s);
static void start_sync(struct session *s);
static void start_job(struct session *s, enum job_kind kind);
static void finish(struct session *s);
static void connect_now(struct session *s);

#define LOG(s, lvl, ...) \
	log_msg((lvl), (s)->a->name, (s)->o.folder, __VA_ARGS__)

/* ---- commands ---------------------------------------------------------- */

static struct cmd *
find_cmd(struct session *s, const char *tag)
{
	unsigned n;
	char *end;

	if (tag[0] != 'a')
		return NULL;
	n = (unsigned)strtoul(tag + 1, &end, 10);
	if (*end != '\0')
		return NULL;
	for (size_t i = 0; i < s->ncmds; i++)
		if (s->cmds[i].tag == n)
			return &s->cmds[i];
	return NULL;
}

static void
drop_cmd(struct session *s, struct cmd *c)
{
	free(c->uids);
	if (c->secret)
		secret_free(c->secret);
	*c = s->cmds[--s->ncmds];
}

/*
 * Sends "aN <text>\r\n" and records it. secret: the text holds credentials
 * and is not logged.
 */
static struct cmd *
send_cmd(struct session *s, enum cmd_kind kind, bool secret,
    const char *fmt, ...)
{
	struct cmd *c;
	char *text, *line;
	va_list ap;
	int r;

	if (s->ncmds == MAX_CMDS)
		fatal("session: command table full");
	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	c = &s->cmds[s->ncmds++];
	memset(c, 0, sizeof(*c));
	c->tag = ++s->next_tag;
	c->kind = kind;
	line = xasprintf("a%u %s\r\n", c->tag, text);
	if (log_enabled(LOGL_DEBUG)) {
		if (secret)
			LOG(s, LOGL_DEBUG, "C: a%u %.*s <credentials hidden>", c->tag,
			    (int)strcspn(text, " "), text);
		else
			LOG(s, LOGL_DEBUG, "C: a%u %s", c->tag, text);
	}
	r = transport_write(s->tr, line, strlen(line));
	OPENSSL_cleanse(line, strlen(line));
	OPENSSL_cleanse(text, strlen(text));
	free(line);
	free(text);
	if (r < 0)
		LOG(s, LOGL_DEBUG, "write failed: %s", err_str(r));
	return c;
}

static void
send_raw(struct session *s, const char *text, bool secret)
{
	char *line = xasprintf("%s\r\n", text);

	LOG(s, LOGL_DEBUG, "C: %s", secret ? "<credentials hidden>" : text);
	transport_write(s->tr, line, strlen(line));
	OPENSSL_cleanse(line, strlen(line));
	free(line);
}

/* ---- timers and states ------------------------------------------------- */

static void timer_cb(uv_timer_t *t);

static void
arm(struct session *s, uint64_t ms)
{
	uv_timer_start(&s->timer, timer_cb, ms, 0);
}

static void
set_state(struct session *s, enum session_state st)
{
	if (s->state != st)
		LOG(s, LOGL_DEBUG, "state %s -> %s", state_names[s->state],
		    state_names[st]);
	s->state = st;
	uv_timer_stop(&s->timer);
	switch (st) {
	case S_CONNECT:
	case S_TLS:
	case S_GREETING:
		arm(s, TIMEOUT_MS(s));
		break;
	case S_STARTTLS:
	case S_CAPABILITY:
	case S_AUTH:
	case S_SELECT:
	case S_SYNC:
	case S_IDLE_START:
	case S_IDLE_DONE:
		arm(s, TIMEOUT_MS(s));
		break;
	case S_IDLE:
		arm(s, (uint64_t)s->a->idle_refresh * 1000);
		break;
	case S_POLL_WAIT:
		arm(s, (uint64_t)s->a->poll_interval * 1000);
		break;
	case S_LOGOUT:
		arm(s, LOGOUT_TIMEOUT_MS);
		break;
	default:
		break;
	}
}

/* ---- batches ------------------------------------------------------------ */

static void
batch_free(struct batch *b)
{
	if (b == NULL)
		return;
	free(b->uids);
	free(b->files);
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
plan_commit(struct session *s, struct batch *b, struct job *j)
{
	size_t k = 0, i;

	if (b->nfiles > 0)
		qsort(b->files, b->nfiles, sizeof(*b->files), cmp_file_uid);
	j->commit_uid = s->st.last_uid;
	j->ncommit = 0;
	if (s->gap)
		return;		/* an earlier batch stopped short */
	for (i = 0; i < b->n; i++) {
		if (k == b->nfiles || b->files[k].uid != b->uids[i])
			break;
		j->commit_uid = b->uids[i];
		k++;
	}
	j->ncommit = k;
	if (i < b->n && b->complete) {
		s->gap = true;
		if (s->gap_uid != b->uids[i]) {
			LOG(s, LOGL_WARN, "server did not return UID %u; fetching again "
			    "from there", b->uids[i]);
			s->more = true;	/* re-list: it may have been expunged */
		}
		s->gap_uid = b->uids[i];
	}
}

/* Starts the next commit if the head batch is ready for one. */
static void
pump_commits(struct session *s)
{
	struct batch *b = s->bhead;

	if (s->job_busy || b == NULL)
		return;
	if (!b->complete && s->conn_alive)
		return;
	s->bhead = b->next;
	if (s->bhead == NULL)
		s->btail = NULL;
	memset(&s->job, 0, sizeof(s->job));
	s->job.batch = b;
	s->job.st = s->st;
	plan_commit(s, b, &s->job);
	start_job(s, JOB_COMMIT);
}

/* ---- after-delivery actions ---------------------------------------------- */

static void
after_delivery(struct session *s, const uint32_t *uids, size_t n)
{
	char *set;
	char mbox[512];
	struct cmd *c;

	if (n == 0 || s->a->after == AFTER_KEEP || !s->conn_alive)
		return;
	set = xmalloc(n * 24 + 1);
	if (proto_uid_set(set, n * 24 + 1, uids, n) < 0)
		fatal("uid set overflow");
	if (s->a->after == AFTER_MOVE) {
		proto_quote(mbox, sizeof(mbox), s->a->move_to);
		if (s->caps & CAP_MOVE) {
			send_cmd(s, CMD_MOVE, false, "UID MOVE %s %s", set, mbox);
		} else {
			c = send_cmd(s, CMD_COPY, false, "UID COPY %s %s", set, mbox);
			c->uids = xmalloc(n * sizeof(*uids));
			memcpy(c->uids, uids, n * sizeof(*uids));
			c->nuids = n;
		}
		s->after_pending++;
		free(set);
		return;
	}
	send_cmd(s, CMD_STORE, false, "UID STORE %s +FLAGS.SILENT (\\Deleted)", set);
	if (s->caps & CAP_UIDPLUS)
		send_cmd(s, CMD_EXPUNGE, false, "UID EXPUNGE %s", set);
	else
		send_cmd(s, CMD_EXPUNGE, false, "EXPUNGE");
	s->after_pending += 2;
	free(set);
}

/* COPY succeeded: now the originals may go. */
static void
after_copy(struct session *s, struct cmd *c)
{
	char *set = xmalloc(c->nuids * 24 + 1);

	if (proto_uid_set(set, c->nuids * 24 + 1, c->uids, c->nuids) < 0)
		fatal("uid set overflow");
	send_cmd(s, CMD_STORE, false, "UID STORE %s +FLAGS.SILENT (\\Deleted)", set);
	if (s->caps & CAP_UIDPLUS)
		send_cmd(s, CMD_EXPUNGE, false, "UID EXPUNGE %s", set);
	else
		send_cmd(s, CMD_EXPUNGE, false, "EXPUNGE");
	s->after_pending += 2;
	free(set);
}

/* ---- threadpool jobs ----------------------------------------------------- */

static void
job_commit(struct job *j)
{
	struct session *s = j->s;
	struct batch *b = j->batch;
	size_t i, done = 0;
	int r = 0;
	bool unlinked = false;	/* maildir_commit removed the failed file */

	r = maildir_sync_files(b->files, j->ncommit);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "cannot sync %s: %s", s->maildir,
		    strerror(-r));
		j->commit_uid = j->st.last_uid;
	}
	for (i = 0; r == 0 && i < j->ncommit; i++) {
		r = maildir_commit(s->maildir, &b->files[i], s->uidvalidity,
		    b->files[i].uid);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err), "cannot deliver UID %u: %s",
			    b->files[i].uid, strerror(-r));
			j->commit_uid = b->files[i].uid - 1;
			unlinked = true;
			break;
		}
		done++;
	}
	for (i = done + (unlinked ? 1 : 0); i < b->nfiles; i++)
		maildir_discard(s->maildir, &b->files[i]);
	j->ncommit = done;
	if (done > 0) {
		int r2 = maildir_sync_new(s->maildir);

		if (r2 < 0 && r == 0) {
			r = r2;
			snprintf(j->err, sizeof(j->err), "cannot fsync new/: %s",
			    strerror(-r));
			/* Nothing is known durable: record nothing. */
			j->result = r;
			return;
		}
	}
	if (j->commit_uid > j->st.last_uid || j->st.uidvalidity != s->uidvalidity) {
		struct state_rec st = { s->uidvalidity, j->commit_uid };
		int r3 = state_save(s->state_path, &st);

		if (r3 < 0) {
			if (r == 0)
				snprintf(j->err, sizeof(j->err), "cannot save state %s: %s",
				    s->state_path, strerror(-r3));
			r = r3;
		} else {
			j->st = st;
		}
	}
	j->result = r;
}

static void
job_work(uv_work_t *w)
{
	struct job *j = w->data;
	struct session *s = j->s;
	uint32_t max = 0;
	int r;

	switch (j->kind) {
	case JOB_PREPARE:
		r = maildir_prepare(s->maildir);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err), "cannot create Maildir %s: %s",
			    s->maildir, strerror(-r));
			break;
		}
		r = maildir_clean_tmp(s->maildir, s->tag_mark, &j->removed);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err), "cannot clean %s/tmp: %s",
			    s->maildir, strerror(-r));
			break;
		}
		r = state_prepare(s->state_path);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err), "cannot create state "
			    "directory for %s: %s", s->state_path, strerror(-r));
			break;
		}
		r = state_load(s->state_path, &j->st);
		if (r == -ENOENT)
			r = 0;
		else if (r < 0)
			snprintf(j->err, sizeof(j->err), "cannot read state %s: %s",
			    s->state_path, r == -EINVAL ? "corrupt file" : strerror(-r));
		break;
	case JOB_RECONCILE:
		r = maildir_scan(s->maildir, s->tag_mark, j->uidvalidity, &max);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err), "cannot scan %s: %s",
			    s->maildir, strerror(-r));
			break;
		}
		if (max > j->st.last_uid || j->st.uidvalidity != j->uidvalidity) {
			struct state_rec st = { j->uidvalidity,
			    max > j->st.last_uid ? max : j->st.last_uid };

			r = state_save(s->state_path, &st);
			if (r < 0) {
				snprintf(j->err, sizeof(j->err), "cannot save state %s: %s",
				    s->state_path, strerror(-r));
				break;
			}
			j->removed = max > j->st.last_uid ? max - j->st.last_uid : 0;
			j->st = st;
		}
		break;
	case JOB_COMMIT:
		job_commit(j);
		return;
	default:
		fatal("bad job kind");
	}
	j->result = r;
}

static void
job_done_prepare(struct session *s, struct job *j)
{
	if (j->result < 0) {
		s->fatal_err = true;
		session_fail(s, j->result, "%s", j->err);
		return;
	}
	if (j->removed)
		LOG(s, LOGL_INFO, "removed %u unfinished file(s) from tmp/",
		    j->removed);
	s->st = j->st;
	if (s->stopping) {
		finish(s);
		return;
	}
	connect_now(s);
}

static void
job_done_commit(struct session *s, struct job *j)
{
	struct batch *b = j->batch;
	uint32_t *uids;

	if (j->ncommit > 0) {
		s->delivered += (unsigned)j->ncommit;
		LOG(s, LOGL_INFO, "delivered %zu message(s), UIDs %u..%u",
		    j->ncommit, b->files[0].uid, b->files[j->ncommit - 1].uid);
	}
	if (j->result == 0 || j->st.last_uid > s->st.last_uid)
		s->st = j->st;
	if (j->result < 0) {
		batch_free(b);
		session_fail(s, j->result, "%s; fetching stops until this is fixed",
		    j->err);
		return;
	}
	/* The state that records these messages is durable: act on the server. */
	uids = xmalloc((j->ncommit + 1) * sizeof(*uids));
	for (size_t i = 0; i < j->ncommit; i++)
		uids[i] = b->files[i].uid;
	after_delivery(s, uids, j->ncommit);
	free(uids);
	batch_free(b);
}

static void
job_after(uv_work_t *w, int status)
{
	struct job *j = w->data;
	struct session *s = j->s;

	s->job_busy = false;
	switch (j->kind) {
	case JOB_PREPARE:
		job_done_prepare(s, j);
		return;
	case JOB_RECONCILE:
		if (j->result < 0) {
			session_fail(s, j->result, "%s", j->err);
			return;
		}
		if (j->removed)
			LOG(s, LOGL_INFO, "found %u UID(s) delivered before a restart; "
			    "state updated", j->removed);
		s->st = j->st;
		s->reconciled = true;
		if (s->conn_alive && s->state == S_RECONCILE)
			start_sync(s);
		else
			settle(s);
		return;
	case JOB_COMMIT:
		job_done_commit(s, j);
		if (s->conn_alive && s->state == S_SYNC)
			sync_pump(s);
		else
			settle(s);
		return;
	default:
		fatal("bad job kind");
	}
}

static void
start_job(struct session *s, enum job_kind kind)
{
	int r;

	s->job.kind = kind;
	s->job.s = s;
	s->job.work.data = &s->job;
	s->job.result = 0;
	r = uv_queue_work(s->loop, &s->job.work, job_work, job_after);
	if (r < 0)
		fatal("uv_queue_work: %s", uv_strerror(r));
	s->job_busy = true;
}

/* ---- connection teardown --------------------------------------------------- */

static void
close_conn(struct session *s)
{
	if (s->tr) {
		transport_free(s->tr);
		s->tr = NULL;
	}
	s->conn_alive = false;
	framer_reset(s->fr);
	if (s->cur_open)
		maildir_discard(s->maildir, &s->cur);
	s->cur_open = false;
	s->streaming = false;
	for (size_t i = 0; i < s->ncmds; i++) {
		free(s->cmds[i].uids);
		secret_free(s->cmds[i].secret);
	}
	s->ncmds = 0;
	s->inflight = 0;
	s->after_pending = 0;
	s->listing = false;
	s->nlist = s->next_list = s->nstale = 0;
}

static void
backoff(struct session *s)
{
	unsigned delay;

	if (s->healthy)
		s->backoff_ms = BACKOFF_MIN_MS;
	s->healthy = false;
	/* Full jitter on the upper half spreads many accounts apart. */
	delay = s->backoff_ms / 2 + (unsigned)(random() % (s->backoff_ms / 2 + 1));
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS :
	    s->backoff_ms * 2;
	LOG(s, LOGL_INFO, "reconnecting in %.1f s", delay / 1000.0);
	set_state(s, S_BACKOFF);
	arm(s, delay);
}

static void
finish(struct session *s)
{
	set_state(s, S_DONE);
	s->o.done(s, s->o.ud, s->ok && !s->fatal_err);
}

/*
 * With the connection gone, commits what arrived and then either retries
 * or finishes. Called again after each job completes.
 */
static void
settle(struct session *s)
{
	if (s->conn_alive)
		return;
	pump_commits(s);
	if (s->job_busy)
		return;
	if (s->state == S_DONE)
		return;
	if (s->stopping || s->o.once || s->fatal_err) {
		finish(s);
		return;
	}
	if (s->state == S_CLOSING)
		backoff(s);
}

static void
session_fail(struct session *s, int err, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	s->ok = false;
	if (err == IDLEFETCH_EAUTH) {
		if (!s->auth_logged)
			LOG(s, LOGL_ERROR, "%s", why);
		s->auth_logged = true;
		s->backoff_ms = BACKOFF_MAX_MS;
	} else if (s->stopping && s->state == S_LOGOUT) {
		LOG(s, LOGL_DEBUG, "%s", why);
	} else {
		LOG(s, LOGL_ERROR, "%s", why);
	}
	close_conn(s);
	set_state(s, S_CLOSING);
	settle(s);
}

/* ---- sync ------------------------------------------------------------------ */

static void
list_add(struct session *s, uint32_t uid, uint32_t size)
{
	if (uid <= s->st.last_uid) {
		/* Delivered already but still on the server. */
		if (s->a->after == AFTER_KEEP)
			return;
		if (s->nstale == s->capstale) {
			s->capstale = s->capstale ? s->capstale * 2 : 64;
			s->stale = xrealloc(s->stale, s->capstale * sizeof(*s->stale));
		}
		s->stale[s->nstale++] = uid;
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

/* Sorts the listing by UID (sizes follow) and drops duplicates. */
static void
list_finish(struct session *s)
{
	uint64_t *pairs = xmalloc((s->nlist + 1) * sizeof(*pairs));
	size_t o = 0;

	for (size_t i = 0; i < s->nlist; i++)
		pairs[i] = (uint64_t)s->list[i] << 32 | s->sizes[i];
	if (s->nlist > 0)
		qsort(pairs, s->nlist, sizeof(*pairs), cmp_u32_pair);
	for (size_t i = 0; i < s->nlist; i++) {
		uint32_t uid = (uint32_t)(pairs[i] >> 32);

		if (o > 0 && s->list[o - 1] == uid)
			continue;
		s->list[o] = uid;
		s->sizes[o++] = (uint32_t)pairs[i];
	}
	s->nlist = o;
	s->next_list = 0;
	free(pairs);
	if (s->nstale > 0)
		qsort(s->stale, s->nstale, sizeof(*s->stale), cmp_u32);
}

static void
send_batch(struct session *s)
{
	struct batch *b = xcalloc(1, sizeof(*b));
	uint64_t bytes = 0;
	size_t n = 0, setcap;
	char *set;
	struct cmd *c;

	while (s->next_list + n < s->nlist && n < BATCH_MAX_MSGS &&
	    (n == 0 || bytes + s->sizes[s->next_list + n] <= BATCH_MAX_BYTES))
		bytes += s->sizes[s->next_list + n++];
	b->n = n;
	b->uids = xmalloc(n * sizeof(*b->uids));
	memcpy(b->uids, s->list + s->next_list, n * sizeof(*b->uids));
	b->files = xmalloc(n * sizeof(*b->files));
	s->next_list += n;
	setcap = n * 24 + 1;
	set = xmalloc(setcap);
	if (proto_uid_set(set, setcap, b->uids, n) < 0)
		fatal("uid set overflow");
	c = send_cmd(s, CMD_FETCH, false,
	    "UID FETCH %s (UID RFC822.SIZE BODY.PEEK[])", set);
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

static void
sync_complete(struct session *s)
{
	s->healthy = true;
	s->ok = true;
	s->auth_logged = false;
	s->backoff_ms = BACKOFF_MIN_MS;
	if (s->more && !s->stopping) {
		start_sync(s);
		return;
	}
	if (s->stopping || s->o.once) {
		send_cmd(s, CMD_LOGOUT, false, "LOGOUT");
		set_state(s, S_LOGOUT);
		return;
	}
	if (s->a->idle && (s->caps & CAP_IDLE)) {
		send_cmd(s, CMD_IDLE, false, "IDLE");
		set_state(s, S_IDLE_START);
		return;
	}
	set_state(s, S_POLL_WAIT);
}

/* Moves the sync forward: more batches, commits, or done. */
static void
sync_pump(struct session *s)
{
	if (s->state != S_SYNC)
		return;
	pump_commits(s);
	if (s->listing)
		return;
	if (s->nstale > 0) {
		after_delivery(s, s->stale, s->nstale);
		s->nstale = 0;
	}
	while (!s->stopping && !s->gap && s->inflight < PIPELINE_DEPTH &&
	    s->next_list < s->nlist)
		send_batch(s);
	if (s->bhead == NULL && !s->job_busy && s->after_pending == 0 &&
	    (s->next_list >= s->nlist || s->stopping || s->gap))
		sync_complete(s);
}

static void
start_sync(struct session *s)
{
	uint32_t from = s->a->after == AFTER_KEEP ? s->st.last_uid + 1 : 1;

	set_state(s, S_SYNC);
	s->more = false;
	s->gap = false;
	s->nlist = s->next_list = s->nstale = 0;
	s->listing = true;
	send_cmd(s, CMD_LIST, false, "UID FETCH %u:* (UID RFC822.SIZE)", from);
}

/* ---- connection setup -------------------------------------------------------- */

static void
send_auth(struct session *s)
{
	const struct account *a = s->a;
	size_t ul = strlen(a->username), pl = strlen(a->password);
	char qu[1024], qp[1024];

	if (s->o.ssl_ctx && !transport_is_tls(s->tr))
		fatal("credentials about to be sent without TLS");
	if (s->caps & CAP_AUTH_PLAIN) {
		size_t rawlen = ul + pl + 2;
		unsigned char *raw = xmalloc(rawlen);
		char *b64 = xmalloc(4 * ((rawlen + 2) / 3) + 1);

		raw[0] = '\0';
		memcpy(raw + 1, a->username, ul);
		raw[ul + 1] = '\0';
		memcpy(raw + ul + 2, a->password, pl);
		EVP_EncodeBlock((unsigned char *)b64, raw, (int)rawlen);
		OPENSSL_cleanse(raw, rawlen);
		free(raw);
		if (s->caps & CAP_SASL_IR) {
			send_cmd(s, CMD_AUTH, true, "AUTHENTICATE PLAIN %s", b64);
		} else {
			send_cmd(s, CMD_AUTH, false, "AUTHENTICATE PLAIN");
			/* The response goes out after the server's "+". */
			s->cmds[s->ncmds - 1].secret = xstrdup(b64);
		}
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
		set_state(s, S_AUTH);
		return;
	}
	if (s->caps & CAP_LOGINDISABLED) {
		session_fail(s, IDLEFETCH_ECAPA, "server refuses LOGIN "
		    "(LOGINDISABLED) and offers no AUTH=PLAIN; not logging in");
		return;
	}
	if (proto_quote(qu, sizeof(qu), a->username) < 0 ||
	    proto_quote(qp, sizeof(qp), a->password) < 0) {
		s->fatal_err = true;
		session_fail(s, -EINVAL, "username or password has bytes LOGIN "
		    "cannot carry and the server offers no AUTH=PLAIN");
		return;
	}
	send_cmd(s, CMD_AUTH, true, "LOGIN %s %s", qu, qp);
	OPENSSL_cleanse(qp, sizeof(qp));
	set_state(s, S_AUTH);
}

/* Capabilities known: STARTTLS if asked for, else log in. */
static void
after_caps(struct session *s)
{
	if (s->a->tls == TLS_MODE_STARTTLS && !transport_is_tls(s->tr)) {
		if (!(s->caps & CAP_STARTTLS)) {
			session_fail(s, IDLEFETCH_ECAPA, "tls = starttls but the server "
			    "does not offer STARTTLS; not logging in");
			return;
		}
		send_cmd(s, CMD_STARTTLS, false, "STARTTLS");
		set_state(s, S_STARTTLS);
		return;
	}
	send_auth(s);
}

static void
send_select(struct session *s)
{
	char mbox[512];

	proto_quote(mbox, sizeof(mbox), s->o.folder);
	s->uidvalidity = 0;
	s->exists = 0;
	send_cmd(s, CMD_SELECT, false, "%s %s",
	    s->a->after == AFTER_KEEP ? "EXAMINE" : "SELECT", mbox);
	set_state(s, S_SELECT);
}

static void
selected(struct session *s)
{
	if (s->uidvalidity == 0) {
		session_fail(s, IDLEFETCH_EPROTO, "server sent no UIDVALIDITY for %s",
		    s->o.folder);
		return;
	}
	if (s->st.uidvalidity != 0 && s->st.uidvalidity != s->uidvalidity) {
		s->fatal_err = true;
		session_fail(s, IDLEFETCH_EPROTO, "UIDVALIDITY changed from %u to %u: "
		    "the server renumbered this folder. Not fetching it, to avoid "
		    "delivering every message again; after checking the Maildir, "
		    "remove %s to fetch the folder as new", s->st.uidvalidity,
		    s->uidvalidity, s->state_path);
		return;
	}
	LOG(s, LOGL_INFO, "selected: %u message(s), UIDVALIDITY %u, last "
	    "delivered UID %u", s->exists, s->uidvalidity, s->st.last_uid);
	if (!s->reconciled) {
		set_state(s, S_RECONCILE);
		memset(&s->job, 0, sizeof(s->job));
		s->job.st = s->st;
		s->job.uidvalidity = s->uidvalidity;
		start_job(s, JOB_RECONCILE);
		return;
	}
	start_sync(s);
}

/* ---- responses --------------------------------------------------------------- */

static void
on_tagged(struct session *s, const struct proto_resp *r)
{
	struct cmd *c = find_cmd(s, r->tag);
	struct cmd copy;

	if (c == NULL) {
		session_fail(s, IDLEFETCH_EPROTO, "server answered unknown tag %s",
		    r->tag);
		return;
	}
	copy = *c;
	c->uids = NULL;
	c->secret = NULL;
	drop_cmd(s, c);
	if (r->has & HAS_CAPS)
		s->caps = r->caps;
	switch (copy.kind) {
	case CMD_CAPABILITY:
		if (r->status != PROTO_OK)
			session_fail(s, IDLEFETCH_EPROTO, "CAPABILITY failed: %s", r->text);
		else if (s->state == S_CAPABILITY)
			after_caps(s);
		else
			send_select(s);
		break;
	case CMD_STARTTLS:
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_ETLS, "STARTTLS refused: %s", r->text);
			break;
		}
		set_state(s, S_TLS);
		if (transport_start_tls(s->tr, s->o.ssl_ctx, s->a->host) < 0)
			session_fail(s, IDLEFETCH_ETLS, "cannot start TLS");
		break;
	case CMD_AUTH:
		secret_free(copy.secret);
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_EAUTH, "login rejected for user %s: %s",
			    s->a->username, r->text);
			break;
		}
		LOG(s, LOGL_INFO, "logged in as %s%s", s->a->username,
		    transport_is_tls(s->tr) ? " over TLS" : " without TLS");
		if (r->has & HAS_CAPS) {
			send_select(s);
		} else {
			send_cmd(s, CMD_CAPABILITY, false, "CAPABILITY");
			set_state(s, S_SELECT);
		}
		break;
	case CMD_SELECT:
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_EPROTO, "cannot open folder %s: %s",
			    s->o.folder, r->text);
			break;
		}
		selected(s);
		break;
	case CMD_LIST:
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_EPROTO, "listing new messages failed: %s",
			    r->text);
			break;
		}
		s->listing = false;
		list_finish(s);
		if (s->nlist)
			LOG(s, LOGL_INFO, "%zu new message(s) to fetch", s->nlist);
		sync_pump(s);
		break;
	case CMD_FETCH:
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_EPROTO, "fetching messages failed: %s",
			    r->text);
			break;
		}
		copy.batch->complete = true;
		s->inflight--;
		sync_pump(s);
		break;
	case CMD_COPY:
	case CMD_MOVE:
	case CMD_STORE:
	case CMD_EXPUNGE:
		s->after_pending--;
		if (r->status != PROTO_OK)
			LOG(s, LOGL_ERROR, "after-delivery action failed (messages "
			    "stay on the server): %s", r->text);
		else if (copy.kind == CMD_COPY)
			after_copy(s, &copy);
		free(copy.uids);
		sync_pump(s);
		break;
	case CMD_IDLE:
		if (r->status != PROTO_OK) {
			session_fail(s, IDLEFETCH_EPROTO, "IDLE failed: %s", r->text);
			break;
		}
		if (s->stopping) {
			send_cmd(s, CMD_LOGOUT, false, "LOGOUT");
			set_state(s, S_LOGOUT);
			break;
		}
		start_sync(s);
		break;
	case CMD_LOGOUT:
		close_conn(s);
		finish(s);
		break;
	default:
		fatal("bad command kind");
	}
}

static void
on_untagged(struct session *s, const struct proto_resp *r)
{
	if (r->status == PROTO_BYE) {
		snprintf(s->bye, sizeof(s->bye), "%s", r->text);
		return;
	}
	if (r->has & HAS_CAPS)
		s->caps = r->caps;
	if (r->has & HAS_UIDVALIDITY)
		s->uidvalidity = r->uidvalidity;
	if (r->has & HAS_EXPUNGE && s->exists > 0)
		s->exists--;
	if (r->has & HAS_EXISTS) {
		bool grew = r->exists > s->exists;

		s->exists = r->exists;
		if (grew && s->state == S_IDLE) {
			send_raw(s, "DONE", false);
			set_state(s, S_IDLE_DONE);
		} else if (grew && s->state == S_POLL_WAIT) {
			start_sync(s);
		} else if (grew) {
			s->more = true;
		}
	}
	if ((r->has & HAS_FETCH) && s->listing && (r->has & HAS_UID))
		list_add(s, r->uid, r->size);
}

static void
on_fetch_body(struct session *s, const struct proto_resp *r)
{
	struct batch *b;

	/*
	 * Servers may interleave the responses of pipelined commands, so the
	 * UID, not the order, says which batch a body belongs to.
	 */
	for (b = s->bhead; b; b = b->next)
		if (!b->complete && (r->has & HAS_UID) && bsearch(&r->uid, b->uids,
		    b->n, sizeof(*b->uids), cmp_u32) != NULL)
			break;
	s->cur_open = false;
	if (b == NULL) {
		LOG(s, LOGL_WARN, "ignoring a message body the client did not ask "
		    "for (UID %u)", r->uid);
		maildir_discard(s->maildir, &s->cur);
		return;
	}
	for (size_t i = 0; i < b->nfiles; i++)
		if (b->files[i].uid == r->uid) {
			maildir_discard(s->maildir, &s->cur);
			return;
		}
	s->cur.uid = r->uid;
	b->files[b->nfiles++] = s->cur;
}

static int
on_unit(void *ud, const char *p, size_t n)
{
	struct session *s = ud;
	struct proto_resp r;
	bool greeting = !s->greeted;
	int pr;

	if (log_enabled(LOGL_DEBUG))
		LOG(s, LOGL_DEBUG, "S: %.*s", (int)(n > 200 ? 200 : n - 2), p);
	pr = proto_parse(p, n, greeting, &r);
	if (s->cur_open) {
		if (pr < 0 || !(r.has & HAS_BODY)) {
			session_fail(s, IDLEFETCH_EPROTO, "cannot parse a FETCH response "
			    "carrying a message; closing the connection");
			return 1;
		}
		on_fetch_body(s, &r);
	}
	if (greeting) {
		s->greeted = true;
		if (pr < 0 || r.status == PROTO_BYE) {
			session_fail(s, IDLEFETCH_EPROTO, "server refused the "
			    "connection: %s", pr < 0 ? "bad greeting" : r.text);
			return 1;
		}
		if (r.status == PROTO_PREAUTH) {
			session_fail(s, IDLEFETCH_EPROTO, "server sent PREAUTH; refusing "
			    "a connection that skips authentication");
			return 1;
		}
		if (r.has & HAS_CAPS) {
			s->caps = r.caps;
			after_caps(s);
		} else {
			send_cmd(s, CMD_CAPABILITY, false, "CAPABILITY");
			set_state(s, S_CAPABILITY);
		}
		return s->conn_alive ? 0 : 1;
	}
	if (pr < 0 && r.kind != PROTO_TAGGED && r.status != PROTO_BYE) {
		LOG(s, LOGL_DEBUG, "skipping a response the parser does not know");
		return 0;
	}
	switch (r.kind) {
	case PROTO_CONTINUE:
		if (s->state == S_IDLE_START && (s->more || s->stopping)) {
			send_raw(s, "DONE", false);
			set_state(s, S_IDLE_DONE);
		} else if (s->state == S_IDLE_START) {
			set_state(s, S_IDLE);
		} else if (s->state == S_AUTH && s->ncmds > 0 &&
		    s->cmds[s->ncmds - 1].secret != NULL) {
			struct cmd *c = &s->cmds[s->ncmds - 1];

			send_raw(s, c->secret, true);
			secret_free(c->secret);
			c->secret = NULL;
		} else {
			session_fail(s, IDLEFETCH_EPROTO, "unexpected continuation");
		}
		break;
	case PROTO_TAGGED:
		on_tagged(s, &r);
		break;
	default:
		on_untagged(s, &r);
		break;
	}
	if (!s->conn_alive)
		return 1;
	/* STARTTLS: whatever followed the OK in plaintext must be dropped. */
	return s->state == S_TLS ? 1 : 0;
}

static int
on_literal_begin(void *ud, const char *prefix, size_t len, uint64_t size)
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
	s->streaming = true;
	if (s->state != S_SYNC || s->bhead == NULL)
		return 1;		/* streamed to nowhere */
	r = maildir_create(s->maildir, s->tag_mark, &s->cur);
	if (r < 0) {
		LOG(s, LOGL_ERROR, "cannot create a file in %s/tmp: %s", s->maildir,
		    strerror(-r));
		return r;
	}
	s->cur_open = true;
	s->writer->len = 0;
	s->writer->cr = false;
	return 1;
}

static int
on_literal_data(void *ud, const char *p, size_t n)
{
	struct session *s = ud;
	int r;

	if (!s->cur_open)
		return 0;
	r = maildir_write(&s->cur, s->writer, p, n);
	if (r < 0)
		LOG(s, LOGL_ERROR, "cannot write to %s/tmp: %s", s->maildir,
		    strerror(-r));
	return r;
}

static int
on_literal_end(void *ud)
{
	struct session *s = ud;
	int r;

	s->streaming = false;
	if (!s->cur_open)
		return 0;
	r = maildir_flush(&s->cur, s->writer);
	if (r < 0)
		LOG(s, LOGL_ERROR, "cannot write to %s/tmp: %s", s->maildir,
		    strerror(-r));
	return r;
}

static const struct framer_ops framer_ops = {
	.literal_begin = on_literal_begin,
	.literal_data = on_literal_data,
	.literal_end = on_literal_end,
	.unit = on_unit,
};

/* ---- transport events ------------------------------------------------------------ */

static void
on_data(struct session *s, const char *data, size_t len)
{
	int r;

	if (s->state != S_IDLE && s->state != S_POLL_WAIT &&
	    s->state != S_LOGOUT)
		arm(s, TIMEOUT_MS(s));
	r = framer_push(s->fr, data, len);
	if (r < 0 && s->conn_alive) {
		session_fail(s, r, "connection closed: %s",
		    r == -EMSGSIZE ? "server sent an over-long line or literal" :
		    err_str(r));
		return;
	}
	/* A graceful stop waits for the message in flight, then stops reading. */
	if (s->conn_alive && s->stopping && s->state == S_SYNC &&
	    !s->streaming && (s->inflight > 0 || s->listing)) {
		transport_pause(s->tr, true);
		close_conn(s);
		set_state(s, S_CLOSING);
		settle(s);
	}
}

static void
on_transport(void *ud, enum transport_event ev, const char *data, size_t len,
    int err, const char *why)
{
	struct session *s = ud;

	switch (ev) {
	case TRANSPORT_CONNECTED:
		s->conn_alive = true;
		LOG(s, LOGL_DEBUG, "connected to %s:%u", s->a->host, s->a->port);
		if (s->a->tls == TLS_MODE_IMPLICIT) {
			set_state(s, S_TLS);
			if (transport_start_tls(s->tr, s->o.ssl_ctx, s->a->host) < 0)
				session_fail(s, IDLEFETCH_ETLS, "cannot start TLS");
		} else {
			set_state(s, S_GREETING);
		}
		break;
	case TRANSPORT_TLS_READY:
		LOG(s, LOGL_DEBUG, "TLS established, certificate verified");
		if (s->a->tls == TLS_MODE_IMPLICIT) {
			set_state(s, S_GREETING);
		} else {
			/* RFC 3501: capabilities must be asked for again after TLS. */
			s->caps = 0;
			send_cmd(s, CMD_CAPABILITY, false, "CAPABILITY");
			set_state(s, S_CAPABILITY);
		}
		break;
	case TRANSPORT_DATA:
		on_data(s, data, len);
		break;
	case TRANSPORT_ERROR:
		if (s->state == S_LOGOUT) {
			close_conn(s);
			finish(s);
			break;
		}
		if (s->bye[0])
			session_fail(s, err, "%s:%u: server closed the connection: %s",
			    s->a->host, s->a->port, s->bye);
		else
			session_fail(s, err, "%s:%u: %s", s->a->host, s->a->port, why);
		break;
	default:
		fatal("bad transport event %d", ev);
	}
}

static void
connect_now(struct session *s)
{
	int r;

	s->greeted = false;
	s->bye[0] = '\0';
	s->caps = 0;
	framer_reset(s->fr);
	s->tr = transport_new(s->loop, on_transport, s);
	set_state(s, S_CONNECT);
	r = transport_connect(s->tr, s->a->host, s->a->port);
	if (r < 0)
		session_fail(s, r, "cannot resolve %s: %s", s->a->host, err_str(r));
}

static void
timer_cb(uv_timer_t *t)
{
	struct session *s = t->data;

	switch (s->state) {
	case S_BACKOFF:
		connect_now(s);
		break;
	case S_IDLE:
		/* Re-issue IDLE: keeps NAT state alive and proves the peer is. */
		send_raw(s, "DONE", false);
		set_state(s, S_IDLE_DONE);
		break;
	case S_POLL_WAIT:
		start_sync(s);
		break;
	case S_SYNC:
		if (s->ncmds == 0) {	/* only waiting for the disk */
			arm(s, TIMEOUT_MS(s));
			break;
		}
		session_fail(s, -ETIMEDOUT, "no answer from the server for %d s",
		    s->a->timeout);
		break;
	case S_LOGOUT:
		close_conn(s);
		finish(s);
		break;
	default:
		session_fail(s, -ETIMEDOUT, "%s:%u: timed out in %s", s->a->host,
		    s->a->port, state_names[s->state]);
		break;
	}
}

/* ---- public ---------------------------------------------------------------------- */

struct session *
session_new(uv_loop_t *loop, const struct session_opts *o)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->loop = loop;
	s->o = *o;
	s->a = o->acct;
	s->maildir = config_folder_maildir(s->a, o->folder);
	s->state_path = state_path(o->state_dir, s->a->name, o->folder);
	s->tag_mark = maildir_tag(s->a->name, o->folder);
	s->fr = framer_new(&framer_ops, s);
	s->writer = xmalloc(sizeof(*s->writer));
	s->backoff_ms = BACKOFF_MIN_MS;
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	s->state = S_PREPARE;
	return s;
}

void
session_start(struct session *s)
{
	LOG(s, LOGL_DEBUG, "Maildir %s, state %s", s->maildir, s->state_path);
	memset(&s->job, 0, sizeof(s->job));
	start_job(s, JOB_PREPARE);
}

void
session_stop(struct session *s)
{
	if (s->stopping || s->state == S_DONE)
		return;
	s->stopping = true;
	switch (s->state) {
	case S_PREPARE:
	case S_RECONCILE:
		if (s->state == S_RECONCILE) {
			close_conn(s);
			set_state(s, S_CLOSING);
		}
		break;		/* the job's completion finishes */
	case S_BACKOFF:
	case S_CLOSING:
		if (!s->job_busy)
			finish(s);
		break;
	case S_IDLE:
		send_raw(s, "DONE", false);
		set_state(s, S_IDLE_DONE);
		break;
	case S_POLL_WAIT:
		send_cmd(s, CMD_LOGOUT, false, "LOGOUT");
		set_state(s, S_LOGOUT);
		break;
	case S_SYNC:
		/*
		 * Messages still coming: stop after the one in flight (on_data)
		 * and commit what is complete. Only commits or after-delivery
		 * commands left: let them finish; the sync then ends in LOGOUT.
		 */
		if (!s->streaming && (s->inflight > 0 || s->listing)) {
			close_conn(s);
			set_state(s, S_CLOSING);
			settle(s);
		}
		break;
	case S_IDLE_START:
	case S_IDLE_DONE:
	case S_LOGOUT:
		break;		/* the tagged reply leads to LOGOUT */
	default:
		close_conn(s);
		set_state(s, S_CLOSING);
		settle(s);
		break;
	}
}

static void
timer_close_cb(uv_handle_t *h)
{
	struct session *s = h->data;

	free(s->maildir);
	free(s->state_path);
	free(s->list);
	free(s->sizes);
	free(s->stale);
	free(s->writer);
	framer_free(s->fr);
	free(s);
}

void
session_free(struct session *s)
{
	struct batch *b, *next;

	if (s == NULL)
		return;
	if (s->job_busy)
		fatal("session_free with a job in flight");
	close_conn(s);
	for (b = s->bhead; b; b = next) {
		next = b->next;
		for (size_t i = 0; i < b->nfiles; i++)
			maildir_discard(s->maildir, &b->files[i]);
		batch_free(b);
	}
	uv_close((uv_handle_t *)&s->timer, timer_close_cb);
}
