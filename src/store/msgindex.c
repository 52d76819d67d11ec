/*
 * msgindex: the per-folder index of delivered messages as a file (see
 * idlefetch/msgindex.h): its lines, appending them, the Maildir's files it
 * may lack, and the rewrite that recovery and compaction
 * (msgindex_match.c) drive line by line, writing what they keep into a
 * fresh file beside it, so that neither holds more than the server's side
 * in memory, however long the index grew. Calls header, maildir and util;
 * what to keep is the caller's, through msgindex_rewrite_ops.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "idlefetch/header.h"
#include "idlefetch/maildir.h"
#include "idlefetch/msgindex.h"
#include "idlefetch/util.h"

/*
 * Files named this long before the index's mark (the latest file name
 * seen by its last rewrite) are still looked for: clocks differ a little.
 */
#define MARGIN_SEC 3600

char *
msgindex_path(const char *state_path)
{
	size_t n = strlen(state_path);

	if (n > 6 && strcmp(state_path + n - 6, ".state") == 0)
		return xasprintf("%.*s.index", (int)(n - 6), state_path);
	return xasprintf("%s.index", state_path);
}

static int
format_line(char *buf, size_t cap, const struct msgindex_ent *e)
{
	return snprintf(buf, cap,
	    "%" PRIu32 " %" PRIu32 " %" PRIu32 " %016" PRIx64 " %.96s\n",
	    e->uidvalidity, e->uid, e->size, e->key, e->file ? e->file : "-");
}

int
msgindex_append(const char *path, const struct msgindex_ent *e, size_t n)
{
	char *buf;
	size_t len = 0, cap = n * 192 + 1;
	int fd, r = 0;

	if (n == 0)
		return 0;
	buf = xmalloc(cap);
	for (size_t i = 0; i < n; i++)
		len += (size_t)format_line(buf + len, cap - len, &e[i]);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0) {
		r = -errno;
	} else {
		if (write(fd, buf, len) != (ssize_t)len)
			r = errno ? -errno : -EIO;
		/*
		 * Durable with the batch it records (one fsync per call, up to
		 * a batch of messages): the mark of a rewrite does not look
		 * again at a file named before it, which a clock set back
		 * after a reboot can do, so a lost line is not read back.
		 */
		if (r == 0 && fsync(fd) < 0)
			r = -errno;
		if (close(fd) < 0 && r == 0)
			r = -errno;
	}
	free(buf);
	return r;
}

/* Which file a line names; never 0, which means "none". */
static uint64_t
hash_name(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
	return h ? h : 1;
}

/* When a file was named, from "SEC.M..." (0: unknown). */
static uint64_t
named_at(const char *name)
{
	unsigned long long sec;

	if (sscanf(name, "%llu.M", &sec) != 1)
		return 0;
	return sec;
}

/* The FILE part of a delivered file's path: its name up to the tag. */
static void
file_part(const char *path, const char **p, size_t *n)
{
	const char *base = strrchr(path, '/'), *v;

	base = base ? base + 1 : path;
	/* "...X<8 hex>V<uidvalidity>U<uid>...": the tag ends 9 bytes on. */
	v = strstr(base, "V");
	while (v && (v - base < 9 || v[-9] != 'X'))
		v = strstr(v + 1, "V");
	*p = base;
	*n = v ? (size_t)(v - base) : strlen(base);
}

/* ---- reading the index as a stream ---------------------------------------- */

/*
 * The first line's "# complete SECONDS KEPT": *mark 0 when there is none
 * (every file is looked at), *kept the bytes of its lines of messages not
 * on the server (0 when the line has no such field).
 */
static void
read_mark(const char *path, uint64_t *mark, uint64_t *kept)
{
	FILE *fp = fopen(path, "re");
	char line[256];
	unsigned long long m = 0, k = 0;

	*mark = *kept = 0;
	if (fp == NULL)
		return;
	if (fgets(line, sizeof(line), fp) != NULL &&
	    sscanf(line, "# complete %llu %llu", &m, &k) >= 1) {
		*mark = m;
		*kept = k;
	}
	fclose(fp);
}

uint64_t
msgindex_bytes(const char *path)
{
	struct stat sb;
	uint64_t mark, kept;

	if (stat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
		return 0;
	read_mark(path, &mark, &kept);
	return kept < (uint64_t)sb.st_size ? (uint64_t)sb.st_size - kept : 0;
}

typedef int line_cb(void *ud, const struct msgindex_ent *e, uint64_t hash);

/*
 * Calls cb for each "V U SIZE KEY FILE" line of the index, one at a time;
 * a line that is not one (the mark, a torn line) is skipped. A missing
 * index is an empty one.
 */
static int
each_line(const char *path, line_cb *cb, void *ud)
{
	FILE *fp = fopen(path, "re");
	char line[256], file[128];
	int r = 0;

	if (fp == NULL)
		return errno == ENOENT ? 0 : -errno;
	while (r == 0 && fgets(line, sizeof(line), fp) != NULL) {
		struct msgindex_ent e = { .file = file };

		if (sscanf(line,
			"%" SCNu32 " %" SCNu32 " %" SCNu32 " %" SCNx64 " %127s",
			&e.uidvalidity, &e.uid, &e.size, &e.key, file) != 5)
			continue;
		r = cb(ud, &e, hash_name(file, strlen(file)));
	}
	if (r == 0 && ferror(fp))
		r = -EIO;
	fclose(fp);
	return r;
}

/* ---- writing the index afresh --------------------------------------------- */

struct writer {
	char *tmp;
	FILE *fp;
	uint64_t mark; /* see writer_head() */
	uint64_t kept; /* bytes of lines of messages not on the server */
};

/*
 * The first line: files named from MARK less MARGIN_SEC on must be looked
 * for, and KEPT bytes of the index are lines no compaction sheds. Fixed
 * width, so that it is written again in place once KEPT is known.
 */
static int
writer_head(struct writer *w)
{
	return fprintf(w->fp, "# complete %020" PRIu64 " %020" PRIu64 "\n",
		   w->mark, w->kept) < 0 ?
	    -EIO :
	    0;
}

/* A fresh file beside path (write_fresh() refuses a planted link). */
static int
writer_open(struct writer *w, const char *path, uint64_t mark)
{
	int fd, r;

	w->fp = NULL;
	w->mark = mark;
	w->kept = 0;
	w->tmp = xasprintf("%s.tmp", path);
	r = write_fresh(w->tmp, "", 0, 0600, false);
	if (r < 0)
		goto fail;
	fd = open(w->tmp, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail_unlink;
	}
	w->fp = fdopen(fd, "w");
	if (w->fp == NULL) {
		r = -errno;
		close(fd);
		goto fail_unlink;
	}
	return writer_head(w);
fail_unlink:
	unlink(w->tmp);
fail:
	free(w->tmp);
	w->tmp = NULL;
	return r;
}

/*
 * A line; kept: one that no compaction sheds (a message not on the server
 * whose file a compaction saw in the Maildir).
 */
static void
writer_put(struct writer *w, const struct msgindex_ent *e, bool kept)
{
	char line[256];
	int n = format_line(line, sizeof(line), e);

	if (n <= 0 || (size_t)n >= sizeof(line))
		return;
	fputs(line, w->fp);
	if (kept)
		w->kept += (uint64_t)n;
}

static void
writer_abort(struct writer *w)
{
	if (w->fp != NULL)
		fclose(w->fp);
	if (w->tmp != NULL)
		unlink(w->tmp);
	free(w->tmp);
	w->fp = NULL;
	w->tmp = NULL;
}

/*
 * Durable, then in place of path: the old index stays until the rename.
 * An error after the rename (the directory's fsync) leaves the new index
 * in place, perhaps not durable.
 */
static int
writer_commit(struct writer *w, const char *path)
{
	char *dir, *slash;
	int r = 0;

	if (fflush(w->fp) != 0 || fseek(w->fp, 0, SEEK_SET) != 0 ||
	    writer_head(w) < 0 || fflush(w->fp) != 0 || ferror(w->fp))
		r = errno ? -errno : -EIO;
	if (r == 0 && fsync(fileno(w->fp)) < 0)
		r = -errno;
	if (fclose(w->fp) != 0 && r == 0)
		r = -errno;
	w->fp = NULL;
	if (r == 0 && rename(w->tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		writer_abort(w);
		return r;
	}
	free(w->tmp);
	w->tmp = NULL;
	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash != NULL) {
		*slash = '\0';
		r = fsync_dir(*dir ? dir : "/");
	}
	free(dir);
	return r;
}

/* ---- Maildir files ---------------------------------------------------------- */

/*
 * The folder's files: those named since the index was last complete (the
 * candidates, which the index may lack), or all of them when whether a
 * file is still there matters (a compaction keeps the lines of messages
 * not on the server only while their file is).
 */
struct cands {
	uint64_t since; /* seconds; 0: all are candidates */
	uint64_t newest; /* the latest name time among the candidates */
	bool all;
	uint64_t *hash; /* sorted */
	uint8_t *seen; /* ...and whether a line names it */
	size_t n, cap;
};

static int
cand_add(void *ud, const char *path, uint32_t uidvalidity, uint32_t uid)
{
	struct cands *c = ud;
	const char *fp;
	size_t fn;
	uint64_t at;

	(void)uidvalidity;
	(void)uid;
	file_part(path, &fp, &fn);
	at = named_at(fp);
	if (at >= c->since && at > c->newest)
		c->newest = at;
	if (!c->all && c->since != 0 && at < c->since)
		return 0;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->hash = xrealloc(c->hash, c->cap * sizeof(*c->hash));
	}
	c->hash[c->n++] = hash_name(fp, fn);
	return 0;
}

static int
cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

/*
 * Scans the folder's files; *mark is what the rewritten index's mark will
 * be: the latest name time of a file seen, not the clock, so that a clock
 * set back later (a board without RTC) still finds its files after it. No
 * file: the old mark, but never past now.
 */
static int
cands_scan(struct cands *c, const char *path, const char *maildir, uint32_t tag,
    bool all, uint64_t *mark)
{
	uint64_t old, kept, now = (uint64_t)time(NULL);
	int r;

	memset(c, 0, sizeof(*c));
	read_mark(path, &old, &kept);
	c->since = old > MARGIN_SEC ? old - MARGIN_SEC : 0;
	c->all = all;
	r = maildir_each(maildir, tag, cand_add, c);
	if (r < 0)
		return r;
	if (c->n > 0)
		qsort(c->hash, c->n, sizeof(*c->hash), cmp_u64);
	c->seen = xcalloc(c->n ? c->n : 1, 1);
	*mark = c->newest ? c->newest : (old < now ? old : now);
	return 0;
}

/* The file with this hash, or -1. */
static ssize_t
cand_find(const struct cands *c, uint64_t hash)
{
	const uint64_t *p;

	if (c->n == 0)
		return -1;
	p = bsearch(&hash, c->hash, c->n, sizeof(*c->hash), cmp_u64);
	return p ? p - c->hash : -1;
}

/*
 * Marks the file a line names as named; returns whether an earlier line
 * named it already (a line appended twice), as far as the scan saw it.
 */
static bool
cand_strike(struct cands *c, uint64_t hash)
{
	ssize_t i = cand_find(c, hash);
	bool was;

	if (i < 0)
		return false;
	was = c->seen[i] != 0;
	c->seen[i] = 1;
	return was;
}

static void
cands_free(struct cands *c)
{
	free(c->hash);
	free(c->seen);
	memset(c, 0, sizeof(*c));
}

typedef int
missing_cb(void *ud, const char *path, struct msgindex_ent *e, uint64_t hash);

struct missing {
	struct cands *c;
	missing_cb *cb;
	void *ud;
};

static int
missing_one(void *ud, const char *path, uint32_t uidvalidity, uint32_t uid)
{
	struct missing *m = ud;
	struct msgindex_ent e = { .uidvalidity = uidvalidity, .uid = uid };
	char file[128];
	const char *fp;
	size_t fn;
	ssize_t i;

	file_part(path, &fp, &fn);
	if (m->c->since != 0 && named_at(fp) < m->c->since)
		return 0; /* before the mark: in the index, or dropped */
	i = cand_find(m->c, hash_name(fp, fn));
	if (i < 0 || m->c->seen[i])
		return 0;
	m->c->seen[i] = 1; /* one file in new/ and cur/ counts once */
	snprintf(file, sizeof(file), "%.*s", (int)(fn < 96 ? fn : 96), fp);
	e.file = file;
	return m->cb(m->ud, path, &e, m->c->hash[i]);
}

/* Calls cb for each candidate no line named, with its name's V and U. */
static int
cands_missing(struct cands *c, const char *maildir, uint32_t tag,
    missing_cb *cb, void *ud)
{
	struct missing m = { .c = c, .cb = cb, .ud = ud };

	if (c->n == 0)
		return 0;
	return maildir_each(maildir, tag, missing_one, &m);
}

/* ---- one rewrite for recovery and compaction --------------------------------- */

/*
 * What a rewrite holds: the Maildir's files it scanned, the fresh index
 * it writes, and whom it asks what to keep (msgindex_match.c).
 */
struct msgindex_rewrite {
	struct cands c;
	struct writer w;
	const struct msgindex_rewrite_ops *ops;
	void *ud;
};

static int
rewrite_line(void *ud, const struct msgindex_ent *e, uint64_t hash)
{
	struct msgindex_rewrite *rw = ud;
	bool present = cand_find(&rw->c, hash) >= 0;

	return rw->ops->line(rw->ud, rw, e, hash, present,
	    cand_strike(&rw->c, hash));
}

static int
rewrite_file(void *ud, const char *path, struct msgindex_ent *e, uint64_t hash)
{
	struct msgindex_rewrite *rw = ud;

	return rw->ops->file(rw->ud, rw, path, e, hash);
}

void
msgindex_rewrite_put(struct msgindex_rewrite *rw, const struct msgindex_ent *e,
    bool kept)
{
	writer_put(&rw->w, e, kept);
}

/*
 * Scans the Maildir, writes a fresh index from the old one's lines and the
 * files it lacks, and puts it in place of path. On error err says which
 * step failed; the old index is unchanged unless the rename was done (see
 * writer_commit()).
 */
int
msgindex_rewrite(const char *path, const char *maildir, uint32_t tag, bool all,
    const struct msgindex_rewrite_ops *ops, void *ud, char *err, size_t errlen)
{
	struct msgindex_rewrite rw = { .ops = ops, .ud = ud };
	const char *what = maildir, *how = "cannot read the Maildir";
	uint64_t mark;
	int r = cands_scan(&rw.c, path, maildir, tag, all, &mark);

	if (r < 0)
		goto fail;
	r = writer_open(&rw.w, path, mark);
	how = "cannot write a new";
	what = path;
	if (r < 0)
		goto fail;
	r = each_line(path, rewrite_line, &rw);
	how = "cannot read";
	if (r == 0) {
		r = cands_missing(&rw.c, maildir, tag, rewrite_file, &rw);
		how = "cannot read the Maildir";
		what = maildir;
	}
	if (r < 0) {
		writer_abort(&rw.w);
		goto fail;
	}
	r = writer_commit(&rw.w, path);
	how = "cannot rewrite";
	what = path;
	if (r < 0)
		goto fail;
	cands_free(&rw.c);
	return 0;
fail:
	snprintf(err, errlen, "%s %s: %s", how, what, strerror(-r));
	cands_free(&rw.c);
	return r;
}

/*
 * A delivered file's key and size as the server counted it: each LF was a
 * CRLF there. The header is read whole (up to HEADER_MAX), the rest only
 * counted.
 */
int
msgindex_read_file(const char *path, struct msgindex_ent *e, char *msgid)
{
	size_t cap = HEADER_MAX + 1, have = 0;
	char *buf = xmalloc(cap), chunk[65536];
	uint64_t bytes = 0, lines = 0;
	struct header_info h;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), r = 0;
	ssize_t got;

	if (fd < 0) {
		free(buf);
		return errno == ENOENT ? 1 : -errno; /* gone meanwhile */
	}
	while ((got = read(fd, chunk, sizeof(chunk))) > 0) {
		size_t take =
		    (size_t)got < cap - have ? (size_t)got : cap - have;

		memcpy(buf + have, chunk, take);
		have += take;
		bytes += (uint64_t)got;
		for (ssize_t i = 0; i < got; i++)
			lines += chunk[i] == '\n';
	}
	if (got < 0)
		r = -errno;
	close(fd);
	if (r == 0) {
		(void)header_parse(buf, have, &h);
		e->key = header_key(&h);
		if (msgid)
			memcpy(msgid, h.msgid, sizeof(h.msgid));
		e->size = bytes + lines > UINT32_MAX ?
		    UINT32_MAX :
		    (uint32_t)(bytes + lines);
	}
	free(buf);
	return r;
}
