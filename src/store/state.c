/*
 * state: "idlefetch-state 1" followed by uidvalidity and last_uid lines,
 * then optionally last_size and last_msgid (the fingerprint of the message
 * last_uid), keep_to, recovering and recovered_at (a recovery's), and
 * pending and refused lines (an MDA or LMTP target's); see state.h.
 * A reader that finds anything else refuses the file instead of guessing:
 * a wrong last_uid would either skip or re-deliver mail.
 *
 * Owns a folder's state file and the binding of an account's state to its
 * Maildir; the account's lock is state_lock.c's. Calls foldername (for the
 * file's name) and util only: never the configuration.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <limits.h>
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
