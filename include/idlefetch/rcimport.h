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
	/*
	 * password = as in the rc, not a file; but a password that the
	 * configuration cannot hold as it is (" ;", "${", spaces at its
	 * ends) is written to SECRETS_DIR/ACCOUNT.password, mode 0600.
	 */
	bool keep_passwords;
};

/*
 * Translates text (a whole fetchmailrc) into out; nothing is written to
 * out unless the whole file translates. Returns 0, or -errno with
 * "SOURCE:LINE: problem" in err (-EINVAL: the file, or a value in it that
 * idlefetch.conf cannot hold; others: a password_file was not made).
 */
int rcimport(const char *text, const struct rcimport_opts *o, FILE *out,
    char *err, size_t errlen);

#endif
