/*
 * state: "idlefetch-state 1" followed by uidvalidity and last_uid lines.
 * A reader that finds anything else refuses the file instead of guessing:
 * a wrong last_uid would either skip or re-deliver mail.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idlefetch/config.h"
#include "idlefetch/state.h"
#include "idlefetch/util.h"

char *
state_path(const char *state_dir, const char *account, const char *folder)
{
	char *key = config_folder_key(folder);
	char *p = xasprintf("%s/%s/%s.state", state_dir, account, key);

	free(key);
	return p;
}

int
state_prepare(const char *path)
{
	char buf[PATH_MAX];
	char *slash;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	slash = strrchr(buf, '/');
	if (slash == NULL || slash == buf)
		return 0;
	*slash = '\0';
	return mkdir_p(buf);
}

int
state_load(const char *path, struct state_rec *st)
{
	char buf[256];
	unsigned long v, u;
	ssize_t n;
	int fd, r;

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
	if (sscanf(buf, "idlefetch-state 1\nuidvalidity %lu\nlast_uid %lu\n",
		&v, &u) != 2 ||
	    v > UINT32_MAX || u > UINT32_MAX)
		return -EINVAL;
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
	char tmp[PATH_MAX], buf[128];
	int fd, n, r = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	n = snprintf(buf, sizeof(buf),
	    "idlefetch-state 1\nuidvalidity %u\n"
	    "last_uid %u\n",
	    st->uidvalidity, st->last_uid);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, (size_t)n) != n)
		r = errno ? -errno : -EIO;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	return sync_parent(path);
}
