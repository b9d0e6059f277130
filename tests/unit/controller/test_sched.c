/* SPDX-License-Identifier: Apache-2.0 */
/* sched.c's cell reports: heartbeats register cells, reports update instances, RUNNING/CRASHED bump the
 * route table, a crash counts (reset after 5 minutes of running) and is audited, unknown cells' reports
 * change nothing, only the internal token is accepted, a STOPPING row keeps its state until the cell
 * confirms. The convergence plan (sched_plan, no network): placement on the cell with the most free memory,
 * nothing to do on a second pass, duplicates and extra instances stopped (STOPPING), crashed instances
 * restarted per Diego's backoff with their crash count, instances of a lost cell replaced, and a rolling
 * deployment replacing instances one at a time, waiting for the routers; change-only heartbeats drop
 * nothing, and one from an unknown agent session asks for a full report. */
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

/* ---- the convergence plan ---- */

static void exec_sql(struct ctl *c, const char *sql)
{
        db_lock(c);
        struct berr *e = NULL;
        if (db_exec(c, sql, &e) < 0) {
                fprintf(stderr, "%s: %s\n", sql, berr_msg(e));
                fail();
        }
        db_unlock(c);
}

static int64_t q_count(struct ctl *c, const char *where)
{
        char *sql = xasprintf("SELECT count(*) FROM instances WHERE %s", where);
        int64_t n = q_int(c, sql, "");
        free(sql);
        return n;
}

struct plan_view {
        size_t puts, stops;
        int put_idx[64];
        char put_cell[64][32];
};

static struct sched_plan *plan(struct ctl *c, struct plan_view *v)
{
        struct sched_plan *p = NULL;
        struct berr *e = NULL;
        if (sched_plan(c, &p, NULL, &e) < 0) {
                fprintf(stderr, "sched_plan: %s\n", berr_msg(e));
                fail();
        }
        memset(v, 0, sizeof(*v));
        for (size_t i = 0; i < sched_plan_count(p); i++) {
                bool put;
                const char *g, *cell;
                int idx;
                sched_plan_action(p, i, &put, &g, &cell, &idx);
                if (put) {
                        if (v->puts < 64) {
                                v->put_idx[v->puts] = idx;
                                snprintf(v->put_cell[v->puts], sizeof(v->put_cell[0]), "%s", cell);
                        }
                        v->puts++;
                } else {
                        v->stops++;
                }
        }
        return p;
}

/* One plan, its actions counted, freed (the PUTs are "sent": the rows stay STARTING). */
static void plan_once(struct ctl *c, struct plan_view *v)
{
        sched_plan_free(plan(c, v));
}

/* An org, space, app 'a1' STARTED with droplet 'd1' and web process 'p1' (version 'v1', n instances of
 * 256 MB), two live cells (cell-a 1024 MB, cell-b 2048 MB), diego_docker on. */
static void seed(struct ctl *c, int n)
{
        char org[37], space[37];
        db_lock(c);
        assert_int_equal(flags_bootstrap(c, NULL), 0);
        assert_int_equal(tenancy_org_create(c, "o", org, NULL), 0);
        assert_int_equal(tenancy_space_create(c, org, "s", space, NULL), 0);
        assert_int_equal(xdb_exec(c, NULL,
                                  "INSERT INTO apps (guid, name, space_guid, state, droplet_guid, created_at,"
                                  " updated_at) VALUES ('a1', 'web', ?, 'STARTED', 'd1', 'x', 'x')",
                                  "s", space),
                         0);
        db_unlock(c);
        exec_sql(c, "UPDATE feature_flags SET enabled = 1 WHERE name = 'diego_docker'");
        exec_sql(c,
                 "INSERT INTO droplets (guid, app_guid, image_pinned, docker_image, execution_metadata,"
                 " process_types, created_at, updated_at) VALUES ('d1', 'a1', 'r/x@sha256:00', 'r/x:1', '{}',"
                 " '{}', 'x', 'x'), ('d2', 'a1', 'r/x@sha256:11', 'r/x:2', '{}', '{}', 'x', 'x')");
        char *sql =
            xasprintf("INSERT INTO processes (guid, app_guid, type, instances, memory_mb, disk_mb,"
                      " health_check_type, version, created_at, updated_at) VALUES ('p1', 'a1', 'web', %d,"
                      " 256, 1024, 'port', 'v1', 'x', 'x')",
                      n);
        exec_sql(c, sql);
        free(sql);
        exec_sql(c, "INSERT INTO cells (id, url, memory_mb, disk_mb, last_seen) VALUES"
                    " ('cell-a', 'http://a', 1024, 0, CAST(strftime('%s','now') AS INTEGER) * 1000),"
                    " ('cell-b', 'http://b', 2048, 0, CAST(strftime('%s','now') AS INTEGER) * 1000)");
}

static void test_plan_basics(void **state)
{
        (void)state;
        struct ctl c;
        char dir[64];
        struct plan_view v;
        test_ctl_open(&c, dir);
        seed(&c, 3);

        /* three instances, each on the cell with the most free memory: b (2048, 1792, 1536) */
        plan_once(&c, &v);
        assert_int_equal(v.puts, 3);
        assert_int_equal(v.stops, 0);
        assert_int_equal(v.put_idx[0] + v.put_idx[1] + v.put_idx[2], 0 + 1 + 2);
        assert_int_equal(q_count(&c, "state = 'STARTING' AND cell_id = 'cell-b'"), 3);
        /* then nothing to do */
        plan_once(&c, &v);
        assert_int_equal(v.puts + v.stops, 0);
        /* a fourth goes to b (1280 free) too, a fifth to b (1024, ties go either way), ... free memory
         * decides: scale to 8 = 2048 MB over 3072 MB */
        exec_sql(&c, "UPDATE processes SET instances = 8");
        plan_once(&c, &v);
        assert_int_equal(v.puts, 5);
        assert_int_equal(q_count(&c, "cell_id = 'cell-a'") * 256 <= 1024, 1);
        assert_int_equal(q_count(&c, "cell_id = 'cell-b'") * 256 <= 2048, 1);
        assert_int_equal(q_count(&c, "1"), 8);
        /* a ninth, tenth, ... than fit: 12 wanted, 12 fit exactly (3072 / 256), a 13th does not */
        exec_sql(&c, "UPDATE processes SET instances = 13");
        plan_once(&c, &v);
        assert_int_equal(v.puts, 4);
        assert_int_equal(q_count(&c, "1"), 12);

        /* extra instances stop: scale to 2 leaves indexes 0 and 1; the others are STOPPING (not deleted
         * until the cell confirms) and a second pass does not stop them twice while their stop is sent */
        exec_sql(&c, "UPDATE processes SET instances = 2");
        plan_once(&c, &v);
        assert_int_equal(v.puts, 0);
        assert_int_equal(v.stops, 10);
        assert_int_equal(q_count(&c, "state = 'STOPPING'"), 10);
        assert_int_equal(q_count(&c, "state = 'STOPPING' AND idx < 2"), 0);
        exec_sql(&c, "DELETE FROM instances WHERE state = 'STOPPING'"); /* the cells confirmed */

        /* a duplicate of an index (two rows for index 0 of the current version): the younger one stops */
        exec_sql(&c,
                 "INSERT INTO instances (guid, process_guid, app_guid, idx, cell_id, state, since, since_ms,"
                 " process_version, memory_mb) VALUES ('dup', 'p1', 'a1', 0, 'cell-a', 'RUNNING', 'x',"
                 " 99999999999999, 'v1', 256)");
        plan_once(&c, &v);
        assert_int_equal(v.puts, 0);
        assert_int_equal(v.stops, 1);
        char *st = q_text(&c, "SELECT state FROM instances WHERE guid = ?", "dup");
        assert_string_equal(st, "STOPPING");
        free(st);
        exec_sql(&c, "DELETE FROM instances WHERE state = 'STOPPING'");

        /* crashes 1 and 2 restart at once, carrying the count; crash 3 waits 30 s */
        exec_sql(&c, "UPDATE instances SET state = 'CRASHED', crash_count = 1, last_crash_at ="
                     " CAST(strftime('%s','now') AS INTEGER) * 1000 WHERE idx = 0");
        plan_once(&c, &v);
        assert_int_equal(v.puts, 1);
        assert_int_equal(v.stops, 1);
        assert_int_equal(v.put_idx[0], 0);
        assert_int_equal(q_count(&c, "state = 'STARTING' AND idx = 0 AND crash_count = 1"), 1);
        exec_sql(&c, "DELETE FROM instances WHERE state = 'STOPPING'");
        exec_sql(&c, "UPDATE instances SET state = 'CRASHED', crash_count = 3, last_crash_at ="
                     " CAST(strftime('%s','now') AS INTEGER) * 1000 WHERE idx = 0");
        plan_once(&c, &v);
        assert_int_equal(v.puts + v.stops, 0);
        exec_sql(&c, "UPDATE instances SET last_crash_at = last_crash_at - 31000 WHERE idx = 0");
        plan_once(&c, &v);
        assert_int_equal(v.puts, 1);
        assert_int_equal(q_count(&c, "state = 'STARTING' AND idx = 0 AND crash_count = 3"), 1);
        exec_sql(&c, "DELETE FROM instances WHERE state = 'STOPPING'");
        /* after crash 200, never again */
        exec_sql(
            &c, "UPDATE instances SET state = 'CRASHED', crash_count = 200, last_crash_at = 1 WHERE idx = 0");
        plan_once(&c, &v);
        assert_int_equal(v.puts + v.stops, 0);
        exec_sql(&c, "UPDATE instances SET state = 'RUNNING', crash_count = 0 WHERE idx = 0");

        /* a lost cell: its rows go (no DELETE to send) and the instances are placed on the live one */
        exec_sql(&c, "UPDATE instances SET cell_id = 'cell-b'");
        exec_sql(&c, "UPDATE cells SET last_seen = 1 WHERE id = 'cell-b'");
        plan_once(&c, &v);
        assert_int_equal(v.stops, 0);
        assert_int_equal(v.puts, 2);
        assert_string_equal(v.put_cell[0], "http://a");
        assert_string_equal(v.put_cell[1], "http://a");
        assert_int_equal(q_count(&c, "cell_id = 'cell-b'"), 0);

        /* the flag off: every instance stops */
        exec_sql(&c, "UPDATE feature_flags SET enabled = 0 WHERE name = 'diego_docker'");
        plan_once(&c, &v);
        assert_int_equal(v.stops, 2);
        assert_int_equal(q_count(&c, "state <> 'STOPPING'"), 0);

        test_ctl_close(&c, dir);
}

static void routes_poll(struct ctl *c, unsigned long long index)
{
        struct http_response resp = { 0 };
        struct test_req t = { 0 };
        char *q = xasprintf("index=%llu&wait=0", index);
        t.http.method = "GET";
        t.http.path = "/internal/v1/routes";
        t.http.query = q;
        t.http.body = "";
        t.http.peer = "127.0.0.1:7777";
        t.auth = AUTH;
        api_handle(c, &t.http, &resp);
        assert_int_equal(resp.status, 200);
        test_resp_reset(&resp);
        free(q);
}

static void test_plan_rolling(void **state)
{
        (void)state;
        struct ctl c;
        char dir[64];
        struct plan_view v;
        test_ctl_open(&c, dir);
        seed(&c, 3);
        plan_once(&c, &v);
        assert_int_equal(v.puts, 3);
        exec_sql(&c, "UPDATE instances SET state = 'RUNNING', since_ms = 1, host = '10.0.0.1', port = 8080");

        /* a deployment to droplet d2: the process gets version v2 */
        exec_sql(&c, "UPDATE apps SET droplet_guid = 'd2'");
        exec_sql(&c, "UPDATE processes SET version = 'v2'");
        exec_sql(&c,
                 "INSERT INTO deployments (guid, app_guid, process_guid, state, status_value, status_reason,"
                 " droplet_guid, previous_droplet_guid, version, previous_version, created_at, updated_at,"
                 " last_status_change) VALUES ('dep1', 'a1', 'p1', 'DEPLOYING', 'ACTIVE', 'DEPLOYING', 'd2',"
                 " 'd1', 'v2', 'v1', 'x', 'x', 'x')");
        /* one new instance, for index 0; the old ones stay */
        plan_once(&c, &v);
        assert_int_equal(v.puts, 1);
        assert_int_equal(v.stops, 0);
        assert_int_equal(v.put_idx[0], 0);
        plan_once(&c, &v);
        assert_int_equal(v.puts + v.stops, 0);
        /* it crashes: the old one stays, the deployment stays active; the restart is the same index */
        exec_sql(&c, "UPDATE instances SET state = 'CRASHED', crash_count = 3, last_crash_at ="
                     " CAST(strftime('%s','now') AS INTEGER) * 1000 WHERE process_version = 'v2'");
        plan_once(&c, &v);
        assert_int_equal(v.puts + v.stops, 0);
        assert_int_equal(q_count(&c, "process_version = 'v1' AND state = 'RUNNING'"), 3);
        exec_sql(&c, "UPDATE instances SET state = 'RUNNING', crash_count = 0 WHERE process_version = 'v2'");

        /* a live router that holds an older table: the new instance is RUNNING but not routed yet */
        routes_poll(&c, 0);
        exec_sql(&c, "UPDATE instances SET since_ms = CAST(strftime('%s','now') AS INTEGER) * 1000 + 5000,"
                     " routed_version = 7 WHERE process_version = 'v2'");
        while (routes_version(&c) < 7)
                routes_changed(&c);
        plan_once(&c, &v);
        assert_int_equal(v.puts + v.stops, 0);
        assert_int_equal(c.rt_want, 7);
        /* the router takes table 7: old index 0 stops, the new index 1 starts, in the same pass */
        routes_poll(&c, 7);
        assert_int_equal(c.rt_want, 0);
        plan_once(&c, &v);
        assert_int_equal(v.stops, 1);
        assert_int_equal(v.puts, 1);
        assert_int_equal(v.put_idx[0], 1);
        assert_int_equal(q_count(&c, "state = 'STOPPING' AND idx = 0 AND process_version = 'v1'"), 1);
        exec_sql(&c, "DELETE FROM instances WHERE state = 'STOPPING'");
        /* and so on, one at a time */
        exec_sql(&c,
                 "UPDATE instances SET state = 'RUNNING', routed_version = 0 WHERE process_version = 'v2'");
        plan_once(&c, &v);
        assert_int_equal(v.stops, 1);
        assert_int_equal(v.puts, 1);
        assert_int_equal(v.put_idx[0], 2);
        exec_sql(&c, "DELETE FROM instances WHERE state = 'STOPPING'");
        char *st = q_text(&c, "SELECT status_value FROM deployments WHERE guid = ?", "dep1");
        assert_string_equal(st, "ACTIVE");
        free(st);
        exec_sql(&c,
                 "UPDATE instances SET state = 'RUNNING', routed_version = 0 WHERE process_version = 'v2'");
        plan_once(&c, &v);
        assert_int_equal(v.stops, 1);
        assert_int_equal(v.puts, 0);
        /* no old instance is left serving: the deployment is done */
        st = q_text(&c,
                    "SELECT status_value || '/' || status_reason || '/' || state FROM deployments WHERE"
                    " guid = ?",
                    "dep1");
        assert_string_equal(st, "FINALIZED/DEPLOYED/DEPLOYED");
        free(st);
        assert_int_equal(q_count(&c, "process_version = 'v2' AND state = 'RUNNING'"), 3);

        /* a plain restart (new version, no deployment) replaces everything at once */
        exec_sql(&c, "DELETE FROM instances WHERE state = 'STOPPING'");
        exec_sql(&c, "UPDATE processes SET version = 'v3'");
        plan_once(&c, &v);
        assert_int_equal(v.stops, 3);
        assert_int_equal(v.puts, 3);
        routes_routers_clear(&c);
        test_ctl_close(&c, dir);
}

static void test_stopping_reports(void **state)
{
        (void)state;
        struct ctl c;
        char dir[64];
        struct plan_view v;
        struct http_response resp = { 0 };
        test_ctl_open(&c, dir);
        seed(&c, 1);
        plan_once(&c, &v);
        char *g = q_text(&c, "SELECT guid FROM instances WHERE idx = ?", "0");
        assert_non_null(g);
        exec_sql(&c, "UPDATE instances SET state = 'RUNNING'");
        exec_sql(&c, "UPDATE processes SET instances = 0");
        plan_once(&c, &v);
        assert_int_equal(v.stops, 1);
        /* the cell still reports it RUNNING (its stop is under way): it stays STOPPING, no crash counted */
        char *doc = instance_doc(g, "CRASHED", "exited with status 143", 143);
        char *url = xasprintf("/internal/v1/cells/%s/events", "cell-b");
        call(&c, &resp, "POST", url, AUTH, doc);
        assert_int_equal(resp.status, 200);
        char *st = q_text(&c, "SELECT state FROM instances WHERE guid = ?", g);
        assert_string_equal(st, "STOPPING");
        free(st);
        assert_int_equal(q_int(&c, "SELECT count(*) FROM events WHERE type = ?", "audit.app.process.crash"),
                         0);
        /* a heartbeat listing only changes says nothing of the rows it omits: the row stays */
        call(&c, &resp, "PUT", "/internal/v1/cells/cell-b", AUTH,
             "{\"url\":\"http://b\",\"memory_mb\":2048,\"instances\":[],\"full\":false}");
        assert_int_equal(resp.status, 200);
        assert_int_equal(q_count(&c, "1"), 1);
        /* one from an agent session the controller does not know: it asks for a full report */
        call(&c, &resp, "PUT", "/internal/v1/cells/cell-b", AUTH,
             "{\"url\":\"http://b\",\"memory_mb\":2048,\"instances\":[],\"full\":false,"
             "\"session\":\"9-1\",\"session_age_ms\":5000}");
        assert_int_equal(resp.status, 200);
        assert_true(json_is_true(json_object_get(resp.json, "full_report_wanted")));
        assert_int_equal(q_count(&c, "1"), 1);
        /* a heartbeat without it: the cell confirms, the row goes */
        call(&c, &resp, "PUT", "/internal/v1/cells/cell-b", AUTH,
             "{\"url\":\"http://b\",\"memory_mb\":2048,\"instances\":[]}");
        assert_int_equal(resp.status, 200);
        assert_int_equal(q_count(&c, "1"), 0);
        free(url);
        free(doc);
        free(g);
        test_resp_reset(&resp);
        test_ctl_close(&c, dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reports),
                cmocka_unit_test(test_plan_basics),
                cmocka_unit_test(test_plan_rolling),
                cmocka_unit_test(test_stopping_reports),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
