/*
 * state_lock: one fetcher per account (see state.h). Owns the per-process
 * registry of the shared lock files of each state directory and the
 * holder's record beside each account's state; calls only util. The rest
 * of an account's state (its folders' files, its Maildir binding) is
 * state.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idlefetch/state.h"
#include "idlefetch/util.h"

/*
 * The accounts of a state directory are locked in STATE_LOCK_FILES shared
 * files (state.h): an account's lock is an OFD write lock on one byte at
 * state_lock_offset(account), far beyond the end of the empty file, as
 * fcntl allows. A process opens each file once per state directory
 * (lockfile below), so an idle account costs its socket and no
 * descriptor more. OFD locks belong to the open file description: the
 * locks of all the accounts of a process sit on a few descriptions, and
 * letting go of one account is an F_UNLCK of its byte.
 *
 * Why several files: the kernel keeps the locks of a file in a list that
 * every fcntl on it and every close() of it walks whole; with 10,000
 * locks on one file `idlefetch status` took 50 s. Sixteen files cut every
 * walk sixteenfold for 32 descriptors.
 *
 * Locks on one description never conflict with each other, so a second
 * lock of the same account in this process would pass unseen (and its
 * release would free the first). Each file is therefore opened twice:
 * F_OFD_GETLK through `probe` sees every lock, this process's included.
 *
 * The registry is per process: a child made by fork() inherits the
 * descriptions, and with them the parent's locks; it opens its own.
 */
struct lockfile {
	char *state_dir;
	int fd[STATE_LOCK_FILES]; /* O_RDWR: hold this process's locks */
	int probe[STATE_LOCK_FILES]; /* see this process's locks; -1: unopened */
	size_t held;
	struct lockfile *next;
};

static struct {
	pthread_mutex_t mu;
	pid_t pid; /* the process the lockfiles belong to */
	struct lockfile *files;
} reg = { .mu = PTHREAD_MUTEX_INITIALIZER };

uint64_t
state_lock_offset(const char *account)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, 64 bits */

	for (const char *s = account; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	/* splitmix64's finaliser spreads names that differ in one letter. */
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	/* 62 bits: offset + 1 stays below the largest off_t. */
	return h >> 2;
}

/* The file that holds the byte at off. */
static unsigned
file_of(uint64_t off)
{
	return (unsigned)(off >> 58); /* the top 4 of 62 bits */
}

static int
open_shared(const char *state_dir, unsigned i, int flags)
{
	char path[PATH_MAX];
	int fd;

	if (snprintf(path, sizeof(path), "%s/" STATE_LOCK_FILE ".%x",
		state_dir, i) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	/* O_NOFOLLOW: a symlink planted there could point anywhere. */
	fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC, 0644);
	return fd < 0 ? -errno : fd;
}

static void
lockfile_close(struct lockfile *f)
{
	for (unsigned i = 0; i < STATE_LOCK_FILES; i++)
		if (f->probe[i] >= 0) {
			close(f->fd[i]);
			close(f->probe[i]);
		}
	free(f->state_dir);
	free(f);
}

/* This process's lockfile of state_dir (reg.mu held). */
static int
lockfile_get(const char *state_dir, struct lockfile **out)
{
	struct lockfile *f;
	int r;

	if (reg.pid != getpid()) {
		/* Forked: the parent's descriptions are the parent's. */
		while ((f = reg.files) != NULL) {
			reg.files = f->next;
			lockfile_close(f);
		}
		reg.pid = getpid();
	}
	for (f = reg.files; f; f = f->next)
		if (strcmp(f->state_dir, state_dir) == 0) {
			*out = f;
			return 0;
		}
	r = mkdir_p(state_dir);
	if (r < 0)
		return r;
	f = xcalloc(1, sizeof(*f));
	for (unsigned i = 0; i < STATE_LOCK_FILES; i++)
		f->fd[i] = f->probe[i] = -1;
	f->state_dir = xstrdup(state_dir);
	f->next = reg.files;
	reg.files = f;
	*out = f;
	return 0;
}

/* Opens file i of f on first use; 0 or -errno. */
static int
lockfile_open(struct lockfile *f, unsigned i)
{
	int fd, probe;

	if (f->probe[i] >= 0)
		return 0;
	fd = open_shared(f->state_dir, i, O_RDWR | O_CREAT);
	if (fd < 0)
		return fd;
	probe = open_shared(f->state_dir, i, O_RDONLY);
	if (probe < 0) {
		close(fd);
		return probe;
	}
	f->fd[i] = fd;
	f->probe[i] = probe;
	return 0;
}

/* Reads "PID MODE" from an old lock file; unknown parts stay 0 / "". */
static void
parse_holder(const char *text, long *pid, char *mode, size_t modelen)
{
	char m[32] = "";

	*pid = 0;
	if (sscanf(text, "%ld %31s", pid, m) < 1 || *pid < 0)
		*pid = 0;
	if (mode != NULL && modelen > 0)
		snprintf(mode, modelen, "%s", m);
}

static void
read_holder(int fd, long *pid, char *mode, size_t modelen)
{
	char buf[64];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	buf[n > 0 ? n : 0] = '\0';
	parse_holder(buf, pid, mode, modelen);
}

/* The holder recorded in the symlink STATE_DIR/ACCOUNT/lock ("PID MODE"). */
static void
read_record(const char *dir, long *pid, char *mode, size_t modelen)
{
	char path[PATH_MAX], buf[64];
	ssize_t n = -1;

	if (snprintf(path, sizeof(path), "%s/lock", dir) < (int)sizeof(path))
		n = readlink(path, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	parse_holder(buf, pid, mode, modelen);
}

/*
 * The old-style lock file in dir, opened with flags: *fd, or -1 when there
 * is none (or it is our symlink already). 0 or -errno.
 */
static int
open_old_file(const char *dir, int flags, int *fd)
{
	char path[PATH_MAX];

	*fd = -1;
	if (snprintf(path, sizeof(path), "%s/lock", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	*fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC);
	if (*fd < 0)
		return errno == ENOENT || errno == ELOOP ? 0 : -errno;
	return 0;
}

/*
 * Versions before the shared lock file locked STATE_DIR/ACCOUNT/lock
 * itself (a regular file, locked whole). One may still run on this state
 * directory (a replica not yet upgraded): *old gets that file, locked by
 * us, or -1 when there is none (or it is our symlink already).
 * -EWOULDBLOCK (*pid: the old process) while an old process holds it.
 */
static int
lock_old_file(const char *dir, int *old, long *pid)
{
	struct flock whole = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	int fd, r;

	*old = -1;
	r = open_old_file(dir, O_RDWR, &fd);
	if (fd < 0)
		return r;
	if (fcntl(fd, F_OFD_SETLK, &whole) < 0) {
		r = errno == EAGAIN || errno == EACCES ? -EWOULDBLOCK : -errno;
		if (r == -EWOULDBLOCK)
			read_holder(fd, pid, NULL, 0);
		close(fd);
		return r;
	}
	*old = fd;
	return 0;
}

/*
 * Replaces STATE_DIR/ACCOUNT/lock by a symlink whose target is "PID MODE":
 * `idlefetch status` reads the holder there, and an older version, which
 * opens its lock file with O_NOFOLLOW, fails on it instead of fetching
 * the account beside us. rename() makes the swap atomic.
 */
static int
write_record(const char *dir, const char *mode)
{
	char rec[64], tmp[PATH_MAX], path[PATH_MAX];

	snprintf(rec, sizeof(rec), "%ld %s", (long)getpid(), mode);
	if (snprintf(path, sizeof(path), "%s/lock", dir) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/lock.%ld.tmp", dir,
		(long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	(void)unlink(tmp); /* a leftover of a crash with our pid */
	if (symlink(rec, tmp) < 0)
		return -errno;
	if (rename(tmp, path) < 0) {
		int r = -errno;

		(void)unlink(tmp);
		return r;
	}
	return 0;
}

static int
byte_lock(int fd, int cmd, short type, uint64_t off, struct flock *fl)
{
	*fl = (struct flock){ .l_type = type,
		.l_whence = SEEK_SET,
		.l_start = (off_t)off,
		.l_len = 1 };
	return fcntl(fd, cmd, fl) < 0 ? -errno : 0;
}

/* Takes the account's byte in f; -EWOULDBLOCK when anyone holds it. */
static int
take_byte(struct lockfile *f, uint64_t off)
{
	unsigned i = file_of(off);
	struct flock fl;
	int r = lockfile_open(f, i);

	if (r == 0)
		r = byte_lock(f->probe[i], F_OFD_GETLK, F_WRLCK, off, &fl);
	if (r == 0 && fl.l_type != F_UNLCK)
		return -EWOULDBLOCK; /* perhaps this very process */
	if (r == 0)
		r = byte_lock(f->fd[i], F_OFD_SETLK, F_WRLCK, off, &fl);
	return r == -EAGAIN || r == -EACCES ? -EWOULDBLOCK : r;
}

static void
release_byte(struct lockfile *f, uint64_t off)
{
	unsigned i = file_of(off);
	struct flock fl;

	if (f->probe[i] < 0)
		return; /* nothing was locked through that file */
	if (byte_lock(f->fd[i], F_OFD_SETLK, F_UNLCK, off, &fl) < 0)
		fatal("cannot release an account lock: %s", strerror(errno));
	f->held--;
}

int
state_lock(const char *state_dir, const char *account, const char *mode,
    long *holder)
{
	uint64_t off = state_lock_offset(account);
	struct lockfile *f;
	char dir[PATH_MAX];
	int old = -1, r;

	*holder = 0;
	if (snprintf(dir, sizeof(dir), "%s/%s", state_dir, account) >=
	    (int)sizeof(dir))
		return -ENAMETOOLONG;
	pthread_mutex_lock(&reg.mu);
	r = lockfile_get(state_dir, &f);
	if (r == 0)
		r = take_byte(f, off);
	if (r == -EWOULDBLOCK)
		read_record(dir, holder, NULL, 0);
	if (r < 0)
		goto out;
	f->held++;
	r = mkdir_p(dir);
	if (r == 0)
		r = lock_old_file(dir, &old, holder);
	if (r == 0)
		r = write_record(dir, mode);
	/* Once the symlink is in place an old process can no longer start. */
	if (old >= 0)
		close(old);
	if (r < 0)
		release_byte(f, off);
out:
	pthread_mutex_unlock(&reg.mu);
	return r;
}

void
state_unlock(const char *state_dir, const char *account)
{
	struct lockfile *f = NULL;

	pthread_mutex_lock(&reg.mu);
	if (lockfile_get(state_dir, &f) == 0 && f->held > 0)
		release_byte(f, state_lock_offset(account));
	pthread_mutex_unlock(&reg.mu);
}

/* 1 when the old-style lock file in dir is locked (its holder read). */
static int
old_holder(const char *dir, long *pid, char *mode, size_t modelen)
{
	struct flock probe = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
	int fd, r = open_old_file(dir, O_RDONLY, &fd);

	if (fd < 0)
		return r;
	if (fcntl(fd, F_OFD_GETLK, &probe) < 0) {
		r = -errno;
	} else if (probe.l_type == F_UNLCK) {
		r = 0;
	} else {
		read_holder(fd, pid, mode, modelen);
		r = 1;
	}
	close(fd);
	return r;
}

/*
 * A read-only descriptor of file i of state_dir, kept for the next
 * question (reg.mu held): each close() of one makes the kernel walk every
 * lock on the file, which for ten thousand accounts asked one by one
 * costs seconds.
 */
static int
holder_fd(const char *state_dir, unsigned i)
{
	static char *dir;
	static int fd[STATE_LOCK_FILES];
	static pid_t pid;

	if (dir == NULL || pid != getpid() || strcmp(dir, state_dir) != 0) {
		for (unsigned j = 0; dir != NULL && j < STATE_LOCK_FILES; j++)
			if (fd[j] >= 0 && pid == getpid())
				close(fd[j]);
		free(dir);
		dir = xstrdup(state_dir);
		pid = getpid();
		for (unsigned j = 0; j < STATE_LOCK_FILES; j++)
			fd[j] = -ENOENT;
	}
	if (fd[i] < 0)
		fd[i] = open_shared(state_dir, i, O_RDONLY);
	return fd[i];
}

int
state_lock_holder(const char *state_dir, const char *account, long *pid,
    char *mode, size_t modelen)
{
	char dir[PATH_MAX];
	struct flock fl;
	int fd, r = 0;

	*pid = 0;
	if (mode != NULL && modelen > 0)
		mode[0] = '\0';
	if (snprintf(dir, sizeof(dir), "%s/%s", state_dir, account) >=
	    (int)sizeof(dir))
		return -ENAMETOOLONG;
	pthread_mutex_lock(&reg.mu);
	fd = holder_fd(state_dir, file_of(state_lock_offset(account)));
	/* Only asks: taking even a shared lock could turn a starting fetcher away. */
	if (fd >= 0)
		r = byte_lock(fd, F_OFD_GETLK, F_RDLCK,
		    state_lock_offset(account), &fl);
	pthread_mutex_unlock(&reg.mu);
	if (fd < 0 && fd != -ENOENT)
		return fd;
	if (r < 0)
		return r;
	if (fd >= 0 && fl.l_type != F_UNLCK) {
		read_record(dir, pid, mode, modelen);
		return 1;
	}
	return old_holder(dir, pid, mode, modelen);
}
