/*
 * maildir: the Maildir delivery protocol (tmp/, fsync, rename to new/),
 * with file names
 *
 *   tmp/<sec>.M<usec>P<pid>Q<seq>X<tag>.<host>
 *   new/<sec>.M<usec>P<pid>Q<seq>X<tag>V<uidvalidity>U<uid>.<host>
 *
 * X<tag> says which account+folder wrote the file; V and U let a restart
 * reconcile a crash between the rename and the state save.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "idlefetch/maildir.h"
#include "idlefetch/util.h"

static char host[128];
static pthread_once_t host_once = PTHREAD_ONCE_INIT;

static void
host_init(void)
{
	char raw[64], *o = host;

	if (gethostname(raw, sizeof(raw)) < 0 || raw[0] == '\0')
		strcpy(raw, "localhost");
	raw[sizeof(raw) - 1] = '\0';
	/* The Maildir spec escapes the two bytes that are special in names. */
	for (const char *p = raw; *p; p++) {
		if (*p == '/')
			o += sprintf(o, "\\057");
		else if (*p == ':')
			o += sprintf(o, "\\072");
		else
			*o++ = *p;
	}
	*o = '\0';
}

/* The host part of file names; safe from any thread. */
static const char *
host_part(void)
{
	pthread_once(&host_once, host_init);
	return host;
}

uint32_t
maildir_tag(const char *account, const char *folder)
{
	uint32_t h = fnv1a(2166136261u, account, strlen(account) + 1);

	return fnv1a(h, folder, strlen(folder));
}

int
maildir_prepare(const char *dir)
{
	static const char *subs[] = { "tmp", "new", "cur" };
	char path[PATH_MAX];
	int r;

	for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
		if (snprintf(path, sizeof(path), "%s/%s", dir, subs[i]) >=
		    (int)sizeof(path))
			return -ENAMETOOLONG;
		r = mkdir_p(path);
		if (r == 0)
			r = dir_is_private(path);
		if (r < 0)
			return r;
	}
	/* The Maildir itself: a planted tmp/ or new/ needs write access. */
	return dir_is_private(dir);
}

/*
 * readdir() with its error told apart from the end: NULL with *err set
 * when the directory could not be read to the end (EOVERFLOW on a 32-bit
 * build without large-file support, EIO on a failing card).
 */
static struct dirent *
next_entry(DIR *d, int *err)
{
	struct dirent *de;

	errno = 0;
	de = readdir(d);
	if (de == NULL && errno != 0)
		*err = -errno;
	return de;
}

void
maildir_base_name(char *buf, size_t len, int64_t sec, long usec, long pid,
    unsigned seq, uint32_t tag)
{
	/* 64-bit seconds: a name made after 2038 must not wrap. */
	snprintf(buf, len, "%lld.M%06ldP%ldQ%uX%08x", (long long)sec, usec,
	    pid, seq, tag);
}

int
maildir_clean_tmp(const char *dir, uint32_t tag, unsigned *removed)
{
	char path[PATH_MAX], mark[16];
	struct dirent *de;
	DIR *d;
	int r = 0;

	*removed = 0;
	snprintf(mark, sizeof(mark), "X%08x.", tag);
	snprintf(path, sizeof(path), "%s/tmp", dir);
	d = opendir(path);
	if (d == NULL)
		return -errno;
	/* NULL is the end only when errno stayed 0 (see maildir_scan). */
	while ((de = next_entry(d, &r)) != NULL) {
		if (strstr(de->d_name, mark) == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/tmp/%s", dir, de->d_name);
		if (unlink(path) < 0 && errno != ENOENT)
			r = -errno;
		else
			(*removed)++;
	}
	closedir(d);
	return r;
}

int
maildir_each(const char *dir, uint32_t tag, maildir_each_cb *cb, void *ud)
{
	static const char *subs[] = { "new", "cur" };
	char path[PATH_MAX], mark[16];
	struct dirent *de;
	DIR *d;

	int r = 0;

	snprintf(mark, sizeof(mark), "X%08xV", tag);
	for (size_t i = 0; i < ARRAY_LEN(subs) && r == 0; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subs[i]);
		d = opendir(path);
		if (d == NULL)
			return -errno;
		while (r == 0 && (de = next_entry(d, &r)) != NULL) {
			const char *p = strstr(de->d_name, mark);
			unsigned v, u;

			if (p == NULL ||
			    sscanf(p + strlen(mark), "%uU%u", &v, &u) != 2)
				continue;
			snprintf(path, sizeof(path), "%s/%s/%s", dir, subs[i],
			    de->d_name);
			r = cb(ud, path, v, u);
		}
		closedir(d);
	}
	/* A scan that missed files would let a restart deliver them twice. */
	return r;
}

struct scan_max {
	uint32_t uidvalidity, max;
};

static int
scan_one(void *ud, const char *path, uint32_t uidvalidity, uint32_t uid)
{
	struct scan_max *m = ud;

	(void)path;
	if (uidvalidity == m->uidvalidity && uid > m->max)
		m->max = uid;
	return 0;
}

int
maildir_scan(const char *dir, uint32_t tag, uint32_t uidvalidity,
    uint32_t *max_uid)
{
	struct scan_max m = { uidvalidity, 0 };
	int r = maildir_each(dir, tag, scan_one, &m);

	*max_uid = m.max;
	return r;
}

int
maildir_create(const char *dir, uint32_t tag, struct maildir_file *f)
{
	static unsigned seq;
	char path[PATH_MAX];
	struct timeval tv;

	if (gettimeofday(&tv, NULL) < 0)
		return -errno;
	maildir_base_name(f->base, sizeof(f->base), (int64_t)tv.tv_sec,
	    (long)tv.tv_usec, (long)getpid(), ++seq, tag);
	snprintf(path, sizeof(path), "%s/tmp/%s.%s", dir, f->base, host_part());
	f->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (f->fd < 0)
		return -errno;
	f->bytes = 0;
	f->uid = 0;
	f->synced = false;
	return 0;
}

int
maildir_append(struct maildir_file *f, const char *p, size_t n)
{
	f->bytes += n;
	while (n > 0) {
		ssize_t w = write(f->fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

size_t
maildir_convert(struct maildir_writer *w, const char *p, size_t n)
{
	size_t i;

	/* Each byte may add two: a held-back CR and itself. */
	for (i = 0; i < n && w->len + 2 <= sizeof(w->buf); i++) {
		char c = p[i];

		if (w->cr) {
			w->cr = false;
			if (c != '\n')
				w->buf[w->len++] = '\r'; /* a lone CR stays */
		}
		if (c == '\r')
			w->cr = true;
		else
			w->buf[w->len++] = c;
	}
	return i;
}

void
maildir_convert_end(struct maildir_writer *w)
{
	if (w->cr)
		w->buf[w->len++] = '\r'; /* convert leaves room for it */
	w->cr = false;
}

int
maildir_feed(struct maildir_writer *w, const char *p, size_t n,
    maildir_sink_cb *sink, void *ud)
{
	while (n > 0) {
		size_t k = maildir_convert(w, p, n);
		int r;

		p += k;
		n -= k;
		if (n > 0) {
			/* Full: hand the buffer on (the sink copies it). */
			r = sink(ud, w->buf, w->len);
			w->len = 0;
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int
file_sink(void *ud, const char *p, size_t n)
{
	return maildir_append(ud, p, n);
}

static int
drain(struct maildir_file *f, struct maildir_writer *w)
{
	int r = maildir_append(f, w->buf, w->len);

	w->len = 0;
	return r;
}

int
maildir_write(struct maildir_file *f, struct maildir_writer *w, const char *p,
    size_t n)
{
	return maildir_feed(w, p, n, file_sink, f);
}

int
maildir_flush(struct maildir_file *f, struct maildir_writer *w)
{
	maildir_convert_end(w);
	return drain(f, w);
}

int
maildir_sync_files(struct maildir_file *files, size_t n)
{
	if (n < MAILDIR_SYNCFS_MIN)
		return 0;
	/*
	 * One syncfs() makes every file of a batch durable with one journal
	 * commit, where a fsync() each would cost one commit per message and
	 * stall every file creation behind them.
	 */
	if (syncfs(files[0].fd) < 0)
		return -errno;
	for (size_t i = 0; i < n; i++)
		files[i].synced = true;
	return 0;
}

int
maildir_commit(const char *dir, struct maildir_file *f, uint32_t uidvalidity,
    uint32_t uid)
{
	char from[PATH_MAX], to[PATH_MAX];
	int r = 0;

	if (!f->synced && fsync(f->fd) < 0)
		r = -errno;
	if (close(f->fd) < 0 && r == 0)
		r = -errno;
	f->fd = -1;
	snprintf(from, sizeof(from), "%s/tmp/%s.%s", dir, f->base, host_part());
	if (r < 0) {
		unlink(from);
		return r;
	}
	snprintf(to, sizeof(to), "%s/new/%sV%uU%u.%s", dir, f->base,
	    uidvalidity, uid, host_part());
	if (rename(from, to) < 0) {
		r = -errno;
		unlink(from);
	}
	return r;
}

int
maildir_sync_new(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/new", dir);
	return fsync_dir(path);
}

void
maildir_discard(const char *dir, struct maildir_file *f)
{
	char path[PATH_MAX];

	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	snprintf(path, sizeof(path), "%s/tmp/%s.%s", dir, f->base, host_part());
	unlink(path);
}

int
maildir_open_tmp(const char *dir, const struct maildir_file *f)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/tmp/%s.%s", dir, f->base, host_part());
	fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}
