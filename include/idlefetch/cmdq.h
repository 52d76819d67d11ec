/*
 * cmdq: the commands of one connection that are sent and not yet answered,
 * by tag. It numbers the tags (a1, a2 ... for the connection's life), finds
 * the command a tagged reply belongs to, routes an untagged response to
 * the oldest command that asked for it and, when the connection closes,
 * tells every command's owner with r == NULL. It sends nothing: the wire
 * is the connection's.
 */
#ifndef IDLEFETCH_CMDQ_H
#define IDLEFETCH_CMDQ_H

#include <stdbool.h>
#include <stddef.h>

#include "idlefetch/proto.h"

struct cmdq;

/* The tagged reply, or r == NULL: the connection closed before it came. */
typedef void cmdq_done_cb(void *ud, const struct proto_resp *r);
/* An untagged response the command asked for. */
typedef void cmdq_untagged_cb(void *ud, const struct proto_resp *r);

struct cmdq *cmdq_new(void);
/* Frees the commands still waiting without calling them. */
void cmdq_free(struct cmdq *q);

/*
 * A command about to be sent: returns its tag (its number: "a%u").
 * want: the HAS_* bits whose untagged responses go to untagged(ud, r).
 */
unsigned cmdq_add(struct cmdq *q, unsigned want, cmdq_done_cb *done,
    cmdq_untagged_cb *untagged, void *ud);
/*
 * AUTHENTICATE's response, sent after the server's "+": a copy is kept
 * (wiped when freed) with the command tagged tag.
 */
void cmdq_set_secret(struct cmdq *q, unsigned tag, const char *secret);
/* The newest command holds a response for a "+". */
bool cmdq_has_secret(const struct cmdq *q);
/* Takes that response out: the caller wipes and frees it (secret_free). */
char *cmdq_take_secret(struct cmdq *q);

/*
 * Takes the command tag ("a12") names out of the table: returns true with
 * its completion in *done and *ud, false for a tag nobody sent.
 */
bool cmdq_finish(struct cmdq *q, const char *tag, cmdq_done_cb **done,
    void **ud);
/* A command asked for untagged responses with one of the has bits. */
bool cmdq_wants(const struct cmdq *q, unsigned has);
/* Gives r to the oldest command that asked for it; false: none did. */
bool cmdq_untagged(struct cmdq *q, const struct proto_resp *r);

/*
 * Empties the table, then calls each command's completion with r == NULL,
 * except those whose ud is skip (the connection's own). A completion may
 * add commands to the empty table again.
 */
void cmdq_cancel(struct cmdq *q, const void *skip);
/* How many commands wait for their tagged reply. */
size_t cmdq_len(const struct cmdq *q);
/* Bytes of table it holds: none while nothing waits, one slot for IDLE. */
size_t cmdq_held(const struct cmdq *q);

#endif
