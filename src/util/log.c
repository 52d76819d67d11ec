/*
 * log: formats one event per line. Message text is escaped so that a
 * server's text can never forge a second log line or break the JSON.
 * When stderr is journald's stream, each line starts with its priority
 * as sd-daemon(3) says ("<3>" ... "<7>"), which journald takes off the
 * text and keeps as the entry's priority.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "idlefetch/log.h"

static enum log_level log_max = LOGL_INFO;
static enum log_target log_target = LOG_TARGET_STDERR;
static const char *level_names[] = { "error", "warn", "info", "debug" };
static char progress[256]; /* shown below the log; "" none */
static bool to_journal; /* stderr is journald's: lines carry "<N>" */

/*
 * systemd names the journal stream it gives a service in JOURNAL_STREAM
 * ("DEVICE:INODE"). Only that very stream takes the prefixes: a process
 * that inherited the variable with stderr sent elsewhere (a terminal, a
 * file, a pipe of a test) must not show them.
 */
static bool
stderr_is_journal(void)
{
	const char *s = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int end = 0;

	if (s == NULL || sscanf(s, "%llu:%llu%n", &dev, &ino, &end) != 2 ||
	    s[end] != '\0')
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

void
log_init(enum log_level max, enum log_target target)
{
	log_max = max;
	log_target = target;
	to_journal = target != LOG_TARGET_SYSLOG && stderr_is_journal();
	if (target == LOG_TARGET_SYSLOG)
		openlog("idlefetch", LOG_PID, LOG_MAIL);
}

int
log_enabled(enum log_level level)
{
	return level <= log_max;
}

/* Escapes quotes, backslashes and control bytes into dst (always NUL-terminated). */
static void
escape(char *dst, size_t cap, const char *src)
{
	size_t o = 0;

	for (; *src && o + 7 < cap; src++) {
		unsigned char c = (unsigned char)*src;

		if (c == '"' || c == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c);
		} else {
			dst[o++] = (char)c;
		}
	}
	dst[o] = '\0';
}

void
log_msg(enum log_level level, const char *account, const char *folder,
    const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *journal_prio[] = { "<3>", "<4>", "<6>", "<7>" };
	const char *jp = to_journal ? journal_prio[level] : "";
	char raw[1024], msg[2048], acct[256] = "", fold[512] = "", ts[40];
	struct timeval tv;
	struct tm tm;
	va_list ap;

	if (level > log_max)
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	escape(msg, sizeof(msg), raw);
	if (account)
		escape(acct, sizeof(acct), account);
	if (folder)
		escape(fold, sizeof(fold), folder);

	if (log_target == LOG_TARGET_SYSLOG) {
		syslog(prio[level], "%s%s%s%s%s%smsg=\"%s\"",
		    account ? "account=" : "", acct, account ? " " : "",
		    folder ? "folder=\"" : "", fold, folder ? "\" " : "", msg);
		return;
	}
	if (gettimeofday(&tv, NULL) < 0)
		memset(&tv, 0, sizeof(tv));
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	if (log_target == LOG_TARGET_JSON) {
		fprintf(stderr, "%s{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\"", jp,
		    ts, (long)tv.tv_usec / 1000, level_names[level]);
		if (account)
			fprintf(stderr, ",\"account\":\"%s\"", acct);
		if (folder)
			fprintf(stderr, ",\"folder\":\"%s\"", fold);
		fprintf(stderr, ",\"msg\":\"%s\"}\n", msg);
		return;
	}
	if (progress[0])
		fputs("\r\033[K", stderr);
	fprintf(stderr, "%s%s.%03ldZ %s", jp, ts, (long)tv.tv_usec / 1000,
	    level_names[level]);
	if (account)
		fprintf(stderr, " account=%s", acct);
	if (folder)
		fprintf(stderr, " folder=\"%s\"", fold);
	fprintf(stderr, " msg=\"%s\"\n", msg);
	if (progress[0]) {
		fputs(progress, stderr);
		fflush(stderr);
	}
}

void
log_progress(const char *line)
{
	if (log_target != LOG_TARGET_STDERR)
		return;
	if (line == NULL) {
		if (progress[0])
			fputs("\n", stderr);
		progress[0] = '\0';
	} else {
		snprintf(progress, sizeof(progress), "%s", line);
		fprintf(stderr, "\r\033[K%s", progress);
	}
	fflush(stderr);
}
