/*
 * cursor: one account's folders as its scheduler works through them. It
 * owns the folders' mailboxes (through a folderset and a watch), which one
 * is worked on (named in log lines), which one is selected on the
 * connection, and the choice of the next one; the scheduler decides when,
 * and changes its own state.
 */
#ifndef IDLEFETCH_CURSOR_H
#define IDLEFETCH_CURSOR_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "idlefetch/conn.h"
#include "idlefetch/folderset.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/session.h"
#include "idlefetch/watch.h"

struct cursor;

/*
 * The folders names[0..n) (borrowed), reporting to recs (borrowed), their
 * mailboxes made by a folderset with fo; the first is worked on.
 */
struct cursor *cursor_new(uv_loop_t *loop, const struct folderset_opts *fo,
    const char *const *names, size_t n, struct status_rec *recs);
/* Releases the mailboxes (their handles close on the loop)... */
void cursor_release(struct cursor *c);
/* ...then, once the loop ran, frees the rest. */
void cursor_free(struct cursor *c);

/* The folders and their news (owned by the cursor). */
struct watch *cursor_watch(const struct cursor *c);
/* The folder worked on; NULL only while the folders change. */
struct mailbox *cursor_cur(const struct cursor *c);
/* Its name for log lines, or NULL. */
const char *cursor_name(const struct cursor *c);
/* The folder selected on the connection (SELECT sent or done), or NULL. */
struct mailbox *cursor_selected(const struct cursor *c);

/* mb becomes the folder worked on, on the connection c too. */
void cursor_use(struct cursor *c, struct mailbox *mb, struct conn *conn);
/* The first folder still usable is worked on (before connecting). */
void cursor_use_first(struct cursor *c, struct conn *conn);
/* The next folder to make ready before connecting; false: none left. */
bool cursor_prepare_next(struct cursor *c, struct conn *conn);
/* The connection is gone: every folder lets go of it. */
void cursor_forget(struct cursor *c);

/* What the folders want next on a logged-in connection. */
enum cursor_step {
	CURSOR_PREPARE, /* the folder worked on is new: prepare it */
	CURSOR_SYNC, /* sync the folder worked on (cursor_sync) */
	CURSOR_SYNCED, /* every folder is synced */
};
enum cursor_step cursor_next(struct cursor *c, struct conn *conn);

/* Where to wait once every folder is synced (cursor_wait). */
enum cursor_wait {
	CURSOR_WAIT, /* on the folder selected, now worked on */
	CURSOR_FIRST, /* sync the first folder again first (cursor_sync) */
	CURSOR_NONE, /* no folder could be opened */
};
/* idles: IDLE tells only of the selected folder (no NOTIFY). */
enum cursor_wait cursor_wait(struct cursor *c, bool idles, struct conn *conn);
/* Selects the folder worked on, or lists it again if it is selected. */
void cursor_sync(struct cursor *c, struct conn *conn);
/*
 * The server will not open mb: it is left out until the next connection;
 * false when no other folder could go on (the connection fails).
 */
bool cursor_skip(struct cursor *c, struct mailbox *mb, const char *why);
/* Out of a wait: the selected folder is listed again. */
void cursor_woke(struct cursor *c);

/* Keeps the first n folders (the others go to another session). */
void cursor_keep(struct cursor *c, size_t n, struct conn *conn);
/*
 * The folders become names[0..n) (see folderset_change); returns whether
 * one is new.
 */
bool cursor_set_folders(struct cursor *c, const char *const *names, size_t n,
    struct status_rec *recs, bool sync_new, struct conn *conn);

/* No folder has disk work in flight. */
bool cursor_quiet(const struct cursor *c);
/* Every folder commits what it holds; true when none has work left. */
bool cursor_settle(struct cursor *c);
/* Every folder stops after what it has in flight. */
void cursor_stop(struct cursor *c);
/* Every folder shows state (its name) and whether it is up. */
void cursor_show(const struct cursor *c, const char *state, bool up);
/* Every folder still usable shows the error why. */
void cursor_error(const struct cursor *c, const char *why);
/* Every folder is given up (the daemon's session cannot go on). */
void cursor_gave_up(const struct cursor *c);
/* Every folder still usable synced in the last pass. */
bool cursor_synced_ok(const struct cursor *c);
/* Counts each folder under a, or as stopped when given up. */
void cursor_tally(const struct cursor *c, enum session_activity a,
    unsigned k[SESSION_ACTIVITIES]);

#endif
