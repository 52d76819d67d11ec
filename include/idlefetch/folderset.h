/*
 * folderset: makes the mailboxes of one account's folders, and changes the
 * set of folders a connection holds (folders = *: after each listing of
 * the subscribed folders). It owns what every mailbox of the account is
 * made with (after = move:'s target as the server spells it); which folder
 * is worked on, and when, is the scheduler's decision.
 */
#ifndef IDLEFETCH_FOLDERSET_H
#define IDLEFETCH_FOLDERSET_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/status.h"
#include "idlefetch/watch.h"

struct folderset;

struct folderset_opts {
	const struct account *acct; /* borrowed, must outlive the set */
	const char *state_dir; /* borrowed */
	const struct mailbox_ops *ops; /* borrowed; every mailbox's */
	void *ud;
};

struct folderset *
folderset_new(uv_loop_t *loop, const struct folderset_opts *o);
void folderset_free(struct folderset *fs);
/*
 * A new mailbox for the folder name (borrowed, UTF-8), reporting to rec
 * (borrowed); the caller owns it (and hands it to a watch).
 */
struct mailbox *folderset_mailbox(struct folderset *fs, const char *name,
    struct status_rec *rec);
/*
 * The folders become names (borrowed, n >= 1), with one status record
 * each (borrowed): returns a new watch (the caller's) holding, in that
 * order, the mailboxes of old that stay, with what is known of them, and
 * new ones for the others (to be synced when sync_new). The folders left
 * in old are gone: each is detached and logged; old is the caller's to
 * free. *cur, the folder worked on (named in the log lines), becomes NULL
 * when it stays. *added: a folder is new.
 */
struct watch *folderset_change(struct folderset *fs, struct watch *old,
    const char *const *names, size_t n, struct status_rec *recs, bool sync_new,
    struct mailbox **cur, bool *added);

#endif
