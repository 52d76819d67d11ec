/*
 * secretfile: see idlefetch/secretfile.h. The file is made with O_EXCL and
 * without following a symlink, so that a name planted in the directory
 * cannot have the secret written anywhere else.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "idlefetch/secretfile.h"
#include "idlefetch/util.h"

/* A new file at path holding data, mode 0600. 0 or -errno (-EEXIST). */
static int
write_new(const char *path, const char *data)
{
	int fd = open(path,
		O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600),
	    r;

	if (fd < 0)
		return -errno;
	/* Exactly 0600 whatever the umask: readable by its owner. */
	if (fchmod(fd, 0600) < 0) {
		r = -errno;
		close(fd);
	} else {
		r = write_close(fd, data, strlen(data), true);
	}
	if (r < 0)
		unlink(path);
	return r;
}

/* 0 if the file holds secret on its first line, -EEXIST if not, -errno. */
static int
same_secret(const char *path, const char *secret)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), r;
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	r = n < 0 ? -errno : 0;
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (r == 0 && strcmp(buf, secret) != 0)
		r = -EEXIST;
	OPENSSL_cleanse(buf, sizeof(buf));
	return r;
}

int
secretfile_create(const char *dir, const char *name, const char *secret,
    char *why, size_t whylen)
{
	char *path = xasprintf("%s/%s", dir, name);
	char *data = xasprintf("%s\n", secret);
	int r = dir_is_private(dir);

	if (r == 0)
		r = write_new(path, data);
	if (r == -EEXIST)
		r = same_secret(path, secret);
	if (r == 0)
		r = fsync_dir(dir);
	if (r == -EEXIST)
		snprintf(why, whylen, "%s holds another password", path);
	else if (r == -EPERM || r == -ELOOP)
		snprintf(why, whylen, "%s %s", dir,
		    r == -EPERM ? "is writable by other users" :
				  "is a symbolic link");
	else if (r < 0)
		snprintf(why, whylen, "%s: %s", path, strerror(-r));
	secret_free(data);
	free(path);
	return r;
}
