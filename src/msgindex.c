/*
 * msgindex: the per-folder index of delivered messages (see
 * idlefetch/msgindex.h). Recovery and compaction read it line by line and
 * write what they keep into a fresh file beside it, so that neither holds
 * more than the server's side in memory, however long the index grew.
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
 * Files named this long before the index was last complete are still
 * looked for: a clock set back names new files in the past.
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
		if (close(fd) < 0 && r == 0)
			r = -errno;
	}
	free(buf);
	return r;
}

uint64_t
msgindex_bytes(const char *path)
{
	struct stat sb;

	if (stat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
		return 0;
	return (uint64_t)sb.st_size;
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

/* The first line's "# complete SECONDS", or 0: every file is looked at. */
static uint64_t
read_mark(const char *path)
{
	FILE *fp = fopen(path, "re");
	char line[256];
	unsigned long long mark = 0;

	if (fp == NULL)
		return 0;
	if (fgets(line, sizeof(line), fp) == NULL ||
	    sscanf(line, "# complete %llu", &mark) != 1)
		mark = 0;
	fclose(fp);
	return mark;
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
};

/*
 * A fresh file beside path (write_fresh() refuses a planted link), its
 * first line the time from which on files must be looked for.
 */
static int
writer_open(struct writer *w, const char *path, uint64_t mark)
{
	int fd, r;

	w->fp = NULL;
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
	fprintf(w->fp, "# complete %" PRIu64 "\n", mark);
	return 0;
fail_unlink:
	unlink(w->tmp);
fail:
	free(w->tmp);
	w->tmp = NULL;
	return r;
}

static void
writer_put(struct writer *w, const struct msgindex_ent *e)
{
	char line[256];

	fputs(format_line(line, sizeof(line), e) > 0 ? line : "", w->fp);
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

/* Durable, then in place of path: the old index stays until the rename. */
static int
writer_commit(struct writer *w, const char *path)
{
	char *dir, *slash;
	int r = 0;

	if (fflush(w->fp) != 0 || ferror(w->fp))
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

/* ---- Maildir files the index may lack ------------------------------------- */

/* The folder's files named since the index was last complete. */
struct cands {
	uint64_t since; /* seconds; 0: all */
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

	(void)uidvalidity;
	(void)uid;
	file_part(path, &fp, &fn);
	if (c->since != 0 && named_at(fp) < c->since)
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

static int
cands_scan(struct cands *c, const char *path, const char *maildir, uint32_t tag)
{
	uint64_t mark = read_mark(path);
	int r;

	memset(c, 0, sizeof(*c));
	c->since = mark > MARGIN_SEC ? mark - MARGIN_SEC : 0;
	r = maildir_each(maildir, tag, cand_add, c);
	if (r < 0)
		return r;
	if (c->n > 0)
		qsort(c->hash, c->n, sizeof(*c->hash), cmp_u64);
	c->seen = xcalloc(c->n ? c->n : 1, 1);
	return 0;
}

/* The candidate with this hash, or -1. */
static ssize_t
cand_find(const struct cands *c, uint64_t hash)
{
	const uint64_t *p;

	if (c->n == 0)
		return -1;
	p = bsearch(&hash, c->hash, c->n, sizeof(*c->hash), cmp_u64);
	return p ? p - c->hash : -1;
}

static void
cand_strike(struct cands *c, uint64_t hash)
{
	ssize_t i = cand_find(c, hash);

	if (i >= 0)
		c->seen[i] = 1;
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

/* ---- recovery: the server's messages against the index -------------------- */

int
msgindex_set_add(struct msgindex_set *m, uint32_t uid, uint64_t key,
    uint32_t size)
{
	if (m->n == MSGINDEX_SET_MAX)
		return -E2BIG;
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 256;
		if (m->cap > MSGINDEX_SET_MAX)
			m->cap = MSGINDEX_SET_MAX;
		m->v = xrealloc(m->v, m->cap * sizeof(*m->v));
	}
	m->v[m->n++] =
	    (struct msgindex_srv){ .key = key, .size = size, .uid = uid };
	return 0;
}

void
msgindex_set_free(struct msgindex_set *m)
{
	free(m->v);
	memset(m, 0, sizeof(*m));
}

static int
cmp_srv_uid(const void *x, const void *y)
{
	const struct msgindex_srv *a = x, *b = y;

	return a->uid < b->uid ? -1 : a->uid > b->uid;
}

static int
cmp_srv_key(const void *x, const void *y)
{
	const struct msgindex_srv *a = x, *b = y;

	if (a->key != b->key)
		return a->key < b->key ? -1 : 1;
	if (a->size != b->size)
		return a->size < b->size ? -1 : 1;
	return cmp_srv_uid(x, y);
}

/*
 * A delivered file (key, size) takes the first unmatched message of that
 * key and size; none if one of them took this very file already (its line
 * appended twice). Returns the message, or NULL.
 */
static struct msgindex_srv *
set_take(struct msgindex_set *m, uint64_t key, uint32_t size, uint64_t by)
{
	size_t lo = 0, hi = m->n;
	struct msgindex_srv *free_one = NULL;

	if (key == 0)
		return NULL; /* nothing to go by */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct msgindex_srv *v = &m->v[mid];

		if (v->key < key || (v->key == key && v->size < size))
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < m->n && m->v[lo].key == key && m->v[lo].size == size;
	     lo++) {
		if (m->v[lo].by == by)
			return NULL;
		if (m->v[lo].by == 0 && free_one == NULL)
			free_one = &m->v[lo];
	}
	if (free_one != NULL) {
		free_one->by = by;
		m->matched++;
	}
	return free_one;
}

struct recovery {
	struct msgindex_set *m;
	struct cands c;
	struct writer w;
	uint32_t uidvalidity;
};

/* A matched file's line, under the server's numbering. */
static int
recover_take(struct recovery *rc, const struct msgindex_ent *e, uint64_t by)
{
	struct msgindex_srv *v = set_take(rc->m, e->key, e->size, by);
	struct msgindex_ent out = *e;

	if (v == NULL)
		return 0;
	out.uidvalidity = rc->uidvalidity;
	out.uid = v->uid;
	writer_put(&rc->w, &out);
	return 0;
}

static int
recover_line(void *ud, const struct msgindex_ent *e, uint64_t hash)
{
	struct recovery *rc = ud;

	cand_strike(&rc->c, hash);
	return recover_take(rc, e, hash);
}

static int
recover_file(void *ud, const char *path, struct msgindex_ent *e, uint64_t hash)
{
	struct recovery *rc = ud;
	int r = msgindex_read_file(path, e, NULL);

	if (r != 0)
		return r < 0 ? r : 0; /* gone meanwhile */
	rc->m->from_maildir++;
	return recover_take(rc, e, hash);
}

/* One entry per UID (a server that repeated a line), sorted by key. */
static void
set_prepare(struct msgindex_set *m)
{
	size_t o = 0;

	if (m->n > 0)
		qsort(m->v, m->n, sizeof(*m->v), cmp_srv_uid);
	for (size_t i = 0; i < m->n; i++)
		if (o == 0 || m->v[o - 1].uid != m->v[i].uid) {
			m->v[o] = m->v[i];
			m->v[o++].by = 0;
		}
	m->n = o;
	m->matched = m->from_maildir = 0;
	if (m->n > 0)
		qsort(m->v, m->n, sizeof(*m->v), cmp_srv_key);
}

int
msgindex_recover(struct msgindex_set *m, const char *path, const char *maildir,
    uint32_t tag, uint32_t uidvalidity, char *err, size_t errlen)
{
	struct recovery rc = { .m = m, .uidvalidity = uidvalidity };
	uint64_t now = (uint64_t)time(NULL);
	int r;

	set_prepare(m);
	r = cands_scan(&rc.c, path, maildir, tag);
	if (r < 0) {
		snprintf(err, errlen, "cannot read the Maildir %s: %s", maildir,
		    strerror(-r));
		goto fail;
	}
	r = writer_open(&rc.w, path, now);
	if (r < 0) {
		snprintf(err, errlen, "cannot write %s.tmp: %s", path,
		    strerror(-r));
		goto fail;
	}
	r = each_line(path, recover_line, &rc);
	if (r < 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(-r));
		goto fail_writer;
	}
	r = cands_missing(&rc.c, maildir, tag, recover_file, &rc);
	if (r < 0) {
		snprintf(err, errlen, "cannot read the Maildir %s: %s", maildir,
		    strerror(-r));
		goto fail_writer;
	}
	r = writer_commit(&rc.w, path);
	if (r < 0) {
		snprintf(err, errlen, "cannot rewrite %s: %s", path,
		    strerror(-r));
		goto fail;
	}
	cands_free(&rc.c);
	if (m->n > 0)
		qsort(m->v, m->n, sizeof(*m->v), cmp_srv_uid);
	return 0;
fail_writer:
	writer_abort(&rc.w);
fail:
	cands_free(&rc.c);
	for (size_t i = 0; i < m->n; i++)
		m->v[i].by = 0;
	m->matched = 0;
	if (m->n > 0)
		qsort(m->v, m->n, sizeof(*m->v), cmp_srv_uid);
	return r;
}

/* ---- compaction: only what the server still holds ------------------------- */

struct compaction {
	const uint32_t *uids;
	uint8_t *written; /* per UID: a line names it already */
	size_t n;
	uint32_t uidvalidity;
	struct cands c;
	struct writer w;
	struct msgindex_counts *out;
};

static int
cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

	return a < b ? -1 : a > b;
}

/* The server's UID that e names and no line took yet, or -1. */
static ssize_t
compact_slot(const struct compaction *k, const struct msgindex_ent *e)
{
	const uint32_t *p;

	if (e->uidvalidity != k->uidvalidity || k->n == 0)
		return -1;
	p = bsearch(&e->uid, k->uids, k->n, sizeof(*k->uids), cmp_u32);
	if (p == NULL || k->written[p - k->uids])
		return -1;
	return p - k->uids;
}

static int
compact_line(void *ud, const struct msgindex_ent *e, uint64_t hash)
{
	struct compaction *k = ud;
	ssize_t i = compact_slot(k, e);

	cand_strike(&k->c, hash);
	if (i < 0) {
		k->out->dropped++;
		return 0;
	}
	k->written[i] = 1;
	writer_put(&k->w, e);
	k->out->kept++;
	return 0;
}

/* A file the index lacks: read only if the server still has it. */
static int
compact_file(void *ud, const char *path, struct msgindex_ent *e, uint64_t hash)
{
	struct compaction *k = ud;
	ssize_t i = compact_slot(k, e);
	int r;

	(void)hash;
	if (i < 0)
		return 0;
	r = msgindex_read_file(path, e, NULL);
	if (r != 0)
		return r < 0 ? r : 0;
	k->written[i] = 1;
	writer_put(&k->w, e);
	k->out->kept++;
	k->out->from_maildir++;
	return 0;
}

static int
compact_run(struct compaction *k, const char *path, const char *maildir,
    uint32_t tag, char *err, size_t errlen)
{
	int r = cands_scan(&k->c, path, maildir, tag);

	if (r < 0) {
		snprintf(err, errlen, "cannot read the Maildir %s: %s", maildir,
		    strerror(-r));
		return r;
	}
	r = writer_open(&k->w, path, (uint64_t)time(NULL));
	if (r < 0) {
		snprintf(err, errlen, "cannot write %s.tmp: %s", path,
		    strerror(-r));
		return r;
	}
	r = each_line(path, compact_line, k);
	if (r < 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(-r));
		writer_abort(&k->w);
		return r;
	}
	r = cands_missing(&k->c, maildir, tag, compact_file, k);
	if (r < 0) {
		snprintf(err, errlen, "cannot read the Maildir %s: %s", maildir,
		    strerror(-r));
		writer_abort(&k->w);
		return r;
	}
	r = writer_commit(&k->w, path);
	if (r < 0)
		snprintf(err, errlen, "cannot rewrite %s: %s", path,
		    strerror(-r));
	return r;
}

int
msgindex_compact(const char *path, const char *maildir, uint32_t tag,
    uint32_t uidvalidity, uint32_t *uids, size_t n, struct msgindex_counts *out,
    char *err, size_t errlen)
{
	struct compaction k = { .uids = uids,
		.uidvalidity = uidvalidity,
		.out = out };
	size_t o = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if (n > 0)
		qsort(uids, n, sizeof(*uids), cmp_u32);
	for (size_t i = 0; i < n; i++)
		if (o == 0 || uids[o - 1] != uids[i])
			uids[o++] = uids[i];
	k.n = o;
	k.written = xcalloc(o ? o : 1, 1);
	r = compact_run(&k, path, maildir, tag, err, errlen);
	cands_free(&k.c);
	free(k.written);
	if (r < 0)
		memset(out, 0, sizeof(*out));
	return r;
}
