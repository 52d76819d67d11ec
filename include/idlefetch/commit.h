/*
 * commit: the durable steps of delivery, on the libuv threadpool, so that
 * the event loop never waits on fsync. It knows the Maildir and the state
 * file and nothing of connections: a request says where and what, and the
 * result comes back through the callback on the loop.
 *
 *   COMMIT_PREPARE    check the state directory and its binding to the
 *                     Maildir (state.h), create the Maildir, remove this
 *                     tag's unfinished tmp/ files, load the state
 *   COMMIT_RECONCILE  find UIDs delivered to new/ or cur/ but not recorded
 *                     (a crash, a failed save), fsync new/, record them
 *   COMMIT_DELIVER    check the Maildir's marker, make files[0..ncommit) durable, rename them into new/
 *                     in order, fsync new/, add them to the folder's index
 *                     (msgindex.h), save the state that records them
 *                     (not during a recovery); remove the files after the
 *                     first failure and the rest of files[].
 *                     With an MDA or LMTP target (target.h), each file in
 *                     turn: the state saved with the UID pending, the
 *                     file handed over, the answer saved (passed, or
 *                     passed and refused), the file removed; a deferral
 *                     or an error stops there (result < 0)
 *   COMMIT_RECOVER    save the state marked as recovering
 *   COMMIT_MATCH      match a recovery's listing (set) against the
 *                     folder's index and the Maildir's files it lacks, and
 *                     rewrite the index with what matched (msgindex.h)
 *   COMMIT_RECOVERED  save the state a finished recovery leaves: the new
 *                     UIDVALIDITY, last_uid and keep_to commit_uid
 *   COMMIT_COMPACT    rewrite the folder's index with the lines of the
 *                     UIDs the server still holds (uids)
 *
 * DELIVER, RECONCILE, MATCH and COMPACT report the index's size after
 * them (index_bytes), so that the caller knows when to compact it.
 */
#ifndef IDLEFETCH_COMMIT_H
#define IDLEFETCH_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "idlefetch/maildir.h"
#include "idlefetch/msgindex.h"
#include "idlefetch/state.h"
#include "idlefetch/target.h"

enum commit_kind {
	COMMIT_PREPARE,
	COMMIT_RECONCILE,
	COMMIT_DELIVER,
	COMMIT_RECOVER,
	COMMIT_MATCH,
	COMMIT_RECOVERED,
	COMMIT_COMPACT
};

/* What the server said of a message: its fingerprint, by UID. */
struct commit_fp {
	uint32_t uid;
	struct state_fp fp;
	uint64_t key; /* header_key() of its header fields */
};

/*
 * What a job takes beside the folder's paths and state, from the part of
 * the folder that holds it: a value its caller fills, that the folder's
 * disk side (mbdisk.h) copies into the one request it fills and runs.
 */
struct commit_in {
	uint32_t uidvalidity;
	/* DELIVER: sorted by UID, borrowed; the first ncommit to commit */
	struct maildir_file *files;
	size_t nfiles, ncommit;
	const struct commit_fp *fps; /* nfiles of them */
	uint32_t commit_uid; /* DELIVER, RECOVERED: last_uid once done */
	struct state_fp last; /* RECOVERED: what commit_uid holds */
	struct msgindex_set *set; /* MATCH: the listing, taken */
	uint32_t *uids; /* COMPACT: the server's UIDs, taken; sorted */
	size_t nuids;
};

struct commit_req;
typedef void commit_done_cb(struct commit_req *req, void *ud);

/*
 * One job: filled once by the folder's disk side (mbdisk.c), which runs
 * it and takes its result; commit writes only the out fields; the disk
 * side's owner reads the result (const) in its callback.
 */
struct commit_req {
	uv_work_t work;
	enum commit_kind kind;
	/* in: borrowed, unchanged until the callback */
	const char *maildir;
	const char *state_path;
	const char *root; /* the account's Maildir, which holds the marker */
	const char *account;
	char id[STATE_ID_LEN + 1]; /* the binding: PREPARE out, DELIVER in */
	uint32_t tag; /* of this account+folder's files */
	uint32_t uidvalidity;
	struct maildir_file *files; /* COMMIT_DELIVER, sorted by UID */
	size_t nfiles;
	const struct commit_fp *fps; /* nfiles of them */
	bool recovering; /* DELIVER: part of a recovery, no state saved */
	/* DELIVER: an MDA or LMTP target, or NULL for the Maildir */
	const struct target *target;
	const char *folder; /* ...the folder's name, for it */
	bool keep_refused; /* after = delete or move: record refusals */
	/* in and out */
	size_t ncommit; /* DELIVER: to commit; out: committed */
	uint32_t commit_uid; /* DELIVER: last_uid once they are in */
	struct state_rec st; /* current; out: as saved */
	/* out */
	int result; /* 0 or a negative errno */
	unsigned removed; /* PREPARE: tmp/ files; RECONCILE: UIDs found */
	char err[512]; /* what failed, in words */
	/* DELIVER to a target: refused ones among those committed */
	unsigned nrefused;
	uint32_t refused_uid; /* the first of them */
	char refused_why[256]; /* ...and the target's answer */
	uint64_t refused_bytes; /* ...and their size */
	/* MATCH: the listing, borrowed; matched in place (msgindex.h) */
	struct msgindex_set *set;
	uint32_t *uids; /* COMPACT: the server's UIDs, borrowed; sorted */
	size_t nuids;
	struct msgindex_counts counts; /* COMPACT: kept and dropped */
	uint64_t index_bytes; /* the index's size after the job; 0: unknown */
	commit_done_cb *done;
	void *ud;
};

/* Queues the request; done(req, ud) runs on the loop when it is over. */
void commit_start(uv_loop_t *loop, struct commit_req *req,
    commit_done_cb *done, void *ud);

#endif
