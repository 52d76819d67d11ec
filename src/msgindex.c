/*
 * msgindex: the per-folder index of delivered messages (see
 * idlefetch/msgindex.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idlefetch/header.h"
#include "idlefetch/maildir.h"
#include "idlefetch/msgindex.h"
#include "idlefetch/util.h"

char *
msgindex_path(const char *state_path)
{
	size_t n = strlen(state_path);

	if (n > 6 && strcmp(state_path + n - 6, ".state") == 0)
		return xasprintf("%.*s.index", (int)(n - 6), state_path);
	return xasprintf("%s.index", state_path);
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
		len += (size_t)snprintf(buf + len, cap - len,
		    "%" PRIu32 " %" PRIu32 " %" PRIu32 " %016" PRIx64 " %.96s\n",
		    e[i].uidvalidity, e[i].uid, e[i].size, e[i].key,
		    e[i].file ? e[i].file : "-");
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

static void
add(struct msgindex *ix, const struct msgindex_ent *e)
{
	if (ix->n == ix->cap) {
		ix->cap = ix->cap ? ix->cap * 2 : 256;
		ix->v = xrealloc(ix->v, ix->cap * sizeof(*ix->v));
	}
	ix->v[ix->n++] = *e;
}

static uint64_t
hash_name(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
	return h;
}

/* Reads "V U SIZE KEY FILE" lines; a line that is not one is skipped. */
static int
read_index(struct msgindex *ix, const char *path)
{
	FILE *fp = fopen(path, "re");
	char line[256], file[128];

	if (fp == NULL)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), fp) != NULL) {
		struct msgindex_ent e = { 0 };

		if (sscanf(line,
			"%" SCNu32 " %" SCNu32 " %" SCNu32 " %" SCNx64 " %127s",
			&e.uidvalidity, &e.uid, &e.size, &e.key, file) != 5)
			continue;
		e.file_hash = hash_name(file, strlen(file));
		add(ix, &e);
	}
	if (ferror(fp)) {
		fclose(fp);
		return -EIO;
	}
	fclose(fp);
	return 0;
}

/*
 * By file, then by what it holds: one file is one message, whatever UID
 * (a renumbered folder reuses them under the same UIDVALIDITY).
 */
static int
cmp_file(const void *x, const void *y)
{
	const struct msgindex_ent *a = x, *b = y;

	if (a->file_hash != b->file_hash)
		return a->file_hash < b->file_hash ? -1 : 1;
	return 0;
}

static int
cmp_key(const void *x, const void *y)
{
	const struct msgindex_ent *a = x, *b = y;

	if (a->key != b->key)
		return a->key < b->key ? -1 : 1;
	return a->size < b->size ? -1 : a->size > b->size;
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
		size_t take = (size_t)got < cap - have ? (size_t)got : cap - have;

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
		e->size = bytes + lines > UINT32_MAX ? UINT32_MAX :
						      (uint32_t)(bytes + lines);
	}
	free(buf);
	return r;
}

struct complete {
	struct msgindex *ix;
	size_t nknown; /* entries read from the index, sorted by file */
	struct msgindex_ent *fresh; /* read from files */
	size_t nfresh, capfresh;
};

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

static int
complete_one(void *ud, const char *path, uint32_t uidvalidity, uint32_t uid)
{
	struct complete *c = ud;
	struct msgindex_ent e = { .uidvalidity = uidvalidity, .uid = uid };
	const char *fp;
	size_t fn;
	int r;

	file_part(path, &fp, &fn);
	e.file_hash = hash_name(fp, fn);
	if (c->nknown > 0 &&
	    bsearch(&e, c->ix->v, c->nknown, sizeof(e), cmp_file) != NULL)
		return 0;
	r = msgindex_read_file(path, &e, NULL);
	if (r != 0)
		return r < 0 ? r : 0;
	e.file = xstrndup(fp, fn);
	if (c->nfresh == c->capfresh) {
		c->capfresh = c->capfresh ? c->capfresh * 2 : 64;
		c->fresh = xrealloc(c->fresh, c->capfresh * sizeof(*c->fresh));
	}
	c->fresh[c->nfresh++] = e;
	return 0;
}

int
msgindex_load(struct msgindex *ix, const char *path, const char *maildir,
    uint32_t tag, char *err, size_t errlen)
{
	struct complete c = { .ix = ix };
	size_t o = 0;
	int r;

	memset(ix, 0, sizeof(*ix));
	r = read_index(ix, path);
	if (r < 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(-r));
		goto fail;
	}
	/* One entry per file: a line appended twice counts once. */
	if (ix->n > 0)
		qsort(ix->v, ix->n, sizeof(*ix->v), cmp_file);
	for (size_t i = 0; i < ix->n; i++)
		if (o == 0 || cmp_file(&ix->v[o - 1], &ix->v[i]) != 0)
			ix->v[o++] = ix->v[i];
	ix->n = c.nknown = o;
	r = maildir_each(maildir, tag, complete_one, &c);
	if (r < 0) {
		snprintf(err, errlen, "cannot read the Maildir %s: %s", maildir,
		    strerror(-r));
		for (size_t i = 0; i < c.nfresh; i++)
			free((char *)c.fresh[i].file);
		free(c.fresh);
		goto fail;
	}
	(void)msgindex_append(path, c.fresh, c.nfresh);
	for (size_t i = 0; i < c.nfresh; i++) {
		free((char *)c.fresh[i].file);
		c.fresh[i].file = NULL;
		add(ix, &c.fresh[i]);
	}
	ix->from_maildir = (unsigned)c.nfresh;
	free(c.fresh);
	if (ix->n > 0)
		qsort(ix->v, ix->n, sizeof(*ix->v), cmp_key);
	return 0;
fail:
	msgindex_free(ix);
	return r;
}

int
msgindex_match(struct msgindex *ix, uint64_t key, uint32_t size)
{
	size_t lo = 0, hi = ix->n;
	struct msgindex_ent want = { .key = key, .size = size };

	if (key == 0)
		return 0;
	/* The first entry not below (key, size). */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cmp_key(&ix->v[mid], &want) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < ix->n && cmp_key(&ix->v[lo], &want) == 0; lo++)
		if (!ix->v[lo].used) {
			ix->v[lo].used = 1;
			return 1;
		}
	return 0;
}

void
msgindex_free(struct msgindex *ix)
{
	free(ix->v);
	memset(ix, 0, sizeof(*ix));
}
