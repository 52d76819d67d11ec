/*
 * spawn: runs a command (password_command, oauth_token_command, an MDA,
 * on_delivery) off the event loop and hands back the first line of its
 * output. The
 * command runs without a shell unless it needs one (cmdline.h), else with
 * `/bin/sh -c`; stdin on /dev/null, no descriptor of ours (they are all
 * close-on-exec), and a time limit after which it is killed. Its standard
 * error is read too, so that the caller can log one line of it; the
 * output is a secret and never logged. A command is judged by its exit:
 * once it has exited, its output is awaited 200 ms more, no longer, so
 * that a child left running in the background with the pipes open (an
 * agent, `sleep &`) cannot hold the caller until the time limit.
 */
#ifndef IDLEFETCH_SPAWN_H
#define IDLEFETCH_SPAWN_H

#include <stdint.h>

#include <uv.h>

struct spawn;

/*
 * status: 0 (exit status 0), a positive exit status, -ETIMEDOUT, or
 * another negative errno (it could not start, or a signal ended it).
 * out: the first line of standard output, owned by the callee, wiped and
 * freed after the callback; NULL unless status is 0. err_line: the first
 * line of standard error, printable, "" if none.
 */
typedef void spawn_done_cb(void *ud, int status, const char *out,
    const char *err_line);

/*
 * Starts cmd; done runs exactly once, from the loop, never from within
 * this call. The spawn frees itself after done.
 */
struct spawn *spawn_shell(uv_loop_t *loop, const char *cmd,
    uint64_t timeout_ms, spawn_done_cb *done, void *ud);
/*
 * As spawn_shell, for a command that is told things through its
 * environment (on_delivery): env is its whole environment (the caller
 * keeps it; spawn_environ makes one), a $ in cmd is expanded by the shell
 * from env, and standard output goes to /dev/null (out is always NULL).
 */
struct spawn *spawn_env(uv_loop_t *loop, const char *cmd, char **env,
    uint64_t timeout_ms, spawn_done_cb *done, void *ud);
/*
 * The environment a program of the configuration gets (an MDA, a hook):
 * PATH, HOME, USER, LOGNAME, LANG and TZ from ours (PATH has a default),
 * then vars ("NAME=value", NULL-terminated; may be NULL), nothing else: a
 * ${VAR} of the configuration may hold a password. The caller frees it
 * with cmdline_free.
 */
char **spawn_environ(const char *const *vars);
/* Kills the command; done still runs, with -ECANCELED. */
void spawn_cancel(struct spawn *sp);

/* How a command run by spawn_run ended. */
struct spawn_end {
	int status; /* as spawn_done_cb's; -EINTR when a signal ended it */
	int signal; /* that signal (SIGKILL after a time limit), else 0 */
	char err_line[200]; /* as spawn_done_cb's */
};

/*
 * Runs argv (no shell; argv[0] looked up in PATH) to its end and fills
 * *end, blocking: for a thread that may block, never the loop's. env:
 * its whole environment (NULL: ours). Standard input is in_fd (read from
 * where it stands; -1: /dev/null), output goes to /dev/null, standard
 * error is read as by spawn_shell. The caller keeps argv, env and in_fd.
 */
void spawn_run(char **argv, char **env, int in_fd, uint64_t timeout_ms,
    struct spawn_end *end);

#endif
