/*
 * notify: a few dozen lines instead of libsystemd. The socket is
 * non-blocking and close-on-exec; a message that cannot be sent is
 * dropped (the service manager is gone or its queue is full), never
 * waited for: the event loop must not block on it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idlefetch/notify.h"
#include "idlefetch/util.h"

static int notify_fd = -1;
static struct sockaddr_un notify_sa;
static socklen_t notify_salen;
static uint64_t watchdog_usec;

int
notify_parse_addr(const char *s, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n = strlen(s);

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (n < 2 || (s[0] != '/' && s[0] != '@') ||
	    n >= sizeof(sa->sun_path))
		return -EINVAL;
	memcpy(sa->sun_path, s, n);
	if (s[0] == '@') /* an abstract name: no terminating NUL counted */
		sa->sun_path[0] = '\0';
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
	    (s[0] == '/'));
	return 0;
}

int
notify_parse_usec(const char *s, uint64_t *usec)
{
	/* systemd takes an interval from 1 us up; a year is beyond sense. */
	return parse_u64(s, 1, UINT64_C(365) * 86400 * 1000000, usec);
}

static int
watchdog_for_us(void)
{
	const char *pid = getenv("WATCHDOG_PID");
	uint64_t p;

	if (pid == NULL)
		return 1;
	return parse_u64(pid, 1, INT32_MAX, &p) == 0 &&
	    (pid_t)p == getpid();
}

int
notify_init(char *err, size_t errlen)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	const char *wd = getenv("WATCHDOG_USEC");
	int r = 0;

	if (wd != NULL && watchdog_for_us() &&
	    notify_parse_usec(wd, &watchdog_usec) < 0) {
		snprintf(err, errlen, "WATCHDOG_USEC: '%s' is not a number "
		    "of microseconds", wd);
		r = -EINVAL;
	}
	if (r == 0 && sock != NULL && *sock != '\0') {
		if (notify_parse_addr(sock, &notify_sa, &notify_salen) < 0) {
			snprintf(err, errlen, "NOTIFY_SOCKET: '%s' is neither "
			    "an absolute path nor an abstract name", sock);
			r = -EINVAL;
		} else {
			notify_fd = socket(AF_UNIX,
			    SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
			if (notify_fd < 0) {
				r = -errno;
				snprintf(err, errlen, "NOTIFY_SOCKET: %s",
				    strerror(errno));
			}
		}
	}
	if (notify_fd < 0)
		watchdog_usec = 0; /* nobody to tell */
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	return r;
}

int
notify_enabled(void)
{
	return notify_fd >= 0;
}

uint64_t
notify_watchdog_usec(void)
{
	return watchdog_usec;
}

int
notify_send(const char *msg)
{
	ssize_t n;

	if (notify_fd < 0)
		return 0;
	do
		n = sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
		    (struct sockaddr *)&notify_sa, notify_salen);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : 0;
}

void
notify_close(void)
{
	if (notify_fd >= 0)
		close(notify_fd);
	notify_fd = -1;
	watchdog_usec = 0;
}
