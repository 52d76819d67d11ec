/*
 * after: what is done on the server to messages whose delivery is durable
 * (after = delete, or move:FOLDER), for one folder. It queues their UIDs,
 * sends one action at a time on the connection it is given, and checks
 * that the server expunged as many as it was asked to. It never decides
 * what the connection does next: its owner hears of each answer.
 */
#ifndef IDLEFETCH_AFTER_H
#define IDLEFETCH_AFTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"

struct after;

struct after_ops {
	/* An action was answered OK: more may be sent, or the sync end. */
	void (*progress)(void *ud);
	/* The server refused one: the messages stay on it (why: its words). */
	void (*failed)(void *ud, const char *why);
};

/* mode: AFTER_DELETE or AFTER_MOVE; move_wire (borrowed): the target. */
struct after *after_new(enum after_mode mode, const char *move_wire,
    const struct after_ops *ops, void *ud);
void after_free(struct after *af);
/*
 * Queues the action for these UIDs and sends it on c when it may; with no
 * connection (c NULL or closed) nothing: the next sync finds them.
 */
void after_queue(struct after *af, struct conn *c, const uint32_t *uids,
    size_t n);
/* Sends the next action on c, unless one is in flight. */
void after_kick(struct after *af, struct conn *c);
/* Nothing queued and nothing in flight. */
bool after_idle(const struct after *af);
/* One "* n EXPUNGE" of the folder was seen. */
void after_expunge_seen(struct after *af);
/*
 * Whether the folder is best listed again at the end of a sync: an action
 * since the last call removed fewer messages than it was sent for
 * (Dovecot can drop a STORE \Deleted under load), and they are still
 * below the last delivered UID, so a new listing finds them. At most
 * AFTER_AGAIN_MAX syncs in a row, and not when stopping.
 */
#define AFTER_AGAIN_MAX 3
bool after_again(struct after *af, bool stopping);
/* The connection closed: nothing in flight; the queue is redone later. */
void after_reset(struct after *af);

#endif
