/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "lib/digest.h"

static void test_sha256_known(void **state)
{
        (void)state;
        char out[DIGEST_STR_MAX];
        sha256_str("", 0, out);
        assert_string_equal(out, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        sha256_str("abc", 3, out);
        assert_string_equal(out, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        _cleanup_(sha256_freep) struct sha256_ctx *c = sha256_new();
        sha256_update(c, "a", 1);
        sha256_update(c, "bc", 2);
        sha256_final_str(c, out);
        assert_string_equal(out, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* The plain-C one-shot digest agrees with OpenSSL's streaming one at every length around the block edges. */
static void test_sha256_oneshot_matches_openssl(void **state)
{
        (void)state;
        static unsigned char buf[4096 + 130];
        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (unsigned char)(i * 131 + (i >> 7));
        for (size_t n = 0; n < sizeof(buf); n += (n < 300 ? 1 : 61)) {
                char a[DIGEST_STR_MAX], b[DIGEST_STR_MAX];
                sha256_str(buf, n, a);
                struct sha256_ctx *c = sha256_new();
                sha256_update(c, buf, n);
                sha256_final_str(c, b);
                sha256_free(c);
                if (strcmp(a, b) != 0)
                        fail_msg("length %zu: %s != %s", n, a, b);
        }
        char *million = malloc(1000000);
        memset(million, 'a', 1000000);
        char d[DIGEST_STR_MAX];
        sha256_str(million, 1000000, d);
        assert_string_equal(d, "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        free(million);
}

static void test_validate(void **state)
{
        (void)state;
        struct berr *err = NULL;
        assert_int_equal(
            digest_validate("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &err),
            0);
        assert_int_equal(
            digest_validate("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", &err),
            -EINVAL);
        assert_non_null(strstr(berr_msg(err), "lowercase"));
        berr_freep(&err);
        assert_int_equal(digest_validate("sha256:abc", NULL), -EINVAL);
        assert_int_equal(digest_validate("md5:d41d8cd98f00b204e9800998ecf8427e", &err), -ENOTSUP);
        assert_non_null(strstr(berr_msg(err), "md5"));
        berr_freep(&err);
        assert_int_equal(
            digest_validate("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", NULL),
            -EINVAL);
        assert_int_equal(digest_validate("", NULL), -EINVAL);
        assert_int_equal(digest_validate(NULL, NULL), -EINVAL);
        assert_string_equal(digest_hex("sha256:ab"), "ab");
}

static void test_chain_id(void **state)
{
        (void)state;
        const char *a = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        const char *b = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        char c1[DIGEST_STR_MAX], c2[DIGEST_STR_MAX], expect[DIGEST_STR_MAX];
        digest_chain_id(NULL, a, c1);
        assert_string_equal(c1, a);
        digest_chain_id(c1, b, c2);
        char buf[300];
        snprintf(buf, sizeof(buf), "%s %s", a, b);
        sha256_str(buf, strlen(buf), expect);
        assert_string_equal(c2, expect);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sha256_known),
                cmocka_unit_test(test_sha256_oneshot_matches_openssl),
                cmocka_unit_test(test_validate),
                cmocka_unit_test(test_chain_id),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
