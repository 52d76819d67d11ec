/*
 * spawn: runs a short command (password_command) off the event loop and
 * hands back the first line of its output. The command runs without a
 * shell unless it needs one (cmdline.h), else with `/bin/sh -c`; stdin
 * on /dev/null, no descriptor of ours (they are all
 * close-on-exec), and a time limit after which it is killed. Its standard
 * error is read too, so that the caller can log one line of it; the
 * output is a secret and never logged.
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
/* Kills the command; done still runs, with -ECANCELED. */
void spawn_cancel(struct spawn *sp);

#endif
