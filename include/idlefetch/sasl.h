/*
 * sasl: the login command an account sends, as text, with no connection:
 * AUTHENTICATE PLAIN (RFC 4616), XOAUTH2 or OAUTHBEARER (RFC 7628), with
 * the initial response at once (SASL-IR, RFC 4959) or after the server's
 * "+", else LOGIN. The OAuth2 responses themselves are oauth's.
 */
#ifndef IDLEFETCH_SASL_H
#define IDLEFETCH_SASL_H

#include <stddef.h>
#include <stdint.h>

#include "idlefetch/config.h"

/*
 * The login command of account a (without its tag) for a server with the
 * CAP_* bits caps; token: the OAuth2 token (auth = xoauth2, oauthbearer),
 * else unused. Returns 0 with *line and *plus, the response to send after
 * the server's "+" (NULL: none, and then *line itself holds credentials),
 * both the caller's to wipe and free (secret_free); or IDLEFETCH_ECAPA
 * (the server offers nothing this account can log in with) or -EINVAL
 * (LOGIN cannot carry the credentials: retrying cannot help), with a
 * one-line reason, no secret, in why.
 */
int sasl_login(const struct account *a, uint32_t caps, const char *token,
    char **line, char **plus, char *why, size_t len);

/* AUTHENTICATE PLAIN's response for user and pass, base64; wipe, free. */
char *sasl_plain(const char *user, const char *pass);

/*
 * The answer to an OAuth2 error challenge, which ends the exchange so the
 * server sends its NO: empty for XOAUTH2, %x01 for OAUTHBEARER (RFC 7628
 * 3.2.3). Static.
 */
const char *sasl_oauth_abort(enum auth_mode mech);

#endif
