/*
 * cmdline: a command of the configuration (password_command,
 * oauth_token_command) as a program and its arguments, run without a
 * shell when it needs none. Words are split at spaces and tabs; each
 * ${NAME} becomes the environment's value (empty when unset) inside its
 * word, never split and never read as shell code. A command with any
 * character only a shell gives meaning to (quotes, pipes, redirections,
 * globs, a $ other than ${NAME}...) needs the shell: /bin/sh -c, which
 * expands ${NAME} itself.
 */
#ifndef IDLEFETCH_CMDLINE_H
#define IDLEFETCH_CMDLINE_H

#include <stdbool.h>

/* Characters only a shell gives meaning to. */
#define CMDLINE_SHELL_CHARS "|&;<>()$`\\\"'*?[]#~{}\n"

/*
 * The argv (NULL-terminated, the caller's to free with cmdline_free) of
 * cmd, or NULL when it needs a shell (or has no word). env: expand
 * ${NAME}; without it a $ needs the shell too. *bad (may be NULL) is the
 * first character that needs one, or 0.
 */
char **cmdline_split(const char *cmd, bool env, char *bad);
void cmdline_free(char **argv);
/*
 * cmdline_split(cmd, true, NULL) when its program is on PATH (or is a
 * path to an executable file), else NULL: what is no program (a shell
 * builtin such as "exit 3") is the shell's to run, or to word the error.
 */
char **cmdline_shell_free(const char *cmd);

#endif
