/*
 * recovery: what one recovery of a renumbered folder has gathered (the
 * mailbox decides when one starts and ends). Its listing of the folder,
 * with each message's fingerprint, is kept as a msgindex_set until the
 * index matches it on the threadpool; then only the unmatched UIDs are
 * fetched. It keeps the counts for the closing log line and the highest
 * UID listed, which the state takes at the end.
 */
#ifndef IDLEFETCH_RECOVERY_H
#define IDLEFETCH_RECOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "idlefetch/conn.h"
#include "idlefetch/msgindex.h"
#include "idlefetch/proto.h"
#include "idlefetch/state.h"
#include "idlefetch/uidlist.h"

struct recovery;

struct recovery *recovery_new(void);
void recovery_free(struct recovery *rc);
/*
 * A recovery's listing of every message with its header fields starts on
 * c (an empty set, counts at zero); done(ud, r) gets its tagged reply.
 */
void recovery_list(struct recovery *rc, struct conn *c, conn_done_cb *done,
    void *ud);
/*
 * Its listing held over MSGINDEX_SET_MAX messages: the set was dropped,
 * and the recovery cannot go on.
 */
bool recovery_over(const struct recovery *rc);
/* Its listing, for a MATCH job: the caller owns it (recovery_set_free). */
struct msgindex_set *recovery_take_set(struct recovery *rc);
void recovery_set_free(struct msgindex_set *m);
/* The listing is dropped (the connection closed). */
void recovery_drop(struct recovery *rc);
/*
 * The MATCH job's set (freed here): its unmatched UIDs go to ul, to be
 * fetched.
 */
void recovery_matched(struct recovery *rc, struct msgindex_set *m,
    struct uidlist *ul);
/* The listing went over UIDLIST_MAX (cut), and fresh UIDs are fetched. */
void recovery_listed(struct recovery *rc, bool cut, unsigned fresh);
bool recovery_cut(const struct recovery *rc);
/* The highest UID listed (0: none), and what it holds into *fp. */
uint32_t recovery_max(const struct recovery *rc, struct state_fp *fp);
/*
 * What it found, for its closing log line: listed messages the Maildir
 * had, new ones it fetched, and those listed without a Message-ID.
 */
void recovery_counts(const struct recovery *rc, unsigned *matched,
    unsigned *fresh, unsigned *noid);

/*
 * What a FETCH line says of a message, to know it again after a
 * renumbering: its size and Message-ID into fp, the key of its header
 * fields (header_key) into *key when key is not NULL.
 */
void recovery_fingerprint(const struct proto_resp *r, struct state_fp *fp,
    uint64_t *key);

#endif
