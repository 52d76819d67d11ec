/*
 * sasl: building the login command. Nothing here knows the connection;
 * everything it returns that holds a credential is wiped by the caller.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "idlefetch/oauth.h"
#include "idlefetch/proto.h"
#include "idlefetch/sasl.h"
#include "idlefetch/util.h"

char *
sasl_plain(const char *user, const char *pass)
{
	size_t ul = strlen(user), pl = strlen(pass);
	size_t rawlen = ul + pl + 2;
	unsigned char *raw = xmalloc(rawlen);
	char *b64 = xmalloc(4 * ((rawlen + 2) / 3) + 1);

	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[ul + 1] = '\0';
	memcpy(raw + ul + 2, pass, pl);
	EVP_EncodeBlock((unsigned char *)b64, raw, (int)rawlen);
	OPENSSL_cleanse(raw, rawlen);
	free(raw);
	return b64;
}

const char *
sasl_oauth_abort(enum auth_mode mech)
{
	return mech == AUTH_XOAUTH2 ? "" : "AQ==";
}

/*
 * An AUTHENTICATE with its response at once (SASL-IR) or after "+".
 * Takes b64 (wiped, or handed out as *plus).
 */
static void
authenticate(uint32_t caps, const char *mech, char *b64, char **line,
    char **plus)
{
	if (caps & CAP_SASL_IR) {
		*line = xasprintf("AUTHENTICATE %s %s", mech, b64);
		*plus = NULL;
		secret_free(b64);
		return;
	}
	*line = xasprintf("AUTHENTICATE %s", mech);
	*plus = b64;
}

/* XOAUTH2 or OAUTHBEARER with the token. */
static int
oauth_login(const struct account *a, uint32_t caps, const char *token,
    char **line, char **plus, char *why, size_t len)
{
	bool x = a->auth == AUTH_XOAUTH2;
	const char *mech = x ? "XOAUTH2" : "OAUTHBEARER";

	if (!(caps & (x ? CAP_AUTH_XOAUTH2 : CAP_AUTH_OAUTHBEARER))) {
		snprintf(why, len,
		    "auth = %s but the server does not offer AUTH=%s; not "
		    "logging in",
		    x ? "xoauth2" : "oauthbearer", mech);
		return IDLEFETCH_ECAPA;
	}
	authenticate(caps, mech,
	    oauth_response(a->auth, a->username, token, a->host, a->port),
	    line, plus);
	return 0;
}

int
sasl_login(const struct account *a, uint32_t caps, const char *token,
    char **line, char **plus, char *why, size_t len)
{
	char qu[1024], qp[1024];

	if (a->auth != AUTH_PASSWORD)
		return oauth_login(a, caps, token, line, plus, why, len);
	if (caps & CAP_AUTH_PLAIN) {
		authenticate(caps, "PLAIN",
		    sasl_plain(a->username, a->password), line, plus);
		return 0;
	}
	if (caps & CAP_LOGINDISABLED) {
		snprintf(why, len,
		    "server refuses LOGIN "
		    "(LOGINDISABLED) and offers no AUTH=PLAIN; not logging in");
		return IDLEFETCH_ECAPA;
	}
	if (proto_quote(qu, sizeof(qu), a->username) < 0 ||
	    proto_quote(qp, sizeof(qp), a->password) < 0) {
		OPENSSL_cleanse(qp, sizeof(qp));
		snprintf(why, len,
		    "username or password has bytes LOGIN "
		    "cannot carry and the server offers no AUTH=PLAIN");
		return -EINVAL;
	}
	*line = xasprintf("LOGIN %s %s", qu, qp);
	*plus = NULL;
	OPENSSL_cleanse(qp, sizeof(qp));
	return 0;
}
