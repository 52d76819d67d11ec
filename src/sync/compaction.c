/*
 * compaction: the compaction of a folder's index (compaction.h): its
 * size, the server's UIDs listed, the checks that the listing is whole,
 * and whether to compact. It sends its listing (conn_cmd), logs, reads
 * what the folder's selection says, and calls nothing else but util and
 * msgindex's bound; the mailbox changes state and runs the disk job.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "idlefetch/compaction.h"
#include "idlefetch/conn.h"
#include "idlefetch/log.h"
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
	const struct account *a; /* borrowed */
	const char *name; /* borrowed; UTF-8 */
	uint64_t index_bytes; /* after this sync's last job (0: none) */
	uint32_t *uids; /* the server's UIDs */
	size_t n, cap;
	bool over; /* ...over MSGINDEX_SET_MAX of them */
	uint32_t distinct, top; /* ...how many ascending, the last */
	uint32_t uidvalidity; /* ...under this UIDVALIDITY */
	bool warned; /* a compaction was skipped and said so */
	const struct selection *sel; /* borrowed, from its start to its end */
	compaction_listed_cb *done; /* the listing's owner, with ud */
	void *ud;
};

#define LOG(cp, lvl, ...) \
	log_msg((lvl), (cp)->a->name, (cp)->name, __VA_ARGS__)

struct compaction *
compaction_new(const struct account *acct, const char *name)
{
	struct compaction *cp = xcalloc(1, sizeof(struct compaction));

	cp->a = acct;
	cp->name = name;
	return cp;
}

void
compaction_rename(struct compaction *cp, const char *name)
{
	cp->name = name;
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

bool
compaction_due(const struct compaction *cp, const struct state_rec *st,
    const struct selection *sel)
{
	if (cp->index_bytes == 0 || st->recovering ||
	    st->uidvalidity != selection_uidvalidity(sel))
		return false;
	return cp->index_bytes / INDEX_LINE_MIN >
	    2 * (uint64_t)selection_exists(sel) + INDEX_SLACK;
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

static const char *
check(const struct compaction *cp, const struct proto_resp *r)
{
	if (r->status != PROTO_OK)
		return r->text;
	if (cp->over)
		return "the folder holds too many messages";
	if (selection_uidvalidity(cp->sel) != cp->uidvalidity)
		return "the folder's UIDVALIDITY changed";
	if (cp->distinct < selection_exists(cp->sel))
		return "the server listed fewer UIDs than it holds messages";
	return NULL;
}

/*
 * An index not compacted is only larger: it is not worth failing for, nor
 * worth a warning at every sync.
 */
static void
compaction_listed(void *ud, const struct proto_resp *r)
{
	struct compaction *cp = ud;
	const char *why;

	if (r == NULL)
		return;
	why = check(cp, r);
	if (why != NULL) {
		LOG(cp, cp->warned ? LOGL_DEBUG : LOGL_WARN,
		    "not compacting the folder's index: %s", why);
		cp->warned = true;
		compaction_clear(cp);
	}
	cp->done(cp->ud, why == NULL);
}

bool
compaction_start(struct compaction *cp, const struct selection *sel)
{
	LOG(cp, LOGL_DEBUG,
	    "the folder's index (%" PRIu64 " bytes) may hold far more than "
	    "its %u message(s): listing their UIDs to compact it",
	    cp->index_bytes, selection_exists(sel));
	cp->index_bytes = 0;
	cp->n = cp->distinct = cp->top = 0;
	cp->over = false;
	cp->sel = sel;
	cp->uidvalidity = selection_uidvalidity(sel);
	/*
	 * The server says the folder is empty (at SELECT, or after the
	 * EXPUNGEs it sent): nothing to list, and some servers refuse 1:* on
	 * an empty folder.
	 */
	return selection_exists(sel) != 0;
}

void
compaction_list(struct compaction *cp, struct conn *c,
    compaction_listed_cb *done, void *ud)
{
	cp->done = done;
	cp->ud = ud;
	conn_cmd(c, HAS_FETCH, compaction_listed, compaction_line, cp,
	    "UID FETCH 1:* (UID)");
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
