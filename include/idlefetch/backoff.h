/*
 * backoff: how long an account waits before it connects again after its
 * connection failed. The wait doubles from BACKOFF_MIN_MS up to
 * BACKOFF_MAX_MS, with jitter that spreads many accounts apart; a
 * connection that stayed up a while or brought mail starts it over from
 * the shortest, and a throttling server's suggested wait is the least.
 * A session the server ended while it was up and idle (a shutdown, an
 * expired token) is followed by a connection at once, at most every
 * BACKOFF_QUICK_EVERY_MS.
 */
#ifndef IDLEFETCH_BACKOFF_H
#define IDLEFETCH_BACKOFF_H

#include <stdint.h>

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 300000
/* A connection up this long after its first sync counts as healthy. */
#define BACKOFF_HEALTHY_MS 60000
/*
 * A session the server ends after it was logged in this long (not one
 * that fails each IDLE) gets a connection at once, at most this often.
 */
#define BACKOFF_QUICK_UP_MS 2000
#define BACKOFF_QUICK_EVERY_MS 5000

struct backoff;

/* Starts at the shortest wait. */
struct backoff *backoff_new(void);
void backoff_free(struct backoff *b);
/* A folder synced on the connection at loop time now (ms). */
void backoff_synced(struct backoff *b, uint64_t now);
/* n messages were delivered on the connection. */
void backoff_delivered(struct backoff *b, unsigned n);
/* The next wait is the longest (the server refused the login). */
void backoff_longest(struct backoff *b);
/* The next wait is the shortest (a kept token was refused: a new one). */
void backoff_shortest(struct backoff *b);
/* Logged in at loop time now (ms). */
void backoff_up(struct backoff *b, uint64_t now);
/* The server ended the session while it was idle, at loop time now. */
void backoff_ended_idle(struct backoff *b, uint64_t now);
/* The next connection is not made at once (another took its place). */
void backoff_calm(struct backoff *b);
/*
 * The connection failed at loop time now (ms): how many ms to wait before
 * the next one; 0 only at once after backoff_ended_idle(). retry_ms: the
 * server's suggested wait, 0 if none.
 */
unsigned backoff_next(struct backoff *b, uint64_t now, unsigned retry_ms);

#endif
