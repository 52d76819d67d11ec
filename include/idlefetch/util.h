/*
 * util: allocation helpers that abort on out-of-memory, fatal() for broken
 * invariants, and small string helpers shared by every module.
 */
#ifndef IDLEFETCH_UTIL_H
#define IDLEFETCH_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Our own error codes, used where no errno fits. Always negative. */
#define IDLEFETCH_EPROTO (-20001) /* server broke the protocol */
#define IDLEFETCH_EAUTH (-20002) /* login rejected */
#define IDLEFETCH_ETLS (-20003) /* TLS handshake or verification failed */
#define IDLEFETCH_ECAPA (-20004) /* server lacks a required capability */
#define IDLEFETCH_ELOST (-20005) /* the Maildir or state is not the bound one */

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a newly allocated string; the caller owns it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void
fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Wipes and frees a secret; NULL is fine. */
void secret_free(char *s);

/* Parses a decimal number in [min, max]; 0 or -EINVAL / -ERANGE. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Creates path and its missing parents (mode 0700); 0 or -errno. */
int mkdir_p(const char *path);
/* The same, handing each directory it creates to uid:gid (fchown). */
int mkdir_p_owned(const char *path, uid_t uid, gid_t gid);
/*
 * 0 if dir is a real directory (not a symlink) that no other user can
 * write; -ELOOP, -ENOTDIR or -EPERM if not. The state and Maildir
 * directories are checked with it.
 */
int dir_is_private(const char *dir);

/*
 * Writes p[0..n) to fd, fsyncs it when sync, and closes it (always).
 * 0 or the first -errno.
 */
int write_close(int fd, const void *p, size_t n, bool sync);
/*
 * Writes p[0..n) into a fresh file at tmp (mode), fsynced when sync: any
 * file already there is removed first and none is opened through a
 * symlink, so one planted at the temporary name cannot have us write its
 * target. 0 or -errno; the caller renames tmp, or removes it on failure.
 */
int write_fresh(const char *tmp, const void *p, size_t n, mode_t mode,
    bool sync);

/* fsync()s a directory so that renames in it are durable; 0 or -errno. */
int fsync_dir(const char *dir);

/* 32-bit FNV-1a over n bytes, continuing from h (start with 2166136261). */
uint32_t fnv1a(uint32_t h, const void *p, size_t n);
/* Whether two string lists hold the same strings in the same order. */
bool strv_equal(const char *const *x, size_t nx, const char *const *y,
    size_t ny);

/* Returns a readable message for our codes, libuv's and errno values. */
const char *err_str(int err);

#endif
