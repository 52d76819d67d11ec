/*
 * Unit tests for status: the status file's text, read back, and the
 * report line and verdict of each folder as `idlefetch status` prints it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "idlefetch/status.h"

#define NOW 1800000000

/* The line status_folder_line prints, and its verdict. */
static bool
line_of(const char *name, const struct status_rec *r, char *buf, size_t len)
{
	FILE *f = fmemopen(buf, len, "w");
	bool ok;

	assert_non_null(f);
	ok = status_folder_line(f, name, r, NOW);
	fclose(f);
	return ok;
}

static void
test_render_and_parse_round_trip(void **state)
{
	struct status_rec recs[2] = {
		{ .folder = "INBOX", .state = "IDLE", .up = true,
		    .since = NOW - 100, .last_sync = NOW - 5, .delivered = 42 },
		{ .folder = "Entw\xc3\xbcrfe", .state = "BACKOFF",
		    .gave_up = true, .since = NOW - 7, .error_at = NOW - 7 },
	};
	struct status_file f;
	char *text, uidv[] = "UIDVALIDITY changed from 1 to 2";

	(void)state;
	recs[1].error = uidv;
	text = status_render(recs, 2, 4242, NOW - 1000, NOW, false);
	assert_int_equal(status_parse(text, &f), 0);
	assert_int_equal(f.pid, 4242);
	assert_int_equal(f.started, NOW - 1000);
	assert_int_equal(f.written, NOW);
	assert_false(f.stopped);
	assert_int_equal(f.n, 2);
	assert_string_equal(f.recs[0].folder, "INBOX");
	assert_string_equal(f.recs[0].state, "IDLE");
	assert_true(f.recs[0].up);
	assert_int_equal(f.recs[0].delivered, 42);
	assert_int_equal(f.recs[0].last_sync, NOW - 5);
	assert_string_equal(f.recs[1].folder, "Entw\xc3\xbcrfe");
	assert_true(f.recs[1].gave_up);
	assert_string_equal(f.recs[1].error,
	    "UIDVALIDITY changed from 1 to 2");
	status_file_free(&f);
}

static void
test_damaged_files_are_not_believed(void **state)
{
	static const char *bad[] = {
		"",
		"pid 1\n",
		/* a folder line with a field missing */
		"idlefetch-status 1\npid 1\nstarted 1\nwritten 1\nstopped 0\n"
		"folder\tINBOX\tIDLE\t1\t0\t1\t1\t0\n",
		/* cut off in the middle of a line */
		"idlefetch-status 1\npid 1\nstarted 1\nwritten 1\nstopped 0\n"
		"folder\tINBOX\tIDLE\t1\t0\t1\t1\t0\t0\t",
		"idlefetch-status 1\npid 1\nstarted 1\nwritten 1\nstopped 0\n"
		"folder\tINBOX\tIDLE\tx\t0\t1\t1\t0\t0\t\n",
	};
	struct status_file f;
	struct status_rec r = { .folder = "INBOX", .state = "IDLE" };
	char *good = status_render(&r, 1, 1, 1, 1, true);

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		assert_int_equal(status_parse(strdup(bad[i]), &f), -EINVAL);
	/* The header the cases above borrow is the real one. */
	assert_int_equal(status_parse(good, &f), 0);
	assert_true(f.stopped);
	assert_int_equal(f.n, 1);
	status_file_free(&f);
}

static void
test_folder_lines_and_verdicts(void **state)
{
	struct status_rec r;
	char buf[1024], connect_failed[] = "connect failed",
	    uidv[] = "UIDVALIDITY changed";

	(void)state;
	memset(&r, 0, sizeof(r));
	r = (struct status_rec){ .state = "IDLE", .up = true,
		.since = NOW - 3 * 3600 - 120, .last_sync = NOW - 61,
		.delivered = 7 };
	assert_true(line_of("INBOX", &r, buf, sizeof(buf)));
	assert_string_equal(buf,
	    "  INBOX                up       IDLE       for 3h02m; last sync "
	    "1m01s ago; 7 delivered\n");

	/* Down, reconnecting, within the grace period: still healthy. */
	r = (struct status_rec){ .state = "BACKOFF", .since = NOW - 41,
		.last_sync = NOW - 542, .delivered = 77, .error_at = NOW - 3 };
	r.error = connect_failed;
	assert_true(line_of("Lists/dev", &r, buf, sizeof(buf)));
	assert_string_equal(buf,
	    "  Lists/dev            down     BACKOFF    for 41s; last sync "
	    "9m02s ago; 77 delivered; last error 3s ago: connect failed\n");

	/* ...and past it: unhealthy. */
	r.since = NOW - STATUS_GRACE_SECS - 1;
	assert_false(line_of("Lists/dev", &r, buf, sizeof(buf)));

	/* Never synced yet: starting. */
	r = (struct status_rec){ .state = "CONNECT", .since = NOW - 2 };
	assert_true(line_of("INBOX", &r, buf, sizeof(buf)));
	assert_non_null(strstr(buf, " starting CONNECT "));

	/* Given up: stopped, with its reason, always unhealthy. */
	r = (struct status_rec){ .state = "DONE", .gave_up = true,
		.since = NOW - 2 * 86400 - 3600 };
	r.error = uidv;
	assert_false(line_of("F01", &r, buf, sizeof(buf)));
	assert_string_equal(buf,
	    "  F01                  stopped  DONE       for 2d01h: UIDVALIDITY "
	    "changed\n");

	/* A folder the daemon does not watch (configuration not reloaded). */
	assert_false(line_of("New", NULL, buf, sizeof(buf)));
	assert_non_null(strstr(buf, "not watched: reload idlefetch"));
}

/* A folder keeps error text only once it has had an error, one line. */
static void
test_error_text_is_kept_only_when_there_is_one(void **state)
{
	struct status_rec r = { .folder = "INBOX", .state = "IDLE" };
	char why[2000];

	(void)state;
	assert_null(r.error);
	memset(why, 'x', sizeof(why) - 1);
	why[sizeof(why) - 1] = '\0';
	why[3] = '\n';
	why[4] = '\t';
	status_error(&r, why);
	assert_int_equal(strlen(r.error), STATUS_ERROR_MAX - 1);
	assert_int_equal(strncmp(r.error, "xxx  xx", 7), 0);
	assert_true(r.error_at > 0);
	status_error(&r, "connect failed");
	assert_string_equal(r.error, "connect failed");
	status_rec_clear(&r);
	assert_null(r.error);
}

static void
count_timer(uv_handle_t *h, void *arg)
{
	if (h->type == UV_TIMER && !uv_is_closing(h))
		(*(int *)arg)++;
}

static void
stop_loop(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop for ms milliseconds (the writes are on the threadpool). */
static void
run_for(uv_loop_t *loop, uint64_t ms)
{
	uv_timer_t t;

	uv_timer_init(loop, &t);
	uv_timer_start(&t, stop_loop, ms, 0);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

static bool
file_has(const char *path, const char *what)
{
	char buf[4096];
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, what) != NULL;
}

/*
 * Every account's writer waits on one timer of the loop (not a timer
 * each), and a change is still written within about a second.
 */
static void
test_writers_share_one_timer(void **state)
{
	char dir[] = "/tmp/test_status.XXXXXX", path[3][300], sub[200];
	struct status_rec recs[3] = { { .folder = "INBOX", .state = "IDLE" },
		{ .folder = "INBOX", .state = "IDLE" },
		{ .folder = "INBOX", .state = "IDLE" } };
	struct status_writer *w[3];
	struct status_clock *c;
	uv_loop_t loop;
	int timers = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(uv_loop_init(&loop), 0);
	c = status_clock_new(&loop);
	for (int i = 0; i < 3; i++) {
		char name[8];

		snprintf(name, sizeof(name), "a%d", i);
		snprintf(sub, sizeof(sub), "%s/%s", dir, name);
		assert_int_equal(mkdir(sub, 0700), 0);
		snprintf(path[i], sizeof(path[i]), "%s/status", sub);
		w[i] = status_writer_new(c, dir, name, &recs[i], 1);
	}
	run_for(&loop, 300);
	for (int i = 0; i < 3; i++)
		assert_true(file_has(path[i], "\tIDLE\t"));
	uv_walk(&loop, count_timer, &timers);
	assert_int_equal(timers, 1);

	status_set_state(&recs[1], "BACKOFF", false);
	status_error(&recs[1], "connect failed");
	run_for(&loop, 1500);
	assert_true(file_has(path[1], "\tBACKOFF\t"));
	assert_true(file_has(path[1], "connect failed"));
	assert_true(file_has(path[0], "\tIDLE\t"));

	for (int i = 0; i < 3; i++)
		status_writer_free(w[i], true);
	status_clock_close(c);
	run_for(&loop, 300);
	assert_true(file_has(path[2], "stopped 1"));
	assert_int_equal(uv_loop_close(&loop), 0);
	status_clock_free(c);
	status_rec_clear(&recs[1]);
	for (int i = 0; i < 3; i++)
		unlink(path[i]);
	for (int i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/a%d", dir, i);
		rmdir(sub);
	}
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_and_parse_round_trip),
		cmocka_unit_test(test_damaged_files_are_not_believed),
		cmocka_unit_test(test_folder_lines_and_verdicts),
		cmocka_unit_test(
		    test_error_text_is_kept_only_when_there_is_one),
		cmocka_unit_test(test_writers_share_one_timer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
