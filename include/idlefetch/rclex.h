/*
 * rclex: a fetchmailrc cut into words the way fetchmail's own lexer cuts
 * it (quoted strings with backslash escapes, `#` comments, and `,` `:` `;`
 * as spaces), with its "noise" words (`with`, `and`, `there`...) skipped.
 * A word that holds a control character is refused here, whatever it is
 * for, so that none can reach a line of the configuration made from it.
 */
#ifndef IDLEFETCH_RCLEX_H
#define IDLEFETCH_RCLEX_H

#include <stdbool.h>
#include <stddef.h>

struct rctok {
	const char *s;
	unsigned line; /* where it starts */
	bool quoted;
};

struct rclex;

/*
 * Cuts text (a whole fetchmailrc; source is its name, for messages) into
 * words, in memory proportional to the text. 0 and *out, which the caller
 * frees with rclex_free(), or -EINVAL with "SOURCE:LINE: problem" in err.
 */
int rclex_new(const char *text, const char *source, struct rclex **out,
    char *err, size_t errlen);
/* Wipes the words (one may be a password) and frees lx; NULL is fine. */
void rclex_free(struct rclex *lx);

/* The next word that is not noise, or NULL. It lives as long as lx. */
const struct rctok *rclex_next(struct rclex *lx);
/* The word rclex_next() would return, without taking it. */
const struct rctok *rclex_peek(struct rclex *lx);
/*
 * The next word, as the value of keyword k; NULL if there is none, with
 * "SOURCE:LINE: 'k' needs a value" in err.
 */
const struct rctok *rclex_value(struct rclex *lx, const struct rctok *k,
    const char *source, char *err, size_t errlen);
/* Whether the word last taken came right after word (`is` LOCAL here). */
bool rclex_after(const struct rclex *lx, const char *word);
/* Whether t is the unquoted keyword word, in any case. */
bool rclex_kw(const struct rctok *t, const char *word);
/* Whether t is a word with a meaning (a folder list ends before one). */
bool rclex_is_keyword(const struct rctok *t);
/* Whether t starts an entry: poll, skip, server, defaults or set. */
bool rclex_starts_entry(const struct rctok *t);

#endif
