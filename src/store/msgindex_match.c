/*
 * msgindex_match: recovery and compaction of a folder's index (see
 * idlefetch/msgindex.h): which of the server's messages a delivered file
 * is, and which lines stay. Owns the server's side of a recovery and the
 * UIDs of a compaction; reads and writes the index only through
 * msgindex_rewrite() (msgindex.c), which calls back here for each line and
 * each file it lacks.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "idlefetch/msgindex.h"
#include "idlefetch/util.h"

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
 * A run of listed messages of one key and size, and the next of them no
 * file took yet: files take them in order, so matching n copies costs n
 * steps, not n * n.
 */
struct group {
	size_t start, next;
};

struct recovery {
	struct msgindex_set *m;
	struct group *g; /* the runs longer than one, by start */
	size_t ng;
	uint32_t uidvalidity;
};

static int
cmp_group(const void *x, const void *y)
{
	const struct group *a = x, *b = y;

	return a->start < b->start ? -1 : a->start > b->start;
}

/* One entry per UID (a server that repeated a line), sorted by key. */
static void
set_prepare(struct recovery *rc)
{
	struct msgindex_set *m = rc->m;
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
	for (size_t i = 0, j; i < m->n; i = j) {
		for (j = i + 1; j < m->n && m->v[j].key == m->v[i].key &&
		     m->v[j].size == m->v[i].size;
		     j++)
			;
		if (j - i < 2)
			continue;
		rc->g = xrealloc(rc->g, (rc->ng + 1) * sizeof(*rc->g));
		rc->g[rc->ng++] = (struct group){ .start = i, .next = i };
	}
}

/*
 * A delivered file (key, size) takes the next unmatched message of that
 * key and size: *out, returns 1. 0: none is left; -1: this very file took
 * the one before (its line appended twice), so it takes none.
 */
static int
set_take(struct recovery *rc, uint64_t key, uint32_t size, uint64_t by,
    struct msgindex_srv **out)
{
	struct msgindex_set *m = rc->m;
	size_t lo = 0, hi = m->n, *next, one;
	struct group *g, want;

	if (key == 0)
		return 0; /* nothing to go by */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct msgindex_srv *v = &m->v[mid];

		if (v->key < key || (v->key == key && v->size < size))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == m->n || m->v[lo].key != key || m->v[lo].size != size)
		return 0;
	want.start = lo;
	g = rc->ng ? bsearch(&want, rc->g, rc->ng, sizeof(*g), cmp_group) :
		     NULL;
	one = m->v[lo].by == 0 ? lo : lo + 1;
	next = g ? &g->next : &one;
	if (*next > lo && m->v[*next - 1].by == by)
		return -1;
	if (*next >= m->n || m->v[*next].key != key || m->v[*next].size != size)
		return 0;
	*out = &m->v[(*next)++];
	(*out)->by = by;
	m->matched++;
	return 1;
}

/*
 * A file's line: under the server's numbering if it matched, else kept as
 * not on the server (UID 0, its old UIDVALIDITY), so that a later
 * recovery (the folder restored from a backup) still finds it.
 */
static int
recover_put(struct recovery *rc, struct msgindex_rewrite *rw,
    const struct msgindex_ent *e, uint64_t by, bool dup)
{
	struct msgindex_srv *v = NULL;
	struct msgindex_ent out = *e;
	int t = set_take(rc, e->key, e->size, by, &v);

	if (t < 0 || (t == 0 && dup))
		return 0;
	if (t > 0) {
		out.uidvalidity = rc->uidvalidity;
		out.uid = v->uid;
	} else {
		out.uid = 0;
	}
	msgindex_rewrite_put(rw, &out, false);
	return 0;
}

static int
recover_line(void *ud, struct msgindex_rewrite *rw,
    const struct msgindex_ent *e, uint64_t hash, bool present, bool dup)
{
	(void)present;
	return recover_put(ud, rw, e, hash, dup);
}

static int
recover_file(void *ud, struct msgindex_rewrite *rw, const char *path,
    struct msgindex_ent *e, uint64_t hash)
{
	struct recovery *rc = ud;
	int r = msgindex_read_file(path, e, NULL);

	if (r != 0)
		return r < 0 ? r : 0; /* gone meanwhile */
	rc->m->from_maildir++;
	return recover_put(rc, rw, e, hash, false);
}

static const struct msgindex_rewrite_ops recover_ops = { recover_line,
	recover_file };

int
msgindex_recover(struct msgindex_set *m, const char *path, const char *maildir,
    uint32_t tag, uint32_t uidvalidity, char *err, size_t errlen)
{
	struct recovery rc = { .m = m, .uidvalidity = uidvalidity };
	int r;

	set_prepare(&rc);
	r = msgindex_rewrite(path, maildir, tag, false, &recover_ops, &rc, err,
	    errlen);
	free(rc.g);
	if (r < 0) {
		for (size_t i = 0; i < m->n; i++)
			m->v[i].by = 0;
		m->matched = 0;
	}
	if (m->n > 0)
		qsort(m->v, m->n, sizeof(*m->v), cmp_srv_uid);
	return r;
}

/* ---- compaction: what the server or the Maildir still holds ---------------- */

/*
 * A line of a UID of this UIDVALIDITY stays while the server lists it (a
 * complete listing: sync.c checks it against EXISTS). A line of a message
 * that was not on the server at a recovery (UID 0, or another
 * UIDVALIDITY) stays while its file is in the Maildir: the folder may yet
 * come back from a backup, and a recovery would then fetch it again.
 */
struct compaction {
	const uint32_t *uids;
	uint8_t *written; /* per UID: a line names it already */
	size_t n;
	uint32_t uidvalidity;
	struct msgindex_counts *out;
};

static int
cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

	return a < b ? -1 : a > b;
}

static bool
of_server(const struct compaction *k, const struct msgindex_ent *e)
{
	return e->uidvalidity == k->uidvalidity && e->uid != 0;
}

/* The server's UID that e names and no line took yet, or -1. */
static ssize_t
compact_slot(const struct compaction *k, const struct msgindex_ent *e)
{
	const uint32_t *p;

	if (k->n == 0)
		return -1;
	p = bsearch(&e->uid, k->uids, k->n, sizeof(*k->uids), cmp_u32);
	if (p == NULL || k->written[p - k->uids])
		return -1;
	return p - k->uids;
}

/* Writes e if it stays; dup: an earlier line named its file. */
static void
compact_put(struct compaction *k, struct msgindex_rewrite *rw,
    struct msgindex_ent *e, bool present, bool dup)
{
	ssize_t i = -1;
	bool keep;

	if (of_server(k, e)) {
		i = compact_slot(k, e);
		keep = i >= 0;
	} else {
		keep = present && !dup;
		e->uid = 0;
	}
	if (!keep) {
		k->out->dropped++;
		return;
	}
	if (i >= 0)
		k->written[i] = 1;
	msgindex_rewrite_put(rw, e, e->uid == 0);
	k->out->kept++;
}

static int
compact_line(void *ud, struct msgindex_rewrite *rw,
    const struct msgindex_ent *e, uint64_t hash, bool present, bool dup)
{
	struct msgindex_ent out = *e;

	(void)hash;
	compact_put(ud, rw, &out, present, dup);
	return 0;
}

/* A file the index lacks: read unless the server deleted it. */
static int
compact_file(void *ud, struct msgindex_rewrite *rw, const char *path,
    struct msgindex_ent *e, uint64_t hash)
{
	struct compaction *k = ud;
	int r;

	(void)hash;
	if (of_server(k, e) && compact_slot(k, e) < 0)
		return 0;
	r = msgindex_read_file(path, e, NULL);
	if (r != 0)
		return r < 0 ? r : 0;
	k->out->from_maildir++;
	compact_put(k, rw, e, true, false);
	return 0;
}

static const struct msgindex_rewrite_ops compact_ops = { compact_line,
	compact_file };

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
	r = msgindex_rewrite(path, maildir, tag, true, &compact_ops, &k, err,
	    errlen);
	free(k.written);
	if (r < 0)
		memset(out, 0, sizeof(*out));
	return r;
}
