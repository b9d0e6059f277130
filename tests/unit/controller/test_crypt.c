/* SPDX-License-Identifier: Apache-2.0 */
/* crypt_seal / crypt_open: round trip, fresh nonces, tampering and wrong keys refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "controller/ctl.h"

static void test_round_trip(void **state)
{
        (void)state;
        struct ctl c = { 0 };
        randombytes_buf(c.enc_key, sizeof(c.enc_key));
        const char *inputs[] = { "", "s3cret-pa55", "ünïcödé and a long password with spaces 0123456789" };
        for (size_t i = 0; i < ARRAY_SIZE(inputs); i++) {
                char *sealed = crypt_seal(&c, inputs[i]);
                assert_true(strncmp(sealed, "v1:", 3) == 0);
                assert_null(strstr(sealed, inputs[i][0] ? inputs[i] : "\x01"));
                char *plain = NULL;
                assert_int_equal(crypt_open(&c, sealed, &plain, NULL), 0);
                assert_string_equal(plain, inputs[i]);
                free(plain);
                free(sealed);
        }
        /* A fresh nonce each time: the same plaintext seals differently. */
        char *a = crypt_seal(&c, "same"), *b = crypt_seal(&c, "same");
        assert_string_not_equal(a, b);
        free(a);
        free(b);
}

static void test_tamper_and_wrong_key(void **state)
{
        (void)state;
        struct ctl c = { 0 }, other = { 0 };
        randombytes_buf(c.enc_key, sizeof(c.enc_key));
        randombytes_buf(other.enc_key, sizeof(other.enc_key));
        char *sealed = crypt_seal(&c, "hunter2");
        char *plain = NULL;
        struct berr *e = NULL;
        assert_int_equal(crypt_open(&other, sealed, &plain, &e), -EBADMSG);
        assert_null(plain);
        berr_free(e);
        e = NULL;
        /* Flip one character of the base64 body. */
        size_t n = strlen(sealed);
        sealed[n - 3] = sealed[n - 3] == 'A' ? 'B' : 'A';
        assert_true(crypt_open(&c, sealed, &plain, &e) < 0);
        assert_null(plain);
        berr_free(e);
        e = NULL;
        assert_int_equal(crypt_open(&c, "v2:abcd", &plain, &e), -EINVAL);
        berr_free(e);
        e = NULL;
        assert_int_equal(crypt_open(&c, "v1:!!!", &plain, &e), -EINVAL);
        berr_free(e);
        e = NULL;
        assert_int_equal(crypt_open(&c, "v1:", &plain, &e), -EINVAL);
        berr_free(e);
        free(sealed);
}

int main(void)
{
        if (sodium_init() < 0)
                return 1;
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_tamper_and_wrong_key),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
