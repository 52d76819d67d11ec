/*
 * Unit tests for notify: the $NOTIFY_SOCKET forms systemd uses, and a
 * message actually received on a socket of ours, abstract and path.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "idlefetch/notify.h"

static void
test_parse_addr_path_and_abstract(void **state)
{
	struct sockaddr_un sa;
	socklen_t len;

	assert_int_equal(notify_parse_addr("/run/systemd/notify", &sa, &len),
	    0);
	assert_string_equal(sa.sun_path, "/run/systemd/notify");
	assert_int_equal(len,
	    offsetof(struct sockaddr_un, sun_path) +
		strlen("/run/systemd/notify") + 1);
	assert_int_equal(notify_parse_addr("@abs/name", &sa, &len), 0);
	assert_int_equal(sa.sun_path[0], '\0');
	assert_memory_equal(sa.sun_path + 1, "abs/name", 8);
	/* Abstract names are not NUL-terminated: the length says where. */
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 9);
}

static void
test_parse_addr_rejects_bad_values(void **state)
{
	char longname[200];
	struct sockaddr_un sa;
	socklen_t len;

	assert_int_equal(notify_parse_addr("relative", &sa, &len), -EINVAL);
	assert_int_equal(notify_parse_addr("@", &sa, &len), -EINVAL);
	assert_int_equal(notify_parse_addr("", &sa, &len), -EINVAL);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(notify_parse_addr(longname, &sa, &len), -EINVAL);
}

static void
test_parse_usec(void **state)
{
	uint64_t u;

	assert_int_equal(notify_parse_usec("30000000", &u), 0);
	assert_true(u == 30000000);
	assert_int_not_equal(notify_parse_usec("0", &u), 0);
	assert_int_not_equal(notify_parse_usec("-5", &u), 0);
	assert_int_not_equal(notify_parse_usec("10s", &u), 0);
	assert_int_not_equal(notify_parse_usec("99999999999999999999", &u), 0);
}

/* Binds name (a path or "@abstract"), sends through notify, reads back. */
static void
roundtrip(const char *name)
{
	struct sockaddr_un sa;
	socklen_t len;
	char buf[256], err[256];
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ssize_t n;

	assert_true(fd >= 0);
	assert_int_equal(notify_parse_addr(name, &sa, &len), 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
	setenv("NOTIFY_SOCKET", name, 1);
	setenv("WATCHDOG_USEC", "4000000", 1);
	unsetenv("WATCHDOG_PID");
	assert_int_equal(notify_init(err, sizeof(err)), 0);
	assert_true(notify_enabled());
	assert_true(notify_watchdog_usec() == 4000000);
	/* Commands idlefetch runs must not inherit the socket's name. */
	assert_null(getenv("NOTIFY_SOCKET"));
	assert_null(getenv("WATCHDOG_USEC"));
	assert_int_equal(notify_send("READY=1\nSTATUS=x"), 0);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_int_equal(n, 16);
	buf[n] = '\0';
	assert_string_equal(buf, "READY=1\nSTATUS=x");
	notify_close();
	assert_false(notify_enabled());
	close(fd);
	if (name[0] == '/')
		unlink(name);
}

static void
test_message_arrives_on_path_and_abstract_sockets(void **state)
{
	char path[64], abs[64];

	snprintf(path, sizeof(path), "/tmp/idlefetch-notify-%ld", (long)getpid());
	snprintf(abs, sizeof(abs), "@idlefetch-notify-%ld", (long)getpid());
	roundtrip(path);
	roundtrip(abs);
}

static void
test_watchdog_for_another_pid_is_ignored(void **state)
{
	char err[256];

	setenv("NOTIFY_SOCKET", "@idlefetch-unused", 1);
	setenv("WATCHDOG_USEC", "1000000", 1);
	setenv("WATCHDOG_PID", "1", 1);
	assert_int_equal(notify_init(err, sizeof(err)), 0);
	assert_true(notify_watchdog_usec() == 0);
	notify_close();

	setenv("NOTIFY_SOCKET", "not-absolute", 1);
	assert_int_not_equal(notify_init(err, sizeof(err)), 0);
	assert_non_null(strstr(err, "NOTIFY_SOCKET"));
	assert_false(notify_enabled());
	/* Without a socket every call is a quiet no-op. */
	assert_int_equal(notify_send("READY=1"), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_addr_path_and_abstract),
		cmocka_unit_test(test_parse_addr_rejects_bad_values),
		cmocka_unit_test(test_parse_usec),
		cmocka_unit_test(test_message_arrives_on_path_and_abstract_sockets),
		cmocka_unit_test(test_watchdog_for_another_pid_is_ignored),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
