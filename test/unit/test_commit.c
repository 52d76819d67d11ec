/*
 * Unit tests for commit: a real loop, threadpool, Maildir and state file.
 * PREPARE loads the state and removes unfinished files; DELIVER renames
 * what it is given into new/ in order and saves the state with the last
 * message's fingerprint; RECONCILE records UIDs found in new/ that the
 * state does not hold; COMPACT and MATCH rewrite the folder's index.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "idlefetch/commit.h"
#include "idlefetch/util.h"

static char root[] = "/tmp/idlefetch-commit-test-XXXXXX";
static char dir[512], statefile[600];
static char bound_id[STATE_ID_LEN + 1]; /* from the last PREPARE */

static int
count(const char *sub)
{
	char path[600];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void
done(struct commit_req *req, void *ud)
{
	(void)req;
	(*(int *)ud)++;
}

/* Runs one request to its callback. */
static void
run(struct commit_req *req)
{
	uv_loop_t loop;
	int calls = 0;

	uv_loop_init(&loop);
	req->maildir = dir;
	req->state_path = statefile;
	req->root = dir;
	req->account = "a";
	req->tag = 0x1234;
	if (req->kind != COMMIT_PREPARE)
		memcpy(req->id, bound_id, sizeof(bound_id));
	commit_start(&loop, req, done, &calls);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(calls, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
	if (req->kind == COMMIT_PREPARE && req->result == 0)
		memcpy(bound_id, req->id, sizeof(bound_id));
}

static void
test_lost_maildir_or_state_is_refused(void **state)
{
	struct commit_req req;
	struct maildir_file f;
	char marker[600], moved[620], binding[600];
	int in_new = count("new");

	(void)state;
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_PREPARE;
	run(&req);
	assert_int_equal(req.result, 0);
	snprintf(marker, sizeof(marker), "%s/idlefetch-a.id", dir);
	snprintf(moved, sizeof(moved), "%s.away", marker);
	snprintf(binding, sizeof(binding), "%s/state/a/maildir-id", root);
	assert_int_equal(access(marker, F_OK), 0);
	assert_int_equal(access(binding, F_OK), 0);

	/* The Maildir unmounted while running: nothing is delivered. */
	assert_int_equal(rename(marker, moved), 0);
	assert_int_equal(maildir_create(dir, 0x1234, &f), 0);
	assert_int_equal(maildir_append(&f, "x\n", 2), 0);
	f.uid = 5;
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_DELIVER;
	req.uidvalidity = 7;
	req.files = &f;
	req.nfiles = 1;
	req.fps = &(struct commit_fp){ .uid = 5 };
	req.ncommit = 1;
	req.commit_uid = 5;
	run(&req);
	assert_int_equal(req.result, IDLEFETCH_ELOST);
	assert_int_equal(req.ncommit, 0);
	assert_non_null(strstr(req.err, "unmounted or replaced"));
	assert_int_equal(count("new"), in_new);
	assert_int_equal(count("tmp"), 0);

	/* ... and at the next start, before anything is made in it. */
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_PREPARE;
	run(&req);
	assert_int_equal(req.result, IDLEFETCH_ELOST);
	assert_non_null(strstr(req.err, "has lost"));

	/* Back: it goes on. */
	assert_int_equal(rename(moved, marker), 0);
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_PREPARE;
	run(&req);
	assert_int_equal(req.result, 0);

	/* The state directory lost: the Maildir's marker says so. */
	assert_int_equal(unlink(binding), 0);
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_PREPARE;
	run(&req);
	assert_int_equal(req.result, IDLEFETCH_ELOST);
	assert_non_null(strstr(req.err, "belongs to another state"));
	/* The way out it names: remove the marker to start over. */
	assert_int_equal(unlink(marker), 0);
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_PREPARE;
	run(&req);
	assert_int_equal(req.result, 0);
}

static int
setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/Maildir", root);
	snprintf(statefile, sizeof(statefile), "%s/state/a/INBOX.state", root);
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
test_prepare_deliver_reconcile(void **state)
{
	struct commit_req req;
	struct maildir_file files[3];
	struct commit_fp fps[3];
	struct state_rec st;

	(void)state;
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_PREPARE;
	run(&req);
	assert_int_equal(req.result, 0);
	assert_int_equal(req.st.last_uid, 0);
	assert_int_equal(count("new"), 0);

	/* Three received; the first two are committed, the third is not. */
	memset(files, 0, sizeof(files));
	memset(fps, 0, sizeof(fps));
	for (int i = 0; i < 3; i++) {
		assert_int_equal(maildir_create(dir, 0x1234, &files[i]), 0);
		assert_int_equal(maildir_append(&files[i], "x\n", 2), 0);
		files[i].uid = fps[i].uid = (uint32_t)(10 + i);
		fps[i].fp.size = (uint32_t)(100 + i);
		snprintf(fps[i].fp.msgid, sizeof(fps[i].fp.msgid), "<m%d@t>", i);
	}
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_DELIVER;
	req.uidvalidity = 7;
	req.files = files;
	req.nfiles = 3;
	req.fps = fps;
	req.ncommit = 2;
	req.commit_uid = 11;
	run(&req);
	assert_int_equal(req.result, 0);
	assert_int_equal(req.ncommit, 2);
	assert_int_equal(count("new"), 2);
	assert_int_equal(count("tmp"), 0); /* the third was removed */
	assert_int_equal(state_load(statefile, &st), 0);
	assert_int_equal(st.uidvalidity, 7);
	assert_int_equal(st.last_uid, 11);
	assert_int_equal(st.last.size, 101);
	assert_string_equal(st.last.msgid, "<m1@t>");

	/* A state that lost the last save: reconcile finds UID 11 again. */
	memset(&st, 0, sizeof(st));
	st.uidvalidity = 7;
	st.last_uid = 10;
	assert_int_equal(state_save(statefile, &st), 0);
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_RECONCILE;
	req.uidvalidity = 7;
	req.st = st;
	run(&req);
	assert_int_equal(req.result, 0);
	assert_int_equal(req.removed, 1);
	assert_int_equal(req.st.last_uid, 11);
	assert_int_equal(state_load(statefile, &st), 0);
	assert_int_equal(st.last_uid, 11);
}

/* A tmp/ file holding text, as the lane leaves it, with its UID. */
static void
spool(struct maildir_file *f, uint32_t uid, const char *text)
{
	assert_int_equal(maildir_create(dir, 0x1234, f), 0);
	assert_int_equal(maildir_append(f, text, strlen(text)), 0);
	f->uid = uid;
}

/*
 * An MDA target, one file at a time: the state records each answer and
 * the UID pending; a refusal is passed and kept; a deferral stops there,
 * its UID still pending; every tmp/ file is gone after.
 */
static void
test_deliver_to_a_program(void **state)
{
	static char *argv[] = { "/bin/sh", "-c",
		"m=$(cat); case $m in *refuse*) echo no >&2; exit 1;; "
		"*defer*) exit 75;; esac; printf '%s|%s\\n' \"$m\" "
		"\"$IDLEFETCH_SENDER\" >> \"$0\"",
		NULL, NULL };
	struct target t = { .kind = TARGET_MDA, .argv = argv, .timeout = 5 };
	struct commit_fp fps[4] = { { .uid = 21 }, { .uid = 22 },
		{ .uid = 23 }, { .uid = 24 } };
	struct maildir_file f[4];
	struct commit_req req;
	struct state_rec st;
	char out[600], got[256] = "";
	FILE *fp;

	(void)state;
	snprintf(out, sizeof(out), "%s/mda.out", root);
	argv[3] = out;
	spool(&f[0], 21, "Return-Path: <b@x>\n\nok one\n");
	spool(&f[1], 22, "refuse\n");
	spool(&f[2], 23, "ok two\n");
	spool(&f[3], 24, "defer\n");
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_DELIVER;
	req.target = &t;
	req.folder = "INBOX";
	req.keep_refused = true;
	req.uidvalidity = 9;
	req.files = f;
	req.nfiles = 4;
	req.fps = fps;
	req.ncommit = 4;
	run(&req);
	assert_int_equal(req.result, -EAGAIN);
	assert_non_null(strstr(req.err, "exited with status 75"));
	assert_int_equal(req.ncommit, 3);
	assert_int_equal(req.nrefused, 1);
	assert_int_equal(req.refused_uid, 22);
	assert_non_null(strstr(req.refused_why, "exited with status 1: no"));
	assert_int_equal(state_load(statefile, &st), 0);
	assert_int_equal(st.uidvalidity, 9);
	assert_int_equal(st.last_uid, 23);
	assert_int_equal(st.pending, 0); /* the program said so: not there */
	assert_int_equal(st.nrefused, 1);
	assert_int_equal(st.refused[0], 22);
	assert_int_equal(count("tmp"), 0);
	fp = fopen(out, "r");
	assert_non_null(fp);
	assert_int_equal(fread(got, 1, sizeof(got) - 1, fp) > 0, 1);
	fclose(fp);
	assert_string_equal(got, "Return-Path: <b@x>\n\nok one|b@x\nok two|\n");
}

/*
 * The folder's index on the threadpool: a delivery reports its size, a
 * compaction keeps only the UIDs the server holds, a recovery marks its
 * state, then matches its listing and keeps what matched.
 */
/* How many lines of the folder's index start with want. */
static int
index_has(const char *want)
{
	char path[600], line[256];
	FILE *fp;
	int n = 0;

	snprintf(path, sizeof(path), "%.*s.index",
	    (int)(strlen(statefile) - 6), statefile);
	fp = fopen(path, "r");
	while (fp != NULL && fgets(line, sizeof(line), fp) != NULL)
		n += strncmp(line, want, strlen(want)) == 0;
	if (fp != NULL)
		fclose(fp);
	return n;
}

static void
test_index_compacted_and_matched(void **state)
{
	struct maildir_file files[3];
	struct commit_fp fps[3];
	struct msgindex_set set = { 0 };
	struct commit_req req;
	struct state_rec st;
	uint32_t *uids = malloc(sizeof(*uids));
	uint64_t before;

	(void)state;
	memset(fps, 0, sizeof(fps));
	for (int i = 0; i < 3; i++) {
		spool(&files[i], (uint32_t)(30 + i), "Subject: s\n\nbody\n");
		fps[i].uid = files[i].uid;
		fps[i].fp.size = 17;
		fps[i].key = 0xabc0u + (uint64_t)i;
	}
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_DELIVER;
	req.uidvalidity = 8;
	req.files = files;
	req.nfiles = req.ncommit = 3;
	req.fps = fps;
	req.commit_uid = 32;
	run(&req);
	assert_int_equal(req.result, 0);
	before = req.index_bytes;
	assert_true(before > 3 * 60);

	/* The server holds only UID 31 now. */
	uids[0] = 31;
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_COMPACT;
	req.uidvalidity = 8;
	req.uids = uids;
	req.nuids = 1;
	run(&req);
	assert_int_equal(req.result, 0);
	/* Lines of earlier tests' UIDVALIDITY stay: their files are here. */
	assert_true(req.counts.dropped >= 2);
	assert_int_equal(index_has("8 30 "), 0);
	assert_int_equal(index_has("8 31 "), 1);
	assert_int_equal(index_has("8 32 "), 0);
	assert_true(req.index_bytes > 0 && req.index_bytes < before / 2);
	free(uids);

	/* Renumbered: the recovery's state first, then the match. */
	assert_int_equal(state_load(statefile, &st), 0);
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_RECOVER;
	req.uidvalidity = 9;
	req.st = st;
	run(&req);
	assert_int_equal(req.result, 0);
	assert_int_equal(state_load(statefile, &st), 0);
	assert_int_equal(st.recovering, 1);
	assert_int_equal(msgindex_set_add(&set, 5, 0xabc1u, 17), 0);
	assert_int_equal(msgindex_set_add(&set, 6, 0xabc2u, 17), 0);
	memset(&req, 0, sizeof(req));
	req.kind = COMMIT_MATCH;
	req.uidvalidity = 9;
	req.set = &set;
	run(&req);
	assert_int_equal(req.result, 0);
	assert_int_equal(set.matched, 1);
	assert_true(set.v[0].uid == 5 && set.v[0].by != 0);
	assert_true(set.v[1].uid == 6 && set.v[1].by == 0);
	msgindex_set_free(&set);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prepare_deliver_reconcile),
		cmocka_unit_test(test_lost_maildir_or_state_is_refused),
		cmocka_unit_test(test_deliver_to_a_program),
		cmocka_unit_test(test_index_compacted_and_matched),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
