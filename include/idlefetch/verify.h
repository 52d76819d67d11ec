/*
 * verify: asks the server what the last delivered UID holds now, and
 * compares it with what was delivered under it (size, Message-ID). A
 * server that renumbered a folder without changing UIDVALIDITY (Courier
 * after a restart, when only EXAMINE had touched it) shows here. The
 * mailbox decides what follows.
 */
#ifndef IDLEFETCH_VERIFY_H
#define IDLEFETCH_VERIFY_H

#include <stdint.h>

#include "idlefetch/conn.h"
#include "idlefetch/state.h"

/*
 * r: the tagged reply (not OK: the FETCH failed). differs: NULL when the
 * UID holds what was delivered (or is gone), else what differs, in words
 * (borrowed for the duration of the call).
 */
typedef void verify_done_cb(void *ud, const struct proto_resp *r,
    const char *differs);

/*
 * Asks c what uid holds now; was (borrowed until done runs) is what was
 * delivered as it. done runs once, unless the connection closes first.
 * What the check holds lives only while its command does: a folder
 * between syncs keeps nothing of it.
 */
void verify_start(struct conn *c, uint32_t uid, const struct state_fp *was,
    verify_done_cb *done, void *ud);

#endif
