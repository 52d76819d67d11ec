/*
 * tls: OpenSSL over a pair of memory BIOs. Secure by default: TLS 1.2 or
 * newer, the peer certificate must chain to a trusted CA and match the
 * configured host name (or IP address), and SNI is sent for names.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "idlefetch/tls.h"
#include "idlefetch/util.h"

struct tls {
	SSL *ssl;
	BIO *in; /* network -> OpenSSL */
	BIO *out; /* OpenSSL -> network */
};

/*
 * "what: reason", with OpenSSL's reason in words ("tlsv1 alert unknown
 * ca", "wrong version number") rather than its error-code string, or
 * `fallback` when OpenSSL queued none.
 */
static void
openssl_err_or(char *err, size_t errlen, const char *what,
    const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	char buf[256];

	if (e != 0 && reason == NULL) {
		ERR_error_string_n(e, buf, sizeof(buf));
		reason = buf;
	}
	if (reason == NULL)
		reason = fallback;
	if (reason != NULL)
		snprintf(err, errlen, "%s: %s", what, reason);
	else
		snprintf(err, errlen, "%s", what);
	ERR_clear_error();
}

static void
openssl_err(char *err, size_t errlen, const char *what)
{
	openssl_err_or(err, errlen, what, NULL);
}

/*
 * A memory BIO keeps the largest buffer it ever held: after one 64 KiB
 * read every idle connection would keep 64 KiB, and even the few KiB of a
 * handshake add up over a thousand idle connections (1.4 MiB at 1,000 TLS
 * accounts). Once drained, a BIO that holds any buffer is swapped for a
 * fresh one, which allocates nothing until it is written (OpenSSL frees
 * the old).
 */
static void
shrink_drained(struct tls *t, bool rbio)
{
	BIO *b = rbio ? t->in : t->out, *fresh;
	BUF_MEM *m = NULL;

	BIO_get_mem_ptr(b, &m);
	if (m == NULL || m->max == 0)
		return;
	fresh = BIO_new(BIO_s_mem());
	if (fresh == NULL)
		return; /* keep the big one; nothing is lost */
	if (rbio) {
		BIO_set_mem_eof_return(fresh, -1);
		SSL_set0_rbio(t->ssl, fresh);
		t->in = fresh;
	} else {
		SSL_set0_wbio(t->ssl, fresh);
		t->out = fresh;
	}
}

/* The context's pin (TLS_PIN_LEN bytes), freed with the context. */
static int pin_index = -1;

static void
pin_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	OPENSSL_free(ptr);
}

SSL_CTX *
tls_ctx_new(const char *ca_file, const unsigned char *pin, char *err,
    size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL) {
		openssl_err(err, errlen, "cannot create TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (pin) {
		/*
		 * The pin names the one certificate (or key) to accept, as a
		 * self-signed server needs: no chain, no name to check.
		 * tls_handshake() compares it before anything is sent.
		 */
		unsigned char *copy = OPENSSL_memdup(pin, TLS_PIN_LEN);

		if (pin_index < 0)
			pin_index = SSL_CTX_get_ex_new_index(0, NULL, NULL,
			    NULL, pin_free);
		if (copy == NULL || pin_index < 0 ||
		    SSL_CTX_set_ex_data(ctx, pin_index, copy) != 1)
			fatal("cannot keep the TLS pin");
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			openssl_err(err, errlen, "cannot load ca_file");
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		openssl_err(err, errlen, "cannot load the system trust store");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct tls *
tls_new(SSL_CTX *ctx, const char *host)
{
	struct tls *t = xcalloc(1, sizeof(*t));
	unsigned char addr[16];
	t->ssl = SSL_new(ctx);
	if (t->ssl == NULL)
		fatal("SSL_new failed");
	t->in = BIO_new(BIO_s_mem());
	t->out = BIO_new(BIO_s_mem());
	if (t->in == NULL || t->out == NULL)
		fatal("BIO_new failed");
	BIO_set_mem_eof_return(t->in, -1);
	SSL_set_bio(t->ssl, t->in, t->out);
	if (inet_pton(AF_INET, host, addr) == 1 ||
	    inet_pton(AF_INET6, host, addr) == 1) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host);
	} else {
		SSL_set_tlsext_host_name(t->ssl, host);
		SSL_set1_host(t->ssl, host);
		SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	}
	SSL_set_connect_state(t->ssl);
	return t;
}

void
tls_free(struct tls *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl); /* frees both BIOs */
	free(t);
}

static void
hex(char *out, const unsigned char *p, size_t n)
{
	/* "ab:cd:...": each byte after the first takes 3 characters. */
	for (size_t i = 0; i < n; i++)
		sprintf(out + (i ? 3 * i - 1 : 0), "%s%02x", i ? ":" : "", p[i]);
}

/*
 * The pinned context's check: the server's certificate, or its public
 * key, must have the configured SHA-256 digest.
 */
static int
check_pin(struct tls *t, char *err, size_t errlen)
{
	const unsigned char *pin =
	    SSL_CTX_get_ex_data(SSL_get_SSL_CTX(t->ssl), pin_index);
	X509 *cert = SSL_get0_peer_certificate(t->ssl);
	unsigned char dc[EVP_MAX_MD_SIZE], dk[EVP_MAX_MD_SIZE];
	unsigned nc = 0, nk = 0;
	char hc[3 * TLS_PIN_LEN], hk[3 * TLS_PIN_LEN];
	unsigned char *spki = NULL;
	int spki_len;

	if (cert == NULL) {
		snprintf(err, errlen, "the server sent no certificate");
		return IDLEFETCH_ETLS;
	}
	/* The key as its DER SubjectPublicKeyInfo, as HPKP and curl pin it. */
	spki_len = i2d_PUBKEY(X509_get0_pubkey(cert), &spki);
	if (X509_digest(cert, EVP_sha256(), dc, &nc) != 1 || spki_len <= 0 ||
	    EVP_Digest(spki, (size_t)spki_len, dk, &nk, EVP_sha256(), NULL) !=
		1 ||
	    nc != TLS_PIN_LEN || nk != TLS_PIN_LEN) {
		OPENSSL_free(spki);
		openssl_err(err, errlen, "cannot digest the certificate");
		return IDLEFETCH_ETLS;
	}
	OPENSSL_free(spki);
	if (CRYPTO_memcmp(dc, pin, TLS_PIN_LEN) == 0 ||
	    CRYPTO_memcmp(dk, pin, TLS_PIN_LEN) == 0)
		return 0;
	hex(hc, dc, nc);
	hex(hk, dk, nk);
	snprintf(err, errlen,
	    "the server's certificate does not match tls_fingerprint: it is "
	    "sha256:%s (public key sha256:%s)",
	    hc, hk);
	return IDLEFETCH_ETLS;
}

int
tls_handshake(struct tls *t, char *err, size_t errlen)
{
	long vr;
	int r = SSL_do_handshake(t->ssl), kind;

	if (r == 1) {
		if (pin_index >= 0 &&
		    SSL_CTX_get_ex_data(SSL_get_SSL_CTX(t->ssl), pin_index))
			return check_pin(t, err, errlen);
		return 0;
	}
	kind = SSL_get_error(t->ssl, r);
	switch (kind) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return 1;
	default:
		break;
	}
	vr = SSL_get_verify_result(t->ssl);
	if (vr != X509_V_OK) {
		snprintf(err, errlen, "certificate verification failed: %s",
		    X509_verify_cert_error_string(vr));
		ERR_clear_error();
	} else {
		openssl_err_or(err, errlen, "TLS handshake failed",
		    kind == SSL_ERROR_SYSCALL || kind == SSL_ERROR_ZERO_RETURN ?
			"the server closed the connection" :
			"no reason given by OpenSSL");
	}
	return IDLEFETCH_ETLS;
}

void
tls_feed(struct tls *t, const char *p, size_t n)
{
	/* A memory BIO grows as needed; a write only fails without memory. */
	if (n > 0 && BIO_write(t->in, p, (int)n) != (int)n)
		fatal("BIO_write failed");
}

ssize_t
tls_read(struct tls *t, char *buf, size_t cap)
{
	int r, kind;

	/*
	 * Nothing received and nothing buffered: a read could only fail with
	 * WANT_READ, and on its way it would allocate the 16 KiB record
	 * buffer that SSL_MODE_RELEASE_BUFFERS had freed and keep it for the
	 * whole idle time.
	 */
	if (BIO_ctrl_pending(t->in) == 0 && !SSL_has_pending(t->ssl))
		return 0;
	r = SSL_read(t->ssl, buf, (int)cap);
	/* Before the BIO is swapped: SSL_get_error asks it for WANT_READ. */
	kind = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
	if (BIO_ctrl_pending(t->in) == 0)
		shrink_drained(t, true);
	switch (kind) {
	case SSL_ERROR_NONE:
		return r;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		return UV_EOF;
	default:
		ERR_clear_error();
		return IDLEFETCH_ETLS;
	}
}

int
tls_write(struct tls *t, const char *p, size_t n)
{
	int r;

	if (n == 0)
		return 0;
	r = SSL_write(t->ssl, p, (int)n);
	if (r != (int)n) {
		ERR_clear_error();
		return IDLEFETCH_ETLS;
	}
	return 0;
}

size_t
tls_take(struct tls *t, char **out)
{
	size_t n = BIO_ctrl_pending(t->out);

	*out = NULL;
	if (n == 0)
		return 0;
	*out = xmalloc(n);
	if (BIO_read(t->out, *out, (int)n) != (int)n)
		fatal("BIO_read of pending ciphertext failed");
	shrink_drained(t, false);
	return n;
}
