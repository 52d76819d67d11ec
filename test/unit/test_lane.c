/*
 * Unit tests for the lane: a real loop, a real threadpool and a real
 * Maildir. Writes land in order, a removal comes after its file's writes,
 * the owner is asked to stop reading above LANE_HIGH and to resume at
 * LANE_LOW, and a failed write names its message.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#include "idlefetch/lane.h"

static char root[] = "/tmp/idlefetch-lane-test-XXXXXX";
static char dir[512];

struct owner {
	int pauses, resumes, drains;
	int err;
	unsigned long max_bytes_paused; /* queued bytes when asked to stop */
	struct lane *l;
};

static void
on_pause(void *ud, bool pause)
{
	struct owner *o = ud;

	if (pause) {
		o->pauses++;
		o->max_bytes_paused = lane_bytes(o->l);
	} else {
		o->resumes++;
	}
}

static void
on_drained(void *ud, int err)
{
	struct owner *o = ud;

	o->drains++;
	if (err < 0 && o->err == 0)
		o->err = err;
}

static const struct lane_ops ops = { .pause = on_pause, .drained = on_drained };

/* Whether tmp/ holds a file whose name starts with base. */
static bool
in_tmp(const char *base)
{
	char path[600];
	struct dirent *de;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "%s/tmp", dir);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, base, strlen(base)) == 0)
			found = true;
	closedir(d);
	return found;
}

static int
setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/Maildir", root);
	assert_int_equal(maildir_prepare(dir), 0);
	return 0;
}

static int
teardown(void **state)
{
	char cmd[600];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	return system(cmd) == 0 ? 0 : -1;
}

static void
test_writes_land_in_order_and_backpressure_holds(void **state)
{
	uv_loop_t loop;
	struct lane *l;
	struct owner o = { 0 };
	struct maildir_file f;
	static char chunk[64 * 1024];
	char path[700];
	struct stat st;
	unsigned char *back;
	FILE *fp;

	(void)state;
	uv_loop_init(&loop);
	l = lane_init(malloc(lane_size()), &loop, dir, &ops, &o);
	o.l = l;
	assert_int_equal(maildir_create(dir, 7, &f), 0);
	f.msgno = 1;
	/* 48 chunks of 64 KiB, each filled with its index: 3 MiB queued. */
	for (int i = 0; i < 48; i++) {
		memset(chunk, 'A' + i % 26, sizeof(chunk));
		lane_write(l, &f, chunk, sizeof(chunk));
	}
	assert_int_equal(o.pauses, 1);
	assert_true(o.max_bytes_paused > LANE_HIGH);
	assert_false(lane_idle(l));
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_true(lane_idle(l));
	assert_int_equal(o.resumes, 1);
	assert_int_equal(lane_bytes(l), 0);
	assert_int_equal(lane_done_seq(l), lane_enq_seq(l));
	assert_int_equal(lane_failed_msgno(l), 0);
	assert_int_equal(o.err, 0);
	assert_true(o.drains >= 1);

	snprintf(path, sizeof(path), "/proc/self/fd/%d", f.fd);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 48 * 64 * 1024);
	back = malloc(st.st_size);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	assert_int_equal(fread(back, 1, st.st_size, fp), (size_t)st.st_size);
	fclose(fp);
	for (int i = 0; i < 48; i++)
		assert_int_equal(back[(size_t)i * sizeof(chunk)], 'A' + i % 26);
	free(back);

	/* A removal queued after writes runs after them. */
	lane_write(l, &f, "tail", 4);
	lane_discard(l, &f);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_false(in_tmp(f.base));
	assert_int_equal(uv_loop_close(&loop), 0);
	free(l);
}

static void
test_failed_write_names_its_message(void **state)
{
	uv_loop_t loop;
	struct lane *l;
	struct owner o = { 0 };
	struct maildir_file a, b;

	(void)state;
	uv_loop_init(&loop);
	l = lane_init(malloc(lane_size()), &loop, dir, &ops, &o);
	o.l = l;
	assert_int_equal(maildir_create(dir, 8, &a), 0);
	assert_int_equal(maildir_create(dir, 8, &b), 0);
	a.msgno = 1;
	b.msgno = 2;
	/* The second file's descriptor is read-only: its write fails. */
	{
		char path[700];
		int ro;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", b.fd);
		ro = open(path, O_RDONLY);
		assert_true(ro >= 0);
		assert_int_equal(dup2(ro, b.fd), b.fd);
		close(ro);
	}
	lane_write(l, &a, "first\n", 6);
	lane_write(l, &b, "second\n", 7);
	lane_write(l, &a, "more\n", 5);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(lane_failed_msgno(l), 2);
	assert_int_equal(o.err, -EBADF);
	assert_int_equal(o.pauses, 0);
	lane_reset(l);
	assert_int_equal(lane_failed_msgno(l), 0);
	lane_discard(l, &a);
	lane_discard(l, &b);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_false(in_tmp(a.base));
	assert_false(in_tmp(b.base));
	assert_int_equal(uv_loop_close(&loop), 0);
	free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writes_land_in_order_and_backpressure_holds),
		cmocka_unit_test(test_failed_write_names_its_message),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
