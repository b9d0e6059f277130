/* SPDX-License-Identifier: Apache-2.0 */
/* sched.c's cell reports: heartbeats register cells, reports update instances, RUNNING/CRASHED bump the
 * route table, a crash counts (reset after 5 minutes of running) and is audited, unknown cells' reports
 * change nothing, only the internal token is accepted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ctltest.h"

static void call(struct ctl *c, struct http_response *resp, const char *method, const char *path,
                 const char *auth, const char *body)
{
        struct test_req t = { 0 };
        t.http.method = method;
        t.http.path = path;
        t.http.query = "";
        t.http.body = body;
        t.http.body_len = strlen(body);
        t.http.peer = "127.0.0.1:1";
        t.auth = auth;
        test_resp_reset(resp);
        api_handle(c, &t.http, resp);
}

static int64_t q_int(struct ctl *c, const char *sql, const char *arg)
{
        db_lock(c);
        sqlite3_stmt *s = xdb_query(c, NULL, sql, "s", arg);
        assert_non_null(s);
        int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
        sqlite3_finalize(s);
        db_unlock(c);
        return v;
}

static char *q_text(struct ctl *c, const char *sql, const char *arg)
{
        db_lock(c);
        sqlite3_stmt *s = xdb_query(c, NULL, sql, "s", arg);
        assert_non_null(s);
        char *v = sqlite3_step(s) == SQLITE_ROW && db_col_text(s, 0) ? xstrdup(db_col_text(s, 0)) : NULL;
        sqlite3_finalize(s);
        db_unlock(c);
        return v;
}

static const char *const AUTH = "Bearer internal-secret";

static char *instance_doc(const char *guid, const char *state, const char *reason, int exit_code)
{
        return xasprintf(
            "{\"instance\":{\"instance_guid\":\"%s\",\"process_guid\":\"p1\",\"app_guid\":\"a1\","
            "\"index\":0,\"state\":\"%s\",\"since\":\"2026-11-28T18:00:00Z\",\"host\":\"10.88.0.5\","
            "\"port\":8080,\"external_ip\":\"127.0.0.1\",\"external_port\":61001,\"exit_code\":%d,"
            "\"reason\":%s%s%s}}",
            guid, state, exit_code, reason ? "\"" : "", reason ? reason : "null", reason ? "\"" : "");
}

static void test_reports(void **state)
{
        (void)state;
        struct ctl c;
        char dir[64], org[37], space[37];
        struct http_response resp = { 0 };
        test_ctl_open(&c, dir);
        db_lock(&c);
        assert_int_equal(flags_bootstrap(&c, NULL), 0);
        assert_int_equal(tenancy_org_create(&c, "o", org, NULL), 0);
        assert_int_equal(tenancy_space_create(&c, org, "s", space, NULL), 0);
        assert_int_equal(xdb_exec(&c, NULL,
                                  "INSERT INTO apps (guid, name, space_guid, state, created_at, updated_at)"
                                  " VALUES ('a1', 'web', ?, 'STARTED', 'x', 'x')",
                                  "s", space),
                         0);
        assert_int_equal(
            xdb_exec(&c, NULL,
                     "INSERT INTO instances (guid, process_guid, app_guid, idx, cell_id, state, since,"
                     " since_ms, process_version) VALUES ('i1', 'p1', 'a1', 0, 'cell-0', 'STARTING', 'x',"
                     " CAST(strftime('%s', 'now') AS INTEGER) * 1000, 'v1')",
                     NULL),
            0);
        db_unlock(&c);

        /* only the internal token */
        call(&c, &resp, "PUT", "/internal/v1/cells/cell-0", "bearer nope",
             "{\"url\":\"http://127.0.0.1:1\"}");
        assert_int_equal(resp.status, 401);
        call(&c, &resp, "PUT", "/internal/v1/cells/cell-0", AUTH, "{\"url\":7}");
        assert_int_equal(resp.status, 422);

        /* a heartbeat registers the cell */
        call(&c, &resp, "PUT", "/internal/v1/cells/cell-0", AUTH,
             "{\"url\":\"http://127.0.0.1:1\",\"memory_mb\":2048,\"disk_mb\":9000,\"instances\":[]}");
        assert_int_equal(resp.status, 200);
        assert_int_equal(q_int(&c, "SELECT memory_mb FROM cells WHERE id = ?", "cell-0"), 2048);
        assert_true(q_int(&c, "SELECT last_seen FROM cells WHERE id = ?", "cell-0") > 0);

        /* RUNNING: the row follows and the route table moves */
        uint64_t v0 = c.rt_version;
        char *doc = instance_doc("i1", "RUNNING", NULL, 0);
        call(&c, &resp, "POST", "/internal/v1/cells/cell-0/events", AUTH, doc);
        free(doc);
        assert_int_equal(resp.status, 200);
        char *st = q_text(&c, "SELECT state FROM instances WHERE guid = ?", "i1");
        assert_string_equal(st, "RUNNING");
        free(st);
        char *host = q_text(&c, "SELECT host FROM instances WHERE guid = ?", "i1");
        assert_string_equal(host, "10.88.0.5");
        free(host);
        assert_int_equal(q_int(&c, "SELECT port FROM instances WHERE guid = ?", "i1"), 8080);
        assert_true(c.rt_version > v0);

        /* a report from another cell about it changes nothing */
        doc = instance_doc("i1", "CRASHED", "exited with status 1", 1);
        call(&c, &resp, "POST", "/internal/v1/cells/cell-9/events", AUTH, doc);
        st = q_text(&c, "SELECT state FROM instances WHERE guid = ?", "i1");
        assert_string_equal(st, "RUNNING");
        free(st);

        /* CRASHED: counted and audited */
        v0 = c.rt_version;
        call(&c, &resp, "POST", "/internal/v1/cells/cell-0/events", AUTH, doc);
        free(doc);
        assert_int_equal(resp.status, 200);
        assert_int_equal(q_int(&c, "SELECT crash_count FROM instances WHERE guid = ?", "i1"), 1);
        assert_int_equal(q_int(&c, "SELECT exit_code FROM instances WHERE guid = ?", "i1"), 1);
        assert_true(c.rt_version > v0);
        assert_int_equal(q_int(&c, "SELECT count(*) FROM events WHERE type = ?", "audit.app.process.crash"),
                         1);
        /* the same report again (a heartbeat) is not a second crash */
        doc = instance_doc("i1", "CRASHED", "exited with status 1", 1);
        call(&c, &resp, "POST", "/internal/v1/cells/cell-0/events", AUTH, doc);
        assert_int_equal(q_int(&c, "SELECT crash_count FROM instances WHERE guid = ?", "i1"), 1);
        free(doc);

        /* running again briefly, then crashing: 2 */
        doc = instance_doc("i1", "RUNNING", NULL, 0);
        call(&c, &resp, "POST", "/internal/v1/cells/cell-0/events", AUTH, doc);
        free(doc);
        doc = instance_doc("i1", "CRASHED", "out of memory", 137);
        call(&c, &resp, "POST", "/internal/v1/cells/cell-0/events", AUTH, doc);
        free(doc);
        assert_int_equal(q_int(&c, "SELECT crash_count FROM instances WHERE guid = ?", "i1"), 2);
        /* after more than 5 minutes of running the count starts again at 1 */
        doc = instance_doc("i1", "RUNNING", NULL, 0);
        call(&c, &resp, "POST", "/internal/v1/cells/cell-0/events", AUTH, doc);
        free(doc);
        db_lock(&c);
        assert_int_equal(
            xdb_exec(&c, NULL, "UPDATE instances SET since_ms = since_ms - 301000 WHERE guid = ?", "s", "i1"),
            0);
        db_unlock(&c);
        doc = instance_doc("i1", "CRASHED", "exited with status 2", 2);
        call(&c, &resp, "POST", "/internal/v1/cells/cell-0/events", AUTH, doc);
        free(doc);
        assert_int_equal(q_int(&c, "SELECT crash_count FROM instances WHERE guid = ?", "i1"), 1);
        assert_int_equal(q_int(&c, "SELECT count(*) FROM events WHERE type = ?", "audit.app.process.crash"),
                         3);

        /* a heartbeat without an instance the store placed on the cell long ago: the row goes (replaced) */
        db_lock(&c);
        assert_int_equal(xdb_exec(&c, NULL, "UPDATE instances SET since_ms = 1 WHERE guid = ?", "s", "i1"),
                         0);
        db_unlock(&c);
        call(&c, &resp, "PUT", "/internal/v1/cells/cell-0", AUTH,
             "{\"url\":\"http://127.0.0.1:1\",\"memory_mb\":2048,\"disk_mb\":9000,\"instances\":[]}");
        assert_int_equal(resp.status, 200);
        assert_int_equal(q_int(&c, "SELECT count(*) FROM instances WHERE guid = ?", "i1"), 0);

        test_resp_reset(&resp);
        test_ctl_close(&c, dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reports),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
