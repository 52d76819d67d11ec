/*
 * sync: one folder's mailbox sync (listing, batched fetch, commit and
 * after-delivery actions) for a session's connection. The session reaches
 * it only through this table, handed over in session_opts.
 */
#ifndef IDLEFETCH_SYNC_H
#define IDLEFETCH_SYNC_H

struct sync_ops;

extern const struct sync_ops mailbox_sync_ops;

#endif
