/* SPDX-License-Identifier: Apache-2.0 */
#include <dlfcn.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "lib/digest.h"

/*
 * libcrypto (4.7 MB, thousands of relocations) is loaded on first use, so that commands that hash nothing
 * do not pay for it at start (see docs/performance.md). It is a hard dependency: failing to load it is
 * fatal, like a failing hash.
 */
static struct {
        EVP_MD_CTX *(*ctx_new)(void);
        void (*ctx_free)(EVP_MD_CTX *);
        int (*init_ex)(EVP_MD_CTX *, const EVP_MD *, ENGINE *);
        int (*update)(EVP_MD_CTX *, const void *, size_t);
        int (*final_ex)(EVP_MD_CTX *, unsigned char *, unsigned int *);
        int (*digest)(const void *, size_t, unsigned char *, unsigned int *, const EVP_MD *, ENGINE *);
        const EVP_MD *(*sha256)(void);
} crypto;

static void crypto_load(void)
{
        void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
        if (!h)
                abort();
        const struct {
                void **slot;
                const char *name;
        } syms[] = {
                { (void **)&crypto.ctx_new, "EVP_MD_CTX_new" },
                { (void **)&crypto.ctx_free, "EVP_MD_CTX_free" },
                { (void **)&crypto.init_ex, "EVP_DigestInit_ex" },
                { (void **)&crypto.update, "EVP_DigestUpdate" },
                { (void **)&crypto.final_ex, "EVP_DigestFinal_ex" },
                { (void **)&crypto.digest, "EVP_Digest" },
                { (void **)&crypto.sha256, "EVP_sha256" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(syms); i++)
                if (!(*syms[i].slot = dlsym(h, syms[i].name)))
                        abort();
}

static void crypto_init(void)
{
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, crypto_load);
}

struct sha256_ctx {
        EVP_MD_CTX *md;
};

struct sha256_ctx *sha256_new(void)
{
        crypto_init();
        struct sha256_ctx *c = xmalloc(sizeof(*c));
        c->md = crypto.ctx_new();
        if (!c->md || crypto.init_ex(c->md, crypto.sha256(), NULL) != 1)
                abort();
        return c;
}

void sha256_reset(struct sha256_ctx *c)
{
        if (crypto.init_ex(c->md, crypto.sha256(), NULL) != 1)
                abort();
}

void sha256_update(struct sha256_ctx *c, const void *data, size_t n)
{
        if (n && crypto.update(c->md, data, n) != 1)
                abort();
}

static void hexify(const unsigned char *md, unsigned len, char *out)
{
        static const char hex[] = "0123456789abcdef";
        for (unsigned i = 0; i < len; i++) {
                out[2 * i] = hex[md[i] >> 4];
                out[2 * i + 1] = hex[md[i] & 15];
        }
        out[2 * len] = '\0';
}

void sha256_final_str(struct sha256_ctx *c, char out[static DIGEST_STR_MAX])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        if (crypto.final_ex(c->md, md, &len) != 1)
                abort();
        memcpy(out, "sha256:", 7);
        hexify(md, len, out + 7);
}

void sha256_free(struct sha256_ctx *c)
{
        if (!c)
                return;
        crypto.ctx_free(c->md);
        free(c);
}

void sha256_str(const void *data, size_t n, char out[static DIGEST_STR_MAX])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        crypto_init();
        if (crypto.digest(data, n, md, &len, crypto.sha256(), NULL) != 1)
                abort();
        memcpy(out, "sha256:", 7);
        hexify(md, len, out + 7);
}

static int all_lower_hex(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return 0;
        return s[n] == '\0';
}

int digest_validate(const char *d, struct berr **err)
{
        if (!d || !*d)
                return berr_set(err, -EINVAL, "empty digest");
        if (strncmp(d, "sha256:", 7) == 0) {
                if (strlen(d + 7) != 64 || !all_lower_hex(d + 7, 64))
                        return berr_set(err, -EINVAL,
                                        "invalid digest \"%.80s\": sha256 needs 64 lowercase hex characters",
                                        d);
                return 0;
        }
        if (strncmp(d, "sha512:", 7) == 0) {
                if (strlen(d + 7) != 128 || !all_lower_hex(d + 7, 128))
                        return berr_set(err, -EINVAL,
                                        "invalid digest \"%.80s\": sha512 needs 128 lowercase hex characters",
                                        d);
                return 0;
        }
        const char *colon = strchr(d, ':');
        if (!colon)
                return berr_set(err, -EINVAL, "invalid digest \"%.80s\": missing algorithm prefix", d);
        return berr_set(err, -ENOTSUP, "unsupported digest algorithm \"%.*s\"", (int)MIN(colon - d, 32), d);
}

const char *digest_hex(const char *d)
{
        const char *c = strchr(d, ':');
        return c ? c + 1 : d;
}

void digest_chain_id(const char *parent, const char *diff_id, char out[static DIGEST_STR_MAX])
{
        if (!parent) {
                snprintf(out, DIGEST_STR_MAX, "%s", diff_id);
                return;
        }
        char buf[2 * DIGEST_STR_MAX + 2];
        int n = snprintf(buf, sizeof(buf), "%s %s", parent, diff_id);
        sha256_str(buf, (size_t)n, out);
}
