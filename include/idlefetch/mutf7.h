/*
 * mutf7: IMAP's modified UTF-7 for mailbox names (RFC 3501 5.1.3).
 * Printable ASCII stands for itself ('&' as "&-"); anything else is
 * UTF-16 in a base64 run ("+/" become "+,") between '&' and '-'. The
 * configuration holds UTF-8; the server sees only modified UTF-7.
 */
#ifndef IDLEFETCH_MUTF7_H
#define IDLEFETCH_MUTF7_H

#include <stdbool.h>

/* Whether s is well-formed UTF-8 (no overlong forms, surrogates or C1). */
bool utf8_valid(const char *s);

/* UTF-8 to modified UTF-7; NULL if s is not valid UTF-8. Caller frees. */
char *mutf7_encode(const char *utf8);

/*
 * Modified UTF-7 to UTF-8; NULL if s is not valid modified UTF-7 (a run
 * not closed, bits left over, a lone surrogate, printable ASCII encoded,
 * two runs in a row).
 * Caller frees.
 */
char *mutf7_decode(const char *s);

/*
 * The name to send for a configured folder: printable ASCII that already
 * is valid modified UTF-7 as written ("Entw&APw-rfe" stays, so older
 * configurations keep their folders and state), anything else encoded
 * ("Entwürfe", "Q&A" becomes "Q&-A"). NULL if name is not valid UTF-8.
 */
char *mutf7_wire_name(const char *name);

#endif
