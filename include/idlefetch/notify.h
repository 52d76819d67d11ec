/*
 * notify: the systemd service notification protocol, without libsystemd.
 *
 * When the service manager sets $NOTIFY_SOCKET, each message is one
 * datagram of "KEY=VALUE\n" lines sent to that AF_UNIX socket (a path, or
 * an abstract name written with a leading '@'). The variables are read once
 * and removed from the environment, so that commands idlefetch runs do not
 * talk to the service manager in its name. Without $NOTIFY_SOCKET every
 * call does nothing.
 */
#ifndef IDLEFETCH_NOTIFY_H
#define IDLEFETCH_NOTIFY_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

/*
 * Reads $NOTIFY_SOCKET and $WATCHDOG_USEC (honoured only when
 * $WATCHDOG_PID is unset or names this process), opens the socket and
 * unsets the variables. 0 when there is nothing to notify or it is ready;
 * a negative errno (with the reason in err) when the variable is invalid.
 */
int notify_init(char *err, size_t errlen);
/* Whether notify_init found a socket. */
int notify_enabled(void);
/* The watchdog interval asked for in microseconds; 0: none. */
uint64_t notify_watchdog_usec(void);
/* Sends one message ("READY=1", "STATUS=...\nREADY=1"); 0 or -errno. */
int notify_send(const char *msg);
/* Closes the socket (the child side of a fork, or the end). */
void notify_close(void);

/*
 * Turns a $NOTIFY_SOCKET value into an address: 0, or -EINVAL when it is
 * neither an absolute path nor '@' followed by an abstract name, or when
 * it does not fit. Exposed for the unit test.
 */
int notify_parse_addr(const char *s, struct sockaddr_un *sa, socklen_t *len);
/* Parses $WATCHDOG_USEC: 0 and *usec, or -EINVAL. Exposed for the test. */
int notify_parse_usec(const char *s, uint64_t *usec);

#endif
