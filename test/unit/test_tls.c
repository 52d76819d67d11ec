/*
 * Unit tests for tls: a client from tls_new() against an OpenSSL server in
 * this process, joined by memory, with OpenSSL's allocations counted
 * (CRYPTO_set_mem_functions): what an idle connection keeps, and that it
 * still works after idling.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "idlefetch/tls.h"

/* ---- counting OpenSSL's heap ------------------------------------------- */

static size_t live_bytes, live_blocks;

/* Each block carries its size in front, kept 16-byte aligned. */
#define HDR 16

static void *
count_malloc(size_t n, const char *file, int line)
{
	unsigned char *p = malloc(n + HDR);

	if (p == NULL)
		return NULL;
	memcpy(p, &n, sizeof(n));
	live_bytes += n;
	live_blocks++;
	return p + HDR;
}

static void
count_free(void *ptr, const char *file, int line)
{
	unsigned char *p = ptr;
	size_t n;

	if (p == NULL)
		return;
	memcpy(&n, p - HDR, sizeof(n));
	live_bytes -= n;
	live_blocks--;
	free(p - HDR);
}

static void *
count_realloc(void *ptr, size_t n, const char *file, int line)
{
	unsigned char *p = ptr, *q;
	size_t was;

	if (p == NULL)
		return count_malloc(n, file, line);
	memcpy(&was, p - HDR, sizeof(was));
	q = realloc(p - HDR, n + HDR);
	if (q == NULL)
		return NULL;
	memcpy(q, &n, sizeof(n));
	live_bytes += n - was;
	return q + HDR;
}

/* ---- a CA, a server certificate, a server ------------------------------ */

static char ca_path[] = "/tmp/idlefetch-tls-test-XXXXXX";
static EVP_PKEY *ca_key, *srv_key;
static X509 *ca_crt, *srv_crt;
static SSL_CTX *srv_ctx;

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v;
	X509_EXTENSION *e;

	X509V3_set_ctx(&v, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* issuer NULL: self-signed CA. As the integration tests' certificates. */
static X509 *
make_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *signer, const char *cn)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name = X509_get_subject_name(x);

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
	if (issuer == NULL) {
		add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, x, NID_subject_key_identifier, "hash");
	} else {
		add_ext(x, issuer, NID_subject_alt_name,
		    "DNS:localhost,IP:127.0.0.1");
		add_ext(x, issuer, NID_authority_key_identifier, "keyid");
	}
	assert_true(X509_sign(x, signer, EVP_sha256()) > 0);
	return x;
}

static int
setup(void **state)
{
	FILE *fp;
	int fd = mkstemp(ca_path);

	assert_true(fd >= 0);
	ca_key = EVP_EC_gen("P-256");
	srv_key = EVP_EC_gen("P-256");
	ca_crt = make_cert(ca_key, NULL, ca_key, "idlefetch test CA");
	srv_crt = make_cert(srv_key, ca_crt, ca_key, "server");
	fp = fdopen(fd, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_X509(fp, ca_crt), 1);
	assert_int_equal(fclose(fp), 0);
	srv_ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(srv_ctx);
	assert_int_equal(SSL_CTX_use_certificate(srv_ctx, srv_crt), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(srv_ctx, srv_key), 1);
	/* Stateless tickets only, as a server that sends them does. */
	SSL_CTX_set_session_cache_mode(srv_ctx, SSL_SESS_CACHE_OFF);
	return 0;
}

static int
teardown(void **state)
{
	SSL_CTX_free(srv_ctx);
	X509_free(srv_crt);
	X509_free(ca_crt);
	EVP_PKEY_free(srv_key);
	EVP_PKEY_free(ca_key);
	unlink(ca_path);
	return 0;
}

/* ---- one client and its server, joined by memory ----------------------- */

struct pair {
	struct tls *c;
	SSL *s;
	BIO *s_in, *s_out; /* the server's ends */
};

static void
pair_new(struct pair *p, SSL_CTX *ctx)
{
	p->c = tls_new(ctx, "localhost");
	p->s = SSL_new(srv_ctx);
	p->s_in = BIO_new(BIO_s_mem());
	p->s_out = BIO_new(BIO_s_mem());
	assert_true(p->s && p->s_in && p->s_out);
	BIO_set_mem_eof_return(p->s_in, -1);
	SSL_set_bio(p->s, p->s_in, p->s_out);
	SSL_set_accept_state(p->s);
}

/* Moves what is in flight both ways; whether anything moved. */
static int
pump(struct pair *p)
{
	char *out, buf[16384];
	size_t n = tls_take(p->c, &out);
	int moved = n > 0, m;

	if (n > 0) {
		assert_int_equal(BIO_write(p->s_in, out, (int)n), (int)n);
		free(out);
	}
	if (!SSL_is_init_finished(p->s))
		SSL_do_handshake(p->s);
	while ((m = BIO_read(p->s_out, buf, sizeof(buf))) > 0) {
		tls_feed(p->c, buf, (size_t)m);
		moved = 1;
	}
	return moved;
}

static void
handshake(struct pair *p)
{
	char err[256] = "";
	int r = 1;

	for (int i = 0; i < 20 && r == 1; i++) {
		r = tls_handshake(p->c, err, sizeof(err));
		pump(p);
	}
	assert_int_equal(r, 0);
	for (int i = 0; i < 20 && !SSL_is_init_finished(p->s); i++)
		pump(p);
	assert_true(SSL_is_init_finished(p->s));
}

/* The server says line; the client reads it (and any tickets before it). */
static void
server_says(struct pair *p, const char *line)
{
	char buf[256];
	size_t got = 0;
	ssize_t n;

	assert_int_equal(SSL_write(p->s, line, (int)strlen(line)),
	    (int)strlen(line));
	for (int i = 0; i < 20 && got < strlen(line); i++) {
		pump(p);
		n = tls_read(p->c, buf + got, sizeof(buf) - got);
		assert_true(n >= 0);
		got += (size_t)n;
	}
	assert_int_equal(got, strlen(line));
	assert_memory_equal(buf, line, got);
	/* Drained: a further read finds nothing and keeps nothing. */
	assert_int_equal(tls_read(p->c, buf, sizeof(buf)), 0);
}

static void
client_says(struct pair *p, const char *line)
{
	char buf[256];
	int n = 0;

	assert_int_equal(tls_write(p->c, line, strlen(line)), 0);
	for (int i = 0; i < 20 && n <= 0; i++) {
		pump(p);
		n = SSL_read(p->s, buf, sizeof(buf));
	}
	assert_int_equal(n, (int)strlen(line));
	assert_memory_equal(buf, line, strlen(line));
}

/* Up to IDLE, as an IMAP session: greeting, tickets, a command, "+". */
static void
to_idle(struct pair *p)
{
	handshake(p);
	server_says(p, "* OK IMAP4rev1 ready\r\n");
	client_says(p, "a1 IDLE\r\n");
	server_says(p, "+ idling\r\n");
}

#define NCONN 50
/*
 * Bytes an idle connection may keep: 17,670 measured with OpenSSL 3.0.19
 * (X25519, TLS_AES_256_GCM_SHA384). Record buffers kept while idle
 * (51 KB without SSL_MODE_RELEASE_BUFFERS) or a P-256 key share (20.3 KB)
 * go past it.
 */
#define TLS_TEST_IDLE_MAX 20000

/*
 * What an idle TLS connection keeps of OpenSSL's heap. The server ends are
 * freed before counting; the client's context, trust store included, is
 * shared by all and made before. A second round must cost the same (no
 * slow growth), and freeing them all gives everything back.
 */
static void
test_idle_connection_keeps_little_of_the_heap(void **state)
{
	static struct pair p[NCONN];
	char err[256];
	SSL_CTX *ctx = tls_ctx_new(ca_path, NULL, err, sizeof(err));
	size_t base, blocks, per, per_blocks;

	assert_non_null(ctx);
	/* One first connection makes what OpenSSL caches for all (methods). */
	pair_new(&p[0], ctx);
	to_idle(&p[0]);
	SSL_free(p[0].s);
	tls_free(p[0].c);
	base = live_bytes;
	blocks = live_blocks;
	for (int i = 0; i < NCONN; i++) {
		pair_new(&p[i], ctx);
		to_idle(&p[i]);
		SSL_free(p[i].s);
	}
	per = (live_bytes - base) / NCONN;
	per_blocks = (live_blocks - blocks) / NCONN;
	print_message("an idle TLS connection keeps %zu bytes of OpenSSL's "
		      "heap in %zu blocks\n",
	    per, per_blocks);
	assert_true(per <= TLS_TEST_IDLE_MAX);
	for (int i = 0; i < NCONN; i++)
		tls_free(p[i].c);
	assert_int_equal(live_bytes, base);
	SSL_CTX_free(ctx);
}

/*
 * An idle connection that gave up what it could still works both ways,
 * for messages larger than a record, and still checks who it talks to.
 */
static void
test_idle_connection_still_carries_mail(void **state)
{
	char err[256], *big = malloc(70000), *got = malloc(70000);
	SSL_CTX *ctx = tls_ctx_new(ca_path, NULL, err, sizeof(err));
	struct pair p;
	size_t n = 0;
	ssize_t r;

	assert_true(ctx && big && got);
	pair_new(&p, ctx);
	to_idle(&p);
	for (size_t i = 0; i < 70000; i++)
		big[i] = (char)('a' + i % 26);
	assert_int_equal(SSL_write(p.s, big, 70000), 70000);
	for (int i = 0; i < 100 && n < 70000; i++) {
		pump(&p);
		while ((r = tls_read(p.c, got + n, 70000 - n)) > 0)
			n += (size_t)r;
		assert_true(r >= 0);
	}
	assert_int_equal(n, 70000);
	assert_memory_equal(got, big, 70000);
	client_says(&p, "DONE\r\n");
	server_says(&p, "a1 OK IDLE done\r\n");
	SSL_free(p.s);
	tls_free(p.c);
	SSL_CTX_free(ctx);
	free(big);
	free(got);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idle_connection_keeps_little_of_the_heap),
		cmocka_unit_test(test_idle_connection_still_carries_mail),
	};

	/* Before OpenSSL allocates anything. */
	if (CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) !=
	    1)
		return 1;
	return cmocka_run_group_tests(tests, setup, teardown);
}
