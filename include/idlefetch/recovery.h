/*
 * recovery: one recovery of a renumbered folder. The folder's UIDs no
 * longer name what was delivered (a new UIDVALIDITY, or last_uid holds
 * another message): its messages are matched against the Maildir's by
 * Message-ID and size (without a Message-ID: by Date, From, Subject and
 * size), and only those without a match are fetched. Nothing is deleted
 * or moved on the server meanwhile. The state is marked first, so a
 * recovery cut short by a crash or a lost connection is done again, and
 * what it delivered is found then in the index or the Maildir.
 *
 * It keeps its listing of the folder, with each message's fingerprint, as
 * a msgindex_set until the index matches it on the threadpool, the counts
 * for the closing log line and the highest UID listed, which the state
 * takes at the end. It says what the mailbox does next (match, fetch,
 * finish); the mailbox changes its own state and runs the disk jobs.
 */
#ifndef IDLEFETCH_RECOVERY_H
#define IDLEFETCH_RECOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/msgindex.h"
#include "idlefetch/proto.h"
#include "idlefetch/state.h"
#include "idlefetch/uidlist.h"

struct recovery;

/*
 * The listing ended: failed is NULL when it is complete (the mailbox
 * matches it next), else why the connection cannot go on (borrowed for
 * the call). Not called when the connection closed first.
 */
typedef void recovery_listed_cb(void *ud, const char *failed);

/*
 * Made when a recovery starts (a folder that never needs one holds none).
 * acct and name (UTF-8, for its log lines) are borrowed and outlive it.
 */
struct recovery *recovery_new(const struct account *acct, const char *name);
/* NULL is none. */
void recovery_free(struct recovery *rc);
/* The folder's name changes (borrowed, as at recovery_new). */
void recovery_rename(struct recovery *rc, const char *name);
/*
 * The state says "recovering": its listing of every message with its
 * header fields starts on c (an empty set, counts at zero), and the
 * recovery is under way; done(ud, failed) at its end.
 */
void recovery_list(struct recovery *rc, struct conn *c,
    recovery_listed_cb *done, void *ud);
/* Under way: listing, matching or fetching (rc may be NULL: no). */
bool recovery_active(const struct recovery *rc);
/* Its listing, for a MATCH job: the caller owns it (recovery_set_free). */
struct msgindex_set *recovery_take_set(struct recovery *rc);
void recovery_set_free(struct msgindex_set *m);
/* Off the connection: no longer under way, its listing dropped. */
void recovery_drop(struct recovery *rc);
/*
 * The MATCH job's set (freed here): its unmatched UIDs go to ul, to be
 * fetched, and what it read of the Maildir is logged.
 */
void recovery_matched(struct recovery *rc, struct msgindex_set *m,
    struct uidlist *ul);
/*
 * What is to be fetched is listed: cut when the listing went over
 * UIDLIST_MAX, fresh UIDs to fetch. Nothing when not under way.
 */
void recovery_listed(struct recovery *rc, bool cut, unsigned fresh);
/*
 * The sync is over (incomplete: a UID was skipped, or it stops): the
 * recovery is no longer under way. Returns whether it finishes now (all
 * it listed is delivered: the state takes the highest UID); if not, the
 * next pass recovers again. rc may be NULL: none under way.
 */
bool recovery_synced(struct recovery *rc, bool incomplete);
/* The highest UID listed (0: none), and what it holds into *fp. */
uint32_t recovery_max(const struct recovery *rc, struct state_fp *fp);
/* The state took st at the end: what it found is logged and counted. */
void recovery_done(const struct recovery *rc, const struct state_rec *st);

/*
 * What a FETCH line says of a message, to know it again after a
 * renumbering: its size and Message-ID into fp, the key of its header
 * fields (header_key) into *key when key is not NULL.
 */
void recovery_fingerprint(const struct proto_resp *r, struct state_fp *fp,
    uint64_t *key);

#endif
