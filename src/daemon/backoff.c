/*
 * backoff: the reconnect delay of one account (backoff.h). It owns
 * struct backoff: the current step, whether the connection that just
 * failed was healthy, and whether the server ended an idle session. It calls nothing of idlefetch's; the scheduler
 * tells it what happened and arms its own timer with the answer.
 */
#include <stdbool.h>
#include <stdlib.h>

#include "idlefetch/backoff.h"
#include "idlefetch/util.h"

struct backoff {
	unsigned ms; /* the step the next wait is drawn from */
	bool healthy; /* a sync completed on this connection */
	uint64_t healthy_at; /* loop time of that first completed sync */
	unsigned delivered; /* messages delivered on this connection */
	uint64_t up_at; /* loop time of the last login */
	uint64_t quick_at; /* loop time of the last connection at once */
	bool quick; /* the next connection is at once */
};

struct backoff *
backoff_new(void)
{
	struct backoff *b = xcalloc(1, sizeof(*b));

	b->ms = BACKOFF_MIN_MS;
	return b;
}

void
backoff_free(struct backoff *b)
{
	free(b);
}

void
backoff_synced(struct backoff *b, uint64_t now)
{
	if (!b->healthy)
		b->healthy_at = now;
	b->healthy = true;
}

void
backoff_delivered(struct backoff *b, unsigned n)
{
	b->delivered += n;
}

void
backoff_longest(struct backoff *b)
{
	b->ms = BACKOFF_MAX_MS;
}

void
backoff_shortest(struct backoff *b)
{
	b->ms = BACKOFF_MIN_MS;
}

void
backoff_up(struct backoff *b, uint64_t now)
{
	b->up_at = now;
}

/*
 * Connecting again at once loses nothing; a server that ends each session
 * soon after login, or keeps doing so, gets the usual waits.
 */
void
backoff_ended_idle(struct backoff *b, uint64_t now)
{
	if (now - b->up_at >= BACKOFF_QUICK_UP_MS &&
	    (b->quick_at == 0 || now - b->quick_at >= BACKOFF_QUICK_EVERY_MS))
		b->quick = true;
}

void
backoff_calm(struct backoff *b)
{
	b->quick = false;
}

unsigned
backoff_next(struct backoff *b, uint64_t now, unsigned retry_ms)
{
	unsigned delay;

	/* An idle session the server ended: nothing to wait for. */
	if (b->quick && retry_ms == 0) {
		b->quick = false;
		b->quick_at = now;
		return 0;
	}
	b->quick = false;

	/*
	 * A connection that stayed up or brought mail was healthy: start over
	 * from the shortest delay. One dropped soon after each login (a server
	 * that fails on IDLE, say) keeps backing off instead of logging in
	 * every second.
	 */
	if (b->healthy &&
	    (b->delivered > 0 || now - b->healthy_at >= BACKOFF_HEALTHY_MS))
		b->ms = BACKOFF_MIN_MS;
	b->healthy = false;
	b->delivered = 0;
	/* Full jitter on the upper half spreads many accounts apart. */
	delay = b->ms / 2 + (unsigned)(random() % (b->ms / 2 + 1));
	/* A throttling server's suggested wait, at the least. */
	if (retry_ms > delay)
		delay = retry_ms;
	b->ms = b->ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b->ms * 2;
	return delay;
}
