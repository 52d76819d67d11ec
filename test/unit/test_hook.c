/*
 * Unit tests for hook: on a loop of their own, with real commands that
 * write what they were told into a file. Deliveries in one turn make one
 * run; deliveries during a run make exactly one more; hook_free drains or
 * drops what is not told yet; the folder set stays bounded; a hanging
 * command is killed at the time limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "idlefetch/folders.h"
#include "idlefetch/hook.h"
#include "idlefetch/util.h"

struct fixture {
	uv_loop_t loop;
	char dir[64];
	char out[96];
	char cmd[512];
};

static int
setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));

	snprintf(fx->dir, sizeof(fx->dir), "/tmp/idlefetch-hook-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->out, sizeof(fx->out), "%s/runs", fx->dir);
	/* One line per run: the count, then the folders joined by commas. */
	snprintf(fx->cmd, sizeof(fx->cmd),
	    "printf '%%s %%s %%s\\n' \"$IDLEFETCH_ACCOUNT\" "
	    "\"$IDLEFETCH_COUNT\" \"$(printf '%%s' \"$IDLEFETCH_FOLDERS\" | "
	    "tr '\\n' ,)\" >> %s; sleep 0.3",
	    fx->out);
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(uv_loop_close(&fx->loop), 0);
	unlink(fx->out);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

/* What the runs wrote, "" when none ran. */
static char *
runs(const struct fixture *fx)
{
	static char buf[4096];
	FILE *fp = fopen(fx->out, "r");
	size_t n = 0;

	if (fp != NULL) {
		n = fread(buf, 1, sizeof(buf) - 1, fp);
		fclose(fp);
	}
	buf[n] = '\0';
	return buf;
}

/* Calls fn(h) after ms on the loop. */
struct later {
	uv_timer_t t;
	struct hook *h;
	void (*fn)(struct hook *h);
};

static void
later_cb(uv_timer_t *t)
{
	struct later *l = t->data;

	l->fn(l->h);
	uv_close((uv_handle_t *)t, NULL);
}

static void
at(uv_loop_t *loop, struct later *l, uint64_t ms, struct hook *h,
    void (*fn)(struct hook *))
{
	l->h = h;
	l->fn = fn;
	uv_timer_init(loop, &l->t);
	l->t.data = l;
	uv_timer_start(&l->t, later_cb, ms, 0);
}

static void
during_first_run(struct hook *h)
{
	hook_delivered(h, "Work", 3);
	hook_delivered(h, "INBOX", 2);
}

static void
also_during_first_run(struct hook *h)
{
	hook_delivered(h, "Work", 1);
}

static void
free_draining(struct hook *h)
{
	hook_free(h, true);
}

static void
free_dropping(struct hook *h)
{
	hook_free(h, false);
}

static void
test_no_command_is_no_hook(void **state)
{
	struct fixture *fx = *state;

	assert_null(hook_new(&fx->loop, "a", NULL, NULL, 5));
	assert_null(hook_new(&fx->loop, "a", "", "/m", 5));
	hook_delivered(NULL, "INBOX", 1);
	hook_free(NULL, true);
	assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
}

static void
test_deliveries_during_a_run_make_one_more_run(void **state)
{
	struct fixture *fx = *state;
	struct hook *h = hook_new(&fx->loop, "acct", fx->cmd, "/m", 5);
	struct later l1, l2, l3;

	/* One turn: one run, each folder once, in the order delivered. */
	hook_delivered(h, "INBOX", 2);
	hook_delivered(h, "Lists/dev", 1);
	hook_delivered(h, "INBOX", 1);
	hook_delivered(h, "INBOX", 0); /* nothing new: no folder either */
	at(&fx->loop, &l1, 100, h, during_first_run);
	at(&fx->loop, &l2, 150, h, also_during_first_run);
	at(&fx->loop, &l3, 200, h, free_draining);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_string_equal(runs(fx),
	    "acct 4 INBOX,Lists/dev\n"
	    "acct 6 Work,INBOX\n");
}

static void
test_free_without_drain_drops_what_is_not_told(void **state)
{
	struct fixture *fx = *state;
	struct hook *h = hook_new(&fx->loop, "acct", fx->cmd, NULL, 5);
	struct later l1, l2;

	hook_delivered(h, "INBOX", 1);
	at(&fx->loop, &l1, 100, h, during_first_run);
	at(&fx->loop, &l2, 150, h, free_dropping);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_string_equal(runs(fx), "acct 1 INBOX\n");
}

static void
test_free_before_the_run_starts_runs_nothing(void **state)
{
	struct fixture *fx = *state;
	struct hook *h = hook_new(&fx->loop, "acct", fx->cmd, NULL, 5);

	hook_delivered(h, "INBOX", 1);
	hook_free(h, false);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_string_equal(runs(fx), "");
}

static void
test_folder_set_is_bounded(void **state)
{
	struct fixture *fx = *state;
	char cmd[256], name[32];
	struct hook *h;

	snprintf(cmd, sizeof(cmd),
	    "printf '%%s\\n' \"$IDLEFETCH_COUNT\" \"$IDLEFETCH_FOLDERS\" | "
	    "wc -l >> %s",
	    fx->out);
	h = hook_new(&fx->loop, "acct", cmd, NULL, 5);
	for (unsigned i = 0; i < FOLDERS_MAX + 10; i++) {
		snprintf(name, sizeof(name), "f%u", i);
		hook_delivered(h, name, 1);
	}
	hook_free(h, true);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	/* The count line, then FOLDERS_MAX names. */
	assert_int_equal(atoi(runs(fx)), FOLDERS_MAX + 1);
}

static void
test_hanging_command_is_killed_at_the_time_limit(void **state)
{
	struct fixture *fx = *state;
	struct hook *h = hook_new(&fx->loop, "acct", "sleep 30", NULL, 1);
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	hook_delivered(h, "INBOX", 1);
	hook_free(h, true);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_true(b.tv_sec - a.tv_sec < 5);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_command_is_no_hook,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliveries_during_a_run_make_one_more_run,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_without_drain_drops_what_is_not_told,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_before_the_run_starts_runs_nothing,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_folder_set_is_bounded,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_hanging_command_is_killed_at_the_time_limit,
		    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
