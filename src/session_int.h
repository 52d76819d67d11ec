/*
 * session internals shared by session.c (the connection state machine) and
 * sync.c (listing, batches, commits, after-delivery actions). Not part of
 * any public surface: only those two files include it.
 */
#ifndef IDLEFETCH_SESSION_INT_H
#define IDLEFETCH_SESSION_INT_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "idlefetch/commit.h"
#include "idlefetch/conn.h"
#include "idlefetch/folders.h"
#include "idlefetch/lane.h"
#include "idlefetch/log.h"
#include "idlefetch/maildir.h"
#include "idlefetch/proto.h"
#include "idlefetch/session.h"
#include "idlefetch/state.h"
#include "idlefetch/util.h"

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 300000
/* A connection up this long after its first sync counts as healthy. */
#define HEALTHY_MS 60000
#define BATCH_MAX_MSGS 100
#define BATCH_MAX_BYTES (16u * 1024 * 1024)
#define PIPELINE_DEPTH 2
/*
 * One listing holds at most this many UIDs (400 KB with their sizes); a
 * folder with more new messages is fetched in passes of this size. It
 * bounds what a server that repeats listing lines can make us allocate,
 * and the sort of one listing to a few milliseconds.
 */
#define LIST_MAX 50000

/*
 * The scheduler's states. CONNECT and IDLE are the connection's (conn.h)
 * phases: `idlefetch status` shows the connection's state name there.
 */
enum session_state {
	S_PREPARE,
	S_CONNECT, /* the connection logs in */
	S_NOTIFY,
	S_SELECT,
	S_SYNC, /* the mailbox sync has the folder (its phases: sync_phase) */
	S_IDLE, /* the connection IDLEs */
	S_POLL_WAIT,
	S_STATUS, /* asking the other folders for UIDNEXT */
	S_DISCOVER, /* folders = *: listing the subscribed folders */
	S_LOGOUT,
	S_CLOSING,
	S_BACKOFF,
	S_QUEUED, /* waiting for a slot at the gate */
	S_DONE,
};

/*
 * One folder of the connection: where its mail goes and what has been
 * delivered. A connection holds one folder, or several that it syncs in
 * turn (NOTIFY, or STATUS polling); only one is selected at a time.
 */
struct mbox {
	const char *name; /* borrowed from the account; UTF-8 */
	char *wire; /* ...as the server spells it: modified UTF-7 */
	char *maildir;
	char *state_path;
	uint32_t tag_mark; /* maildir file tag */
	struct status_rec *status; /* borrowed; kept current */
	struct state_rec st; /* durable state */
	bool prepared; /* its Maildir made and its state read */
	bool reconciled;
	bool pending; /* to sync: at login, after news of it */
	bool dead; /* stopped for good (its Maildir or state unusable) */
	bool skipped; /* the server would not open it, this connection */
	bool sync_ok; /* its last sync on this connection lacked nothing */
	uint32_t uidnext; /* the last UIDNEXT seen, 0: unknown */
	uint32_t status_uidvalidity; /* ...and UIDVALIDITY with it */
	unsigned delivered; /* messages this process delivered */
};


struct msync; /* the mailbox sync's state, in sync.c */

struct session {
	uv_loop_t *loop;
	char maildir_id[STATE_ID_LEN + 1]; /* the Maildir's binding (state.h) */
	struct session_opts o;
	const struct account *a;
	enum session_state state;
	uv_timer_t timer; /* POLL_WAIT, BACKOFF */
	struct conn *conn;
	struct mbox *mbs; /* the folders, in configuration order */
	size_t nmbs;
	struct mbox *mb; /* the one selected, or being prepared */
	struct mbox *selected; /* SELECT succeeded on it, this connection */
	bool notify; /* NOTIFY SET accepted: the server tells of every folder */
	bool renotify; /* NOTIFY overflowed: set it again before waiting */
	bool split_asked; /* the owner was offered the folders to spread */
	char *move_wire; /* after = move: its target, as the server spells it */
	uint64_t polled_at; /* loop time of the last STATUS round */
	bool back_to_first; /* selecting the first folder again, to IDLE */
	unsigned status_wait; /* STATUS replies still to come */
	struct folder_set found; /* S_DISCOVER: what the server listed */
	bool found_capped; /* ...and it listed over FOLDERS_MAX */
	uint32_t clash_mark; /* folders_clash_mark() last warned of */
	unsigned discover_pass; /* 1: the other of LSUB, LIST (SUBSCRIBED) */
	bool discover_login; /* listing right after login, not a round */
	bool relist; /* NOTIFY told of a folder created or removed */
	struct mbox *graves; /* folders gone while the lane still had work */
	size_t ngraves;

	/* mailbox */
	uint32_t uidvalidity; /* from SELECT */
	uint32_t uidnext; /* from SELECT, 0 when it gave none */
	uint32_t exists;
	bool move_checked; /* the move: target was found on the server */
	bool lookup_found; /* a LIST reply named `lookup` exactly */
	unsigned lookup_pass; /* 0: exact LIST, 1: LIST "*NAME" */
	char *lookup_guess; /* a name the server has that ends in it */
	const char *lookup; /* the name LIST looks for: move_to or folder */
	char *select_err; /* SELECT's refusal, while LIST looks for it */
	bool more; /* new mail announced during a sync */
	unsigned expunges; /* "* n EXPUNGE" since the after-action was sent */

	/* the mailbox sync */
	struct msync *ms; /* its own state: sync.c alone reads it */
	bool job_busy; /* its disk job is on the threadpool */
	struct lane lane; /* its ordered writes, into s->mb's Maildir */
	bool finish_when_idle; /* session_finish waits for the lane */

	/* lifecycle */
	struct session *gate_next; /* in the gate's queue */
	bool gate_held; /* one of the gate's slots is this session's */
	bool gate_queued;
	unsigned backoff_ms;
	bool healthy; /* a sync completed on this connection */
	uint64_t healthy_at; /* loop time of that first completed sync */
	unsigned conn_delivered; /* messages delivered on this connection */
	bool ok; /* every folder synced in the last pass */
	bool stopping;
	bool fatal_err; /* do not retry (UIDVALIDITY change) */
	bool auth_logged;
	int pending_close; /* libuv handles still closing */
};

/* session.c: the connection */
/*
 * The one way to change state: performs the state's entry action (sends
 * IDLE, DONE or LOGOUT, closes the connection, arms the state's timer).
 */
void session_enter(struct session *s, enum session_state st);
void session_fail(struct session *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void session_settle(struct session *s);
void session_finish(struct session *s);
void session_connect(struct session *s);
/* Runs the PREPARE job of the folder worked on (s->mb). */
void session_prepare(struct session *s);
/* Makes mb the folder worked on (logs, paths, the lane's Maildir). */
void session_use(struct session *s, struct mbox *mb);
/* The selected folder is synced (or stopped): the next, or wait. */
void session_synced(struct session *s);
/*
 * The selected folder cannot go on (its Maildir failed): it stops for
 * good and the connection goes on with the others; when it was the last,
 * the session fails as session_fail does. Returns whether the connection
 * goes on.
 */
bool session_folder_stop(struct session *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * sync.c: the mailbox sync of the selected folder, called by session.c
 * directly; it answers through session_synced(), session_fail() and
 * session_settle().
 */
/* BODY[] literals into the Maildir (the connection's literal ops). */
int mailbox_literal_begin(void *ud, const char *prefix, size_t len,
    uint64_t size);
int mailbox_literal_data(void *ud, const char *p, size_t n);
int mailbox_literal_end(void *ud);
/*
 * The folder just SELECTed (begin: reconcile, verify, list and fetch), or
 * the one still selected (again: list and fetch). Either ends in
 * session_synced().
 */
void mailbox_begin(struct session *s);
void mailbox_again(struct session *s);
/* Stopping: whether nothing would be lost by closing now. */
bool mailbox_may_close(const struct session *s);
void mailbox_pump(struct session *s);
void mailbox_pump_commits(struct session *s);
void mailbox_start_job(struct session *s, enum commit_kind kind);
/* The connection closed: what was in flight on it is forgotten. */
void mailbox_reset(struct session *s);
void mailbox_init(struct session *s);
void mailbox_free(struct session *s);
/*
 * Each response after the greeting, before the connection acts on it: a
 * message's FETCH goes into its file. Returns false when it failed the
 * connection.
 */
bool mailbox_unit(struct session *s, int pr, const struct proto_resp *r,
    const char *p, size_t n);

#define LOG(s, lvl, ...)                                                       \
	log_msg((lvl), (s)->a->name, (s)->mb->name, __VA_ARGS__)

#endif
