/*
 * mbdisk: a folder's disk side (mailbox.h). It owns the folder's Maildir
 * and state paths, its durable state record, its binding to the Maildir
 * (state.h), and the one commit job (commit.h) in flight on the
 * threadpool. A job is filled here with what the disk side knows; its
 * owner adds what the job kind needs and runs it. When the job ends, the
 * state record takes what the job saved, what the job found or did on
 * disk is logged (and a compaction's UIDs freed), then the owner's
 * callback runs.
 */
#ifndef IDLEFETCH_MBDISK_H
#define IDLEFETCH_MBDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "idlefetch/commit.h"
#include "idlefetch/config.h"
#include "idlefetch/state.h"

struct mbdisk;

/*
 * It lives in memory its owner provides, mbdisk_size() bytes aligned for
 * any type. acct and name (UTF-8) are borrowed and outlive it; state_dir
 * and wire (the name as the server spells it) are read here only.
 */
size_t mbdisk_size(void);
struct mbdisk *
mbdisk_init(void *mem, uv_loop_t *loop, const struct account *acct,
    const char *state_dir, const char *name, const char *wire);
/* Only with no job in flight. */
void mbdisk_fini(struct mbdisk *d);
/* The folder's name changes (borrowed, as at mbdisk_init). */
void mbdisk_rename(struct mbdisk *d, const char *name);

/* Owned by it, for its lifetime. */
const char *mbdisk_maildir(const struct mbdisk *d);
const char *mbdisk_state_path(const struct mbdisk *d);
/* Its tag in Maildir file names (maildir.h). */
uint32_t mbdisk_tag(const struct mbdisk *d);
/* The durable state, as last loaded or saved; borrowed, same address. */
const struct state_rec *mbdisk_state(const struct mbdisk *d);
/* new/ was scanned for files no state records (this process). */
bool mbdisk_reconciled(const struct mbdisk *d);
/* A job is in flight. */
bool mbdisk_busy(const struct mbdisk *d);

typedef void mbdisk_done_cb(const struct commit_req *j, void *ud);

/*
 * Runs a job of this kind (one at a time), filled with the paths, state
 * and binding, and with in (a MATCH's set and a COMPACT's uids are the
 * job's from now on): the state takes its result, then done(j, ud) runs
 * on the loop, then j is freed.
 */
void mbdisk_run(struct mbdisk *d, enum commit_kind kind,
    const struct commit_in *in, mbdisk_done_cb *done, void *ud);

#endif
