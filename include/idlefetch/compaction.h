/*
 * compaction: the compaction of a folder's index. Lines of messages
 * deleted or moved on the server (by us, after = delete or move:, or by
 * another client) serve no recovery: once the index may hold far more
 * than the folder, it is rewritten with the lines of the UIDs the server
 * still holds. Once per sync at most, after a sync that trusted the
 * folder's UIDs (not during a recovery).
 *
 * It keeps the index's size after the last disk job and the server's UIDs,
 * listed to keep their lines, logs why it compacts or not, and says what
 * the mailbox does next (enum compaction_next); the mailbox changes its
 * own state and runs the COMPACT job.
 */
#ifndef IDLEFETCH_COMPACTION_H
#define IDLEFETCH_COMPACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/proto.h"
#include "idlefetch/state.h"

/* What the mailbox does next in a compaction. */
enum compaction_next {
	COMPACTION_LIST, /* the server's UIDs are being listed */
	COMPACTION_EMPTY, /* nothing to list: compact (COMPACT job) */
	COMPACTION_LISTED, /* compact to the UIDs listed (COMPACT job) */
	COMPACTION_END, /* over: the sync ends as it would have without */
};

struct compaction;

/* acct and name (UTF-8, for its log lines) are borrowed; they outlive it. */
struct compaction *compaction_new(const struct account *acct,
    const char *name);
void compaction_free(struct compaction *cp);
/* The folder's name changes (borrowed, as at compaction_new). */
void compaction_rename(struct compaction *cp, const char *name);
/* The index's size after a job (0: none, or another folder's). */
void compaction_set_size(struct compaction *cp, uint64_t bytes);
/*
 * Whether the index may hold far more lines than the folder's exists
 * messages, after a sync that trusted its UIDs: the state st is not
 * recovering, and under the folder's uidvalidity.
 */
bool compaction_due(const struct compaction *cp, const struct state_rec *st,
    uint32_t uidvalidity, uint32_t exists);
/*
 * Starts (logged; the size is forgotten: once per sync, whatever comes of
 * it): LIST with the listing of the server's UIDs sent on c, done(ud, r)
 * getting its tagged reply, or EMPTY when the folder has no message.
 */
enum compaction_next compaction_start(struct compaction *cp, struct conn *c,
    uint32_t uidvalidity, uint32_t exists, conn_done_cb *done, void *ud);
/*
 * The listing's tagged reply r (not NULL), with the folder's UIDVALIDITY
 * and EXISTS now: LISTED when the index may be compacted to its UIDs, else
 * END (why not is logged; the listing is dropped).
 */
enum compaction_next compaction_listed(struct compaction *cp,
    const struct proto_resp *r, uint32_t uidvalidity, uint32_t exists);
/* The UIDs listed, for the COMPACT job: the caller frees them. */
uint32_t *compaction_take(struct compaction *cp, size_t *n);
/* The listing is dropped. */
void compaction_clear(struct compaction *cp);

#endif
