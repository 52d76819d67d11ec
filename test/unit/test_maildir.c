/* Unit tests for Maildir delivery: names, CRLF handling, commit, cleanup. */
#include <dirent.h>
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

#include "idlefetch/maildir.h"

static char root[] = "/tmp/idlefetch-maildir-test-XXXXXX";
static char dir[512];

static int
count(const char *sub, char *first, size_t cap)
{
	char path[600];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n++ == 0 && first)
			snprintf(first, cap, "%s", de->d_name);
	}
	closedir(d);
	return n;
}

static void
read_file(const char *sub, const char *name, char *buf, size_t cap)
{
	char path[900];
	FILE *fp;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	n = fread(buf, 1, cap - 1, fp);
	buf[n] = '\0';
	fclose(fp);
}

static int
setup(void **state)
{
	static int n;

	snprintf(dir, sizeof(dir), "%s/case%d/Maildir/.Sub", root, ++n);
	return maildir_prepare(dir);
}

static void
test_prepare_creates_tmp_new_cur_and_parents(void **state)
{
	struct stat st;
	char path[600];

	snprintf(path, sizeof(path), "%s/cur", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(maildir_prepare(dir), 0); /* idempotent */
}

static void
test_crlf_becomes_lf_across_chunks(void **state)
{
	struct maildir_file f;
	struct maildir_writer w = { 0 };
	const char *msg = "Subject: x\r\n\r\nline\r\nbare\rcr\r\nend\r";
	char name[256], buf[256];

	assert_int_equal(maildir_create(dir, 0xabcdef01, &f), 0);
	/* Feed one byte at a time: every CR/LF pair is split somewhere. */
	for (size_t i = 0; i < strlen(msg); i++)
		assert_int_equal(maildir_write(&f, &w, msg + i, 1), 0);
	assert_int_equal(maildir_flush(&f, &w), 0);
	assert_int_equal(count("tmp", name, sizeof(name)), 1);
	assert_non_null(strstr(name, "Xabcdef01."));
	assert_int_equal(count("new", NULL, 0), 0);
	assert_int_equal(maildir_commit(dir, &f, 1234, 56), 0);
	assert_int_equal(maildir_sync_new(dir), 0);
	assert_int_equal(count("tmp", NULL, 0), 0);
	assert_int_equal(count("new", name, sizeof(name)), 1);
	assert_non_null(strstr(name, "Xabcdef01V1234U56."));
	read_file("new", name, buf, sizeof(buf));
	assert_string_equal(buf, "Subject: x\n\nline\nbare\rcr\nend\r");
	assert_int_equal(f.bytes, strlen(buf));
}

static void
test_large_message_is_written_in_chunks(void **state)
{
	struct maildir_file f;
	struct maildir_writer w = { 0 };
	char chunk[1000], name[256];
	struct stat st;
	char path[900];

	memset(chunk, 'a', sizeof(chunk));
	chunk[998] = '\r';
	chunk[999] = '\n';
	assert_int_equal(maildir_create(dir, 1, &f), 0);
	for (int i = 0; i < 3000; i++)
		assert_int_equal(maildir_write(&f, &w, chunk, sizeof(chunk)),
		    0);
	assert_int_equal(maildir_flush(&f, &w), 0);
	assert_int_equal(maildir_commit(dir, &f, 1, 1), 0);
	assert_int_equal(count("new", name, sizeof(name)), 1);
	snprintf(path, sizeof(path), "%s/new/%s", dir, name);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 3000 * 999);
}

static void
test_scan_finds_the_highest_delivered_uid_for_tag_and_uidvalidity(void **state)
{
	struct maildir_file f;
	struct maildir_writer w = { 0 };
	uint32_t max;
	char from[900], to[900], name[256];

	for (uint32_t uid = 5; uid <= 7; uid++) {
		assert_int_equal(maildir_create(dir, 42, &f), 0);
		assert_int_equal(maildir_flush(&f, &w), 0);
		assert_int_equal(maildir_commit(dir, &f, 100, uid), 0);
	}
	/* Another folder's tag and another UIDVALIDITY do not count. */
	assert_int_equal(maildir_create(dir, 43, &f), 0);
	assert_int_equal(maildir_commit(dir, &f, 100, 99), 0);
	assert_int_equal(maildir_create(dir, 42, &f), 0);
	assert_int_equal(maildir_commit(dir, &f, 101, 98), 0);
	/* A message a mail reader moved to cur/ with flags still counts. */
	assert_int_equal(maildir_create(dir, 42, &f), 0);
	assert_int_equal(maildir_commit(dir, &f, 100, 9), 0);
	for (int i = 0; count("new", name, sizeof(name)) > 0 && i < 10; i++) {
		snprintf(from, sizeof(from), "%s/new/%s", dir, name);
		snprintf(to, sizeof(to), "%s/cur/%s:2,S", dir, name);
		assert_int_equal(rename(from, to), 0);
	}
	assert_int_equal(maildir_scan(dir, 42, 100, &max), 0);
	assert_int_equal(max, 9);
	assert_int_equal(maildir_scan(dir, 42, 101, &max), 0);
	assert_int_equal(max, 98);
	assert_int_equal(maildir_scan(dir, 44, 100, &max), 0);
	assert_int_equal(max, 0);
}

/*
 * On 32-bit targets (armhf) the build must use 64-bit off_t, ino_t and
 * time_t: without them readdir() fails with EOVERFLOW on ext4, XFS, btrfs
 * or NFS, and a scan that stops early lets a restart deliver twice.
 */
static void
test_build_has_64_bit_offsets_inodes_and_time(void **state)
{
	char name[80];

	assert_int_equal(sizeof(off_t), 8);
	assert_int_equal(sizeof(ino_t), 8);
	assert_int_equal(sizeof(time_t), 8);
	/* 2100-01-01: a file name made after 2038 does not wrap. */
	maildir_base_name(name, sizeof(name), INT64_C(4102444800), 7, 12, 3,
	    0xab);
	assert_string_equal(name, "4102444800.M000007P12Q3X000000ab");
}

static void
test_clean_tmp_removes_only_own_leftovers(void **state)
{
	struct maildir_file a, b;
	unsigned removed;
	char path[600];
	FILE *fp;

	assert_int_equal(maildir_create(dir, 7, &a), 0);
	assert_int_equal(maildir_create(dir, 8, &b), 0);
	close(a.fd);
	close(b.fd);
	snprintf(path, sizeof(path), "%s/tmp/12345.other-mda.host", dir);
	fp = fopen(path, "w");
	fclose(fp);
	assert_int_equal(maildir_clean_tmp(dir, 7, &removed), 0);
	assert_int_equal(removed, 1);
	assert_int_equal(count("tmp", NULL, 0), 2);
}

static void
test_discard_removes_the_tmp_file(void **state)
{
	struct maildir_file f;
	struct maildir_writer w = { 0 };

	assert_int_equal(maildir_create(dir, 9, &f), 0);
	assert_int_equal(maildir_write(&f, &w, "abc", 3), 0);
	maildir_discard(dir, &f);
	assert_int_equal(count("tmp", NULL, 0), 0);
	assert_int_equal(count("new", NULL, 0), 0);
}

static void
test_batch_is_synced_at_once_and_committed(void **state)
{
	struct maildir_file f[MAILDIR_SYNCFS_MIN];
	struct maildir_writer w = { 0 };

	for (size_t i = 0; i < MAILDIR_SYNCFS_MIN; i++) {
		assert_int_equal(maildir_create(dir, 5, &f[i]), 0);
		assert_int_equal(maildir_write(&f[i], &w, "a\r\n", 3), 0);
		assert_int_equal(maildir_flush(&f[i], &w), 0);
		assert_false(f[i].synced);
	}
	assert_int_equal(maildir_sync_files(f, 1), 0);
	assert_false(f[0].synced); /* one file: fsync at commit instead */
	assert_int_equal(maildir_sync_files(f, MAILDIR_SYNCFS_MIN), 0);
	for (size_t i = 0; i < MAILDIR_SYNCFS_MIN; i++) {
		assert_true(f[i].synced);
		assert_int_equal(maildir_commit(dir, &f[i], 1, (uint32_t)i + 1),
		    0);
	}
	assert_int_equal(count("new", NULL, 0), MAILDIR_SYNCFS_MIN);
	assert_int_equal(count("tmp", NULL, 0), 0);
}

static void
test_tags_differ_per_account_and_folder(void **state)
{
	assert_int_not_equal(maildir_tag("a", "INBOX"),
	    maildir_tag("b", "INBOX"));
	assert_int_not_equal(maildir_tag("a", "INBOX"),
	    maildir_tag("a", "Sent"));
	assert_int_not_equal(maildir_tag("ab", "c"), maildir_tag("a", "bc"));
	assert_int_equal(maildir_tag("a", "INBOX"), maildir_tag("a", "INBOX"));
}

static void
test_prepare_fails_where_no_directory_can_be(void **state)
{
	struct maildir_file f;

	assert_true(maildir_prepare("/proc/idlefetch-test/Maildir") < 0);
	assert_true(maildir_create("/nonexistent/Maildir", 1, &f) < 0);
}

struct collect {
	char buf[200000];
	size_t len;
	unsigned calls;
};

static int
collect_sink(void *ud, const char *p, size_t n)
{
	struct collect *c = ud;

	assert_true(c->len + n <= sizeof(c->buf));
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	c->calls++;
	return 0;
}

/*
 * maildir_feed is the loop the session streams message bodies through
 * (into its lane): CRLF becomes LF across any chunking, a full buffer is
 * handed on whole, and nothing is lost at the end.
 */
static void
test_feed_hands_on_full_buffers_and_converts_across_chunks(void **state)
{
	static struct collect c;
	struct maildir_writer w = { 0 };
	char in[100000];
	size_t lf = 0;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (i % 10 == 8) ? '\r' : (i % 10 == 9) ? '\n' : 'a';
	for (size_t i = 0; i < sizeof(in); i++)
		lf += in[i] == '\n';
	/* Chunks of 7 bytes: every CRLF pair is split somewhere. */
	for (size_t i = 0; i < sizeof(in); i += 7)
		assert_int_equal(maildir_feed(&w, in + i,
				     sizeof(in) - i < 7 ? sizeof(in) - i : 7,
				     collect_sink, &c),
		    0);
	maildir_convert_end(&w);
	assert_int_equal(collect_sink(&c, w.buf, w.len), 0);
	assert_int_equal(c.len, sizeof(in) - lf);
	assert_null(memchr(c.buf, '\r', c.len));
	assert_true(c.calls >= 3); /* 90,000 bytes through a 32 KiB buffer */
}

/*
 * A tmp/ that is a symlink would have message files written wherever it
 * points; a Maildir other users can write could get one planted.
 */
static void
test_symlinked_tmp_or_shared_maildir_is_refused(void **state)
{
	char tmp[600], elsewhere[600];

	snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
	snprintf(elsewhere, sizeof(elsewhere), "%s/../elsewhere", dir);
	assert_int_equal(mkdir(elsewhere, 0700), 0);
	assert_int_equal(rmdir(tmp), 0);
	assert_int_equal(symlink(elsewhere, tmp), 0);
	assert_int_equal(maildir_prepare(dir), -ELOOP);
	assert_int_equal(unlink(tmp), 0);
	assert_int_equal(maildir_prepare(dir), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(maildir_prepare(dir), -EPERM);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(maildir_prepare(dir), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_prepare_creates_tmp_new_cur_and_parents,
		    setup),
		cmocka_unit_test_setup(test_crlf_becomes_lf_across_chunks,
		    setup),
		cmocka_unit_test_setup(test_large_message_is_written_in_chunks,
		    setup),
		cmocka_unit_test_setup(test_scan_finds_the_highest_delivered_uid_for_tag_and_uidvalidity,
		    setup),
		cmocka_unit_test_setup(test_clean_tmp_removes_only_own_leftovers,
		    setup),
		cmocka_unit_test_setup(test_discard_removes_the_tmp_file,
		    setup),
		cmocka_unit_test_setup(test_batch_is_synced_at_once_and_committed,
		    setup),
		cmocka_unit_test(test_tags_differ_per_account_and_folder),
		cmocka_unit_test(test_build_has_64_bit_offsets_inodes_and_time),
		cmocka_unit_test_setup(test_prepare_fails_where_no_directory_can_be,
		    setup),
		cmocka_unit_test_setup(test_symlinked_tmp_or_shared_maildir_is_refused,
		    setup),
		cmocka_unit_test(test_feed_hands_on_full_buffers_and_converts_across_chunks),
	};
	char cmd[600];
	int r;

	if (mkdtemp(root) == NULL)
		return 1;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		return 1;
	return r;
}
