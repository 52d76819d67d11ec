/*
 * status: the daemon's side writes STATE_DIR/ACCOUNT/status, a versioned
 * text file with one tab-separated line per folder; the command's side
 * reads it back and judges health. The file is replaced by rename, so a
 * reader sees the old or the new version, never a mix; it is not fsynced
 * because nothing is lost with it: after a crash the account lock says
 * that no daemon runs, whatever the file holds.
 *
 * Writes happen on the libuv threadpool, at most one at a time and at most
 * once a second, and only after something changed.
 *
 * One timer serves every writer (a timer each was 152 bytes an account):
 * a writer waits in one of two queues, "soon" (changed: STATUS_DELAY_MS)
 * or "beat" (quiet: STATUS_HEARTBEAT_MS). Every writer of a queue waits
 * as long, so appending keeps each queue in order of when it is due, and
 * the timer only needs the earlier of the two heads.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "idlefetch/log.h"
#include "idlefetch/state.h"
#include "idlefetch/status.h"
#include "idlefetch/util.h"

#define STATUS_MAGIC "idlefetch-status 1\n"
#define STATUS_DELAY_MS 1000
/* A quiet daemon still proves every 15 minutes that its loop runs. */
#define STATUS_HEARTBEAT_MS (15 * 60 * 1000)
#define STATUS_MAX_BYTES (1024 * 1024)

struct wqueue {
	struct status_writer *head, *tail;
};

struct status_clock {
	uv_loop_t *loop;
	uv_timer_t timer;
	struct wqueue soon, beat;
	bool closed;
};

struct status_writer {
	struct status_clock *clock;
	struct wqueue *queue; /* soon, beat or NULL: waits for nothing */
	struct status_writer *prev, *next; /* in queue */
	uint64_t due; /* loop time it writes at, in queue */
	char *path; /* STATE_DIR/ACCOUNT/status */
	unsigned seq; /* its temporary file is path.tmpSEQ */
	char *account;
	struct status_rec *recs; /* borrowed */
	size_t n;
	int64_t started;
	char *final; /* closing: the last text, still to be written */
	int err; /* result of the last write */
	bool dirty; /* changed since the text was made */
	bool busy; /* a write is on the threadpool */
	bool err_logged;
	bool closing; /* status_writer_free was called */
	status_hook_cb *hook; /* told before each write */
	void *hook_ud;
};

/* ---- writing ---------------------------------------------------------------- */

char *
status_render(const struct status_rec *recs, size_t nrecs, long pid,
    int64_t started, int64_t written, bool stopped)
{
	size_t cap = 256, len = 0;
	char *buf = xmalloc(cap);
	int n;

	len = (size_t)snprintf(buf, cap,
	    STATUS_MAGIC "pid %ld\nstarted %" PRId64 "\nwritten %" PRId64
			 "\nstopped %d\n",
	    pid, started, written, stopped ? 1 : 0);
	for (size_t i = 0; i < nrecs; i++) {
		const struct status_rec *r = &recs[i];

		for (;;) {
			n = snprintf(buf + len, cap - len,
			    "folder\t%s\t%s\t%d\t%d\t%" PRId64 "\t%" PRId64
			    "\t%" PRIu64 "\t%" PRId64 "\t%s\n",
			    r->folder, r->state ? r->state : "-", r->up ? 1 : 0,
			    r->gave_up ? 1 : 0, r->since, r->last_sync,
			    r->delivered, r->error_at,
			    r->error ? r->error : "");
			if ((size_t)n < cap - len)
				break;
			cap = cap * 2 + (size_t)n;
			buf = xrealloc(buf, cap);
		}
		len += (size_t)n;
	}
	return buf;
}

static char *
render(const struct status_writer *w, bool stopped)
{
	return status_render(w->recs, w->n, (long)getpid(), w->started,
	    (int64_t)time(NULL), stopped);
}

/*
 * Replaces path with text: write the temporary file tmp, rename it over.
 * Each writer has a temporary name of its own: after a reload the old and
 * the new writer of an account may both be at work for a moment.
 */
static int
replace_file(const char *path, const char *tmp, const char *text)
{
	/* Rewritten often and only informative: no fsync. */
	int r = write_fresh(tmp, text, strlen(text), 0644, false);

	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

static void
report_write(struct status_writer *w)
{
	if (w->err < 0 && !w->err_logged)
		log_msg(LOGL_WARN, w->account, NULL, "cannot write %s: %s",
		    w->path, err_str(w->err));
	w->err_logged = w->err < 0;
}

/*
 * One write on the threadpool. It lives only as long as the write: an
 * idle account's writer waits a quarter of an hour between writes, and
 * ten thousand of them kept 2 MiB of requests and names for nothing.
 */
struct write_job {
	uv_work_t work;
	struct status_writer *w;
	char *text;
	int err;
	char tmp[]; /* path.tmpSEQ */
};

static void
work_cb(uv_work_t *req)
{
	struct write_job *j = req->data;

	j->err = replace_file(j->w->path, j->tmp, j->text);
}

static void after_work_cb(uv_work_t *req, int status);

/* Hands text (owned by the writer from now on) to the threadpool. */
static void
start_write(struct status_writer *w, char *text)
{
	size_t n = strlen(w->path) + sizeof(".tmp") + 10;
	struct write_job *j = xcalloc(1, sizeof(*j) + n);
	int r;

	j->w = w;
	j->text = text;
	snprintf(j->tmp, n, "%s.tmp%u", w->path, w->seq);
	j->work.data = j;
	r = uv_queue_work(w->clock->loop, &j->work, work_cb, after_work_cb);
	if (r < 0)
		fatal("uv_queue_work: %s", uv_strerror(r));
	w->busy = true;
}

static void
dequeue(struct status_writer *w)
{
	struct wqueue *q = w->queue;

	if (q == NULL)
		return;
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	w->prev = w->next = NULL;
	w->queue = NULL;
}

/* The head of soon or beat due by now, the earlier of the two; or NULL. */
static struct status_writer *
due_by(struct status_clock *c, uint64_t now)
{
	struct status_writer *s = c->soon.head, *b = c->beat.head;

	if (s && s->due <= now && (!b || s->due <= b->due))
		return s;
	if (b && b->due <= now)
		return b;
	return NULL;
}

static void clock_cb(uv_timer_t *t);

static void
arm(struct status_clock *c)
{
	struct status_writer *s = c->soon.head, *b = c->beat.head;
	uint64_t due, now = uv_now(c->loop);

	if (c->closed)
		return;
	if (!s && !b) {
		uv_timer_stop(&c->timer);
		return;
	}
	due = s && (!b || s->due <= b->due) ? s->due : b->due;
	uv_timer_start(&c->timer, clock_cb, due > now ? due - now : 0, 0);
}

/* w writes next in STATUS_DELAY_MS (soon) or STATUS_HEARTBEAT_MS. */
static void
enqueue(struct status_writer *w, bool soon)
{
	struct status_clock *c = w->clock;
	struct wqueue *q = soon ? &c->soon : &c->beat;

	dequeue(w);
	w->due = uv_now(c->loop) +
	    (soon ? STATUS_DELAY_MS : STATUS_HEARTBEAT_MS);
	w->queue = q;
	w->prev = q->tail;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
	arm(c);
}

static void
fire(struct status_writer *w)
{
	if (w->busy || w->closing)
		return; /* after_work_cb takes over */
	w->dirty = false;
	if (w->hook != NULL)
		w->hook(w->hook_ud);
	start_write(w, render(w, false));
}

static void
clock_cb(uv_timer_t *t)
{
	struct status_clock *c = t->data;
	uint64_t now = uv_now(c->loop);
	struct status_writer *w;

	/* One at a time: a hook may queue other writers (for later). */
	while ((w = due_by(c, now)) != NULL) {
		dequeue(w);
		fire(w);
	}
	arm(c);
}

struct status_clock *
status_clock_new(uv_loop_t *loop)
{
	struct status_clock *c = xcalloc(1, sizeof(*c));

	c->loop = loop;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	uv_unref((uv_handle_t *)&c->timer);
	return c;
}

void
status_clock_close(struct status_clock *c)
{
	c->closed = true;
	uv_close((uv_handle_t *)&c->timer, NULL);
}

void
status_clock_free(struct status_clock *c)
{
	free(c);
}

static void
after_work_cb(uv_work_t *req, int status)
{
	struct write_job *j = req->data;
	struct status_writer *w = j->w;

	w->busy = false;
	w->err = j->err;
	free(j->text);
	free(j);
	report_write(w);
	if (w->closing && w->final != NULL) {
		char *text = w->final;

		w->final = NULL;
		start_write(w, text);
	} else if (w->closing) {
		free(w->path);
		free(w->account);
		free(w);
	} else {
		enqueue(w, w->dirty);
	}
}

struct status_writer *
status_writer_new(struct status_clock *clock, const char *state_dir,
    const char *account, struct status_rec *recs, size_t n)
{
	static unsigned seq;
	struct status_writer *w = xcalloc(1, sizeof(*w));

	w->clock = clock;
	w->path = xasprintf("%s/%s/status", state_dir, account);
	w->seq = ++seq;
	w->account = xstrdup(account);
	w->recs = recs;
	w->n = n;
	w->started = (int64_t)time(NULL);
	for (size_t i = 0; i < n; i++) {
		recs[i].w = w;
		recs[i].since = w->started;
	}
	/* From now on the file belongs to this process. */
	start_write(w, render(w, false));
	return w;
}

void
status_writer_set(struct status_writer *w, struct status_rec *recs, size_t n)
{
	int64_t now = (int64_t)time(NULL);

	w->recs = recs;
	w->n = n;
	for (size_t i = 0; i < n; i++) {
		recs[i].w = w;
		if (recs[i].since == 0)
			recs[i].since = now;
	}
	if (n > 0)
		status_changed(&recs[0]);
}

void
status_writer_hook(struct status_writer *w, status_hook_cb *cb, void *ud)
{
	w->hook = cb;
	w->hook_ud = ud;
}

void
status_changed(struct status_rec *rec)
{
	struct status_writer *w = rec->w;

	if (w == NULL)
		return;
	w->dirty = true;
	/* Sooner than the heartbeat, but no sooner than a pending write. */
	if (!w->busy && w->queue != &w->clock->soon)
		enqueue(w, true);
}

void
status_set_state(struct status_rec *rec, const char *state, bool up)
{
	if (rec->state == state && rec->up == up)
		return;
	if (rec->up != up)
		rec->since = (int64_t)time(NULL);
	rec->state = state;
	rec->up = up;
	status_changed(rec);
}

void
status_error(struct status_rec *rec, const char *why)
{
	size_t i, n = strnlen(why, STATUS_ERROR_MAX - 1);

	rec->error = xrealloc(rec->error, n + 1);
	/* One line, one field: the file is tab- and line-separated. */
	for (i = 0; i < n; i++)
		rec->error[i] =
		    (why[i] < 0x20 || why[i] == 0x7f) ? ' ' : why[i];
	rec->error[n] = '\0';
	rec->error_at = (int64_t)time(NULL);
	status_changed(rec);
}

void
status_rec_clear(struct status_rec *rec)
{
	free(rec->error);
	rec->error = NULL;
}

void
status_writer_free(struct status_writer *w, bool last)
{
	if (w == NULL)
		return;
	/* The last text is made now, while the records still exist. */
	w->final = last ? render(w, true) : NULL;
	for (size_t i = 0; i < w->n; i++)
		w->recs[i].w = NULL;
	w->recs = NULL;
	w->n = 0;
	w->closing = true;
	dequeue(w);
	if (w->busy) {
		/* after_work_cb finishes. */
	} else if (w->final != NULL) {
		char *text = w->final;

		w->final = NULL;
		start_write(w, text);
	} else {
		free(w->path);
		free(w->account);
		free(w);
	}
}

/* ---- reading ---------------------------------------------------------------- */

void
status_file_free(struct status_file *f)
{
	free(f->recs);
	free(f->text);
	memset(f, 0, sizeof(*f));
}

static char *
read_text(const char *path, int *err)
{
	char *buf = xmalloc(STATUS_MAX_BYTES + 1);
	size_t len = 0;
	ssize_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		*err = -errno;
		free(buf);
		return NULL;
	}
	while (len < STATUS_MAX_BYTES) {
		n = read(fd, buf + len, STATUS_MAX_BYTES - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	*err = n < 0 ? -errno : 0;
	close(fd);
	if (*err < 0) {
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
}

/* Splits "folder\t..." in place; 0 or -EINVAL. */
static int
parse_folder(char *line, struct status_rec *r)
{
	char *field[10], *p = line;
	long long up, gave_up, since, last_sync, error_at;
	unsigned long long delivered;

	for (size_t i = 0; i < 10; i++) {
		field[i] = p;
		p = i < 9 ? strchr(p, '\t') : NULL;
		if (i < 9 && p == NULL)
			return -EINVAL;
		if (p)
			*p++ = '\0';
	}
	if (strcmp(field[0], "folder") != 0 ||
	    sscanf(field[3], "%lld", &up) != 1 ||
	    sscanf(field[4], "%lld", &gave_up) != 1 ||
	    sscanf(field[5], "%lld", &since) != 1 ||
	    sscanf(field[6], "%lld", &last_sync) != 1 ||
	    sscanf(field[7], "%llu", &delivered) != 1 ||
	    sscanf(field[8], "%lld", &error_at) != 1)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	r->folder = field[1];
	r->state = field[2];
	r->up = up != 0;
	r->gave_up = gave_up != 0;
	r->since = since;
	r->last_sync = last_sync;
	r->delivered = delivered;
	r->error_at = error_at;
	r->error = field[9];
	return 0;
}

static int
status_file_load(const char *path, struct status_file *f)
{
	int err;
	char *text = read_text(path, &err);

	memset(f, 0, sizeof(*f));
	if (text == NULL)
		return err;
	return status_parse(text, f);
}

int
status_parse(char *text, struct status_file *f)
{
	long long started, written;
	int stopped;
	char *line, *next;
	size_t cap = 0;

	memset(f, 0, sizeof(*f));
	f->text = text;
	if (sscanf(f->text,
		STATUS_MAGIC "pid %ld\nstarted %lld\nwritten %lld\n", &f->pid,
		&started, &written) != 3)
		goto bad;
	f->started = started;
	f->written = written;
	line = strstr(f->text, "\nstopped ");
	if (line == NULL || sscanf(line, "\nstopped %d", &stopped) != 1)
		goto bad;
	f->stopped = stopped != 0;
	for (line = f->text; *line != '\0'; line = next + 1) {
		next = strchr(line, '\n');
		if (next == NULL)
			goto bad; /* every line ends in a newline */
		*next = '\0';
		if (strncmp(line, "folder\t", 7) != 0)
			continue;
		if (f->n == cap) {
			cap = cap ? cap * 2 : 8;
			f->recs = xrealloc(f->recs, cap * sizeof(*f->recs));
		}
		if (parse_folder(line, &f->recs[f->n]) < 0)
			goto bad;
		f->n++;
	}
	return 0;
bad:
	status_file_free(f);
	return -EINVAL;
}

static void
fmt_dur(char *buf, size_t len, int64_t s)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(buf, len, "%ds", (int)s);
	else if (s < 3600)
		snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)(s % 60));
	else if (s < 86400)
		snprintf(buf, len, "%dh%02dm", (int)(s / 3600),
		    (int)(s % 3600 / 60));
	else
		snprintf(buf, len, "%dd%02dh", (int)(s / 86400),
		    (int)(s % 86400 / 3600));
}

bool
status_folder_line(FILE *out, const char *name, const struct status_rec *r,
    int64_t now)
{
	char d1[32], d2[32];
	bool ok;

	if (r == NULL) {
		fprintf(out,
		    "  %-20s not watched: reload idlefetch (SIGHUP) to "
		    "apply the configuration\n",
		    name);
		return false;
	}
	fmt_dur(d1, sizeof(d1), now - r->since);
	if (r->gave_up) {
		fprintf(out, "  %-20s stopped  %-10s for %s: %s\n", name,
		    r->state, d1, r->error ? r->error : "");
		return false;
	}
	ok = r->up || now - r->since <= STATUS_GRACE_SECS;
	fprintf(out, "  %-20s %-8s %-10s for %s", name,
	    r->up                           ? "up" :
		r->last_sync || r->error_at ? "down" :
					      "starting",
	    r->state, d1);
	if (r->last_sync) {
		fmt_dur(d2, sizeof(d2), now - r->last_sync);
		fprintf(out, "; last sync %s ago", d2);
	}
	fprintf(out, "; %" PRIu64 " delivered", r->delivered);
	if (!r->up && r->error_at) {
		fmt_dur(d2, sizeof(d2), now - r->error_at);
		fprintf(out, "; last error %s ago: %s", d2,
		    r->error ? r->error : "");
	}
	fprintf(out, "\n");
	return ok;
}

static const struct status_rec *
find_folder(const struct status_file *f, const char *folder)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->recs[i].folder, folder) == 0)
			return &f->recs[i];
	return NULL;
}

/*
 * Reports one account; returns how many of its folders are unhealthy and
 * adds those found on the server (folders = *) to total.
 */
static size_t
report_account(FILE *out, const struct config *cfg, const struct account *a,
    int64_t now, size_t *total)
{
	struct status_file f;
	char mode[16], path[PATH_MAX], d[32];
	size_t bad = 0;
	long pid;
	int r;

	r = state_lock_holder(cfg->state_dir, a->name, &pid, mode,
	    sizeof(mode));
	if (r < 0) {
		fprintf(out, "%s: cannot read its lock in %s: %s\n", a->name,
		    cfg->state_dir, err_str(r));
		return a->nfolders;
	}
	if (r == 0) {
		fprintf(out, "%s: not running\n", a->name);
		return a->nfolders;
	}
	if (strcmp(mode, "daemon") != 0) {
		fprintf(out,
		    "%s: no daemon; a single pass (--once, pid %ld) "
		    "is running\n",
		    a->name, pid);
		return a->nfolders;
	}
	snprintf(path, sizeof(path), "%s/%s/status", cfg->state_dir, a->name);
	r = status_file_load(path, &f);
	if (r == 0 && f.pid == pid && f.stopped) {
		fprintf(out, "%s: idlefetch pid %ld is stopping\n", a->name,
		    pid);
		status_file_free(&f);
		return a->nfolders;
	}
	if (r < 0 || f.pid != pid) {
		/* Between taking the lock and writing its first status. */
		fprintf(out, "%s: idlefetch pid %ld is starting\n", a->name,
		    pid);
		if (r == 0)
			status_file_free(&f);
		return 0;
	}
	if (now - f.written > STATUS_STALE_SECS) {
		fmt_dur(d, sizeof(d), now - f.written);
		fprintf(out,
		    "%s: idlefetch pid %ld is not responding: its "
		    "status was last written %s ago\n",
		    a->name, pid, d);
		status_file_free(&f);
		return a->nfolders;
	}
	fmt_dur(d, sizeof(d), now - f.started);
	fprintf(out, "%s: idlefetch pid %ld, running for %s\n", a->name, pid,
	    d);
	for (size_t i = 0; i < a->nfolders; i++)
		if (!status_folder_line(out, a->folders[i],
			find_folder(&f, a->folders[i]), now))
			bad++;
	/* folders = *: the subscribed folders the daemon found. */
	for (size_t i = 0; a->subscribed && i < f.n; i++) {
		bool named = false;

		for (size_t j = 0; j < a->nfolders; j++)
			named |= strcmp(a->folders[j], f.recs[i].folder) == 0;
		if (named)
			continue;
		(*total)++;
		if (!status_folder_line(out, f.recs[i].folder, &f.recs[i], now))
			bad++;
	}
	status_file_free(&f);
	return bad;
}

int
status_report(const struct config *cfg, const char *account, FILE *out)
{
	int64_t now = (int64_t)time(NULL);
	size_t bad = 0, total = 0;

	for (size_t i = 0; i < cfg->naccounts; i++) {
		const struct account *a = &cfg->accounts[i];

		if (account && strcmp(account, a->name) != 0)
			continue;
		/* A replica's health is that of the accounts it takes. */
		if (!shard_has(&cfg->shard, a->name))
			continue;
		bad += report_account(out, cfg, a, now, &total);
		total += a->nfolders;
	}
	if (bad == 0)
		fprintf(out, "healthy: %zu folder(s)\n", total);
	else
		fprintf(out, "unhealthy: %zu of %zu folder(s)\n", bad, total);
	return bad == 0 ? 0 : 1;
}
