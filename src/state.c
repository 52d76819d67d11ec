/*
 * state: "idlefetch-state 1" followed by uidvalidity and last_uid lines,
 * then optionally last_size and last_msgid (the fingerprint of the message
 * last_uid), keep_to, recovering and recovered_at (a recovery's), and
 * pending and refused lines (an MDA or LMTP target's); see state.h.
 * A reader that finds anything else refuses the file instead of guessing:
 * a wrong last_uid would either skip or re-deliver mail.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idlefetch/foldername.h"
#include "idlefetch/state.h"
#include "idlefetch/util.h"

char *
state_path(const char *state_dir, const char *account, const char *folder)
{
	char *key = folder_key(folder);
	char *p = xasprintf("%s/%s/%s.state", state_dir, account, key);

	free(key);
	return p;
}

int
state_prepare(const char *path)
{
	char buf[PATH_MAX];
	char *slash;
	int r;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	slash = strrchr(buf, '/');
	if (slash == NULL || slash == buf)
		return 0;
	*slash = '\0';
	r = mkdir_p(buf);
	return r < 0 ? r : dir_is_private(buf);
}

/* Whether s can be kept as a Message-ID: printable, no spaces, short. */
static bool
msgid_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= STATE_MSGID_MAX)
		return false;
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}

/* The optional lines after last_uid; -EINVAL for anything unknown. */
static int
load_optional(char *p, struct state_rec *st)
{
	struct state_fp *fp = &st->last;

	uint64_t v;

	while (*p != '\0') {
		char *nl = strchr(p, '\n');

		if (nl == NULL)
			return -EINVAL; /* cut short */
		*nl = '\0';
		if (strncmp(p, "last_size ", 10) == 0 &&
		    parse_u64(p + 10, 0, UINT32_MAX, &v) == 0)
			fp->size = (uint32_t)v;
		else if (strncmp(p, "last_msgid ", 11) == 0 && msgid_ok(p + 11))
			strcpy(fp->msgid, p + 11);
		else if (strncmp(p, "keep_to ", 8) == 0 &&
		    parse_u64(p + 8, 0, UINT32_MAX, &v) == 0)
			st->keep_to = (uint32_t)v;
		else if (strcmp(p, "recovering 1") == 0)
			st->recovering = 1;
		else if (strncmp(p, "recovered_at ", 13) == 0 &&
		    parse_u64(p + 13, 0, UINT64_MAX, &v) == 0)
			st->recovered_at = v;
		else if (strncmp(p, "pending ", 8) == 0 &&
		    parse_u64(p + 8, 1, UINT32_MAX, &v) == 0)
			st->pending = (uint32_t)v;
		else if (strncmp(p, "refused ", 8) == 0 &&
		    st->nrefused < STATE_REFUSED_MAX &&
		    parse_u64(p + 8, 1, UINT32_MAX, &v) == 0)
			st->refused[st->nrefused++] = (uint32_t)v;
		else
			return -EINVAL;
		p = nl + 1;
	}
	return 0;
}

int
state_load(const char *path, struct state_rec *st)
{
	char buf[1024 + 20 * STATE_REFUSED_MAX], vs[24], us[24];
	uint64_t v, u;
	ssize_t n;
	int fd, r, used = 0;

	memset(st, 0, sizeof(*st));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	r = n < 0 ? -errno : 0;
	close(fd);
	if (r < 0)
		return r;
	buf[n] = '\0';
	/*
	 * Digits first, then a range check in 64 bits: %lu would wrap a
	 * negative number and, where long has 32 bits, clamp a too large one
	 * to ULONG_MAX, which a check against UINT32_MAX cannot see.
	 */
	if (sscanf(buf,
		"idlefetch-state 1\nuidvalidity %20[0-9]\nlast_uid %20[0-9]\n%n",
		vs, us, &used) != 2 || used == 0 ||
	    parse_u64(vs, 0, UINT32_MAX, &v) < 0 ||
	    parse_u64(us, 0, UINT32_MAX, &u) < 0 ||
	    (size_t)n == sizeof(buf) - 1 ||
	    load_optional(buf + used, st) < 0) {
		memset(st, 0, sizeof(*st));
		return -EINVAL;
	}
	st->uidvalidity = (uint32_t)v;
	st->last_uid = (uint32_t)u;
	return 0;
}

static int
sync_parent(const char *path)
{
	char dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	return fsync_dir(dir);
}

int
state_save(const char *path, const struct state_rec *st)
{
	char tmp[PATH_MAX], buf[192 + STATE_MSGID_MAX + 20 * STATE_REFUSED_MAX];
	int n, r = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	n = snprintf(buf, sizeof(buf),
	    "idlefetch-state 1\nuidvalidity %u\n"
	    "last_uid %u\n",
	    st->uidvalidity, st->last_uid);
	if (st->last.size > 0)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n,
		    "last_size %u\n", st->last.size);
	if (msgid_ok(st->last.msgid))
		n += snprintf(buf + n, sizeof(buf) - (size_t)n,
		    "last_msgid %s\n", st->last.msgid);
	if (st->keep_to > 0)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "keep_to %u\n",
		    st->keep_to);
	if (st->recovering)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n,
		    "recovering 1\n");
	if (st->recovered_at)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n,
		    "recovered_at %" PRIu64 "\n", st->recovered_at);
	if (st->pending)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "pending %u\n",
		    st->pending);
	for (uint32_t i = 0; i < st->nrefused && i < STATE_REFUSED_MAX; i++)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "refused %u\n",
		    st->refused[i]);
	r = write_fresh(tmp, buf, (size_t)n, 0600, true);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	return sync_parent(path);
}

bool
state_refused(const struct state_rec *st, uint32_t uid)
{
	for (uint32_t i = 0; i < st->nrefused && i < STATE_REFUSED_MAX; i++)
		if (st->refused[i] == uid)
			return true;
	return false;
}

/* ---- one fetcher per account ---------------------------------------------- */

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
	char path[PATH_MAX];
	int fd, r;

	*old = -1;
	if (snprintf(path, sizeof(path), "%s/lock", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ELOOP ? 0 : -errno;
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
	char path[PATH_MAX];
	int fd, r;

	if (snprintf(path, sizeof(path), "%s/lock", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ELOOP ? 0 : -errno;
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

/* ---- the Maildir this state belongs to ----------------------------------- */

/*
 * Reads a binding file: "ID\n" (done) or "ID new\n" (being made). 0, or
 * -ENOENT, or -EINVAL for anything else.
 */
static int
read_binding(const char *path, char *id, bool *fresh)
{
	char buf[64];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		r = -errno;
	close(fd);
	if (n < 0)
		return r;
	buf[n] = '\0';
	*fresh = false;
	if (n == STATE_ID_LEN + 1 && buf[STATE_ID_LEN] == '\n') {
		buf[STATE_ID_LEN] = '\0';
	} else if (n == STATE_ID_LEN + 5 &&
	    strcmp(buf + STATE_ID_LEN, " new\n") == 0) {
		buf[STATE_ID_LEN] = '\0';
		*fresh = true;
	} else {
		return -EINVAL;
	}
	for (int i = 0; i < STATE_ID_LEN; i++)
		if (!isxdigit((unsigned char)buf[i]))
			return -EINVAL;
	memcpy(id, buf, STATE_ID_LEN + 1);
	return 0;
}

/*
 * Writes a binding file whole under its name: link() from a temporary
 * file, so a reader sees all of it or nothing, and a second writer racing
 * for a new one finds the first (-EEXIST). replace: rename over it.
 */
static int
write_binding(const char *path, const char *id, bool fresh, bool replace)
{
	char tmp[PATH_MAX], buf[64];
	int n, r = 0;

	n = snprintf(buf, sizeof(buf), "%s%s\n", id, fresh ? " new" : "");
	if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >=
	    (int)sizeof(tmp))
		return -ENAMETOOLONG;
	r = write_fresh(tmp, buf, (size_t)n, 0600, true);
	if (r == 0 && replace && rename(tmp, path) < 0)
		r = -errno;
	if (r == 0 && !replace && link(tmp, path) < 0)
		r = -errno;
	(void)unlink(tmp);
	return r == 0 ? sync_parent(path) : r;
}

char *
state_marker_path(const char *maildir, const char *account)
{
	return xasprintf("%s/idlefetch-%s.id", maildir, account);
}

static char *
binding_path(const char *state_path)
{
	const char *slash = strrchr(state_path, '/');
	int n = slash ? (int)(slash - state_path) : 0;

	return xasprintf("%.*s/maildir-id", n, slash ? state_path : ".");
}

/* A new random id, as hex. */
static int
new_id(char *id)
{
	unsigned char raw[STATE_ID_LEN / 2];

	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		return -EIO;
	for (size_t i = 0; i < sizeof(raw); i++)
		sprintf(id + 2 * i, "%02x", raw[i]);
	return 0;
}

bool
state_bound(const char *state_path)
{
	char *sp = binding_path(state_path), id[STATE_ID_LEN + 1];
	bool fresh = true;
	int r = read_binding(sp, id, &fresh);

	free(sp);
	return r == 0 && !fresh;
}

int
state_bind(const char *state_path, const char *marker, char *id, char *err,
    size_t errlen)
{
	char *sp = binding_path(state_path), mid[STATE_ID_LEN + 1];
	bool fresh = false, mfresh;
	int r, rm;

	r = read_binding(sp, id, &fresh);
	if (r == -ENOENT) {
		/* Never bound: the state's side first, marked as being made. */
		r = new_id(id);
		if (r == 0)
			r = write_binding(sp, id, true, false);
		if (r == -EEXIST) /* another connection made it meanwhile */
			r = read_binding(sp, id, &fresh);
		else
			fresh = true;
	}
	if (r < 0) {
		snprintf(err, errlen, "cannot use %s: %s", sp,
		    r == -EINVAL ? "not an idlefetch binding file" :
				   strerror(-r));
		goto out;
	}
	rm = read_binding(marker, mid, &mfresh);
	if (rm == -ENOENT && fresh) {
		rm = write_binding(marker, id, false, false);
		if (rm == -EEXIST)
			rm = read_binding(marker, mid, &mfresh);
		else if (rm == 0)
			strcpy(mid, id);
	}
	if (rm == -ENOENT) {
		snprintf(err, errlen,
		    "the Maildir has lost %s, which idlefetch put there when it "
		    "first delivered into it (the state in %s says so): is it "
		    "unmounted, or replaced? Not fetching, and deleting or "
		    "moving nothing on the server, until it is back (if the "
		    "Maildir moved on purpose, move that file with it)",
		    marker, sp);
		r = IDLEFETCH_ELOST;
		goto out;
	}
	if (rm < 0) {
		snprintf(err, errlen, "cannot use %s: %s", marker,
		    rm == -EINVAL ? "not an idlefetch marker" : strerror(-rm));
		r = rm;
		goto out;
	}
	if (strcmp(mid, id) != 0) {
		snprintf(err, errlen,
		    "%s belongs to another state than %s: is the state "
		    "directory lost or replaced, or the Maildir another "
		    "one? Not fetching, and deleting or moving nothing on "
		    "the server; if the state was lost for good, remove %s to "
		    "start over (files already delivered are found by name)",
		    marker, sp, marker);
		r = IDLEFETCH_ELOST;
		goto out;
	}
	r = fresh ? write_binding(sp, id, false, true) : 0;
	if (r < 0)
		snprintf(err, errlen, "cannot write %s: %s", sp, strerror(-r));
out:
	free(sp);
	return r;
}

int
state_bind_check(const char *marker, const char *id, char *err,
    size_t errlen)
{
	char mid[STATE_ID_LEN + 1];
	bool fresh;
	int r = read_binding(marker, mid, &fresh);

	if (r == 0 && strcmp(mid, id) == 0)
		return 0;
	snprintf(err, errlen,
	    "%s is %s: the Maildir was unmounted or replaced since idlefetch "
	    "started; not delivering, and deleting or moving nothing on the "
	    "server, until it is back",
	    marker, r == -ENOENT ? "gone" : r < 0 ? "unreadable" : "another one");
	return IDLEFETCH_ELOST;
}
