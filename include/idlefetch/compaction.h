/*
 * compaction: what the compaction of a folder's index needs: the index's
 * size after the last disk job, whether it may hold far more than the
 * folder does, and the server's UIDs, listed to keep their lines. The
 * mailbox decides when to list and when to start the job.
 */
#ifndef IDLEFETCH_COMPACTION_H
#define IDLEFETCH_COMPACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idlefetch/conn.h"

struct compaction;

struct compaction *compaction_new(void);
void compaction_free(struct compaction *cp);
/* The index's size after a job (0: none, or another folder's). */
void compaction_set_size(struct compaction *cp, uint64_t bytes);
uint64_t compaction_size(const struct compaction *cp);
/* Whether the index may hold far more lines than exists messages. */
bool compaction_due(const struct compaction *cp, uint32_t exists);
/*
 * A listing of the server's UIDs starts, under this UIDVALIDITY; the
 * size is forgotten (once per sync, whatever comes of it).
 */
void compaction_begin(struct compaction *cp, uint32_t uidvalidity);
/* Lists the server's UIDs on c; done(ud, r) gets the tagged reply. */
void compaction_list(struct compaction *cp, struct conn *c, conn_done_cb *done,
    void *ud);
/*
 * The listing is complete: NULL when the index may be compacted to its
 * UIDs, else why not, in words.
 */
const char *compaction_check(const struct compaction *cp,
    uint32_t uidvalidity, uint32_t exists);
/* The UIDs listed, for the COMPACT job: the caller frees them. */
uint32_t *compaction_take(struct compaction *cp, size_t *n);
/* The listing is dropped. */
void compaction_clear(struct compaction *cp);
/* Whether a skipped compaction was reported before (and now it was). */
bool compaction_warned(struct compaction *cp);

#endif
