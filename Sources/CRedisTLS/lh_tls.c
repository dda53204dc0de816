/*
 * TLS client sessions for the Redis client, in the shape of hiredis >= 1.0's ssl.c
 * (redisCreateSSLContext + redisInitiateSSLWithContext), but driven by the caller's own
 * non-blocking I/O loop: hiredis 0.14 (Debian 12) has no TLS, and its socket layer cannot
 * be handed an SSL object. Knows nothing of Redis commands or leases.
 */
#include "lh_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct lh_tls_context {
    SSL_CTX *ctx;
};

struct lh_tls {
    SSL *ssl;
};

static void set_failure(lh_tls_failure *failure, int kind, const char *text) {
    if (!failure) return;
    failure->kind = kind;
    failure->verify_code = 0;
    failure->sys_errno = 0;
    snprintf(failure->text, sizeof failure->text, "%s", text ? text : "unknown error");
}

/* The most specific OpenSSL reason on the error queue, as one line. */
static void openssl_reason(char *out, size_t size) {
    unsigned long code = ERR_peek_last_error();
    const char *reason = code ? ERR_reason_error_string(code) : NULL;
    if (reason) {
        snprintf(out, size, "%s", reason);
    } else if (code) {
        ERR_error_string_n(code, out, size);
    } else {
        snprintf(out, size, "unknown OpenSSL error");
    }
}

/* ---- A socket BIO that never raises SIGPIPE (send with MSG_NOSIGNAL) ---- */

typedef struct {
    int fd;
    int eof;
} socket_state;

static int bio_write(BIO *bio, const char *data, int length) {
    socket_state *state = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    ssize_t n;
    do {
        n = send(state->fd, data, (size_t)length, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(bio);
    return (int)n;
}

static int bio_read(BIO *bio, char *data, int length) {
    socket_state *state = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    ssize_t n;
    do {
        n = recv(state->fd, data, (size_t)length, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(bio);
    if (n == 0) state->eof = 1;
    return (int)n;
}

static long bio_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)number;
    (void)pointer;
    socket_state *state = BIO_get_data(bio);
    switch (command) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        return state ? state->eof : 1;
    default:
        return 0;
    }
}

static int bio_create(BIO *bio) {
    BIO_set_init(bio, 1);
    return 1;
}

static int bio_destroy(BIO *bio) {
    free(BIO_get_data(bio));
    BIO_set_data(bio, NULL);
    return 1;
}

/* C has no closures: the once-initialiser writes a file-scope pointer. */
static BIO_METHOD *shared_method;
static void make_method(void) {
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "leasehold socket");
    if (!method) return;
    BIO_meth_set_write(method, bio_write);
    BIO_meth_set_read(method, bio_read);
    BIO_meth_set_ctrl(method, bio_ctrl);
    BIO_meth_set_create(method, bio_create);
    BIO_meth_set_destroy(method, bio_destroy);
    shared_method = method;
}

static BIO *socket_bio(int fd) {
    static CRYPTO_ONCE once = CRYPTO_ONCE_STATIC_INIT;
    if (!CRYPTO_THREAD_run_once(&once, make_method) || !shared_method) return NULL;
    socket_state *state = calloc(1, sizeof *state);
    if (!state) return NULL;
    state->fd = fd;
    BIO *bio = BIO_new(shared_method);
    if (!bio) {
        free(state);
        return NULL;
    }
    BIO_set_data(bio, state);
    return bio;
}

/* ---- Context ---- */

/* A regular, readable file, or a failure naming why not (before OpenSSL's vaguer reasons). */
static int check_file(const char *path, int kind, lh_tls_failure *failure) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        set_failure(failure, kind, strerror(errno));
        return 0;
    }
    struct stat info;
    int ok = fstat(fd, &info) == 0;
    int saved = errno;
    close(fd);
    if (!ok) {
        set_failure(failure, kind, strerror(saved));
        return 0;
    }
    if (!S_ISREG(info.st_mode)) {
        set_failure(failure, kind, "not a regular file");
        return 0;
    }
    return 1;
}

lh_tls_context *lh_tls_context_new(const char *ca_file, const char *cert_file, const char *key_file, int verify,
                                   lh_tls_failure *failure) {
    char reason[200];
    ERR_clear_error();
    if ((cert_file == NULL) != (key_file == NULL)) {
        set_failure(failure, LH_TLS_FILE_CERT_WITHOUT_KEY,
                    cert_file ? "a client certificate needs its key file" : "a client key needs its certificate file");
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_reason(reason, sizeof reason);
        set_failure(failure, LH_TLS_FAIL_OTHER, reason);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);

    if (ca_file) {
        if (!check_file(ca_file, LH_TLS_FILE_CA, failure)) goto fail;
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            openssl_reason(reason, sizeof reason);
            char text[256];
            snprintf(text, sizeof text, "no PEM certificate in it (OpenSSL: %s)", reason);
            set_failure(failure, LH_TLS_FILE_CA, text);
            goto fail;
        }
    } else if (verify && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        openssl_reason(reason, sizeof reason);
        set_failure(failure, LH_TLS_FILE_CA, reason);
        goto fail;
    }
    if (cert_file) {
        if (!check_file(cert_file, LH_TLS_FILE_CERT, failure)) goto fail;
        if (!check_file(key_file, LH_TLS_FILE_KEY, failure)) goto fail;
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
            openssl_reason(reason, sizeof reason);
            char text[256];
            snprintf(text, sizeof text, "not a PEM certificate (OpenSSL: %s)", reason);
            set_failure(failure, LH_TLS_FILE_CERT, text);
            goto fail;
        }
        ERR_clear_error();
        if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
            unsigned long code = ERR_peek_last_error();
            openssl_reason(reason, sizeof reason);
            char text[256];
            if (ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH) {
                snprintf(text, sizeof text, "the key does not belong to the certificate (OpenSSL: %s)", reason);
                set_failure(failure, LH_TLS_FILE_MISMATCH, text);
            } else {
                snprintf(text, sizeof text, "not a PEM private key (OpenSSL: %s)", reason);
                set_failure(failure, LH_TLS_FILE_KEY, text);
            }
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            openssl_reason(reason, sizeof reason);
            char text[256];
            snprintf(text, sizeof text, "the key does not belong to the certificate (OpenSSL: %s)", reason);
            set_failure(failure, LH_TLS_FILE_MISMATCH, text);
            goto fail;
        }
    }
    lh_tls_context *context = calloc(1, sizeof *context);
    if (!context) {
        set_failure(failure, LH_TLS_FAIL_OTHER, "out of memory");
        goto fail;
    }
    context->ctx = ctx;
    ERR_clear_error();
    return context;
fail:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}

void lh_tls_context_free(lh_tls_context *context) {
    if (!context) return;
    SSL_CTX_free(context->ctx);
    free(context);
}

/* ---- Sessions ---- */

static int is_ip_address(const char *name) {
    unsigned char buffer[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buffer) == 1 || inet_pton(AF_INET6, name, buffer) == 1;
}

lh_tls *lh_tls_new(lh_tls_context *context, int fd, const char *name, lh_tls_failure *failure) {
    char reason[200];
    ERR_clear_error();
    SSL *ssl = SSL_new(context->ctx);
    BIO *bio = ssl ? socket_bio(fd) : NULL;
    if (!ssl || !bio) {
        openssl_reason(reason, sizeof reason);
        set_failure(failure, LH_TLS_FAIL_OTHER, reason);
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_bio(ssl, bio, bio);
    if (name && *name) {
        int ok;
        if (is_ip_address(name)) {
            /* RFC 6066: no IP literals in SNI; the certificate must carry it as an IP SAN. */
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
        } else {
            ok = SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
        }
        if (!ok) {
            openssl_reason(reason, sizeof reason);
            set_failure(failure, LH_TLS_FAIL_OTHER, reason);
            SSL_free(ssl);
            return NULL;
        }
    }
    SSL_set_connect_state(ssl);
    lh_tls *tls = calloc(1, sizeof *tls);
    if (!tls) {
        SSL_free(ssl);
        set_failure(failure, LH_TLS_FAIL_OTHER, "out of memory");
        return NULL;
    }
    tls->ssl = ssl;
    return tls;
}

void lh_tls_free(lh_tls *tls) {
    if (!tls) return;
    SSL_free(tls->ssl);
    free(tls);
}

/* Maps the outcome of an SSL_* call that returned `result`. */
static int outcome(lh_tls *tls, int result, lh_tls_failure *failure) {
    int code = SSL_get_error(tls->ssl, result);
    int saved = errno;
    switch (code) {
    case SSL_ERROR_NONE:
        return LH_TLS_OK;
    case SSL_ERROR_WANT_READ:
        return LH_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return LH_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return LH_TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_last_error() == 0) {
            if (saved == 0) { /* EOF without close_notify */
                ERR_clear_error();
                return LH_TLS_CLOSED;
            }
            set_failure(failure, LH_TLS_FAIL_SYSCALL, strerror(saved));
            failure->sys_errno = saved;
            ERR_clear_error();
            return LH_TLS_FAILED;
        }
        break;
    default:
        break;
    }
    unsigned long error = ERR_peek_last_error();
    int reason = ERR_GET_REASON(error);
    char text[200];
    openssl_reason(text, sizeof text);
    int kind = LH_TLS_FAIL_OTHER;
    long verify_code = 0;
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        verify_code = SSL_get_verify_result(tls->ssl);
        kind = (verify_code == X509_V_ERR_HOSTNAME_MISMATCH || verify_code == X509_V_ERR_IP_ADDRESS_MISMATCH)
                   ? LH_TLS_FAIL_NAME
                   : LH_TLS_FAIL_VERIFY;
        snprintf(text, sizeof text, "%s", X509_verify_cert_error_string(verify_code));
    } else if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
               reason == SSL_R_UNKNOWN_PROTOCOL || reason == SSL_R_HTTP_REQUEST) {
        kind = LH_TLS_FAIL_NOT_TLS;
    } else if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return LH_TLS_CLOSED;
    } else if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
        kind = LH_TLS_FAIL_CERT_REQUIRED;
    } else if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
        kind = LH_TLS_FAIL_ALERT;
    }
    set_failure(failure, kind, text);
    failure->verify_code = verify_code;
    ERR_clear_error();
    return LH_TLS_FAILED;
}

int lh_tls_handshake(lh_tls *tls, lh_tls_failure *failure) {
    ERR_clear_error();
    errno = 0;
    int result = SSL_do_handshake(tls->ssl);
    if (result == 1) return LH_TLS_OK;
    return outcome(tls, result, failure);
}

int lh_tls_read(lh_tls *tls, void *buffer, size_t length, size_t *count, lh_tls_failure *failure) {
    ERR_clear_error();
    errno = 0;
    *count = 0;
    int result = SSL_read_ex(tls->ssl, buffer, length, count);
    if (result == 1) return LH_TLS_OK;
    return outcome(tls, result, failure);
}

int lh_tls_write(lh_tls *tls, const void *buffer, size_t length, size_t *count, lh_tls_failure *failure) {
    ERR_clear_error();
    errno = 0;
    *count = 0;
    int result = SSL_write_ex(tls->ssl, buffer, length, count);
    if (result == 1) return LH_TLS_OK;
    return outcome(tls, result, failure);
}

int lh_tls_pending(lh_tls *tls) { return SSL_pending(tls->ssl); }

const char *lh_tls_version(lh_tls *tls) { return SSL_get_version(tls->ssl); }
