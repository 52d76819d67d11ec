/*
 * watch: the folders one connection holds, and what is known of their
 * news. Each folder is its mailbox (mailbox.h), held here, with whether
 * it is to be synced (pending), whether the server refused to open it on
 * this connection (skipped) and the UIDNEXT and UIDVALIDITY last seen of
 * it. News of folders other than the selected one comes from NOTIFY
 * (RFC 5465), which watch_send_notify() asks for, or from STATUS, which
 * watch_poll() asks; watch_news() weighs either. Which folder is worked
 * on, and when, is the scheduler's decision.
 */
#ifndef IDLEFETCH_WATCH_H
#define IDLEFETCH_WATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "idlefetch/conn.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/proto.h"
#include "idlefetch/status.h"

struct watch;

struct watch *watch_new(void);
/* Releases every mailbox it still holds (mailbox_release()). */
void watch_free(struct watch *w);
/* Appends mb (ownership taken), to be synced when pending. */
void watch_add(struct watch *w, struct mailbox *mb, bool pending);
/*
 * Moves the folder named name (UTF-8) from `from` to the end of `to`,
 * with what is known of it, now reporting to rec (borrowed). Returns its
 * mailbox (borrowed), or NULL when `from` holds no such folder.
 */
struct mailbox *watch_move(struct watch *to, struct watch *from,
    const char *name, struct status_rec *rec);
/* Keeps the first n folders, releasing the others' mailboxes. */
void watch_keep(struct watch *w, size_t n);

size_t watch_count(const struct watch *w);
/* The i-th folder, in the order added; borrowed. */
struct mailbox *watch_at(const struct watch *w, size_t i);
/* Where mb is; a mailbox it does not hold is a broken invariant. */
size_t watch_index(const struct watch *w, const struct mailbox *mb);

/* Not stopped for good, and not refused by the server on this connection. */
bool watch_usable(const struct watch *w, const struct mailbox *mb);
/* Folders not stopped for good. */
size_t watch_live(const struct watch *w);
/* Usable folders other than mb. */
size_t watch_usable_besides(const struct watch *w, const struct mailbox *mb);
bool watch_pending(const struct watch *w, const struct mailbox *mb);
void watch_set_pending(struct watch *w, struct mailbox *mb, bool pending);
/* The server will not open mb: left out until the next connection. */
void watch_skip(struct watch *w, struct mailbox *mb);
/* The next folder to sync: selected first (it needs no SELECT); or NULL. */
struct mailbox *
watch_next(const struct watch *w, const struct mailbox *selected);
/* Logged in: every live folder is to be synced, none skipped. */
void watch_login(struct watch *w);
/* mb was synced: its UIDNEXT and UIDVALIDITY are now known. */
void watch_synced(struct watch *w, const struct mailbox *mb);

/* NOTIFY SET was accepted (true), or the connection or NOTIFY is gone. */
void watch_set_notify(struct watch *w, bool on);
bool watch_notify(const struct watch *w);
/* NOTIFY's news overflowed: every usable folder is to be synced. */
void watch_overflow(struct watch *w);
/* Whether folders other than the one waited on are asked with STATUS. */
bool watch_polls_others(const struct watch *w);
/*
 * Sends NOTIFY SET for every folder (again: after NOTIFY NONE, asking
 * every folder's STATUS at once); listed: news of folders created,
 * removed or (un)subscribed too. done gets the reply.
 */
void watch_send_notify(const struct watch *w, struct conn *c, bool again,
    bool listed, conn_done_cb *done, void *ud);
/*
 * Asks every usable folder but selected, those pending and those NOTIFY
 * tells of, for its UIDNEXT: one STATUS each, whose lines go to line and
 * reply to done. Returns how many it sent.
 */
unsigned watch_poll(const struct watch *w, struct conn *c,
    const struct mailbox *selected, conn_done_cb *done, conn_untagged_cb *line,
    void *ud);
/*
 * A STATUS response (NOTIFY's, or a poll's): the folder it tells of when
 * that one now has news (is pending), else NULL. *fresh: it was not
 * pending before.
 */
struct mailbox *watch_news(struct watch *w, const struct proto_resp *r,
    const struct mailbox *selected, bool *fresh);

#endif
