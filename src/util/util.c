/*
 * util: the allocation helpers every module uses. Out of memory is not an
 * error we can recover from in a mail daemon without risking a half-written
 * state, so the helpers abort with a message instead of returning NULL.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "idlefetch/util.h"

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		fatal("out of memory (%zu bytes)", n);
	return p;
}

void *
xcalloc(size_t nmemb, size_t n)
{
	void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);

	if (p == NULL)
		fatal("out of memory (%zu x %zu bytes)", nmemb, n);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		fatal("out of memory (%zu bytes)", n);
	return q;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		fatal("out of memory");
	va_end(ap);
	return s;
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	fputs("idlefetch: fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void
secret_free(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

int
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

bool
strv_equal(const char *const *x, size_t nx, const char *const *y, size_t ny)
{
	if (nx != ny)
		return false;
	for (size_t i = 0; i < nx; i++)
		if (strcmp(x[i], y[i]) != 0)
			return false;
	return true;
}

uint32_t
fnv1a(uint32_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	while (n--) {
		h ^= *b++;
		h *= 16777619u;
	}
	return h;
}

const char *
err_str(int err)
{
	switch (err) {
	case IDLEFETCH_EPROTO:
		return "protocol error";
	case IDLEFETCH_EAUTH:
		return "login rejected";
	case IDLEFETCH_ETLS:
		return "TLS error";
	case IDLEFETCH_ECAPA:
		return "missing server capability";
	case IDLEFETCH_ELOST:
		return "not the Maildir or state it was";
	default:
		break;
	}
	if (err < 0 && err > -4096)
		return uv_strerror(err);
	return "unknown error";
}

/* One directory: made (and handed to uid:gid unless uid is -1), or there. */
static int
mkdir_one(const char *dir, uid_t uid, gid_t gid)
{
	int fd, r = 0;

	if (mkdir(dir, 0700) < 0)
		return errno == EEXIST ? 0 : -errno;
	if (uid == (uid_t)-1)
		return 0;
	/* O_NOFOLLOW: a symlink swapped in meanwhile is not followed. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fchown(fd, uid, gid) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	return r;
}

int
mkdir_p_owned(const char *path, uid_t uid, gid_t gid)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	int r;

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		r = mkdir_one(buf, uid, gid);
		if (r < 0)
			return r;
		*p = '/';
	}
	return mkdir_one(buf, uid, gid);
}

int
mkdir_p(const char *path)
{
	return mkdir_p_owned(path, (uid_t)-1, (gid_t)-1);
}

int
dir_is_private(const char *dir)
{
	struct stat st;

	if (lstat(dir, &st) < 0)
		return -errno;
	if (S_ISLNK(st.st_mode))
		return -ELOOP;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if ((st.st_mode & S_IWOTH) ||
	    ((st.st_mode & S_IWGRP) && st.st_gid != getegid() &&
		st.st_uid != geteuid()))
		return -EPERM;
	return 0;
}

int
fsync_dir(const char *dir)
{
	int fd, r = 0;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int
write_close(int fd, const void *p, size_t n, bool sync)
{
	const char *b = p;
	size_t off = 0;
	int r = 0;

	while (r == 0 && off < n) {
		ssize_t w = write(fd, b + off, n - off);

		if (w < 0 && errno != EINTR)
			r = -errno;
		else if (w > 0)
			off += (size_t)w;
	}
	if (r == 0 && sync && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int
write_fresh(const char *tmp, const void *p, size_t n, mode_t mode, bool sync)
{
	int fd;

	if (unlink(tmp) < 0 && errno != ENOENT)
		return -errno;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    mode);
	if (fd < 0)
		return -errno;
	return write_close(fd, p, n, sync);
}
