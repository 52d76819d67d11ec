/*
 * tls: an OpenSSL client connection driven entirely through memory BIOs.
 * It never touches a socket: the transport feeds it ciphertext from the
 * network and sends what tls_take() returns.
 */
#ifndef IDLEFETCH_TLS_H
#define IDLEFETCH_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

struct tls;

#define TLS_PIN_LEN 32 /* a SHA-256 digest */

/*
 * A client context: TLS >= 1.2, peer verification on, trust from ca_file
 * or (NULL) the system store: its hashed directory (SSL_CERT_DIR or
 * OpenSSL's default), read a certificate at a time as chains need them,
 * and, where that directory has no hashed names or SSL_CERT_FILE is set,
 * the bundle file too, loaded at once. With a pin (TLS_PIN_LEN bytes,
 * copied), the server's certificate or public key must have that SHA-256
 * digest instead, whoever signed it and whatever name it carries. The
 * caller owns the result (SSL_CTX_free).
 */
SSL_CTX *tls_ctx_new(const char *ca_file, const unsigned char *pin,
    char *err, size_t errlen);

/* host is used for SNI and the certificate name check. ctx is borrowed. */
struct tls *tls_new(SSL_CTX *ctx, const char *host);
void tls_free(struct tls *t);

/*
 * Advances the handshake. Returns 0 when done, 1 when it needs more
 * input, or IDLEFETCH_ETLS with a one-line reason in err.
 */
int tls_handshake(struct tls *t, char *err, size_t errlen);
/* Hands ciphertext received from the network to OpenSSL. */
void tls_feed(struct tls *t, const char *p, size_t n);
/*
 * Decrypts into buf. Returns bytes, 0 when nothing more is available,
 * -EOF-like UV_EOF when the peer closed TLS, or IDLEFETCH_ETLS.
 */
ssize_t tls_read(struct tls *t, char *buf, size_t cap);
/* Encrypts n bytes; the ciphertext waits for tls_take(). */
int tls_write(struct tls *t, const char *p, size_t n);
/*
 * Moves all pending ciphertext into a new buffer (*out, owned by the
 * caller). Returns its length; 0 (and *out NULL) when there is none.
 */
size_t tls_take(struct tls *t, char **out);

#endif
