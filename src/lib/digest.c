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

/*
 * SHA-256 (FIPS 180-4) in plain C for the one-shot digests of small documents: manifests and configs as
 * they are read back from the store (4 MiB at most), ChainIDs, names. Loading libcrypto for those costs a
 * few milliseconds at every start of a container; the streams of a pull (gigabytes) keep OpenSSL's
 * accelerated code above. Checked against OpenSSL by tests/unit/lib/test_digest.c.
 */
static const uint32_t K256[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, unsigned n)
{
        return (x >> n) | (x << (32 - n));
}

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
                w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
                       p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
                uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
                uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
        for (int i = 0; i < 64; i++) {
                uint32_t t1 =
                    k + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
                uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
                k = g;
                g = f;
                f = e;
                e = d + t1;
                d = c;
                c = b;
                b = a;
                a = t1 + t2;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void sha256_str(const void *data, size_t n, char out[static DIGEST_STR_MAX])
{
        uint32_t h[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                          0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
        const unsigned char *p = data;
        size_t left = n;
        for (; left >= 64; left -= 64, p += 64)
                sha256_block(h, p);
        /* The tail, 0x80, zeros, and the length in bits (big-endian): one or two more blocks. */
        unsigned char tail[128] = { 0 };
        if (left)
                memcpy(tail, p, left);
        tail[left] = 0x80;
        size_t blocks = left + 1 + 8 <= 64 ? 1 : 2;
        uint64_t bits = (uint64_t)n * 8;
        for (int i = 0; i < 8; i++)
                tail[blocks * 64 - 1 - i] = (unsigned char)(bits >> (8 * i));
        for (size_t i = 0; i < blocks; i++)
                sha256_block(h, tail + 64 * i);
        unsigned char md[32];
        for (int i = 0; i < 8; i++) {
                md[4 * i] = (unsigned char)(h[i] >> 24);
                md[4 * i + 1] = (unsigned char)(h[i] >> 16);
                md[4 * i + 2] = (unsigned char)(h[i] >> 8);
                md[4 * i + 3] = (unsigned char)h[i];
        }
        memcpy(out, "sha256:", 7);
        hexify(md, sizeof(md), out + 7);
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
