/*
 * secretfile: a secret written to a file of its own, as a password_file
 * is read (its first line), mode 0600, in a directory that no other user
 * can write to. A file already there is never overwritten: it is kept
 * when it holds the same secret (the same command run again) and refused
 * when it does not.
 */
#ifndef IDLEFETCH_SECRETFILE_H
#define IDLEFETCH_SECRETFILE_H

#include <stddef.h>

/*
 * Writes secret and a line end to DIR/NAME, fsyncs it and dir. 0, or
 * -errno with a sentence that names the file or dir in why (-EEXIST: the
 * file holds another secret; -EPERM: others can write to dir; -ELOOP: dir
 * is a symbolic link).
 */
int secretfile_create(const char *dir, const char *name, const char *secret,
    char *why, size_t whylen);

#endif
