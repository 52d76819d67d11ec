/*
 * Unit tests for backoff: the wait doubles up to the longest, with jitter
 * in its upper half; a healthy connection (up a minute, or mail brought)
 * starts it over; a throttling server's wait is the least; an idle
 * session the server ended is followed by a connection at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "idlefetch/backoff.h"

/* The wait drawn from step ms lies in its upper half. */
static void
assert_drawn_from(unsigned delay, unsigned ms)
{
	assert_in_range(delay, ms / 2, ms);
}

static void
test_wait_doubles_up_to_the_longest(void **state)
{
	struct backoff *b = backoff_new();
	unsigned ms = BACKOFF_MIN_MS;

	(void)state;
	srandom(1);
	for (int i = 0; i < 20; i++) {
		assert_drawn_from(backoff_next(b, 1000 * i, 0), ms);
		ms = ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
	}
	assert_int_equal(ms, BACKOFF_MAX_MS);
	backoff_free(b);
}

static void
test_healthy_connection_starts_over(void **state)
{
	struct backoff *b = backoff_new();

	(void)state;
	for (int i = 0; i < 10; i++)
		backoff_next(b, 0, 0);
	/* Synced, but dropped soon after: no start over. */
	backoff_synced(b, 100000);
	assert_in_range(backoff_next(b, 100000 + BACKOFF_HEALTHY_MS - 1, 0),
	    BACKOFF_MAX_MS / 2, BACKOFF_MAX_MS);
	/* Up a minute after its first sync: from the shortest again. */
	backoff_synced(b, 200000);
	backoff_synced(b, 250000); /* later syncs do not move the clock */
	assert_drawn_from(backoff_next(b, 200000 + BACKOFF_HEALTHY_MS, 0),
	    BACKOFF_MIN_MS);
	assert_drawn_from(backoff_next(b, 300000, 0), 2 * BACKOFF_MIN_MS);
	/* Mail brought: healthy however short. */
	for (int i = 0; i < 10; i++)
		backoff_next(b, 0, 0);
	backoff_synced(b, 400000);
	backoff_delivered(b, 1);
	assert_drawn_from(backoff_next(b, 400001, 0), BACKOFF_MIN_MS);
	/* Mail without a sync is not health. */
	backoff_delivered(b, 3);
	assert_drawn_from(backoff_next(b, 500000, 0), 2 * BACKOFF_MIN_MS);
	backoff_free(b);
}

static void
test_server_wait_and_forced_steps(void **state)
{
	struct backoff *b = backoff_new();

	(void)state;
	/* A throttling server's suggested wait is the least. */
	assert_int_equal(backoff_next(b, 0, 42000), 42000);
	/* Shorter than ours: ours. */
	assert_drawn_from(backoff_next(b, 0, 1), 2 * BACKOFF_MIN_MS);
	backoff_longest(b); /* login refused */
	assert_drawn_from(backoff_next(b, 0, 0), BACKOFF_MAX_MS);
	backoff_shortest(b); /* a kept token refused */
	assert_drawn_from(backoff_next(b, 0, 0), BACKOFF_MIN_MS);
	backoff_free(b);
}

static void
test_idle_session_ended_reconnects_at_once(void **state)
{
	struct backoff *b = backoff_new();
	uint64_t t = 100000;

	(void)state;
	/* Up long enough, then ended while idle: at once, and only once. */
	backoff_up(b, t);
	backoff_ended_idle(b, t + BACKOFF_QUICK_UP_MS);
	assert_int_equal(backoff_next(b, t + BACKOFF_QUICK_UP_MS, 0), 0);
	assert_drawn_from(backoff_next(b, t + BACKOFF_QUICK_UP_MS, 0),
	    BACKOFF_MIN_MS);
	/* Again too soon after the last one: the usual wait. */
	t += 2 * BACKOFF_QUICK_UP_MS;
	backoff_up(b, t);
	backoff_ended_idle(b, t + BACKOFF_QUICK_UP_MS);
	assert_int_not_equal(backoff_next(b, t + BACKOFF_QUICK_UP_MS, 0), 0);
	/* Ended soon after its login: the usual wait. */
	t += BACKOFF_QUICK_EVERY_MS;
	backoff_up(b, t);
	backoff_ended_idle(b, t + BACKOFF_QUICK_UP_MS - 1);
	assert_int_not_equal(backoff_next(b, t + BACKOFF_QUICK_UP_MS, 0), 0);
	/* A server's own wait wins; another connection took its place. */
	t += BACKOFF_QUICK_EVERY_MS;
	backoff_up(b, t);
	backoff_ended_idle(b, t + BACKOFF_QUICK_UP_MS);
	backoff_shortest(b);
	assert_int_equal(backoff_next(b, t + BACKOFF_QUICK_UP_MS, 7000), 7000);
	t += BACKOFF_QUICK_EVERY_MS;
	backoff_up(b, t);
	backoff_ended_idle(b, t + BACKOFF_QUICK_UP_MS);
	backoff_calm(b);
	assert_int_not_equal(backoff_next(b, t + BACKOFF_QUICK_UP_MS, 0), 0);
	backoff_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wait_doubles_up_to_the_longest),
		cmocka_unit_test(test_healthy_connection_starts_over),
		cmocka_unit_test(test_server_wait_and_forced_steps),
		cmocka_unit_test(test_idle_session_ended_reconnects_at_once),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
