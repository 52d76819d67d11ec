/*
 * oauth: OAuth2 tokens from oauth_token_command (see idlefetch/oauth.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "idlefetch/config.h"
#include "idlefetch/oauth.h"
#include "idlefetch/spawn.h"
#include "idlefetch/util.h"

struct waiter {
	oauth_cb *cb;
	void *ud;
};

struct oauth {
	uv_loop_t *loop;
	const char *account, *cmd;
	unsigned timeout_s;
	char *token; /* NULL: none */
	unsigned gen; /* counts the tokens */
	uint64_t good_until; /* loop time, ms */
	uint64_t renew_at; /* loop time, ms; 0: no expiry known */
	struct spawn *sp; /* the command, while it runs */
	struct waiter *w;
	size_t nw, capw;
};

static void
drop_token(struct oauth *o)
{
	if (o->token == NULL)
		return;
	OPENSSL_cleanse(o->token, strlen(o->token));
	free(o->token);
	o->token = NULL;
}

struct oauth *
oauth_new(uv_loop_t *loop, const char *account, const char *cmd,
    unsigned timeout_s)
{
	struct oauth *o = xcalloc(1, sizeof(*o));

	o->loop = loop;
	o->account = account;
	o->cmd = cmd;
	o->timeout_s = timeout_s;
	return o;
}

void
oauth_free(struct oauth *o)
{
	if (o == NULL)
		return;
	if (o->nw > 0)
		fatal("oauth_free with %zu connection(s) waiting", o->nw);
	if (o->sp) {
		/* Its callback still runs, and frees what is left. */
		spawn_cancel(o->sp);
		o->sp = NULL;
		o->account = NULL; /* marks it orphaned */
		drop_token(o); /* nobody asks for it again */
		return;
	}
	drop_token(o);
	free(o->w);
	free(o);
}

const char *
oauth_token(struct oauth *o)
{
	if (o->token && uv_now(o->loop) < o->good_until)
		return o->token;
	return NULL;
}

/* Printable, no white space: what a bearer token is (RFC 6750 2.1). */
static bool
token_ok(const char *t)
{
	if (*t == '\0' || strlen(t) > 16384)
		return false;
	for (; *t; t++)
		if (*t <= 0x20 || *t >= 0x7f)
			return false;
	return true;
}

int
oauth_parse_output(const char *out, char **token, int64_t *expires_in)
{
	struct json_object *j, *v;
	const char *t;
	int r = -EINVAL;

	*token = NULL;
	*expires_in = -1;
	while (*out == ' ' || *out == '\t')
		out++;
	if (*out != '{') {
		size_t n = strcspn(out, " \t\r");

		if (out[n] != '\0' && strspn(out + n, " \t\r") != strlen(out + n))
			return -EINVAL;
		*token = xstrndup(out, n);
		if (!token_ok(*token)) {
			free(*token);
			*token = NULL;
			return -EINVAL;
		}
		return 0;
	}
	j = json_tokener_parse(out);
	if (j == NULL || !json_object_is_type(j, json_type_object))
		goto out;
	if (!json_object_object_get_ex(j, "access_token", &v) ||
	    !json_object_is_type(v, json_type_string))
		goto out;
	t = json_object_get_string(v);
	if (!token_ok(t))
		goto out;
	if (json_object_object_get_ex(j, "expires_in", &v)) {
		if (json_object_is_type(v, json_type_int))
			*expires_in = json_object_get_int64(v);
		else if (json_object_is_type(v, json_type_string) &&
		    isdigit((unsigned char)*json_object_get_string(v)))
			*expires_in = strtoll(json_object_get_string(v), NULL,
			    10);
		if (*expires_in < 0)
			*expires_in = -1;
	}
	*token = xstrdup(t);
	r = 0;
out:
	if (j)
		json_object_put(j);
	return r;
}

/*
 * Shorter tokens are not replaced ahead: a second connection every few
 * seconds costs more than the reconnect after the server's BYE.
 */
#define RENEW_MIN_LIFE_S 5

/*
 * When a connection logged in with a token that lives exp s is replaced:
 * a quarter of its life early (1 s to OAUTH_MARGIN_S). That is never
 * before good_until, so the replacement runs the command again.
 */
static uint64_t
renew_at(const struct oauth *o, int64_t exp)
{
	uint64_t life, margin;

	if (exp < RENEW_MIN_LIFE_S)
		return 0;
	life = (uint64_t)exp * 1000;
	margin = life / 4;
	if (margin < 1000)
		margin = 1000;
	if (margin > OAUTH_MARGIN_S * 1000)
		margin = OAUTH_MARGIN_S * 1000;
	return uv_now(o->loop) + life - margin;
}

static void
run_done(void *ud, int status, const char *out, const char *err_line)
{
	struct oauth *o = ud;
	struct waiter *w;
	size_t nw;
	char err[512] = "";
	char *tok = NULL;
	int64_t exp = -1;

	o->sp = NULL;
	if (o->account == NULL) { /* freed while it ran */
		free(o->w);
		free(o);
		return;
	}
	if (status == 0 && oauth_parse_output(out, &tok, &exp) < 0)
		snprintf(err, sizeof(err),
		    "oauth_token_command printed neither a token nor a JSON "
		    "object with access_token on its first line");
	else if (status == -ETIMEDOUT)
		snprintf(err, sizeof(err),
		    "oauth_token_command did not finish within %u s",
		    o->timeout_s);
	else if (status > 0)
		snprintf(err, sizeof(err),
		    "oauth_token_command exited with status %d%s%s", status,
		    *err_line ? ": " : "", err_line);
	else if (status < 0)
		snprintf(err, sizeof(err), "oauth_token_command failed: %s",
		    strerror(-status));
	if (tok) {
		uint64_t ttl = exp < 0 ? OAUTH_PLAIN_TTL_S :
		    exp > 2 * OAUTH_MARGIN_S ? (uint64_t)exp - OAUTH_MARGIN_S :
					       (uint64_t)exp / 2;

		drop_token(o);
		o->token = tok;
		o->gen++;
		o->good_until = uv_now(o->loop) + ttl * 1000;
		o->renew_at = renew_at(o, exp);
	}
	/* Callbacks may wait again: hand them a list of their own. */
	w = o->w;
	nw = o->nw;
	o->w = NULL;
	o->nw = o->capw = 0;
	for (size_t i = 0; i < nw; i++)
		w[i].cb(w[i].ud, tok ? o->token : NULL, tok ? NULL : err);
	free(w);
}

void
oauth_fetch(struct oauth *o, oauth_cb *cb, void *ud)
{
	if (o->nw == o->capw) {
		o->capw = o->capw ? o->capw * 2 : 4;
		o->w = xrealloc(o->w, o->capw * sizeof(*o->w));
	}
	o->w[o->nw++] = (struct waiter){ cb, ud };
	if (o->sp == NULL)
		o->sp = spawn_shell(o->loop, o->cmd, (uint64_t)o->timeout_s * 1000,
		    run_done, o);
}

void
oauth_cancel(struct oauth *o, void *ud)
{
	size_t k = 0;

	for (size_t i = 0; i < o->nw; i++)
		if (o->w[i].ud != ud)
			o->w[k++] = o->w[i];
	o->nw = k;
}

uint64_t
oauth_renew_at(const struct oauth *o)
{
	return o->token ? o->renew_at : 0;
}

unsigned
oauth_generation(const struct oauth *o)
{
	return o->gen;
}

void
oauth_refused(struct oauth *o, unsigned generation)
{
	if (o->gen == generation) {
		drop_token(o);
		o->renew_at = 0;
	}
}

/* "user" as a SASL saslname (RFC 5801): ',' and '=' escaped. */
static size_t
saslname(char *dst, const char *user)
{
	size_t n = 0;

	for (; *user; user++) {
		if (*user == ',' || *user == '=') {
			if (dst)
				memcpy(dst + n, *user == ',' ? "=2C" : "=3D", 3);
			n += 3;
		} else {
			if (dst)
				dst[n] = *user;
			n++;
		}
	}
	return n;
}

char *
oauth_response(int mech, const char *user, const char *token,
    const char *host, unsigned port)
{
	size_t cap = strlen(user) * 3 + strlen(token) + strlen(host) + 64, n;
	char *raw = xmalloc(cap), *b64;

	if (mech == AUTH_XOAUTH2) {
		n = (size_t)snprintf(raw, cap, "user=%s\001auth=Bearer %s\001\001",
		    user, token);
	} else {
		n = (size_t)snprintf(raw, cap, "n,a=");
		n += saslname(raw + n, user);
		n += (size_t)snprintf(raw + n, cap - n,
		    ",\001host=%s\001port=%u\001auth=Bearer %s\001\001", host,
		    port, token);
	}
	b64 = xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)b64, (unsigned char *)raw, (int)n);
	OPENSSL_cleanse(raw, cap);
	free(raw);
	return b64;
}

/* Appends "key value" from a JSON string or number field, if present. */
static void
describe_field(struct json_object *j, const char *key, char *out, size_t len)
{
	struct json_object *v;
	size_t n = strlen(out);

	if (!json_object_object_get_ex(j, key, &v) ||
	    json_object_is_type(v, json_type_object) ||
	    json_object_is_type(v, json_type_array))
		return;
	snprintf(out + n, len - n, "%s%s %s", n ? ", " : "", key,
	    json_object_get_string(v));
}

void
oauth_describe_challenge(const char *b64, char *out, size_t len)
{
	size_t n = strlen(b64), k;
	unsigned char *raw = xmalloc(n / 4 * 3 + 4);
	struct json_object *j;
	int got;

	out[0] = '\0';
	while (*b64 == ' ')
		b64++, n--;
	while (n > 0 && (b64[n - 1] == ' ' || b64[n - 1] == '\r'))
		n--;
	got = n % 4 == 0 ? EVP_DecodeBlock(raw, (const unsigned char *)b64,
			       (int)n) :
			   -1;
	if (got < 0) {
		snprintf(out, len, "an undecodable challenge");
		free(raw);
		return;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	for (k = n; k > 0 && b64[k - 1] == '='; k--)
		got--;
	raw[got < 0 ? 0 : got] = '\0';
	j = json_tokener_parse((const char *)raw);
	if (j && json_object_is_type(j, json_type_object)) {
		describe_field(j, "status", out, len);
		describe_field(j, "schemes", out, len);
		describe_field(j, "scope", out, len);
	}
	if (j)
		json_object_put(j);
	if (out[0] == '\0') {
		/* Not JSON: the text itself, printable. */
		for (k = 0; k + 1 < len && raw[k]; k++)
			out[k] = raw[k] >= 0x20 && raw[k] < 0x7f ? (char)raw[k] :
								  '?';
		out[k] = '\0';
	}
	free(raw);
}
