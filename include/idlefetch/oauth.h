/*
 * oauth: OAuth2 access tokens for SASL XOAUTH2 and OAUTHBEARER (RFC 7628).
 * One per account, owned by whoever owns the account's connections: the
 * token, printed by oauth_token_command, is kept until shortly before it
 * expires and shared by every connection of the account; the command runs
 * again when none is left that is fresh, or after the server refused one,
 * and runs once for all the connections that wait.
 */
#ifndef IDLEFETCH_OAUTH_H
#define IDLEFETCH_OAUTH_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* A token without expires_in is kept this long. */
#define OAUTH_PLAIN_TTL_S 600
/* A token is fetched again this long before it expires. */
#define OAUTH_MARGIN_S 60

struct oauth;

/*
 * The token, or NULL and err (one line, no secret) when the command
 * failed. token is the callee's, valid during the call.
 */
typedef void oauth_cb(void *ud, const char *token, const char *err);

/* cmd and account are borrowed and must outlive the oauth. */
struct oauth *oauth_new(uv_loop_t *loop, const char *account, const char *cmd,
    unsigned timeout_s);
/* Kills a running command; nobody may be waiting. */
void oauth_free(struct oauth *o);
/* A token fresh for OAUTH_MARGIN_S more, or NULL; valid until the next call. */
const char *oauth_token(struct oauth *o);
/*
 * Runs the command (or joins the run under way); cb(ud, ...) runs once,
 * later, from the loop. Each ud waits once.
 */
void oauth_fetch(struct oauth *o, oauth_cb *cb, void *ud);
/* ud no longer waits (its connection closed). */
void oauth_cancel(struct oauth *o, void *ud);
/*
 * Loop time (ms) by which a connection logged in with the token handed out
 * last is best replaced, before the server ends it at the token's expiry:
 * a quarter of its lifetime early, at least 1 s and at most
 * OAUTH_MARGIN_S. 0: no expiry known (no expires_in), or one too short
 * to be worth a second connection. oauth_token() hands that token out no
 * longer, so the replacement logs in with a new one.
 */
uint64_t oauth_renew_at(const struct oauth *o);
/* Which token oauth_token() or a callback handed out last (0: none). */
unsigned oauth_generation(const struct oauth *o);
/* The server refused that token: it is not handed out again. */
void oauth_refused(struct oauth *o, unsigned generation);

/*
 * The command's output: the token alone, or a JSON object with
 * "access_token" and, optionally, "expires_in" (seconds; -1 when absent).
 * Returns 0 with *token (caller frees, wipes), or -EINVAL.
 */
int oauth_parse_output(const char *out, char **token, int64_t *expires_in);

/*
 * The SASL initial response, base64, for mech AUTH_XOAUTH2 or
 * AUTH_OAUTHBEARER (config.h). The caller wipes and frees it.
 */
char *oauth_response(int mech, const char *user, const char *token,
    const char *host, unsigned port);

/*
 * A server's error challenge (base64 JSON, RFC 7628 3.2.2) as one
 * printable line: "status 401, scope https://mail.google.com/", or the
 * decoded text as it is.
 */
void oauth_describe_challenge(const char *b64, char *out, size_t len);

#endif
