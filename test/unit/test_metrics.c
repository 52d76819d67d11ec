/*
 * Unit tests for metrics and its endpoint (httpd): the exposition text
 * Prometheus reads, label escaping, the cap on folder series, and hostile
 * clients of the endpoint on loopback, driven through the same loop code
 * the daemon runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "idlefetch/commit.h"
#include "idlefetch/httpd.h"
#include "idlefetch/metrics.h"
#include "idlefetch/util.h"

static uv_loop_t loop;
static uv_timer_t keepalive; /* the endpoint's handles keep no loop alive */

static void
tick(uv_timer_t *t)
{
	(void)t;
}

static int
setup(void **state)
{
	(void)state;
	uv_loop_init(&loop);
	uv_timer_init(&loop, &keepalive);
	uv_timer_start(&keepalive, tick, 10, 10);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	uv_close((uv_handle_t *)&keepalive, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	return 0;
}

/* "127.0.0.1:PORT" of a port free a moment ago. */
static const char *
free_addr(void)
{
	static char buf[32];
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	snprintf(buf, sizeof(buf), "127.0.0.1:%u", ntohs(sa.sin_port));
	return buf;
}

static void
collect(void *ud, struct metrics_scrape *sc)
{
	(void)ud;
	metrics_scrape_state(sc, "work", "IDLE", true);
	metrics_scrape_state(sc, "work", "IDLE", true);
	metrics_scrape_state(sc, "work", "BACKOFF", false);
}

/* A delivery job of n messages of `bytes` each, UIDs from first. */
static void
commit(const char *acct, const char *folder, uint32_t first, size_t n,
    uint64_t bytes, int result)
{
	struct maildir_file files[8];
	struct commit_req j;

	memset(&j, 0, sizeof(j));
	memset(files, 0, sizeof(files));
	for (size_t i = 0; i < n; i++) {
		files[i].uid = first + (uint32_t)i;
		files[i].bytes = bytes;
	}
	j.files = files;
	j.nfiles = j.ncommit = n;
	j.result = result;
	metrics_committed(acct, folder, &j);
}

static char *
render(struct metrics *m)
{
	size_t len;
	char *s = metrics_render(m, &len);

	assert_int_equal(strlen(s), len);
	return s;
}

/*
 * Every sample line belongs to the family whose # TYPE came last, and no
 * family appears twice: Prometheus refuses a scrape otherwise.
 */
static void
assert_well_formed(const char *text)
{
	char family[128] = "", seen[8192] = " ";
	const char *p = text;

	while (*p) {
		const char *eol = strchr(p, '\n');
		char name[128];

		assert_non_null(eol);
		if (strncmp(p, "# TYPE ", 7) == 0) {
			assert_int_equal(sscanf(p + 7, "%127s", family), 1);
			snprintf(name, sizeof(name), " %s ", family);
			assert_null(strstr(seen, name));
			strncat(seen, name + 1,
			    sizeof(seen) - strlen(seen) - 1);
		} else if (*p != '#') {
			size_t n = strcspn(p, "{ ");

			assert_true(n < sizeof(name));
			memcpy(name, p, n);
			name[n] = '\0';
			assert_int_equal(strncmp(name, family, strlen(family)),
			    0);
			assert_true(strcmp(name + strlen(family), "") == 0 ||
			    strcmp(name + strlen(family), "_bucket") == 0 ||
			    strcmp(name + strlen(family), "_sum") == 0 ||
			    strcmp(name + strlen(family), "_count") == 0);
		}
		p = eol + 1;
	}
}

static void
test_exposition_counts_what_was_delivered(void **state)
{
	struct metrics *m = NULL;
	char *s;

	(void)state;
	metrics_configure(&m, &loop, free_addr(), true, collect, NULL);
	assert_non_null(m);
	assert_true(metrics_port(m) > 0);
	commit("work", "INBOX", 1, 3, 100, 0);
	metrics_news("work", "INBOX");
	commit("work", "INBOX", 4, 2, 50, 0);
	commit("work", "Lists/dev", 7, 0, 0, -EAGAIN);
	metrics_reconnect("work", IDLEFETCH_EAUTH);
	metrics_reconnect("work", UV_EOF);
	metrics_reconnect("work", UV_EOF);
	metrics_recovery("work", "INBOX");
	s = render(m);
	assert_well_formed(s);
	assert_non_null(strstr(s,
	    "# TYPE idlefetch_messages_delivered_total counter\n"
	    "idlefetch_messages_delivered_total{account=\"work\"} 5\n"));
	assert_non_null(strstr(s,
	    "idlefetch_delivered_bytes_total{account=\"work\"} 400\n"));
	assert_non_null(strstr(s,
	    "idlefetch_deliveries_deferred_total{account=\"work\"} 1\n"));
	assert_non_null(
	    strstr(s, "idlefetch_login_failures_total{account=\"work\"} 1\n"));
	assert_non_null(strstr(s,
	    "idlefetch_reconnects_total{account=\"work\",reason=\"eof\"} 2\n"));
	assert_non_null(strstr(s,
	    "idlefetch_reconnects_total{account=\"work\",reason=\"login\"} 1\n"));
	assert_non_null(
	    strstr(s, "idlefetch_recoveries_total{account=\"work\"} 1\n"));
	assert_non_null(strstr(s,
	    "idlefetch_connection_state{account=\"work\",state=\"IDLE\"} 2\n"));
	assert_non_null(
	    strstr(s, "idlefetch_folders_up{account=\"work\"} 2\n"));
	/* The two messages after the news, within the first bucket's reach. */
	assert_non_null(strstr(s,
	    "idlefetch_push_delay_seconds_bucket{account="
	    "\"work\",le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(s,
	    "idlefetch_push_delay_seconds_count{account=\"work\"} 2\n"));
	assert_non_null(strstr(s,
	    "idlefetch_folder_last_delivered_uid{account="
	    "\"work\",folder=\"INBOX\"} 5\n"));
	assert_non_null(strstr(s,
	    "idlefetch_folder_delivered_bytes_total{"
	    "account=\"work\",folder=\"INBOX\"} 400\n"));
	assert_non_null(strstr(s, "\nprocess_resident_memory_bytes "));
	assert_non_null(strstr(s, "\nprocess_open_fds "));
	free(s);
	metrics_free(m);
	/* Off: the events do nothing (and allocate nothing). */
	commit("work", "INBOX", 9, 1, 10, 0);
	metrics_news("work", "INBOX");
	metrics_reconnect("work", UV_EOF);
}

static void
test_label_values_are_escaped_and_utf8(void **state)
{
	char buf[256];

	(void)state;
	metrics_escape(buf, sizeof(buf), "a\"b\\c\nd");
	assert_string_equal(buf, "a\\\"b\\\\c\\nd");
	metrics_escape(buf, sizeof(buf), "Entw\xc3\xbcrfe \xe2\x82\xac");
	assert_string_equal(buf, "Entw\xc3\xbcrfe \xe2\x82\xac");
	/* Not UTF-8 (a lone byte, overlong, surrogate, cut short), control. */
	metrics_escape(buf, sizeof(buf), "x\xff\xc0\xaf\xed\xa0\x80\xe2\x82");
	assert_string_equal(buf, "x????????");
	metrics_escape(buf, sizeof(buf), "tab\there\x7f");
	assert_string_equal(buf, "tab?here?");
	assert_string_equal(metrics_reason(IDLEFETCH_ETLS), "tls");
	assert_string_equal(metrics_reason(-12345), "other");
}

static size_t
count(const char *s, const char *what)
{
	size_t n = 0;

	for (const char *p = s; (p = strstr(p, what)) != NULL; p++)
		n++;
	return n;
}

static void
test_folder_series_are_bounded(void **state)
{
	struct metrics *m = NULL;
	char name[32], *s;
	unsigned port;

	(void)state;
	metrics_configure(&m, &loop, free_addr(), true, NULL, NULL);
	for (unsigned i = 0; i < METRICS_FOLDERS_MAX + 500; i++) {
		snprintf(name, sizeof(name), "f%u", i);
		commit("many", name, 1, 1, 10, 0);
	}
	s = render(m);
	assert_well_formed(s);
	assert_int_equal(count(s, "idlefetch_folder_last_delivered_uid{"),
	    METRICS_FOLDERS_MAX);
	/* The account's totals still count every folder. */
	assert_non_null(strstr(s,
	    "idlefetch_messages_delivered_total{account=\"many\"} 1500\n"));
	free(s);
	/* metrics_folders = no: no folder series at all; the listener stays. */
	port = metrics_port(m);
	snprintf(name, sizeof(name), "127.0.0.1:%u", port);
	metrics_configure(&m, &loop, name, false, NULL, NULL);
	assert_int_equal(metrics_port(m), port);
	s = render(m);
	assert_int_equal(count(s, "folder="), 0);
	free(s);
	metrics_configure(&m, &loop, NULL, false, NULL, NULL);
	assert_null(m);
}

/* ---- the endpoint, over loopback ---- */

static int
client(unsigned port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	return fd;
}

/*
 * Runs the loop while sending what is left of req and reading the answer
 * into out, until the server closes or ms pass; returns the bytes read.
 */
static size_t
exchange(int fd, const char *req, size_t len, char *out, size_t cap,
    unsigned ms)
{
	uint64_t end = uv_hrtime() / 1000000 + ms;
	size_t sent = 0, got = 0;

	while (uv_hrtime() / 1000000 < end) {
		ssize_t n;

		uv_run(&loop, UV_RUN_NOWAIT);
		if (sent < len) {
			n = send(fd, req + sent, len - sent, MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				sent = len; /* closed: read what it said */
		}
		n = recv(fd, out + got, cap - 1 - got, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			break;
		if (n > 0)
			got += (size_t)n;
		poll(NULL, 0, 1);
	}
	out[got] = '\0';
	return got;
}

static void
get(unsigned port, const char *req, const char *want)
{
	static char out[1 << 20];
	int fd = client(port);

	exchange(fd, req, strlen(req), out, sizeof(out), 3000);
	close(fd);
	if (strstr(out, want) == NULL)
		fail_msg("%s: wanted %s, got %.200s", req, want, out);
}

static void
test_endpoint_serves_get_metrics_only(void **state)
{
	struct metrics *m = NULL;
	unsigned port;

	(void)state;
	metrics_configure(&m, &loop, free_addr(), true, collect, NULL);
	port = metrics_port(m);
	get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
	    "HTTP/1.1 200 OK\r\n");
	get(port, "GET /metrics?x=1 HTTP/1.0\n\n", "idlefetch_folders_up{");
	get(port, "POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed");
	get(port, "GET /metricsx HTTP/1.1\r\n\r\n", "404 Not Found");
	get(port, "GET / HTTP/1.1\r\n\r\n", "404 Not Found");
	get(port, "garbage\r\n\r\n", "400 Bad Request");
	metrics_free(m);
}

static void
test_hostile_clients_are_bounded(void **state)
{
	static char big[1 << 20], out[4096];
	struct metrics *m = NULL;
	int fds[HTTPD_CLIENTS + 4], slow;
	unsigned port;
	size_t n;

	(void)state;
	metrics_configure(&m, &loop, free_addr(), true, NULL, NULL);
	port = metrics_port(m);
	/* A 1 MiB request head: 431 after 4 KiB, the rest never read. */
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
	slow = client(port);
	exchange(slow, big, sizeof(big), out, sizeof(out), 3000);
	close(slow);
	assert_non_null(strstr(out, "431 "));
	/* More clients than the cap: those past it are closed at once. */
	for (size_t i = 0; i < HTTPD_CLIENTS + 4; i++) {
		fds[i] = client(port);
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	n = exchange(fds[HTTPD_CLIENTS + 3], "", 0, out, sizeof(out), 1000);
	assert_int_equal(n, 0); /* closed without an answer */
	/* A slowloris among them is closed at the deadline, as are the idle. */
	n = exchange(fds[0], "GET /me", 7, out, sizeof(out),
	    HTTPD_DEADLINE_MS + 2000);
	assert_int_equal(n, 0);
	for (size_t i = 0; i < HTTPD_CLIENTS + 4; i++)
		close(fds[i]);
	/* Afterwards a scrape is answered as ever. */
	get(port, "GET /metrics HTTP/1.1\r\n\r\n",
	    "idlefetch_metrics_clients_refused_total 4\n");
	metrics_free(m);
}

static void
test_bad_addresses_are_refused(void **state)
{
	struct sockaddr_storage ss;
	char why[256];

	(void)state;
	assert_int_equal(httpd_parse_address("9100", &ss, why, sizeof(why)), 0);
	assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr,
	    htonl(INADDR_LOOPBACK));
	assert_int_equal(httpd_parse_address("0.0.0.0:9100", &ss, why,
			     sizeof(why)),
	    0);
	assert_int_equal(httpd_parse_address("[::1]:9100", &ss, why,
			     sizeof(why)),
	    0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(httpd_parse_address("localhost:9100", &ss, why,
			     sizeof(why)),
	    -EINVAL);
	assert_non_null(strstr(why, "'localhost:9100' is not"));
	assert_int_equal(httpd_parse_address("1.2.3.4:0", &ss, why,
			     sizeof(why)),
	    -EINVAL);
	assert_int_equal(httpd_parse_address("1.2.3.4:70000", &ss, why,
			     sizeof(why)),
	    -EINVAL);
	assert_int_equal(httpd_parse_address("::1:80", &ss, why, sizeof(why)),
	    -EINVAL);
	assert_int_equal(httpd_parse_address("", &ss, why, sizeof(why)),
	    -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exposition_counts_what_was_delivered),
		cmocka_unit_test(test_label_values_are_escaped_and_utf8),
		cmocka_unit_test(test_folder_series_are_bounded),
		cmocka_unit_test(test_endpoint_serves_get_metrics_only),
		cmocka_unit_test(test_hostile_clients_are_bounded),
		cmocka_unit_test(test_bad_addresses_are_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
