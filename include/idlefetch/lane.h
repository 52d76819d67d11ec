/*
 * lane: the disk work of one message stream, done in order on the libuv
 * threadpool so that the event loop never waits on write(): chunks of
 * message bodies and the removal of files that will not be delivered. One
 * trip to the threadpool is in flight at a time and takes everything queued
 * so far, in order, so a file's writes land in order and its removal comes
 * after them.
 *
 * Backpressure: above LANE_HIGH queued bytes the owner is asked to stop
 * reading (ops->pause(ud, true)) until the queue is down to LANE_LOW. Each
 * operation gets a sequence number: everything up to lane_done_seq() is on
 * disk. A failed write marks its message (lane_failed_msgno()) so that the
 * owner commits only what came before it.
 *
 * The lane knows nothing of its owner beyond the ops table: after each trip
 * to the threadpool ops->drained runs, with the first failure (if any) of
 * that trip.
 */
#ifndef IDLEFETCH_LANE_H
#define IDLEFETCH_LANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "idlefetch/maildir.h"

#define LANE_HIGH (256 * 1024)
#define LANE_LOW (64 * 1024)

struct lane_ops {
	/* Stop (true) or resume (false) reading what feeds the lane. */
	void (*pause)(void *ud, bool pause);
	/* A trip ended; err < 0 when a write in it was the first to fail. */
	void (*drained)(void *ud, int err);
};

struct lane;

/*
 * The lane lives in memory its owner provides, lane_size() bytes aligned
 * for any type (beside the owner's own struct: no allocation of its own).
 * maildir is borrowed, and the owner may point it at another folder at
 * any time: each queued operation keeps the one it was queued with.
 */
size_t lane_size(void);
struct lane *lane_init(void *mem, uv_loop_t *loop, const char *maildir,
    const struct lane_ops *ops, void *ud);
/* Queues a copy of p[0..n) for f; nothing for n == 0. */
void lane_write(struct lane *l, const struct maildir_file *f, const char *p,
    size_t n);
/* Queues the removal of f's tmp/ file (after its writes). */
void lane_discard(struct lane *l, const struct maildir_file *f);
bool lane_idle(const struct lane *l);
/* A new connection: what failed before is no reason to stop now. */
void lane_reset(struct lane *l);
/* Bytes queued and in flight. */
size_t lane_bytes(const struct lane *l);
/* The sequence number of the last operation queued, and of the last done. */
uint64_t lane_enq_seq(const struct lane *l);
uint64_t lane_done_seq(const struct lane *l);
/* The first message a write failed for since lane_reset(); 0: none. */
unsigned lane_failed_msgno(const struct lane *l);

#endif
