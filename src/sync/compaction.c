/*
 * compaction: the data behind the compaction of a folder's index
 * (compaction.h): its size, the server's UIDs listed, and the checks that
 * the listing is whole. It sends its listing (conn_cmd) and calls
 * nothing else but util and msgindex's bound; the mailbox decides and
 * changes state.
 */
#include <stdlib.h>

#include "idlefetch/compaction.h"
#include "idlefetch/conn.h"
#include "idlefetch/msgindex.h"
#include "idlefetch/util.h"

/*
 * The index is compacted once it may hold twice what the server does and
 * some more: a line is about 75 bytes, never under 60, so counting 60
 * each errs toward compacting early.
 */
#define INDEX_LINE_MIN 60
#define INDEX_SLACK 64

struct compaction {
	uint64_t index_bytes; /* after this sync's last job (0: none) */
	uint32_t *uids; /* the server's UIDs */
	size_t n, cap;
	bool over; /* ...over MSGINDEX_SET_MAX of them */
	uint32_t distinct, top; /* ...how many ascending, the last */
	uint32_t uidvalidity; /* ...under this UIDVALIDITY */
	bool warned; /* a compaction was skipped and said so */
	conn_done_cb *done; /* the listing's owner, with ud */
	void *ud;
};

struct compaction *
compaction_new(void)
{
	return xcalloc(1, sizeof(struct compaction));
}

void
compaction_clear(struct compaction *cp)
{
	free(cp->uids);
	cp->uids = NULL;
	cp->n = cp->cap = 0;
}

void
compaction_free(struct compaction *cp)
{
	if (cp == NULL)
		return;
	compaction_clear(cp);
	free(cp);
}

void
compaction_set_size(struct compaction *cp, uint64_t bytes)
{
	cp->index_bytes = bytes;
}

uint64_t
compaction_size(const struct compaction *cp)
{
	return cp->index_bytes;
}

bool
compaction_due(const struct compaction *cp, uint32_t exists)
{
	if (cp->index_bytes == 0)
		return false;
	return cp->index_bytes / INDEX_LINE_MIN >
	    2 * (uint64_t)exists + INDEX_SLACK;
}

void
compaction_begin(struct compaction *cp, uint32_t uidvalidity)
{
	cp->index_bytes = 0;
	cp->n = cp->distinct = cp->top = 0;
	cp->over = false;
	cp->uidvalidity = uidvalidity;
}

/* One UID the server listed. */
static void
compaction_add(struct compaction *cp, uint32_t uid)
{
	if (cp->n == MSGINDEX_SET_MAX) {
		cp->over = true;
		return;
	}
	if (cp->n == cp->cap) {
		cp->cap = cp->cap ? cp->cap * 2 : 256;
		cp->uids = xrealloc(cp->uids, cp->cap * sizeof(*cp->uids));
	}
	cp->uids[cp->n++] = uid;
	/* A lower bound of the distinct UIDs: a server lists 1:* ascending. */
	if (cp->n == 1 || uid > cp->top) {
		cp->distinct++;
		cp->top = uid;
	}
}

static void
compaction_line(void *ud, const struct proto_resp *r)
{
	if (r->has & HAS_UID)
		compaction_add(ud, r->uid);
}

static void
compaction_listed(void *ud, const struct proto_resp *r)
{
	struct compaction *cp = ud;

	cp->done(cp->ud, r);
}

void
compaction_list(struct compaction *cp, struct conn *c, conn_done_cb *done,
    void *ud)
{
	cp->done = done;
	cp->ud = ud;
	conn_cmd(c, HAS_FETCH, compaction_listed, compaction_line, cp,
	    "UID FETCH 1:* (UID)");
}

const char *
compaction_check(const struct compaction *cp, uint32_t uidvalidity,
    uint32_t exists)
{
	if (cp->over)
		return "the folder holds too many messages";
	if (uidvalidity != cp->uidvalidity)
		return "the folder's UIDVALIDITY changed";
	if (cp->distinct < exists)
		return "the server listed fewer UIDs than it holds messages";
	return NULL;
}

uint32_t *
compaction_take(struct compaction *cp, size_t *n)
{
	uint32_t *uids = cp->uids;

	*n = cp->n;
	cp->uids = NULL;
	cp->n = cp->cap = 0;
	return uids;
}

bool
compaction_warned(struct compaction *cp)
{
	bool was = cp->warned;

	cp->warned = true;
	return was;
}
