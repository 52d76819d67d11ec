/*
 * Unit tests for rounds: when the scheduler lists the subscribed folders
 * (folders = *) and how long it IDLEs or waits until then; NOTIFY's news
 * of a folder created or removed makes the listing due at once; an
 * overflow asks for NOTIFY again, once; a closed connection forgets both.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "idlefetch/conn.h"
#include "idlefetch/rounds.h"
#include "idlefetch/watch.h"

struct t {
	uv_loop_t loop;
	struct account a;
	struct conn *conn;
	struct watch *w;
	unsigned overs;
};

static void
over(void *ud)
{
	((struct t *)ud)->overs++;
}

static void
line(void *ud, const struct proto_resp *r)
{
	(void)ud;
	(void)r;
}

static const struct conn_ops no_ops = { 0 };

static struct rounds *
setup(struct t *t, unsigned poll_interval, bool lists)
{
	uv_loop_init(&t->loop);
	t->a.name = "acct";
	t->a.host = "127.0.0.1";
	t->a.idle = true;
	t->a.poll_interval = poll_interval;
	t->a.status_interval = 5;
	t->a.idle_refresh = 600;
	t->conn = conn_new(&t->loop, &(struct conn_opts){ .acct = &t->a,
		.ops = &no_ops,
		.ud = t });
	t->w = watch_new();
	return rounds_new(&t->loop, &(struct rounds_opts){ .acct = &t->a,
		.lists = lists,
		.over = over,
		.line = line,
		.ud = t });
}

static void
teardown(struct t *t, struct rounds *r)
{
	rounds_free(r);
	watch_free(t->w);
	conn_free(t->conn);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&t->loop), 0);
}

static void
test_listing_sets_the_wait_and_comes_due(void **state)
{
	struct t t = { 0 };
	struct rounds *r = setup(&t, 1, true);

	(void)state;
	rounds_login(r, t.conn);
	/* No IDLE offered: STATUS as often as the poll. */
	assert_int_equal(rounds_status_every_ms(r), 1000);
	assert_in_range(rounds_idle_ms(r, t.w), 1, 1000);
	assert_in_range(rounds_poll_wait_ms(r, t.w), 1, 1000);
	assert_int_equal(rounds_due(r, t.w), ROUNDS_NONE);
	/* Half a second early is on time. */
	usleep(600 * 1000);
	uv_update_time(&t.loop);
	assert_int_equal(rounds_due(r, t.w), ROUNDS_LIST);
	rounds_listing(r);
	assert_int_equal(rounds_due(r, t.w), ROUNDS_NONE);
	teardown(&t, r);
}

static void
test_without_listing_the_wait_is_the_poll_or_idle_refresh(void **state)
{
	struct t t = { 0 };
	struct rounds *r = setup(&t, 60, false);

	(void)state;
	rounds_login(r, t.conn);
	assert_int_equal(rounds_idle_ms(r, t.w), 600 * 1000);
	assert_int_equal(rounds_poll_wait_ms(r, t.w), 60 * 1000);
	assert_int_equal(rounds_due(r, t.w), ROUNDS_NONE);
	assert_false(rounds_list_news(r, t.w));
	assert_int_equal(rounds_poll(r, t.w, NULL, NULL), 0);
	teardown(&t, r);
}

static void
test_notify_news_and_overflow(void **state)
{
	struct t t = { 0 };
	struct rounds *r = setup(&t, 60, true);

	(void)state;
	rounds_login(r, t.conn);
	/* Without NOTIFY, a LIST line is the listing's own, not news. */
	assert_false(rounds_list_news(r, t.w));
	watch_set_notify(t.w, true);
	assert_true(rounds_list_news(r, t.w));
	assert_int_equal(rounds_due(r, t.w), ROUNDS_LIST);
	rounds_listing(r);
	assert_int_equal(rounds_due(r, t.w), ROUNDS_NONE);
	rounds_overflow(r, t.w, NULL);
	assert_true(rounds_take_renotify(r));
	assert_false(rounds_take_renotify(r));
	/* The overflow ended NOTIFY; set again, then the connection closes:
	 * nothing is asked again on the next. */
	assert_false(watch_notify(t.w));
	watch_set_notify(t.w, true);
	assert_true(rounds_list_news(r, t.w));
	rounds_renotify(r);
	rounds_reset(r);
	assert_false(rounds_take_renotify(r));
	assert_int_equal(rounds_due(r, t.w), ROUNDS_NONE);
	assert_int_equal(t.overs, 0);
	teardown(&t, r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listing_sets_the_wait_and_comes_due),
		cmocka_unit_test(
		    test_without_listing_the_wait_is_the_poll_or_idle_refresh),
		cmocka_unit_test(test_notify_news_and_overflow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
