/*
 * compaction: the compaction of a folder's index. Lines of messages
 * deleted or moved on the server (by us, after = delete or move:, or by
 * another client) serve no recovery: once the index may hold far more
 * than the folder, it is rewritten with the lines of the UIDs the server
 * still holds. Once per sync at most, after a sync that trusted the
 * folder's UIDs (not during a recovery).
 *
 * It keeps the index's size after the last disk job and the server's UIDs,
 * listed to keep their lines, logs why it compacts or not, and says
 * whether to; the mailbox changes its own state and runs the COMPACT job.
 */
#ifndef IDLEFETCH_COMPACTION_H
#define IDLEFETCH_COMPACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/selection.h"
#include "idlefetch/state.h"

struct compaction;

/*
 * The listing ended: compact, when the index may be compacted to the
 * UIDs listed (the COMPACT job next); else why not is logged, and the
 * sync ends as it would have without. Not called when the connection
 * closed first.
 */
typedef void compaction_listed_cb(void *ud, bool compact);

/* acct and name (UTF-8, for its log lines) are borrowed; they outlive it. */
struct compaction *compaction_new(const struct account *acct,
    const char *name);
void compaction_free(struct compaction *cp);
/* The folder's name changes (borrowed, as at compaction_new). */
void compaction_rename(struct compaction *cp, const char *name);
/* The index's size after a job (0: none, or another folder's). */
void compaction_set_size(struct compaction *cp, uint64_t bytes);
/*
 * Whether the index may hold far more lines than the folder sel has
 * messages, after a sync that trusted its UIDs: the saved state st is not
 * recovering, and under sel's UIDVALIDITY.
 */
bool compaction_due(const struct compaction *cp, const struct state_rec *st,
    const struct selection *sel);
/*
 * Starts (logged; the size is forgotten: once per sync, whatever comes of
 * it). Returns whether the server's UIDs are to be listed; false when sel
 * has no message (compact at once).
 */
bool compaction_start(struct compaction *cp, const struct selection *sel);
/*
 * Lists the server's UIDs on c; done comes at the end. sel (as at
 * compaction_start) is borrowed until then.
 */
void compaction_list(struct compaction *cp, struct conn *c,
    compaction_listed_cb *done, void *ud);
/* The UIDs listed, for the COMPACT job: the caller frees them. */
uint32_t *compaction_take(struct compaction *cp, size_t *n);
/* The listing is dropped. */
void compaction_clear(struct compaction *cp);

#endif
