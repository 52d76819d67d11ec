/*
 * rcvalue: what of a fetchmailrc's values idlefetch.conf can hold as it is
 * in `key = value` (it has no quoting), for rcimport.
 */
#ifndef IDLEFETCH_RCVALUE_H
#define IDLEFETCH_RCVALUE_H

#include <stdbool.h>
#include <stddef.h>

#include "idlefetch/rclex.h"

/* inih reads lines of at most 4096 bytes (config.c); the key needs room. */
#define RCVALUE_MAX 4000

/* Whether s holds a control character. */
bool rcvalue_has_ctl(const char *s);
/*
 * Why idlefetch.conf cannot hold v as it is, or NULL. vars: "${" is
 * meant as an environment variable.
 */
const char *rcvalue_unholdable(const char *v, bool vars);
/*
 * 0 if v, the value of keyword k, can go into a `key = value` line as it
 * is, else -EINVAL and why in err (naming source and v's line). list: v
 * is one name of a comma-separated list.
 */
int rcvalue_plain(const char *source, const struct rctok *k,
    const struct rctok *v, bool list, char *err, size_t errlen);
/*
 * The folder list: one or more names after t, up to the next keyword,
 * joined with ", ". Returns it (the caller frees it), or NULL with err set.
 */
char *rcvalue_list(struct rclex *lx, const struct rctok *t, const char *source,
    char *err, size_t errlen);

#endif
