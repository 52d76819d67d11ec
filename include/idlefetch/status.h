/*
 * status: what a running daemon tells `idlefetch status`, the health
 * command of containers and service managers.
 *
 * The daemon keeps one status_rec per account+folder, which the session
 * updates, and one status_writer per account that rewrites
 * STATE_DIR/ACCOUNT/status at most once a second after a change (write to
 * a temporary name, rename; no fsync: it is health data, not mail, and an
 * SD card should not pay for it). A quiet daemon writes only a heartbeat,
 * every 15 minutes.
 *
 * `idlefetch status` asks the account lock (state.h) whether a daemon is
 * running, reads the file it wrote and judges every configured folder.
 */
#ifndef IDLEFETCH_STATUS_H
#define IDLEFETCH_STATUS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "idlefetch/config.h"

/* A folder may be down this long (reconnecting) and still count as healthy. */
#define STATUS_GRACE_SECS 300
/*
 * The daemon rewrites its status at least every 15 minutes; older than
 * this, its loop is taken to be stuck (a hung disk, say).
 */
#define STATUS_STALE_SECS (31 * 60)

struct status_writer;

struct status_rec {
	const char *folder; /* borrowed from the configuration */
	const char *state; /* a static state name */
	bool up; /* logged in and synced: SYNC, IDLE or POLL_WAIT */
	bool gave_up; /* stopped for good; needs the user */
	int64_t since; /* when up last changed (Unix time) */
	int64_t last_sync; /* last completed sync, 0: none yet */
	uint64_t delivered; /* messages this process delivered */
	uint64_t queued; /* delivered + listed by the last sync (progress) */
	int64_t error_at; /* 0: no error yet */
	/*
	 * NULL: none yet. A writer's records own it (status_error() sets it,
	 * status_rec_clear() frees it); a parsed file's point into its text.
	 * Most folders never have one: a fixed 512-byte array in each of
	 * 10,000 accounts' records was 5 MiB of nothing.
	 */
	char *error;
	struct status_writer *w; /* set by status_writer_new */
};

/*
 * The one timer of all the writers of a loop: when each writes next. Its
 * timer does not keep the loop alive. close: no writer writes on its own
 * any more (those being freed still write their last text); free once
 * the loop has run the close and every writer is freed.
 */
struct status_clock;
struct status_clock *status_clock_new(uv_loop_t *loop);
void status_clock_close(struct status_clock *c);
void status_clock_free(struct status_clock *c);

/*
 * A writer for one account's n folders; recs stay the caller's and must
 * outlive the writer; clock (borrowed) must outlive it too.
 */
struct status_writer *status_writer_new(struct status_clock *clock,
    const char *state_dir, const char *account, struct status_rec *recs,
    size_t n);
/*
 * The account's folders changed (folders = *): the writer reports recs
 * from now on; the old ones may be freed once this returns.
 */
void status_writer_set(struct status_writer *w, struct status_rec *recs,
    size_t n);
/*
 * cb runs (with ud) each time the writer is about to write after a change
 * or a heartbeat: at most once a second. The daemon tells the service
 * manager from it.
 */
typedef void status_hook_cb(void *ud);
void status_writer_hook(struct status_writer *w, status_hook_cb *cb, void *ud);
/* Something in rec changed: the file is rewritten within a second. */
void status_changed(struct status_rec *rec);
/*
 * Sets rec's state; up/down changes move `since`. Calls status_changed()
 * when anything differs.
 */
void status_set_state(struct status_rec *rec, const char *state, bool up);
/*
 * Records an error (made printable, at most STATUS_ERROR_MAX - 1 bytes)
 * and when it happened; rec keeps a copy.
 */
#define STATUS_ERROR_MAX 512
void status_error(struct status_rec *rec, const char *why);
/* Frees what a writer's record owns (its error text). */
void status_rec_clear(struct status_rec *rec);
/*
 * Detaches the records (the caller may free them at once) and frees the
 * writer. last: write the file a last time, marked stopped (not when a new
 * writer takes the account over). The loop must run on for that.
 */
void status_writer_free(struct status_writer *w, bool last);

/*
 * Prints the state of every configured folder (of one account when account
 * is not NULL) and returns the exit code of `idlefetch status`: 0 when a
 * daemon runs every account and no folder has been down for longer than
 * STATUS_GRACE_SECS or given up, else 1.
 */
int status_report(const struct config *cfg, const char *account, FILE *out);

/* ---- the pure parts, for tests ---- */

/* The status file's text for recs (the caller frees it). */
char *status_render(const struct status_rec *recs, size_t nrecs, long pid,
    int64_t started, int64_t written, bool stopped);

struct status_file {
	long pid;
	int64_t started;
	int64_t written;
	bool stopped;
	struct status_rec *recs; /* folder and state point into text */
	size_t n;
	char *text;
};

/*
 * Reads a status file's text into f, which takes text over (also on
 * error); 0, or -EINVAL for anything not written by status_render.
 */
int status_parse(char *text, struct status_file *f);
void status_file_free(struct status_file *f);

/*
 * Prints the report line of one folder (r NULL: the daemon does not watch
 * it) as of `now`; returns whether it counts as healthy.
 */
bool status_folder_line(FILE *out, const char *name,
    const struct status_rec *r, int64_t now);

#endif
