/*
 * rcimport: `idlefetch import-fetchmailrc`, a fetchmailrc translated into
 * an idlefetch.conf, with a comment on every option that has no
 * counterpart and why.
 */
#ifndef IDLEFETCH_RCIMPORT_H
#define IDLEFETCH_RCIMPORT_H

#include <stdbool.h>
#include <stdio.h>

struct rcimport_opts {
	const char *source; /* the file's name, for messages and comments */
	const char *maildir; /* where the mail goes (fetchmail had an MDA) */
	const char *secrets_dir; /* where each account's password_file goes */
	bool keep_passwords; /* password = as in the rc, not a file */
};

/*
 * Translates text (a whole fetchmailrc) into out. Returns 0, or -EINVAL
 * with "SOURCE:LINE: problem" in err.
 */
int rcimport(const char *text, const struct rcimport_opts *o, FILE *out,
    char *err, size_t errlen);

#endif
