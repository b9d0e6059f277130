/* SPDX-License-Identifier: Apache-2.0 */
/* Registry passwords at rest: libsodium secretbox (XSalsa20-Poly1305) with the controller's 32-byte key. */
#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "controller/ctl.h"

#define CRYPT_PREFIX "v1:"
/* A sealed value longer than this is refused (registry passwords and tokens are far shorter). */
#define CRYPT_SEALED_MAX 65536

_Static_assert(crypto_secretbox_KEYBYTES == 32, "enc_key is 32 bytes");

/* "v1:" + base64(nonce || MAC || ciphertext), a fresh random nonce each time. Caller frees. */
char *crypt_seal(struct ctl *c, const char *plain)
{
        size_t n = strlen(plain);
        size_t box_len = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + n;
        unsigned char *box = xmalloc(box_len);
        randombytes_buf(box, crypto_secretbox_NONCEBYTES);
        crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, (const unsigned char *)plain, n, box,
                              c->enc_key);
        size_t b64_len = sodium_base64_ENCODED_LEN(box_len, sodium_base64_VARIANT_ORIGINAL);
        char *out = xmalloc(strlen(CRYPT_PREFIX) + b64_len);
        memcpy(out, CRYPT_PREFIX, strlen(CRYPT_PREFIX));
        sodium_bin2base64(out + strlen(CRYPT_PREFIX), b64_len, box, box_len, sodium_base64_VARIANT_ORIGINAL);
        free(box);
        return out;
}

int crypt_open(struct ctl *c, const char *sealed, char **ret_plain, struct berr **err)
{
        size_t len = strlen(sealed);
        if (len > CRYPT_SEALED_MAX || strncmp(sealed, CRYPT_PREFIX, strlen(CRYPT_PREFIX)) != 0)
                return berr_set(err, -EINVAL, "sealed value: unknown format");
        const char *b64 = sealed + strlen(CRYPT_PREFIX);
        size_t b64_len = len - strlen(CRYPT_PREFIX);
        _cleanup_free_ unsigned char *box = xmalloc(b64_len + 1);
        size_t box_len = 0;
        if (sodium_base642bin(box, b64_len + 1, b64, b64_len, NULL, &box_len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            box_len < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
                return berr_set(err, -EINVAL, "sealed value: bad encoding");
        size_t n = box_len - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
        char *plain = xmalloc(n + 1);
        if (crypto_secretbox_open_easy((unsigned char *)plain, box + crypto_secretbox_NONCEBYTES,
                                       box_len - crypto_secretbox_NONCEBYTES, box, c->enc_key) != 0) {
                free(plain);
                return berr_set(err, -EBADMSG, "sealed value: authentication failed (wrong key or tampered)");
        }
        plain[n] = '\0';
        *ret_plain = plain;
        return 0;
}
