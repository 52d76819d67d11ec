/* Unit tests for the state store: round trip, atomic replace, corruption. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "idlefetch/state.h"

static char root[] = "/tmp/idlefetch-state-test-XXXXXX";

static void
test_path_encodes_the_folder(void **state)
{
	char *p = state_path("/var/lib/idlefetch", "work", "Lists/dev");

	assert_string_equal(p, "/var/lib/idlefetch/work/Lists%2Fdev.state");
	free(p);
}

static void
test_missing_file_is_enoent_and_zero(void **state)
{
	struct state_rec st = { .uidvalidity = 5, .last_uid = 6, .last = { 0 } };
	char *p = state_path(root, "none", "INBOX");

	assert_int_equal(state_load(p, &st), -ENOENT);
	assert_int_equal(st.uidvalidity, 0);
	assert_int_equal(st.last_uid, 0);
	free(p);
}

static void
test_save_then_load_round_trips(void **state)
{
	struct state_rec in = { .uidvalidity = 4294967295u, .last_uid = 123456, .last = { 0 } }, out;
	char *p = state_path(root, "acct", "INBOX");
	char tmp[600];

	assert_int_equal(state_prepare(p), 0);
	assert_int_equal(state_save(p, &in), 0);
	assert_int_equal(state_load(p, &out), 0);
	assert_int_equal(out.uidvalidity, in.uidvalidity);
	assert_int_equal(out.last_uid, in.last_uid);
	in.last_uid = 123457;
	assert_int_equal(state_save(p, &in), 0);
	assert_int_equal(state_load(p, &out), 0);
	assert_int_equal(out.last_uid, 123457);
	snprintf(tmp, sizeof(tmp), "%s.tmp", p);
	assert_int_equal(access(tmp, F_OK), -1); /* no temp file left */
	free(p);
}

/*
 * The fingerprint of the last delivered message round-trips; a file
 * written before it existed (three lines) still loads, without one.
 */
static void
test_fingerprint_round_trips_and_old_files_load(void **state)
{
	struct state_rec in = { .uidvalidity = 7, .last_uid = 42, .last = { 5123, "<a.b@example.org>" } }, out;
	char *p = state_path(root, "acct", "Fp");
	FILE *fp;

	assert_int_equal(state_prepare(p), 0);
	assert_int_equal(state_save(p, &in), 0);
	assert_int_equal(state_load(p, &out), 0);
	assert_int_equal(out.last.size, 5123);
	assert_string_equal(out.last.msgid, "<a.b@example.org>");
	assert_int_equal(out.keep_to, 0);
	assert_int_equal(out.recovering, 0);
	/* A recovery's marks round-trip too. */
	in.keep_to = 40;
	in.recovering = 1;
	in.recovered_at = 1795683600123456ULL;
	assert_int_equal(state_save(p, &in), 0);
	assert_int_equal(state_load(p, &out), 0);
	assert_int_equal(out.keep_to, 40);
	assert_int_equal(out.recovering, 1);
	assert_true(out.recovered_at == 1795683600123456ULL);
	fp = fopen(p, "w");
	fputs("idlefetch-state 1\nuidvalidity 7\nlast_uid 42\n", fp);
	fclose(fp);
	assert_int_equal(state_load(p, &out), 0);
	assert_int_equal(out.last_uid, 42);
	assert_int_equal(out.last.size, 0);
	assert_string_equal(out.last.msgid, "");
	/* An unknown or broken line is refused, not guessed at. */
	fp = fopen(p, "w");
	fputs("idlefetch-state 1\nuidvalidity 7\nlast_uid 42\nlast_sizes 1\n",
	    fp);
	fclose(fp);
	assert_int_equal(state_load(p, &out), -EINVAL);
	fp = fopen(p, "w");
	fputs("idlefetch-state 1\nuidvalidity 7\nlast_uid 42\nlast_size 5",
	    fp);
	fclose(fp);
	assert_int_equal(state_load(p, &out), -EINVAL);
	free(p);
}

/* An MDA or LMTP target's lines: the UID pending, the refused ones. */
static void
test_pending_and_refused_round_trip(void **state)
{
	struct state_rec in = { .uidvalidity = 3, .last_uid = 40,
		.pending = 41, .nrefused = STATE_REFUSED_MAX },
			 out;
	char *file = state_path(root, "acct", "Targeted");

	(void)state;
	assert_int_equal(state_prepare(file), 0);
	for (uint32_t i = 0; i < STATE_REFUSED_MAX; i++)
		in.refused[i] = 4000000000u + i;
	assert_int_equal(state_save(file, &in), 0);
	assert_int_equal(state_load(file, &out), 0);
	assert_int_equal(out.pending, 41);
	assert_int_equal(out.nrefused, STATE_REFUSED_MAX);
	assert_memory_equal(out.refused, in.refused, sizeof(in.refused));
	assert_true(state_refused(&out, 4000000000u + STATE_REFUSED_MAX - 1));
	assert_false(state_refused(&out, 40));
	in.pending = 0;
	in.nrefused = 0;
	assert_int_equal(state_save(file, &in), 0);
	assert_int_equal(state_load(file, &out), 0);
	assert_int_equal(out.pending, 0);
	assert_int_equal(out.nrefused, 0);
	free(file);
}

static void
test_corrupt_files_are_refused(void **state)
{
	static const char *bad[] = {
		"",
		"garbage",
		"idlefetch-state 2\nuidvalidity 1\nlast_uid 2\n",
		"idlefetch-state 1\nuidvalidity 1\n",
		"idlefetch-state 1\nuidvalidity 99999999999\nlast_uid 2\n",
		"idlefetch-state 1\nuidvalidity x\nlast_uid 2\n",
		/* One past 32 bits, and a sign: where long has 32 bits, %lu
		 * turned these into 4294967295 and 4294967295. */
		"idlefetch-state 1\nuidvalidity 4294967296\nlast_uid 2\n",
		"idlefetch-state 1\nuidvalidity 1\nlast_uid -1\n",
		"idlefetch-state 1\nuidvalidity 1\nlast_uid "
		"18446744073709551617\n",
	};
	struct state_rec st;
	char *p = state_path(root, "acct", "Bad");

	assert_int_equal(state_prepare(p), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *fp = fopen(p, "w");

		fputs(bad[i], fp);
		fclose(fp);
		assert_int_equal(state_load(p, &st), -EINVAL);
	}
	free(p);
}

static void
test_largest_uids_load(void **state)
{
	struct state_rec st = { .uidvalidity = UINT32_MAX, .last_uid = UINT32_MAX, .last = { 0 } }, got;
	char *p = state_path(root, "acct", "Max");

	assert_int_equal(state_prepare(p), 0);
	assert_int_equal(state_save(p, &st), 0);
	assert_int_equal(state_load(p, &got), 0);
	assert_true(got.uidvalidity == UINT32_MAX && got.last_uid == UINT32_MAX);
	free(p);
}

/*
 * Symlinks planted in the state directory are never followed: the
 * temporary state file and the lock would overwrite or truncate their
 * targets. A directory other users can write is refused.
 */
static void
test_symlinks_in_state_dir_are_not_followed(void **state)
{
	struct state_rec st = { .uidvalidity = 3, .last_uid = 9, .last = { 0 } }, got;
	char *p = state_path(root, "links", "INBOX");
	char tmp[600], target[600], lock[600], dir[600];
	long holder;
	FILE *fp;

	assert_int_equal(state_prepare(p), 0);
	snprintf(target, sizeof(target), "%s/victim", root);
	fp = fopen(target, "w");
	fputs("precious\n", fp);
	fclose(fp);
	snprintf(tmp, sizeof(tmp), "%s.tmp", p);
	assert_int_equal(symlink(target, tmp), 0);
	assert_int_equal(state_save(p, &st), 0);
	assert_int_equal(state_load(p, &got), 0);
	assert_int_equal(got.last_uid, 9);
	fp = fopen(target, "r");
	assert_non_null(fgets(tmp, sizeof(tmp), fp));
	fclose(fp);
	assert_string_equal(tmp, "precious\n");

	/* The holder's record replaces a planted symlink, never its target. */
	snprintf(lock, sizeof(lock), "%s/links/lock", root);
	assert_int_equal(symlink(target, lock), 0);
	assert_int_equal(state_lock(root, "links", "daemon", &holder), 0);
	state_unlock(root, "links");
	fp = fopen(target, "r");
	assert_non_null(fgets(tmp, sizeof(tmp), fp));
	fclose(fp);
	assert_string_equal(tmp, "precious\n");
	/* Nor is a symlink planted as the shared lock file opened. */
	snprintf(dir, sizeof(dir), "%s/planted", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(lock, sizeof(lock), "%s/planted/%s.%x", root, STATE_LOCK_FILE,
	    (unsigned)(state_lock_offset("x") >> 58));
	assert_int_equal(symlink(target, lock), 0);
	assert_int_equal(state_lock(dir, "x", "daemon", &holder), -ELOOP);
	assert_int_equal(state_lock_holder(dir, "x", &holder, NULL, 0),
	    -ELOOP);

	snprintf(dir, sizeof(dir), "%s/links", root);
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(state_prepare(p), -EPERM);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(state_prepare(p), 0);
	free(p);
}

static void
test_save_into_a_missing_directory_fails(void **state)
{
	struct state_rec st = { .uidvalidity = 1, .last_uid = 1, .last = { 0 } };

	assert_true(state_save("/nonexistent/dir/x.state", &st) < 0);
}

static void
test_second_fetcher_of_an_account_is_refused(void **state)
{
	char mode[16];
	long pid;

	assert_int_equal(state_lock_holder(root, "lockme", &pid, mode,
			     sizeof(mode)),
	    0);
	assert_int_equal(state_lock(root, "lockme", "daemon", &pid), 0);
	/* A second lock of the account, even in this process, is turned away. */
	assert_int_equal(state_lock(root, "lockme", "once", &pid),
	    -EWOULDBLOCK);
	assert_int_equal(pid, (long)getpid());
	assert_int_equal(state_lock_holder(root, "lockme", &pid, mode,
			     sizeof(mode)),
	    1);
	assert_int_equal(pid, (long)getpid());
	assert_string_equal(mode, "daemon");
	/* Asking who holds it does not get in the way of a new fetcher. */
	state_unlock(root, "lockme");
	assert_int_equal(state_lock(root, "lockme", "once", &pid), 0);
	state_unlock(root, "lockme");
	assert_int_equal(state_lock_holder(root, "lockme", &pid, mode,
			     sizeof(mode)),
	    0);
}

/* A child that takes accounts, reports each result on a pipe, and waits. */
struct child {
	pid_t pid;
	int cmd[2], res[2];
};

static void
child_serve(struct child *c)
{
	char buf[64];
	long holder;
	ssize_t n;

	while ((n = read(c->cmd[0], buf, sizeof(buf) - 1)) > 0) {
		int r = 0;

		buf[n] = '\0';
		if (buf[0] == '+')
			r = state_lock(root, buf + 1, "daemon", &holder);
		else
			state_unlock(root, buf + 1);
		if (write(c->res[1], &r, sizeof(r)) != sizeof(r))
			_exit(1);
	}
	_exit(0);
}

static void
child_start(struct child *c)
{
	assert_int_equal(pipe(c->cmd), 0);
	assert_int_equal(pipe(c->res), 0);
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0)
		child_serve(c);
}

/* "+NAME" locks, "-NAME" unlocks; the child's result. */
static int
child_do(struct child *c, const char *what)
{
	int r;

	assert_int_equal(write(c->cmd[1], what, strlen(what)),
	    (ssize_t)strlen(what));
	assert_int_equal(read(c->res[0], &r, sizeof(r)), sizeof(r));
	return r;
}

static void
child_kill(struct child *c)
{
	int status;

	kill(c->pid, SIGKILL);
	assert_int_equal(waitpid(c->pid, &status, 0), c->pid);
	close(c->cmd[0]);
	close(c->cmd[1]);
	close(c->res[0]);
	close(c->res[1]);
}

/*
 * Two processes (two replicas on one state volume) share the lock file:
 * the same account excludes, other accounts do not, and letting go of
 * one account leaves the others of that process locked.
 */
static void
test_two_processes_exclude_on_one_account_only(void **state)
{
	struct child c;
	long pid;

	child_start(&c);
	assert_int_equal(child_do(&c, "+shared-a"), 0);
	assert_int_equal(child_do(&c, "+shared-c"), 0);
	assert_int_equal(state_lock(root, "shared-a", "once", &pid),
	    -EWOULDBLOCK);
	assert_int_equal(pid, (long)c.pid);
	assert_int_equal(state_lock(root, "shared-b", "daemon", &pid), 0);
	assert_int_equal(child_do(&c, "+shared-b"), -EWOULDBLOCK);
	assert_int_equal(child_do(&c, "-shared-a"), 0);
	assert_int_equal(state_lock(root, "shared-a", "daemon", &pid), 0);
	assert_int_equal(state_lock(root, "shared-c", "daemon", &pid),
	    -EWOULDBLOCK);
	state_unlock(root, "shared-b");
	assert_int_equal(child_do(&c, "+shared-b"), 0);
	child_kill(&c);
	state_unlock(root, "shared-a");
}

static int
count_fds(void)
{
	char path[64];
	int n = 0;

	for (int fd = 0; fd < 4096; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n += access(path, F_OK) == 0;
	}
	return n;
}

/* Ten thousand accounts would need ten thousand more descriptors. */
static void
test_locked_accounts_hold_no_descriptor_each(void **state)
{
	char name[32];
	struct child c;
	long pid;
	int before;

	assert_int_equal(state_lock(root, "fd-first", "daemon", &pid), 0);
	before = count_fds();
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "fd-%d", i);
		assert_int_equal(state_lock(root, name, "daemon", &pid), 0);
	}
	/* The lock files, each opened twice, and nothing more. */
	assert_true(count_fds() <= before + 2 * STATE_LOCK_FILES);
	before = count_fds();
	for (int i = 1000; i < 2000; i++) {
		snprintf(name, sizeof(name), "fd-%d", i);
		assert_int_equal(state_lock(root, name, "daemon", &pid), 0);
	}
	assert_int_equal(count_fds(), before);
	child_start(&c);
	assert_int_equal(child_do(&c, "+fd-999"), -EWOULDBLOCK);
	for (int i = 0; i < 2000; i++) {
		snprintf(name, sizeof(name), "fd-%d", i);
		state_unlock(root, name);
	}
	assert_int_equal(child_do(&c, "+fd-999"), 0);
	assert_int_equal(child_do(&c, "+fd-first"), -EWOULDBLOCK);
	child_kill(&c);
	state_unlock(root, "fd-first");
}

/* The offset is part of the on-disk format: pinned to two known names. */
static void
test_lock_offset_is_the_documented_hash(void **state)
{
	assert_true(state_lock_offset("user0") == 0x201a1a9c235e3a37ULL);
	assert_true(state_lock_offset("work") == 0x0a413a65fc2884b5ULL);
	assert_true(state_lock_offset("user0") < (1ULL << 62));
}

/*
 * A process of an earlier version locks STATE_DIR/ACCOUNT/lock, a regular
 * file, whole: while it runs the account is not taken, and once taken the
 * file is a symlink that such a process cannot open any more.
 */
static void
test_lock_of_an_earlier_version_is_honoured(void **state)
{
	struct flock whole = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char dir[600], path[600], buf[64], mode[16], want[64];
	int p[2], status, fd;
	struct stat st;
	pid_t child;
	ssize_t n;
	long pid;
	char c;

	snprintf(dir, sizeof(dir), "%s/older", root);
	snprintf(path, sizeof(path), "%s/older/lock", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(pipe(p), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* What the earlier version does, call for call. */
		fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
		    0644);
		if (fd < 0 || fcntl(fd, F_OFD_SETLK, &whole) < 0)
			_exit(1);
		n = snprintf(buf, sizeof(buf), "%ld daemon\n", (long)getpid());
		if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n ||
		    write(p[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	assert_int_equal(read(p[0], &c, 1), 1);
	assert_int_equal(state_lock(root, "older", "daemon", &pid),
	    -EWOULDBLOCK);
	assert_int_equal(pid, (long)child);
	assert_int_equal(state_lock_holder(root, "older", &pid, mode,
			     sizeof(mode)),
	    1);
	assert_int_equal(pid, (long)child);
	assert_string_equal(mode, "daemon");
	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_int_equal(state_lock(root, "older", "once", &pid), 0);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	n = readlink(path, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	snprintf(want, sizeof(want), "%ld once", (long)getpid());
	assert_string_equal(buf, want);
	/* An earlier version started now fails on it, as it should. */
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
	assert_int_equal(fd, -1);
	assert_int_equal(errno, ELOOP);
	state_unlock(root, "older");
	close(p[0]);
	close(p[1]);
}

static void
test_lock_of_a_killed_fetcher_is_free(void **state)
{
	int status, p[2];
	long pid;
	pid_t child;
	char c;

	assert_int_equal(pipe(p), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		if (state_lock(root, "killed", "daemon", &pid) < 0)
			_exit(1);
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	assert_int_equal(read(p[0], &c, 1), 1);
	assert_int_equal(state_lock(root, "killed", "once", &pid),
	    -EWOULDBLOCK);
	assert_int_equal(pid, (long)child);
	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_int_equal(state_lock(root, "killed", "once", &pid), 0);
	state_unlock(root, "killed");
	close(p[0]);
	close(p[1]);
}

static void
test_lock_in_an_unwritable_place_is_an_error(void **state)
{
	long pid;

	assert_int_equal(state_lock("/proc/idlefetch", "a", "once", &pid),
	    -ENOENT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_encodes_the_folder),
		cmocka_unit_test(test_missing_file_is_enoent_and_zero),
		cmocka_unit_test(test_save_then_load_round_trips),
		cmocka_unit_test(test_corrupt_files_are_refused),
		cmocka_unit_test(test_pending_and_refused_round_trip),
		cmocka_unit_test(test_largest_uids_load),
		cmocka_unit_test(test_symlinks_in_state_dir_are_not_followed),
		cmocka_unit_test(test_fingerprint_round_trips_and_old_files_load),
		cmocka_unit_test(test_save_into_a_missing_directory_fails),
		cmocka_unit_test(test_second_fetcher_of_an_account_is_refused),
		cmocka_unit_test(test_lock_of_a_killed_fetcher_is_free),
		cmocka_unit_test(test_two_processes_exclude_on_one_account_only),
		cmocka_unit_test(test_locked_accounts_hold_no_descriptor_each),
		cmocka_unit_test(test_lock_offset_is_the_documented_hash),
		cmocka_unit_test(test_lock_of_an_earlier_version_is_honoured),
		cmocka_unit_test(test_lock_in_an_unwritable_place_is_an_error),
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
