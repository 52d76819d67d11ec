/*
 * hook: an account's on_delivery command, run after commits that made new
 * messages durable. It runs through spawn (no shell unless needed,
 * command_timeout, the first line of its standard error logged), with the
 * environment of spawn_environ() and:
 *   IDLEFETCH_ACCOUNT  the account's name
 *   IDLEFETCH_COUNT    messages delivered since the last run started
 *   IDLEFETCH_FOLDERS  the folders they came from, one per line (UTF-8, as
 *                      configured or as the server names them)
 *   IDLEFETCH_MAILDIR  the account's Maildir; unset with deliver = lmtp:
 *                      or mda: (the mail is then not in a Maildir of ours)
 * At most one run at a time: what is delivered during a run is told by one
 * more run after it. A run never delays fetching, and how it ends is
 * logged and changes nothing else.
 */
#ifndef IDLEFETCH_HOOK_H
#define IDLEFETCH_HOOK_H

#include <stdbool.h>

#include <uv.h>

struct hook;

/*
 * The hook of account (its name) running command, or NULL when command is
 * NULL or empty (no hook: hook_delivered and hook_free take NULL). maildir
 * may be NULL. The strings are copied.
 */
struct hook *hook_new(uv_loop_t *loop, const char *account, const char *command,
    const char *maildir, unsigned timeout_s);
/*
 * n messages of folder are durable. Cheap and never blocks: the run starts
 * from the loop, after the callbacks of this turn (commits of several
 * folders finishing together make one run).
 */
void hook_delivered(struct hook *h, const char *folder, unsigned n);
/*
 * The owner lets go. A run in progress goes on to its end (at most
 * command_timeout, then spawn kills it); deliveries not yet told are told
 * by one more run if drain (--once: every delivery is told before the
 * process exits), else dropped (shutdown, reload). The hook frees itself
 * once nothing runs; the loop must run on until then.
 */
void hook_free(struct hook *h, bool drain);

#endif
