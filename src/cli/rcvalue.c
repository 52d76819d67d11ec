/*
 * rcvalue: whether idlefetch.conf can hold a fetchmailrc's value as it is
 * (see idlefetch/rcvalue.h). idlefetch.conf has no quoting, so a value
 * goes in as it is or not at all. Owns no state; calls rclex (for a
 * folder list's words) and util.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idlefetch/rclex.h"
#include "idlefetch/rcvalue.h"
#include "idlefetch/util.h"

bool
rcvalue_has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/*
 * Why idlefetch.conf cannot hold v as it is in `key = v`, or NULL. It has
 * no quoting: inih ends a value at a ';' that starts it or follows a
 * space, and drops the spaces around it; "${" names a variable (vars:
 * that is meant, as in a --maildir given as ${HOME}/Maildir).
 */
const char *
rcvalue_unholdable(const char *v, bool vars)
{
	size_t n = strlen(v);

	if (rcvalue_has_ctl(v))
		return "it holds a control character";
	for (size_t i = 0; i < n; i++) {
		if (v[i] == ';' && (i == 0 || isspace((unsigned char)v[i - 1])))
			return "a ';' after a space or at its start begins "
			       "a comment";
		if (!vars && v[i] == '$' && v[i + 1] == '{')
			return "'${' would be read as an environment variable";
	}
	if (n > 0 &&
	    (isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1])))
		return "the spaces at its start or end would be dropped";
	if (n > RCVALUE_MAX)
		return "it is longer than a line of idlefetch.conf may be";
	return NULL;
}

/*
 * v, the value of keyword k, goes into a `key = value` line: 0 if the
 * configuration holds it as it is, else -EINVAL and why in err. list: v
 * is one name of a comma-separated list.
 */
int
rcvalue_plain(const char *source, const struct rctok *k, const struct rctok *v,
    bool list, char *err, size_t errlen)
{
	const char *why = rcvalue_unholdable(v->s, false);

	if (why == NULL && list && strchr(v->s, ',') != NULL)
		why = "its ',' would split it in two";
	if (why == NULL)
		return 0;
	snprintf(err, errlen,
	    "%s:%u: %s '%.200s': idlefetch.conf cannot hold "
	    "this value as it is: %s",
	    source, v->line, k->s, v->s, why);
	return -EINVAL;
}

/*
 * The folder list: one or more names after t, up to the next keyword.
 * Returns the list, or NULL with err set.
 */
char *
rcvalue_list(struct rclex *lx, const struct rctok *t, const char *source,
    char *err, size_t errlen)
{
	const struct rctok *v = rclex_value(lx, t, source, err, errlen);
	char *list, *l;

	if (v == NULL || rcvalue_plain(source, t, v, true, err, errlen) < 0)
		return NULL;
	list = xstrdup(v->s);
	while (rclex_peek(lx) && !rclex_is_keyword(rclex_peek(lx))) {
		v = rclex_next(lx);
		if (rcvalue_plain(source, t, v, true, err, errlen) < 0) {
			free(list);
			return NULL;
		}
		if (strlen(list) + strlen(v->s) + 2 > RCVALUE_MAX) {
			snprintf(err, errlen,
			    "%s:%u: %s: the list is longer "
			    "than a line of idlefetch.conf may be",
			    source, v->line, t->s);
			free(list);
			return NULL;
		}
		l = xasprintf("%s, %s", list, v->s);
		free(list);
		list = l;
	}
	return list;
}
