/*
 * tls: OpenSSL over a pair of memory BIOs. Secure by default: TLS 1.2 or
 * newer, the peer certificate must chain to a trusted CA and match the
 * configured host name (or IP address), and SNI is sent for names.
 *
 * Memory: the system's trust store is read from its hashed directory when
 * there is one, a certificate at a time as a chain needs it, instead of
 * parsing the whole bundle (about 140 certificates, 0.8 MiB of heap) into
 * every context at start. An idle connection keeps no buffer and no BIO
 * of its own; what it keeps is OpenSSL's live state (the SSL object, the
 * record keys, the session with the server's certificate), about 17 KB,
 * which OpenSSL 3.0 offers no way to release while the connection lives.
 */
/*
 * The per-library ERR_load_*_strings() that load_reasons() calls are
 * deprecated in OpenSSL 3.0 but are its only way to load the reason texts
 * after OPENSSL_INIT_NO_LOAD_*_STRINGS (see init_openssl()).
 */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
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
 * OpenSSL's error texts: SSL_CTX_new() would load every library's table
 * of reason strings into a hash at start, 360 KiB of the resident memory
 * of every process (64 KiB of heap, the rest libcrypto's pages those
 * tables are read from), measured on OpenSSL 3.0 - a twentieth of an idle
 * TLS account's process, for texts that only a failure prints. So the
 * process starts without them and load_reasons() loads the libraries a
 * TLS or trust-store failure names, the first time one is reported.
 * The configuration file is still read: it carries the system's policy
 * (minimum protocol, cipher strings, as crypto-policies sets it).
 */
static void
init_openssl(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	if (OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_SSL_STRINGS |
		OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS,
		NULL) != 1)
		fatal("cannot initialise OpenSSL");
}

static void
load_reasons(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	/* Library names and system errors, then what a handshake meets. */
	ERR_load_ERR_strings();
	ERR_load_SSL_strings();
	ERR_load_X509_strings();
	ERR_load_X509V3_strings();
	ERR_load_PEM_strings();
	ERR_load_ASN1_strings();
	ERR_load_BIO_strings();
	ERR_load_EVP_strings();
}

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
	const char *reason;
	char buf[256];

	if (e != 0)
		load_reasons();
	reason = e ? ERR_reason_error_string(e) : NULL;
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
 * accounts). And the pair of BIOs itself, with their buffer headers and
 * locks, is 0.6 KB a connection, 6 MB over ten thousand idle ones. So a
 * connection that OpenSSL has nothing more to say on and that has nothing
 * left to read has no BIOs of its own: its SSL reads from and writes to
 * idle_bio, one empty memory BIO that every such connection shares (its
 * reference count keeps it alive). Before it is given anything to read or
 * asked to write, a connection takes a fresh pair again (own_bios()), so
 * nothing is ever written to the shared one and it stays empty.
 */
static BIO *idle_bio;

static BIO *
mem_bio(void)
{
	BIO *b = BIO_new(BIO_s_mem());

	if (b == NULL)
		fatal("BIO_new failed");
	/* Empty means "wait for more", not end of file. */
	BIO_set_mem_eof_return(b, -1);
	return b;
}

static void
own_bios(struct tls *t)
{
	if (t->in != idle_bio)
		return;
	t->in = mem_bio();
	t->out = mem_bio();
	/* Each drops the reference to idle_bio that it replaces. */
	SSL_set0_rbio(t->ssl, t->in);
	SSL_set0_wbio(t->ssl, t->out);
}

/*
 * Gives up the connection's BIOs once both are drained. Not during a
 * handshake (a TLS 1.2 renegotiation too): OpenSSL then chains a buffering
 * BIO in front of the write BIO, which a shared BIO cannot be part of.
 */
static void
share_if_drained(struct tls *t)
{
	if (t->in == idle_bio || !SSL_is_init_finished(t->ssl) ||
	    BIO_ctrl_pending(t->in) != 0 || BIO_ctrl_pending(t->out) != 0 ||
	    SSL_has_pending(t->ssl))
		return;
	if (idle_bio == NULL)
		idle_bio = mem_bio(); /* kept for the life of the process */
	if (BIO_up_ref(idle_bio) != 1 || BIO_up_ref(idle_bio) != 1)
		fatal("BIO_up_ref failed");
	SSL_set0_rbio(t->ssl, idle_bio);
	SSL_set0_wbio(t->ssl, idle_bio);
	t->in = t->out = idle_bio;
}

/*
 * Where the BIOs cannot be shared yet (a handshake, the other direction
 * not drained), a drained BIO that holds a buffer is swapped for a fresh
 * one, which allocates nothing until it is written (OpenSSL frees the old).
 */
static void
shrink_drained(struct tls *t, bool rbio)
{
	BIO *b = rbio ? t->in : t->out;
	BUF_MEM *m = NULL;

	if (b == idle_bio)
		return;
	BIO_get_mem_ptr(b, &m);
	if (m == NULL || m->max == 0)
		return;
	b = mem_bio();
	if (rbio) {
		SSL_set0_rbio(t->ssl, b);
		t->in = b;
	} else {
		SSL_set0_wbio(t->ssl, b);
		t->out = b;
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

/* "1a2b3c4d.0": a certificate under its subject hash, as c_rehash names it. */
static bool
is_hashed_name(const char *name)
{
	int i;

	for (i = 0; i < 8; i++)
		if (!isxdigit((unsigned char)name[i]))
			return false;
	if (name[8] != '.' || !isdigit((unsigned char)name[9]))
		return false;
	for (i = 10; name[i] != '\0'; i++)
		if (!isdigit((unsigned char)name[i]))
			return false;
	return true;
}

/* Whether one of dirs (colon-separated, as SSL_CERT_DIR) has hashed names. */
static bool
any_hashed_dir(const char *dirs)
{
	char path[PATH_MAX];
	const char *p = dirs, *end;
	bool found = false;

	while (!found && *p != '\0') {
		DIR *d;
		struct dirent *e;

		end = strchr(p, ':');
		if (end == NULL)
			end = p + strlen(p);
		if ((size_t)(end - p) < sizeof(path)) {
			memcpy(path, p, (size_t)(end - p));
			path[end - p] = '\0';
			d = opendir(path);
			while (d != NULL && !found && (e = readdir(d)) != NULL)
				found = is_hashed_name(e->d_name);
			if (d != NULL)
				closedir(d);
		}
		p = *end == ':' ? end + 1 : end;
	}
	return found;
}

/*
 * The system's trust, as SSL_CTX_set_default_verify_paths() gives it (the
 * bundle file SSL_CERT_FILE names or OpenSSL's default, plus the hashed
 * directory), but without loading the bundle when the directory holds the
 * same certificates under hashed names, as Debian's update-ca-certificates
 * keeps /etc/ssl/certs: a lookup there loads only the issuer a chain asks
 * for, and keeps it for the next handshake. A bundle named in
 * SSL_CERT_FILE is always loaded, since the directory may lack what it
 * adds; an image that ships only the bundle loads it as before.
 */
static int
load_system_trust(SSL_CTX *ctx)
{
	const char *dir = getenv(X509_get_default_cert_dir_env());
	X509_LOOKUP *l;

	if (dir == NULL || *dir == '\0')
		dir = X509_get_default_cert_dir();
	if (getenv(X509_get_default_cert_file_env()) != NULL ||
	    !any_hashed_dir(dir))
		return SSL_CTX_set_default_verify_paths(ctx) == 1 ? 0 : -1;
	l = X509_STORE_add_lookup(SSL_CTX_get_cert_store(ctx),
	    X509_LOOKUP_hash_dir());
	if (l == NULL || X509_LOOKUP_add_dir(l, dir, X509_FILETYPE_PEM) != 1)
		return -1;
	return 0;
}

SSL_CTX *
tls_ctx_new(const char *ca_file, const unsigned char *pin, char *err,
    size_t errlen)
{
	SSL_CTX *ctx;

	init_openssl();
	ctx = SSL_CTX_new(TLS_client_method());
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
	} else if (load_system_trust(ctx) < 0) {
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
	t->in = mem_bio();
	t->out = mem_bio();
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
	int r, kind;

	own_bios(t);
	r = SSL_do_handshake(t->ssl);

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
	if (n == 0)
		return;
	own_bios(t);
	/* A memory BIO grows as needed; a write only fails without memory. */
	if (BIO_write(t->in, p, (int)n) != (int)n)
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
	own_bios(t); /* a no-op: a shared connection has nothing to read */
	r = SSL_read(t->ssl, buf, (int)cap);
	/* Before the BIO is swapped: SSL_get_error asks it for WANT_READ. */
	kind = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
	if (BIO_ctrl_pending(t->in) == 0) {
		share_if_drained(t);
		shrink_drained(t, true);
	}
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
	own_bios(t);
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
	share_if_drained(t);
	shrink_drained(t, false);
	return n;
}
