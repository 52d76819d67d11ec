/*
 * Unit tests for gate: slots are handed out up to the limit, waiters get
 * them in the order they asked, a cancelled waiter is skipped, and a NULL
 * gate lets everyone in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "idlefetch/gate.h"

#define N 5

struct rec {
	unsigned order[N]; /* which waiter each callback was for */
	unsigned n;
};

struct who {
	struct rec *rec;
	unsigned id;
};

static void
opened(void *ud)
{
	struct who *w = ud;

	assert_true(w->rec->n < N);
	w->rec->order[w->rec->n++] = w->id;
}

static void
make(struct rec *rec, struct who who[N], struct gate_waiter *w[N])
{
	for (unsigned i = 0; i < N; i++) {
		who[i] = (struct who){ .rec = rec, .id = i };
		w[i] = gate_waiter_new(opened, &who[i]);
	}
}

static void
test_slots_up_to_the_limit_then_queued(void **state)
{
	struct gate *g = gate_new(2);
	struct rec rec = { 0 };
	struct who who[N];
	struct gate_waiter *w[N];

	(void)state;
	make(&rec, who, w);
	assert_true(gate_enter(g, w[0]));
	assert_true(gate_enter(g, w[1]));
	assert_false(gate_enter(g, w[2]));
	assert_false(gate_enter(g, w[3]));
	/* Asking again neither takes a slot nor queues twice. */
	assert_true(gate_enter(g, w[0]));
	assert_false(gate_enter(g, w[2]));
	assert_int_equal(rec.n, 0);
	/* Released slots go to the waiters in the order they asked. */
	gate_leave(g, w[1]);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.order[0], 2);
	assert_true(gate_enter(g, w[2])); /* it holds the slot now */
	gate_leave(g, w[0]);
	assert_int_equal(rec.n, 2);
	assert_int_equal(rec.order[1], 3);
	/* Nobody waits: the slot is simply free again. */
	gate_leave(g, w[2]);
	assert_int_equal(rec.n, 2);
	assert_true(gate_enter(g, w[4]));
	/* Leaving twice, or without a slot, changes nothing. */
	gate_leave(g, w[2]);
	gate_leave(g, w[1]);
	assert_false(gate_enter(g, w[0]));
	gate_cancel(g, w[0]);
	gate_leave(g, w[3]);
	gate_leave(g, w[4]);
	assert_int_equal(rec.n, 2);
	for (unsigned i = 0; i < N; i++)
		gate_waiter_free(g, w[i]);
	gate_free(g);
}

static void
test_cancelled_waiter_is_skipped(void **state)
{
	struct gate *g = gate_new(1);
	struct rec rec = { 0 };
	struct who who[N];
	struct gate_waiter *w[N];

	(void)state;
	make(&rec, who, w);
	assert_true(gate_enter(g, w[0]));
	for (unsigned i = 1; i < N; i++)
		assert_false(gate_enter(g, w[i]));
	/* Cancel the head, a middle one and the tail. */
	gate_cancel(g, w[1]);
	gate_cancel(g, w[3]);
	gate_cancel(g, w[4]);
	gate_cancel(g, w[4]); /* not queued any more: nothing */
	gate_leave(g, w[0]);
	assert_int_equal(rec.n, 1);
	assert_int_equal(rec.order[0], 2);
	/* The tail was cancelled: a new waiter queues behind no one stale. */
	assert_false(gate_enter(g, w[4]));
	assert_false(gate_enter(g, w[1]));
	gate_leave(g, w[2]);
	gate_leave(g, w[4]);
	assert_int_equal(rec.n, 3);
	assert_int_equal(rec.order[1], 4);
	assert_int_equal(rec.order[2], 1);
	gate_leave(g, w[1]);
	/* Freeing a queued waiter takes it out of the queue. */
	assert_true(gate_enter(g, w[0]));
	assert_false(gate_enter(g, w[3]));
	gate_waiter_free(g, w[3]);
	gate_leave(g, w[0]);
	assert_int_equal(rec.n, 3);
	for (unsigned i = 0; i < N; i++)
		if (i != 3)
			gate_waiter_free(g, w[i]);
	gate_free(g);
}

static void
test_null_gate_has_no_limit(void **state)
{
	struct rec rec = { 0 };
	struct who who[N];
	struct gate_waiter *w[N];

	(void)state;
	make(&rec, who, w);
	for (unsigned i = 0; i < N; i++)
		assert_true(gate_enter(NULL, w[i]));
	gate_leave(NULL, w[0]);
	gate_cancel(NULL, w[1]);
	assert_int_equal(rec.n, 0);
	for (unsigned i = 0; i < N; i++)
		gate_waiter_free(NULL, w[i]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slots_up_to_the_limit_then_queued),
		cmocka_unit_test(test_cancelled_waiter_is_skipped),
		cmocka_unit_test(test_null_gate_has_no_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
