/* SPDX-License-Identifier: Apache-2.0 */
/* The store: the schema on a temporary file, transactions, foreign keys, ids and times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctltest.h"

static int count(struct ctl *c, const char *sql)
{
        sqlite3_stmt *s = db_prepare(c, sql, NULL);
        assert_non_null(s);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        int n = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
        return n;
}

static void test_schema(void **state)
{
        (void)state;
        struct ctl c;
        char dir[64];
        test_ctl_open(&c, dir);
        const char *tables[] = { "users", "tokens",        "organizations", "spaces",
                                 "roles", "feature_flags", "domains",       "events" };
        for (size_t i = 0; i < ARRAY_SIZE(tables); i++) {
                char *q = xasprintf("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'",
                                    tables[i]);
                assert_int_equal(count(&c, q), 1);
                free(q);
        }
        sqlite3_stmt *s = db_prepare(&c, "PRAGMA journal_mode", NULL);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal(db_col_text(s, 0), "wal");
        sqlite3_finalize(s);
        assert_int_equal(count(&c, "PRAGMA foreign_keys"), 1);
        /* Opening again runs the schema again harmlessly (IF NOT EXISTS). */
        char *db = xasprintf("%s/berth.db", dir);
        db_close(&c);
        assert_int_equal(db_open(&c, db, NULL), 0);
        free(db);
        test_ctl_close(&c, dir);
}

static void test_transactions(void **state)
{
        (void)state;
        struct ctl c;
        char dir[64];
        test_ctl_open(&c, dir);
        db_lock(&c);
        assert_int_equal(db_begin(&c, NULL), 0);
        assert_int_equal(db_exec(&c, "INSERT INTO organizations VALUES ('o1','a','t','t')", NULL), 0);
        db_rollback(&c);
        assert_int_equal(count(&c, "SELECT count(*) FROM organizations"), 0);
        assert_int_equal(db_begin(&c, NULL), 0);
        assert_int_equal(db_exec(&c, "INSERT INTO organizations VALUES ('o1','a','t','t')", NULL), 0);
        assert_int_equal(db_exec(&c, "INSERT INTO spaces VALUES ('s1','x','o1','t','t')", NULL), 0);
        assert_int_equal(db_commit(&c, NULL), 0);
        assert_int_equal(count(&c, "SELECT count(*) FROM spaces"), 1);
        /* The lock is recursive (helpers may lock again). */
        db_lock(&c);
        db_unlock(&c);
        /* Foreign keys: a space of an unknown org is refused; deleting the org deletes its spaces. */
        struct berr *e = NULL;
        assert_true(db_exec(&c, "INSERT INTO spaces VALUES ('s2','y','nope','t','t')", &e) < 0);
        assert_non_null(strstr(berr_msg(e), "FOREIGN KEY"));
        berr_free(e);
        e = NULL;
        /* Unique names per org. */
        assert_true(db_exec(&c, "INSERT INTO spaces VALUES ('s3','x','o1','t','t')", &e) < 0);
        berr_free(e);
        assert_int_equal(db_exec(&c, "DELETE FROM organizations WHERE guid='o1'", NULL), 0);
        assert_int_equal(count(&c, "SELECT count(*) FROM spaces"), 0);
        db_unlock(&c);
        test_ctl_close(&c, dir);
}

static void test_uuid_and_now(void **state)
{
        (void)state;
        char a[37], b[37], now[21];
        ctl_uuid(a);
        ctl_uuid(b);
        assert_int_equal(strlen(a), 36);
        assert_string_not_equal(a, b);
        assert_true(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
        assert_int_equal(a[14], '4');
        assert_non_null(strchr("89ab", a[19]));
        ctl_now(now);
        assert_int_equal(strlen(now), 20);
        assert_int_equal(now[10], 'T');
        assert_int_equal(now[19], 'Z');
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_schema),
                cmocka_unit_test(test_transactions),
                cmocka_unit_test(test_uuid_and_now),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
