/*
 * selection: the SELECT step of a folder (mailbox.h). It sends SELECT (or
 * EXAMINE), first looking for an after = move: target by name (lookup.h),
 * and a refused folder's name too, to say what the server calls it. It
 * keeps what the selected folder's untagged replies say (UIDVALIDITY,
 * UIDNEXT, EXISTS), checks it against the folder's saved state, and says
 * what the sync does next: reconcile, recover, verify the last UID, or
 * list. It calls only the connection (conn_cmd) and the lookup, logs what
 * it decides, and reports the end of SELECT to the callback it was given.
 */
#ifndef IDLEFETCH_SELECTION_H
#define IDLEFETCH_SELECTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/proto.h"
#include "idlefetch/state.h"

enum selection_end {
	SELECTION_OK, /* selected, with a UIDVALIDITY */
	SELECTION_REFUSED, /* the server would not open it */
	SELECTION_FAILED, /* the connection cannot go on */
};

/* What the sync does after SELECT, from the saved state. */
enum selection_next {
	SELECTION_RECOVER, /* the folder was renumbered, or a recovery cut */
	SELECTION_RECONCILE, /* look for files a crash left unrecorded */
	SELECTION_VERIFY, /* ask what UID last_uid holds now */
	SELECTION_LIST, /* nothing to check: list new mail */
};

struct selection;

/*
 * why: in words (borrowed for the call); final (SELECTION_FAILED): retrying
 * cannot help.
 */
typedef void selection_done_cb(void *ud, enum selection_end end, bool final,
    const char *why);

/*
 * It lives in memory its owner provides, selection_size() bytes aligned
 * for any type. acct, name (UTF-8) and move_wire (after = move:'s target,
 * as the server spells it) are borrowed and outlive it.
 */
size_t selection_size(void);
struct selection *selection_init(void *mem, const struct account *acct,
    const char *name, const char *move_wire);
void selection_fini(struct selection *s);
/* The folder's name changes (borrowed, as at selection_init). */
void selection_rename(struct selection *s, const char *name);

/*
 * Selects the folder on c (logged in): done runs once, at the end. st
 * (the saved state, for the log line) is borrowed until then. Returns
 * why the mailbox is in its SELECT state, in words.
 */
const char *selection_start(struct selection *s, struct conn *c,
    const struct state_rec *st, selection_done_cb *done, void *ud);
/* Off its connection: what a refusal said is dropped. */
void selection_detach(struct selection *s);
/*
 * An untagged response of the selected folder. Returns whether it has
 * more messages now.
 */
bool selection_untagged(struct selection *s, const struct proto_resp *r);

/* Selected: what comes next, given the saved state (logged). */
enum selection_next selection_check(const struct selection *s,
    const struct state_rec *st, bool reconciled);
/* ...once new/ is reconciled: whether last_uid can be trusted as is. */
enum selection_next
selection_check_last(const struct selection *s, const struct state_rec *st);

/* The folder's name as the server spells it (modified UTF-7); owned. */
const char *selection_wire(const struct selection *s);
/* From its last SELECT (and the replies since): 0 when none was given. */
uint32_t selection_uidvalidity(const struct selection *s);
uint32_t selection_uidnext(const struct selection *s);
uint32_t selection_exists(const struct selection *s);

#endif
