/* SPDX-License-Identifier: Apache-2.0 */
/* Passwords (argon2id), usernames, users and bearer tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctltest.h"

static void test_hash_verify(void **state)
{
        (void)state;
        char h[128];
        assert_int_equal(auth_password_hash("correct horse", h, NULL), 0);
        assert_true(strncmp(h, "$argon2id$", 10) == 0);
        assert_true(auth_password_verify(h, "correct horse"));
        assert_false(auth_password_verify(h, "correct hors"));
        assert_false(auth_password_verify(h, ""));
}

static void test_usernames(void **state)
{
        (void)state;
        assert_true(auth_username_valid("alice"));
        assert_true(auth_username_valid("a@b.c"));
        assert_false(auth_username_valid(""));
        assert_false(auth_username_valid("a b"));
        assert_false(auth_username_valid("a\tb"));
        char long_name[300];
        memset(long_name, 'x', sizeof(long_name));
        long_name[255] = '\0';
        assert_true(auth_username_valid(long_name));
        long_name[255] = 'x';
        long_name[256] = '\0';
        assert_false(auth_username_valid(long_name));
}

static void test_users_and_tokens(void **state)
{
        (void)state;
        struct ctl c;
        char dir[64], guid[37], g2[37];
        test_ctl_open(&c, dir);
        db_lock(&c);
        assert_int_equal(auth_user_create(&c, "alice", "pw", false, guid, NULL), 0);
        struct berr *e = NULL;
        assert_int_equal(auth_user_create(&c, "alice", "other", false, g2, &e), -EEXIST);
        berr_free(e);
        e = NULL;
        assert_int_equal(auth_user_create(&c, "bad name", "pw", false, g2, &e), -EINVAL);
        berr_free(e);
        e = NULL;
        assert_int_equal(auth_user_create(&c, "bob", "", false, g2, &e), -EINVAL);
        berr_free(e);

        char *access = NULL, *refresh = NULL;
        assert_int_equal(auth_token_issue(&c, guid, &access, &refresh, NULL), 0);
        assert_int_equal(strlen(access), 43); /* 32 bytes base64url without padding */
        assert_string_not_equal(access, refresh);
        struct api_user u;
        assert_int_equal(auth_token_lookup(&c, access, &u), 0);
        assert_string_equal(u.guid, guid);
        assert_string_equal(u.username, "alice");
        assert_false(u.admin);
        /* A refresh token is not an access token; unknown tokens are refused. */
        assert_int_equal(auth_token_lookup(&c, refresh, &u), -ENOENT);
        assert_int_equal(auth_token_lookup(&c, "nope", &u), -ENOENT);
        /* Only the hash is stored. */
        sqlite3_stmt *s = db_prepare(&c, "SELECT count(*) FROM tokens WHERE hash = ?", NULL);
        sqlite3_bind_text(s, 1, access, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(s, 0), 0);
        sqlite3_finalize(s);
        /* Expired → refused. */
        assert_int_equal(db_exec(&c, "UPDATE tokens SET expires_at = 1", NULL), 0);
        assert_int_equal(auth_token_lookup(&c, access, &u), -ENOENT);
        db_unlock(&c);
        free(access);
        free(refresh);
        test_ctl_close(&c, dir);
}

int main(void)
{
        if (sodium_init() < 0)
                return 1;
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hash_verify),
                cmocka_unit_test(test_usernames),
                cmocka_unit_test(test_users_and_tokens),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
