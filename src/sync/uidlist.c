/*
 * uidlist: one listing of a folder (uidlist.h). It owns the arrays of
 * UIDs and sizes and calls nothing but the allocator.
 */
#include <stdlib.h>

#include "idlefetch/uidlist.h"
#include "idlefetch/util.h"

struct uidlist {
	uint32_t *uids, *sizes; /* to fetch */
	size_t n, cap, next; /* next: the first not yet in a batch */
	uint32_t cut; /* over UIDLIST_MAX: lowest UID left out; 0: none */
	uint32_t *stale; /* delivered, still on the server */
	size_t nstale, capstale;
};

struct uidlist *
uidlist_new(void)
{
	return xcalloc(1, sizeof(struct uidlist));
}

void
uidlist_free(struct uidlist *l)
{
	if (l == NULL)
		return;
	free(l->uids);
	free(l->sizes);
	free(l->stale);
	free(l);
}

void
uidlist_clear(struct uidlist *l)
{
	l->n = l->next = l->nstale = 0;
	l->cut = 0;
}

void
uidlist_add(struct uidlist *l, uint32_t uid, uint32_t size)
{
	/* Servers list in UID order; a repeated line is dropped at once. */
	if (l->n > 0 && l->uids[l->n - 1] == uid)
		return;
	if (l->n == UIDLIST_MAX) {
		/*
		 * Full: this pass delivers only UIDs below every one left out,
		 * so that the last delivered UID cannot pass one of them.
		 */
		if (l->cut == 0 || uid < l->cut)
			l->cut = uid;
		return;
	}
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 256;
		l->uids = xrealloc(l->uids, l->cap * sizeof(*l->uids));
		l->sizes = xrealloc(l->sizes, l->cap * sizeof(*l->sizes));
	}
	l->uids[l->n] = uid;
	l->sizes[l->n++] = size;
}

void
uidlist_add_stale(struct uidlist *l, uint32_t uid)
{
	if (l->nstale > 0 && l->stale[l->nstale - 1] == uid)
		return;
	if (l->nstale == UIDLIST_MAX)
		return; /* the rest goes at the next sync */
	if (l->nstale == l->capstale) {
		l->capstale = l->capstale ? l->capstale * 2 : 64;
		l->stale = xrealloc(l->stale, l->capstale * sizeof(*l->stale));
	}
	l->stale[l->nstale++] = uid;
}

bool
uidlist_cut(const struct uidlist *l)
{
	return l->cut != 0;
}

static int
cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

	return a < b ? -1 : a > b;
}

static int
cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static bool
ascending(const uint32_t *v, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (v[i] <= v[i - 1])
			return false;
	return true;
}

/* By UID, sizes following, without duplicates; in order costs one pass. */
static void
sort_unique(struct uidlist *l)
{
	uint64_t *pairs;
	size_t o = 0;

	if (ascending(l->uids, l->n))
		return;
	pairs = xmalloc(l->n * sizeof(*pairs));
	for (size_t i = 0; i < l->n; i++)
		pairs[i] = (uint64_t)l->uids[i] << 32 | l->sizes[i];
	qsort(pairs, l->n, sizeof(*pairs), cmp_u64);
	for (size_t i = 0; i < l->n; i++) {
		uint32_t uid = (uint32_t)(pairs[i] >> 32);

		if (o > 0 && l->uids[o - 1] == uid)
			continue;
		l->uids[o] = uid;
		l->sizes[o++] = (uint32_t)pairs[i];
	}
	l->n = o;
	free(pairs);
}

int
uidlist_finish(struct uidlist *l, bool *more)
{
	sort_unique(l);
	if (l->cut != 0) {
		while (l->n > 0 && l->uids[l->n - 1] >= l->cut)
			l->n--;
		l->cut = 0;
		if (l->n == 0)
			return -1;
		*more = true; /* the rest in the next pass */
	}
	l->next = 0;
	if (l->nstale > 0 && !ascending(l->stale, l->nstale))
		qsort(l->stale, l->nstale, sizeof(*l->stale), cmp_u32);
	return 0;
}

size_t
uidlist_count(const struct uidlist *l)
{
	return l->n;
}

size_t
uidlist_left(const struct uidlist *l)
{
	return l->n - l->next;
}

size_t
uidlist_take(struct uidlist *l, size_t max_msgs, uint64_t max_bytes,
    uint32_t *out)
{
	uint64_t bytes = 0;
	size_t n = 0;

	while (l->next + n < l->n && n < max_msgs &&
	    (n == 0 || bytes + l->sizes[l->next + n] <= max_bytes))
		bytes += l->sizes[l->next + n++];
	for (size_t i = 0; i < n; i++)
		out[i] = l->uids[l->next + i];
	l->next += n;
	return n;
}

const uint32_t *
uidlist_stale(const struct uidlist *l, size_t *n)
{
	*n = l->nstale;
	return l->stale;
}

void
uidlist_stale_done(struct uidlist *l)
{
	l->nstale = 0;
}

void
uidlist_release(struct uidlist *l)
{
	free(l->uids);
	free(l->sizes);
	l->uids = l->sizes = NULL;
	l->n = l->next = l->cap = 0;
	if (l->nstale == 0) {
		free(l->stale);
		l->stale = NULL;
		l->capstale = 0;
	}
}
