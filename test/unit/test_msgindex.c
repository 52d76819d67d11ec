/*
 * Unit tests for msgindex: a recovery matches the server's listing against
 * the index read as a stream (and the Maildir's files it lacks) by count,
 * and keeps only what matched; a compaction keeps the lines of the UIDs
 * the server still holds; neither holds the index in memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <dirent.h>

#include "idlefetch/header.h"
#include "idlefetch/maildir.h"
#include "idlefetch/msgindex.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static char root[] = "/tmp/idlefetch-msgindex-test-XXXXXX";
static char dir[256], path[300];

static const char *msg_a = "Message-ID: <a@x>\nSubject: a\n\nbody a\n";
static const char *msg_b = "Message-ID: <b@x>\nSubject: b\n\nbody b\n";
static const char *msg_c = "Message-ID: <c@x>\nSubject: c\n\nbody c\n";

/* Delivers text (LF line ends) as UID uid of tag 0x77; fills *e. */
static void
deliver(const char *text, uint32_t uidvalidity, uint32_t uid,
    struct msgindex_ent *e)
{
	struct maildir_file f;
	struct header_info h;

	assert_int_equal(maildir_create(dir, 0x77, &f), 0);
	assert_int_equal(maildir_append(&f, text, strlen(text)), 0);
	assert_int_equal(maildir_commit(dir, &f, uidvalidity, uid), 0);
	(void)header_parse(text, strlen(text), &h);
	memset(e, 0, sizeof(*e));
	e->uidvalidity = uidvalidity;
	e->uid = uid;
	e->key = header_key(&h);
	/* The server's size: each LF was CRLF there. */
	e->size = (uint32_t)strlen(text);
	for (const char *p = text; *p; p++)
		e->size += *p == '\n';
	e->file = strdup(f.base);
}

static void
forget(struct msgindex_ent *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free((char *)e[i].file);
}

/* The index's entry lines, and whether its first line is a mark. */
static int
lines(int *marked)
{
	FILE *fp = fopen(path, "r");
	char line[256];
	int n = 0;

	*marked = 0;
	if (fp == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (n == 0 && *marked == 0 &&
		    strncmp(line, "# complete ", 11) == 0)
			*marked = 1;
		else
			n++;
	}
	fclose(fp);
	return n;
}

/* Whether the index has a line "V U ..." for this UID. */
static int
has_line(uint32_t uidvalidity, uint32_t uid)
{
	FILE *fp = fopen(path, "r");
	char line[256], want[64];
	int found = 0;

	snprintf(want, sizeof(want), "%u %u ", uidvalidity, uid);
	while (fp != NULL && fgets(line, sizeof(line), fp) != NULL)
		found += strncmp(line, want, strlen(want)) == 0;
	if (fp != NULL)
		fclose(fp);
	return found;
}

static const struct msgindex_srv *
srv(const struct msgindex_set *m, uint32_t uid)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].uid == uid)
			return &m->v[i];
	fail_msg("UID %u not in the set", uid);
	return NULL;
}

static void
reset(void)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "rm -f %s %s/new/* %s/cur/*", path, dir,
	    dir);
	assert_int_equal(system(cmd), 0);
}

static void
test_recovery_matches_by_count_and_reads_what_the_index_lacks(void **state)
{
	struct msgindex_ent e[4];
	struct msgindex_set m = { 0 };
	char err[256];
	int marked;

	(void)state;
	reset();
	deliver(msg_a, 5, 1, &e[0]);
	deliver(msg_b, 5, 2, &e[1]);
	deliver(msg_b, 5, 3, &e[2]); /* the same message twice */
	deliver(msg_c, 5, 4, &e[3]);
	/* Only a's and c's lines made it to the index, a's twice. */
	assert_int_equal(msgindex_append(path, &e[0], 1), 0);
	assert_int_equal(msgindex_append(path, &e[0], 1), 0);
	assert_int_equal(msgindex_append(path, &e[3], 1), 0);
	/* The server renumbered: a twice, b three times, d unknown. */
	assert_int_equal(msgindex_set_add(&m, 20, e[0].key, e[0].size), 0);
	assert_int_equal(msgindex_set_add(&m, 21, e[0].key, e[0].size), 0);
	assert_int_equal(msgindex_set_add(&m, 22, e[1].key, e[1].size), 0);
	assert_int_equal(msgindex_set_add(&m, 23, e[1].key, e[1].size), 0);
	assert_int_equal(msgindex_set_add(&m, 24, e[1].key, e[1].size), 0);
	assert_int_equal(msgindex_set_add(&m, 25, 0x1234, 99), 0);
	/* No key: nothing to go by. */
	assert_int_equal(msgindex_set_add(&m, 26, 0, e[3].size), 0);
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 9, err,
			     sizeof(err)),
	    0);
	/* One a (its line twice is one file), two b (read from files). */
	assert_int_equal(m.matched, 3);
	assert_int_equal(m.from_maildir, 2);
	assert_int_equal(m.n, 7);
	for (size_t i = 1; i < m.n; i++)
		assert_true(m.v[i - 1].uid < m.v[i].uid); /* by UID again */
	assert_true((srv(&m, 20)->by != 0) + (srv(&m, 21)->by != 0) == 1);
	assert_true((srv(&m, 22)->by != 0) + (srv(&m, 23)->by != 0) +
		(srv(&m, 24)->by != 0) ==
	    2);
	assert_true(srv(&m, 25)->by == 0);
	assert_true(srv(&m, 26)->by == 0);
	/*
	 * The index now holds what matched, under the new numbering; c is
	 * no longer on the server: its line stays, as not on the server.
	 */
	assert_int_equal(lines(&marked), 4);
	assert_int_equal(marked, 1);
	assert_int_equal(has_line(9, 20) + has_line(9, 21), 1);
	assert_int_equal(has_line(5, 4), 0);
	assert_int_equal(has_line(5, 0), 1);

	/* Again: the same three match, all from lines now. */
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 9, err,
			     sizeof(err)),
	    0);
	assert_int_equal(m.matched, 3);
	assert_int_equal(m.from_maildir, 0);
	assert_int_equal(lines(&marked), 4);
	msgindex_set_free(&m);
	forget(e, 4);
}

/* Writes n lines of messages long gone, as years of delivery leave. */
static void
write_big_index(const char *mark, unsigned n)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	if (mark != NULL)
		fputs(mark, fp);
	for (unsigned i = 0; i < n; i++)
		fprintf(fp, "5 %u %u %016llx 1700000000.M%06uP1Q%uX00000077\n",
		    1000 + i, 2000 + i % 500,
		    (unsigned long long)0x9e3779b97f4a7c15ULL * (i + 1),
		    i % 1000000, i);
	assert_int_equal(fclose(fp), 0);
}

#ifndef UNDER_ASAN
/* Private writable memory of this process, in bytes (RLIMIT_DATA's). */
static long
vm_data(void)
{
	FILE *fp = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	while (fp != NULL && fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "VmData: %ld kB", &kb) == 1)
			break;
	if (fp != NULL)
		fclose(fp);
	return kb * 1024;
}
#endif

/*
 * 200,000 lines (over 9 MB to hold, as the index used to be) are matched
 * in a child limited to 4 MB more than it has: the index is read as a
 * stream. The limit is left out under ASan, whose allocator maps memory
 * its own way; the outcome is checked all the same.
 */
static void
test_recovery_streams_a_large_index(void **state)
{
	struct msgindex_ent e;
	int st, marked;
	pid_t pid;

	(void)state;
	reset();
	write_big_index(NULL, 200000);
	deliver(msg_a, 5, 1, &e);
	assert_int_equal(msgindex_append(path, &e, 1), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct msgindex_set m = { 0 };
		char err[256];
		int ok;

#ifndef UNDER_ASAN
		struct rlimit rl;

		rl.rlim_cur = rl.rlim_max = (rlim_t)vm_data() + 4 * 1024 * 1024;
		if (setrlimit(RLIMIT_DATA, &rl) < 0)
			_exit(3);
#endif
		(void)msgindex_set_add(&m, 7, e.key, e.size);
		(void)msgindex_set_add(&m, 8, 42, 42);
		ok = msgindex_recover(&m, path, dir, 0x77, 6, err,
			 sizeof(err)) == 0 &&
		    m.matched == 1 && srv(&m, 7)->by != 0 &&
		    srv(&m, 8)->by == 0;
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* What the server does not hold stays, as not on the server. */
	assert_int_equal(lines(&marked), 200001);
	assert_int_equal(has_line(6, 7), 1);
	assert_int_equal(has_line(5, 1000), 0);
	assert_int_equal(has_line(5, 0), 200000);
	forget(&e, 1);
}

static void
test_compaction_keeps_what_the_server_holds(void **state)
{
	struct msgindex_ent e[6];
	struct msgindex_counts c;
	uint32_t uids[] = { 6, 4, 2, 4 }; /* unsorted, one twice */
	char err[256];
	int marked;

	(void)state;
	reset();
	for (uint32_t i = 0; i < 6; i++)
		deliver(i % 2 ? msg_b : msg_a, 5, i + 1, &e[i]);
	assert_int_equal(msgindex_append(path, e, 5), 0); /* 6's is lost */
	assert_int_equal(msgindex_append(path, &e[1], 1), 0); /* 2 twice */
	/* A line of the folder's former numbering. */
	e[0].uidvalidity = 4;
	assert_int_equal(msgindex_append(path, &e[0], 1), 0);
	assert_int_equal(msgindex_compact(path, dir, 0x77, 5, uids, 4, &c, err,
			     sizeof(err)),
	    0);
	/* 2 and 4 from their lines, 6 read from its file; one line each. */
	assert_int_equal(c.kept, 3);
	assert_int_equal(c.from_maildir, 1);
	assert_int_equal(c.dropped, 5); /* 1, 3, 5, the second 2, 1 at V4 */
	assert_int_equal(lines(&marked), 3);
	assert_int_equal(marked, 1);
	assert_int_equal(has_line(5, 2), 1);
	assert_int_equal(has_line(5, 4), 1);
	assert_int_equal(has_line(5, 6), 1);
	assert_int_equal(has_line(5, 1), 0);

	/*
	 * The server deleted 2 and 4 too. The files of 1, 3 and 5 are still
	 * in the Maildir, but no line comes back for them.
	 */
	uids[0] = 6;
	assert_int_equal(msgindex_compact(path, dir, 0x77, 5, uids, 1, &c, err,
			     sizeof(err)),
	    0);
	assert_int_equal(c.kept, 1);
	assert_int_equal(c.from_maildir, 0);
	assert_int_equal(lines(&marked), 1);
	assert_int_equal(has_line(5, 6), 1);
	/* An empty folder: an empty index. */
	assert_int_equal(msgindex_compact(path, dir, 0x77, 5, uids, 0, &c, err,
			     sizeof(err)),
	    0);
	assert_int_equal(lines(&marked), 0);
	assert_int_equal(marked, 1);
	forget(e, 6);
}

/*
 * Files named over an hour before the index was last complete are not
 * read again (a compaction dropped them on purpose); newer ones are.
 */
static void
test_files_before_the_mark_are_not_read_again(void **state)
{
	struct msgindex_ent e;
	struct msgindex_set m = { 0 };
	char err[256], mark[64];
	FILE *fp;

	(void)state;
	reset();
	deliver(msg_a, 5, 1, &e);
	snprintf(mark, sizeof(mark), "# complete %lld\n",
	    (long long)time(NULL) + 2 * 3600);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(mark, fp);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(msgindex_set_add(&m, 3, e.key, e.size), 0);
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 5, err,
			     sizeof(err)),
	    0);
	assert_int_equal(m.matched, 0);
	assert_int_equal(m.from_maildir, 0);
	/* Its mark now says "complete before now": the file is read. */
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp, "# complete %lld\n", (long long)time(NULL));
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 5, err,
			     sizeof(err)),
	    0);
	assert_int_equal(m.matched, 1);
	assert_int_equal(m.from_maildir, 1);
	msgindex_set_free(&m);
	forget(&e, 1);
}

/*
 * Names e's delivered file as if it were written secs ago (its name's
 * first field is the time it was named); e->file follows.
 */
static void
age(struct msgindex_ent *e, long secs)
{
	char sub[300], from[700], to[700], file[128];
	const char *dot = strchr(e->file, '.');
	struct dirent *d;
	DIR *dp;

	snprintf(sub, sizeof(sub), "%s/new", dir);
	snprintf(file, sizeof(file), "%lld%s",
	    (long long)time(NULL) - secs, dot);
	dp = opendir(sub);
	assert_non_null(dp);
	while ((d = readdir(dp)) != NULL) {
		if (strncmp(d->d_name, e->file, strlen(e->file)) != 0)
			continue;
		snprintf(from, sizeof(from), "%s/%s", sub, d->d_name);
		snprintf(to, sizeof(to), "%s/%s%s", sub, file,
		    d->d_name + strlen(e->file));
		assert_int_equal(rename(from, to), 0);
	}
	closedir(dp);
	free((char *)e->file);
	e->file = strdup(file);
}

/*
 * A mailbox recreated empty (a new UIDVALIDITY) and then restored from a
 * backup (another): the recovery against the empty folder keeps the lines
 * it did not see, a compaction of the empty folder keeps them while their
 * files are in the Maildir, and the recovery against the restored folder
 * matches every message, so none is fetched again.
 */
static void
test_recovery_keeps_lines_of_messages_it_did_not_see(void **state)
{
	struct msgindex_ent e[2];
	struct msgindex_set m = { 0 };
	struct msgindex_counts c;
	char err[256], cmd[700];
	int marked;

	(void)state;
	reset();
	deliver(msg_a, 100, 1, &e[0]);
	deliver(msg_b, 100, 2, &e[1]);
	age(&e[0], 7200); /* delivered two hours ago */
	age(&e[1], 7200);
	assert_int_equal(msgindex_append(path, e, 2), 0);
	/* 1: the folder is empty under UIDVALIDITY 200. */
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 200, err,
			     sizeof(err)),
	    0);
	assert_int_equal(m.matched, 0);
	assert_int_equal(lines(&marked), 2);
	assert_int_equal(has_line(100, 0), 2);
	/* A complete listing of the empty folder: the files are still here. */
	assert_int_equal(msgindex_compact(path, dir, 0x77, 200, NULL, 0, &c,
			     err, sizeof(err)),
	    0);
	assert_int_equal(c.kept, 2);
	assert_int_equal(lines(&marked), 2);
	/* ...and they are not what makes a compaction due. */
	assert_true(msgindex_bytes(path) < 60);
	/* 2: restored, UIDVALIDITY 300: both match. */
	assert_int_equal(msgindex_set_add(&m, 1, e[0].key, e[0].size), 0);
	assert_int_equal(msgindex_set_add(&m, 2, e[1].key, e[1].size), 0);
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 300, err,
			     sizeof(err)),
	    0);
	assert_int_equal(m.matched, 2);
	assert_int_equal(has_line(300, 1) + has_line(300, 2), 2);
	msgindex_set_free(&m);
	/* Gone from the server and the Maildir (b): its line goes. */
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 400, err,
			     sizeof(err)),
	    0);
	snprintf(cmd, sizeof(cmd), "rm -f %s/new/%s*", dir, e[1].file);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(msgindex_compact(path, dir, 0x77, 400, NULL, 0, &c,
			     err, sizeof(err)),
	    0);
	assert_int_equal(c.kept, 1);
	assert_int_equal(c.dropped, 1);
	assert_int_equal(lines(&marked), 1);
	forget(e, 2);
}

/*
 * The mark is the latest file name a rewrite saw, not the clock: a file
 * named hours before the rewrite ran (a board whose clock was set back)
 * whose line was lost is still read.
 */
static void
test_mark_follows_the_files_not_the_clock(void **state)
{
	struct msgindex_ent e[2];
	struct msgindex_set m = { 0 };
	char err[256];

	(void)state;
	reset();
	deliver(msg_a, 5, 1, &e[0]);
	age(&e[0], 2 * 86400);
	assert_int_equal(msgindex_append(path, &e[0], 1), 0);
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 5, err,
			     sizeof(err)),
	    0);
	/* Named five hours ago, after the last file; its line lost. */
	deliver(msg_b, 5, 2, &e[1]);
	age(&e[1], 5 * 3600);
	assert_int_equal(msgindex_set_add(&m, 2, e[1].key, e[1].size), 0);
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 5, err,
			     sizeof(err)),
	    0);
	assert_int_equal(m.from_maildir, 1);
	assert_int_equal(m.matched, 1);
	msgindex_set_free(&m);
	forget(e, 2);
}

/*
 * 100,000 copies of one message on the server and in the index match in
 * time proportional to their number, not its square.
 */
static void
test_many_copies_match_in_linear_time(void **state)
{
	const unsigned n = 100000;
	struct msgindex_set m = { 0 };
	struct timespec t0, t1;
	char err[256];
	FILE *fp;

	(void)state;
	reset();
	fp = fopen(path, "w");
	assert_non_null(fp);
	for (unsigned i = 0; i < n; i++) {
		fprintf(fp, "5 %u 99 00000000000abcde 1700000000.M%uP1Q1X00000077\n",
		    i + 1, i);
		assert_int_equal(msgindex_set_add(&m, 1000 + i, 0xabcde, 99),
		    0);
	}
	assert_int_equal(fclose(fp), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(msgindex_recover(&m, path, dir, 0x77, 6, err,
			     sizeof(err)),
	    0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(m.matched, n);
	/* Linear takes well under a second, even under ASan; n * n, minutes. */
	assert_true(t1.tv_sec - t0.tv_sec < 4);
	msgindex_set_free(&m);
}

static void
test_index_path(void **state)
{
	char *p = msgindex_path("/s/acct/INBOX.state");

	(void)state;
	assert_string_equal(p, "/s/acct/INBOX.index");
	free(p);
}

static int
setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/Maildir", root);
	snprintf(path, sizeof(path), "%s/INBOX.index", root);
	return maildir_prepare(dir);
}

static int
teardown(void **state)
{
	char cmd[600];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
		    test_recovery_matches_by_count_and_reads_what_the_index_lacks),
		cmocka_unit_test(test_recovery_streams_a_large_index),
		cmocka_unit_test(test_compaction_keeps_what_the_server_holds),
		cmocka_unit_test(test_files_before_the_mark_are_not_read_again),
		cmocka_unit_test(
		    test_recovery_keeps_lines_of_messages_it_did_not_see),
		cmocka_unit_test(test_mark_follows_the_files_not_the_clock),
		cmocka_unit_test(test_many_copies_match_in_linear_time),
		cmocka_unit_test(test_index_path),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
