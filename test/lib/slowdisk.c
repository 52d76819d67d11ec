/*
 * A disk that stalls, for tests: preloaded into idlefetch, it makes the
 * first write() to a file whose path contains $SLOWDISK_MATCH wait
 * $SLOWDISK_SECS seconds, as a disk does when it hiccups (an SD card
 * erasing, a NAS failing over). Every other write goes straight through.
 * It can also make fsync() or rename() fail (below).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ssize_t
write(int fd, const void *buf, size_t n)
{
	static ssize_t (*real_write)(int, const void *, size_t);
	static int stalled;
	const char *match = getenv("SLOWDISK_MATCH");
	char link[64], path[4096];
	ssize_t k;

	if (real_write == NULL)
		*(void **)&real_write = dlsym(RTLD_NEXT, "write");
	if (match != NULL && !__atomic_load_n(&stalled, __ATOMIC_SEQ_CST)) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		k = readlink(link, path, sizeof(path) - 1);
		if (k > 0) {
			path[k] = '\0';
			if (strstr(path, match) != NULL &&
			    !__atomic_exchange_n(&stalled, 1, __ATOMIC_SEQ_CST))
				sleep((unsigned)atoi(getenv("SLOWDISK_SECS") ?
					getenv("SLOWDISK_SECS") :
					"5"));
		}
	}
	return real_write(fd, buf, n);
}

/*
 * A disk whose fsync() fails: the first $BADDISK_FSYNC_FAILS (default 1)
 * fsync() calls on a file or directory whose path ends in
 * $BADDISK_FSYNC_MATCH fail with EIO, as a failing card or a full thin
 * volume reports it.
 */
int
fsync(int fd)
{
	static int (*real_fsync)(int);
	static int failed;
	const char *match = getenv("BADDISK_FSYNC_MATCH");
	const char *fails = getenv("BADDISK_FSYNC_FAILS");
	char link[64], path[4096];
	ssize_t k;

	if (real_fsync == NULL)
		*(void **)&real_fsync = dlsym(RTLD_NEXT, "fsync");
	if (match == NULL)
		return real_fsync(fd);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	k = readlink(link, path, sizeof(path) - 1);
	if (k > 0) {
		size_t m = strlen(match);

		path[k] = '\0';
		if ((size_t)k >= m && strcmp(path + k - m, match) == 0 &&
		    __atomic_add_fetch(&failed, 1, __ATOMIC_SEQ_CST) <=
			(fails ? atoi(fails) : 1)) {
			errno = EIO;
			return -1;
		}
	}
	return real_fsync(fd);
}

/*
 * A disk whose rename() fails: the first $BADDISK_RENAME_FAILS (default 1)
 * renames to a path containing $BADDISK_RENAME_MATCH fail with EIO.
 */
int
rename(const char *from, const char *to)
{
	static int (*real_rename)(const char *, const char *);
	static int failed;
	const char *match = getenv("BADDISK_RENAME_MATCH");
	const char *fails = getenv("BADDISK_RENAME_FAILS");

	if (real_rename == NULL)
		*(void **)&real_rename = dlsym(RTLD_NEXT, "rename");
	if (match != NULL && strstr(to, match) != NULL &&
	    __atomic_add_fetch(&failed, 1, __ATOMIC_SEQ_CST) <=
		(fails ? atoi(fails) : 1)) {
		errno = EIO;
		return -1;
	}
	return real_rename(from, to);
}
