#ifndef LH_TLS_H
#define LH_TLS_H
/*
 * A TLS client session over a connected, non-blocking socket, on top of OpenSSL.
 * The Redis client (RedisClient) drives it with poll(2) and its own deadlines; this file
 * knows nothing of Redis commands or leases. Every failure comes back as a category and one
 * line of text for the caller to word.
 */
#include <stddef.h>
#include <sys/types.h>

/* Results of lh_tls_handshake, lh_tls_read and lh_tls_write. */
#define LH_TLS_OK 0          /* done (read/write: the return value counts the bytes) */
#define LH_TLS_WANT_READ 1   /* poll for POLLIN, then call again */
#define LH_TLS_WANT_WRITE 2  /* poll for POLLOUT, then call again */
#define LH_TLS_CLOSED 3      /* the peer closed the connection (EOF or close_notify) */
#define LH_TLS_FAILED 4      /* see lh_tls_failure */

/* What failed (lh_tls_failure.kind). */
#define LH_TLS_FAIL_OTHER 0
#define LH_TLS_FAIL_VERIFY 1        /* the certificate chain did not verify (verify_code says why) */
#define LH_TLS_FAIL_NAME 2          /* the certificate does not name the expected host or IP */
#define LH_TLS_FAIL_NOT_TLS 3       /* the peer's bytes are not TLS records (a plain server) */
#define LH_TLS_FAIL_CERT_REQUIRED 4 /* the server wants a client certificate we did not send */
#define LH_TLS_FAIL_ALERT 5         /* the server aborted the handshake with an alert */
#define LH_TLS_FAIL_SYSCALL 6       /* a socket error; sys_errno holds errno */

/* File errors of lh_tls_context_new (lh_tls_failure.kind when it returns NULL). */
#define LH_TLS_FILE_CA 10
#define LH_TLS_FILE_CERT 11
#define LH_TLS_FILE_KEY 12
#define LH_TLS_FILE_MISMATCH 13
#define LH_TLS_FILE_CERT_WITHOUT_KEY 14

typedef struct lh_tls_failure {
    int kind;
    long verify_code; /* X509_V_* for LH_TLS_FAIL_VERIFY / LH_TLS_FAIL_NAME */
    int sys_errno;
    char text[256]; /* OpenSSL's reason (or strerror), one line */
} lh_tls_failure;

typedef struct lh_tls_context lh_tls_context;
typedef struct lh_tls lh_tls;

/*
 * A client context: TLS 1.2 or newer; trusts ca_file (PEM) or, when NULL, the system's
 * default store; presents cert_file + key_file (PEM) when given (key checked against the
 * certificate); verifies the peer unless verify is 0. NULL on failure with `failure` set.
 */
lh_tls_context *lh_tls_context_new(const char *ca_file, const char *cert_file, const char *key_file, int verify,
                                   lh_tls_failure *failure);
void lh_tls_context_free(lh_tls_context *context);

/*
 * A session on `fd` (connected, non-blocking). `name` is sent as SNI when it is a DNS name
 * and checked against the certificate (DNS name or IP address SAN) when verifying.
 */
lh_tls *lh_tls_new(lh_tls_context *context, int fd, const char *name, lh_tls_failure *failure);
void lh_tls_free(lh_tls *tls);

/* One step of the client handshake: LH_TLS_OK when finished. */
int lh_tls_handshake(lh_tls *tls, lh_tls_failure *failure);
/* Reads up to `length` bytes; *count gets the number read when LH_TLS_OK. */
int lh_tls_read(lh_tls *tls, void *buffer, size_t length, size_t *count, lh_tls_failure *failure);
/* Writes up to `length` bytes (partial writes allowed); *count gets the number written. */
int lh_tls_write(lh_tls *tls, const void *buffer, size_t length, size_t *count, lh_tls_failure *failure);
/* Decrypted bytes buffered inside OpenSSL (readable without the socket being readable). */
int lh_tls_pending(lh_tls *tls);
/* The negotiated protocol, e.g. "TLSv1.3". */
const char *lh_tls_version(lh_tls *tls);

#endif
