/*
 * log: one line per event, "LEVEL account=A folder=F msg=...", to stderr,
 * syslog or as JSON lines. Callers never pass secrets; the session masks
 * credentials before logging protocol traffic.
 */
#ifndef IDLEFETCH_LOG_H
#define IDLEFETCH_LOG_H

enum log_level { LOGL_ERROR, LOGL_WARN, LOGL_INFO, LOGL_DEBUG };
enum log_target { LOG_TARGET_STDERR, LOG_TARGET_SYSLOG, LOG_TARGET_JSON };

/*
 * Also looks whether stderr is the journal stream systemd gave the
 * service (JOURNAL_STREAM): then the stderr and JSON lines start with
 * their priority, "<3>" (error) to "<7>" (debug), for journald.
 */
void log_init(enum log_level max, enum log_target target);
int log_enabled(enum log_level level);
/* account and folder may be NULL. */
void log_msg(enum log_level level, const char *account, const char *folder,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Keeps line (a progress bar) below the log on a terminal: each log line
 * is written above it. NULL ends it, leaving its last state on the screen.
 * Only for the stderr target; the caller checks that stderr is a terminal.
 */
void log_progress(const char *line);

#endif
