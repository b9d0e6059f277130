/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cells and the scheduler (docs/PLATFORM.md "Internal API: cell agent"): cells register and heartbeat
 * with their instances and report state changes as events; a thread converges the instances the store
 * wants (every web process of a STARTED app with a droplet, while diego_docker is on: indexes
 * 0..instances-1) with those that exist: it places missing ones on the live cell with the most free memory
 * (PUT /v1/lrps/:guid), stops extra ones (DELETE), and restarts crashed ones per Diego's policy
 * (cloud-foundry-behaviour.md §6). No network call is made with the store lock held.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "controller/ctl.h"
#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

#define CELL_LIVE_MS       10000 /* a cell silent longer is gone: its instances are replaced */
#define CELL_LOST_GRACE_MS 15000 /* an instance a live cell does not report after this is gone */
#define CRASH_RESET_MS     (5 * 60 * 1000)
#define SCHED_HTTP_TIMEOUT 10000
#define SCHED_MAX_ACTIONS  4096

struct sched {
        pthread_t thread;
        pthread_mutex_t mu;
        pthread_cond_t cond;
        bool kicked;
        bool running;
};

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct http_client *sched_client(void)
{
        struct http_client *hc = NULL;
        struct http_client_opts o = { .timeout_ms = SCHED_HTTP_TIMEOUT, .connect_timeout_ms = 2000 };
        if (http_client_new(&o, &hc, NULL) < 0)
                return NULL;
        return hc;
}

/* DELETE {cell}/v1/lrps/:guid (no lock held). */
static void cell_delete_lrp(const char *token, struct http_client *hc, const char *cell_url, const char *guid)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_free_ char *url = xasprintf("%s/v1/lrps/%s", cell_url, guid);
        long st = 0;
        json_t *j = NULL;
        http_client_set_bearer(hc, token);
        if (http_request_json(hc, "DELETE", url, NULL, &st, &j, &e) < 0)
                log_warn("stop instance %s: %s", guid, berr_msg(e));
        else if (st >= 300 && st != 404)
                log_warn("stop instance %s: %s answered HTTP %ld", guid, cell_url, st);
        json_decref(j);
}

/*
 * A cell's DELETE returns once the instance stopped (SIGTERM, SIGKILL after 10 s): each runs on a detached
 * thread of its own so that neither the scheduler nor a cell's heartbeat waits for it, and an instance
 * already being stopped is not asked twice.
 */
#define STOP_TIMEOUT_MS 30000
#define STOPS_MAX       1024
static pthread_mutex_t stops_mu = PTHREAD_MUTEX_INITIALIZER;
static struct strv stops; /* instance guids being stopped */

struct stop_job {
        char *token, *cell_url, *guid;
};

static void *stop_thread(void *arg)
{
        struct stop_job *j = arg;
        struct http_client *hc = NULL;
        struct http_client_opts o = { .timeout_ms = STOP_TIMEOUT_MS, .connect_timeout_ms = 2000 };
        if (http_client_new(&o, &hc, NULL) == 0) {
                cell_delete_lrp(j->token, hc, j->cell_url, j->guid);
                http_client_free(hc);
        }
        pthread_mutex_lock(&stops_mu);
        for (size_t i = 0; i < stops.n; i++)
                if (strcmp(stops.v[i], j->guid) == 0) {
                        free(stops.v[i]);
                        stops.v[i] = stops.v[--stops.n];
                        stops.v[stops.n] = NULL;
                        break;
                }
        pthread_mutex_unlock(&stops_mu);
        free(j->token);
        free(j->cell_url);
        free(j->guid);
        free(j);
        return NULL;
}

static void cell_stop_async(struct ctl *c, const char *cell_url, const char *guid)
{
        pthread_mutex_lock(&stops_mu);
        bool busy = stops.n >= STOPS_MAX;
        for (size_t i = 0; !busy && i < stops.n; i++)
                busy = strcmp(stops.v[i], guid) == 0;
        if (!busy)
                strv_push(&stops, xstrdup(guid));
        pthread_mutex_unlock(&stops_mu);
        if (busy)
                return;
        struct stop_job *j = xcalloc(1, sizeof(*j));
        j->token = xstrdup(c->internal_token ? c->internal_token : "");
        j->cell_url = xstrdup(cell_url);
        j->guid = xstrdup(guid);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int r = pthread_create(&t, &attr, stop_thread, j);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                log_warn("stop instance %s: cannot start a thread", guid);
                stop_thread(j); /* synchronously then */
        }
}

/* ---- instance reports (heartbeats and events) ---- */

static void crash_event(struct ctl *c, const char *guid, const json_t *inst, int crash_count)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
            c, NULL,
            "SELECT a.guid, a.name, a.space_guid, i.idx FROM instances i JOIN apps a ON a.guid = i.app_guid"
            " WHERE i.guid = ?",
            "s", guid);
        if (!s || sqlite3_step(s) != SQLITE_ROW)
                return;
        json_t *ec = json_object_get(inst, "exit_code");
        const char *reason = json_string_value(json_object_get(inst, "reason"));
        _cleanup_free_ char *desc = xasprintf("APP/PROC/WEB: %s", reason ? reason : "crashed");
        audit_event(c, "audit.app.process.crash", NULL, "app", db_col_text(s, 0), db_col_text(s, 1),
                    db_col_text(s, 2),
                    json_pack("{s:i,s:o,s:s,s:s,s:s,s:i,s:s}", "index", sqlite3_column_int(s, 3),
                              "exit_status",
                              json_is_integer(ec) ? json_integer(json_integer_value(ec)) : json_null(),
                              "reason", reason ? reason : "CRASHED", "exit_description", desc, "instance",
                              guid, "crash_count", crash_count, "process_type", "web"));
}

/*
 * Apply an INSTANCE report (lock held, in a transaction). 0 known, -ENOENT unknown to the store (the cell
 * should drop it). *routes: the set of endpoints may have changed.
 */
static int instance_apply(struct ctl *c, const char *cell_id, const json_t *inst, bool *routes)
{
        const char *guid = json_string_value(json_object_get(inst, "instance_guid"));
        const char *state = json_string_value(json_object_get(inst, "state"));
        if (!guid || !state)
                return 0;
        _cleanup_free_ char *old = NULL;
        int crash_count = 0;
        int64_t since_ms = 0;
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    c, NULL,
                    "SELECT state, crash_count, since_ms FROM instances WHERE guid = ? AND cell_id = ?", "ss",
                    guid, cell_id);
                if (!s || sqlite3_step(s) != SQLITE_ROW)
                        return -ENOENT;
                old = xstrdup(db_col_text(s, 0));
                crash_count = sqlite3_column_int(s, 1);
                since_ms = sqlite3_column_int64(s, 2);
        }
        bool changed = strcmp(old, state) != 0;
        int64_t now = now_ms();
        json_t *usage = json_object_get(inst, "usage");
        _cleanup_free_ char *us = usage ? json_dumps(usage, JSON_COMPACT) : NULL;
        json_t *ec = json_object_get(inst, "exit_code");
        const char *since = json_string_value(json_object_get(inst, "since"));
        char nows[21];
        ctl_now(nows);
        xdb_exec(c, NULL,
                 "UPDATE instances SET state = ?, since = ?, host = ?, port = ?, external_ip = ?,"
                 " external_port = ?, exit_code = ?, reason = ?, usage = COALESCE(?, usage) WHERE guid = ?",
                 "ssssssssss", state, since ? since : nows, json_string_value(json_object_get(inst, "host")),
                 NULL, json_string_value(json_object_get(inst, "external_ip")), NULL, NULL,
                 json_string_value(json_object_get(inst, "reason")), us, guid);
        /* integers separately (NULL when absent) */
        json_t *port = json_object_get(inst, "port"), *eport = json_object_get(inst, "external_port");
        if (json_is_integer(port))
                xdb_exec(c, NULL, "UPDATE instances SET port = ? WHERE guid = ?", "is",
                         (int)json_integer_value(port), guid);
        if (json_is_integer(eport))
                xdb_exec(c, NULL, "UPDATE instances SET external_port = ? WHERE guid = ?", "is",
                         (int)json_integer_value(eport), guid);
        if (json_is_integer(ec))
                xdb_exec(c, NULL, "UPDATE instances SET exit_code = ? WHERE guid = ?", "is",
                         (int)json_integer_value(ec), guid);
        if (!changed)
                return 0;
        xdb_exec(c, NULL, "UPDATE instances SET since_ms = ? WHERE guid = ?", "Is", now, guid);
        if (strcmp(state, "CRASHED") == 0) {
                /* Diego: the count restarts after 5 minutes of running. */
                crash_count =
                    strcmp(old, "RUNNING") == 0 && now - since_ms > CRASH_RESET_MS ? 1 : crash_count + 1;
                xdb_exec(c, NULL, "UPDATE instances SET crash_count = ?, last_crash_at = ? WHERE guid = ?",
                         "iIs", crash_count, now, guid);
                crash_event(c, guid, inst, crash_count);
        }
        if (strcmp(state, "RUNNING") == 0 || strcmp(old, "RUNNING") == 0 || strcmp(state, "CRASHED") == 0)
                *routes = true;
        return 0;
}

static void cells_heartbeat(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        const char *id = r->params[0];
        json_t *url = json_object_get(r->body, "url");
        json_t *insts = json_object_get(r->body, "instances");
        if (!json_is_string(url) || strncmp(json_string_value(url), "http", 4) != 0) {
                api_unprocessable(resp, "url must be the cell's http(s) URL");
                return;
        }
        if (insts && !json_is_array(insts)) {
                api_unprocessable(resp, "instances must be an array");
                return;
        }
        bool routes = false, kick = false;
        struct strv unwanted = { 0 };
        if (!api_tx_begin(r, resp))
                return;
        bool known = false;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT last_seen FROM cells WHERE id = ?", "s", id);
                known = s && sqlite3_step(s) == SQLITE_ROW &&
                        sqlite3_column_int64(s, 0) > now_ms() - CELL_LIVE_MS;
        }
        int k = xdb_exec(c, &e,
                         "INSERT INTO cells (id, url, memory_mb, disk_mb, last_seen) VALUES (?,?,?,?,?)"
                         " ON CONFLICT(id) DO UPDATE SET url = excluded.url, memory_mb = excluded.memory_mb,"
                         " disk_mb = excluded.disk_mb, last_seen = excluded.last_seen",
                         "ssiiI", id, json_string_value(url),
                         (int)json_integer_value(json_object_get(r->body, "memory_mb")),
                         (int)json_integer_value(json_object_get(r->body, "disk_mb")), now_ms());
        if (k < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!known)
                kick = true;
        size_t i;
        json_t *in;
        struct strv reported = { 0 };
        json_array_foreach (insts, i, in) {
                const char *g = json_string_value(json_object_get(in, "instance_guid"));
                if (!g)
                        continue;
                strv_push(&reported, xstrdup(g));
                if (instance_apply(c, id, in, &routes) == -ENOENT)
                        strv_push(&unwanted, xstrdup(g));
        }
        /* Rows of this cell it no longer reports (lost, or its PUT never arrived) are dropped and replaced.
         */
        {
                struct strv lost = { 0 };
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT guid, state FROM instances WHERE cell_id = ? AND since_ms < ?",
                              "sI", id, now_ms() - CELL_LOST_GRACE_MS);
                while (s && sqlite3_step(s) == SQLITE_ROW) {
                        bool found = false;
                        for (size_t j = 0; j < reported.n; j++)
                                found = found || strcmp(reported.v[j], db_col_text(s, 0)) == 0;
                        if (!found) {
                                strv_push(&lost, xstrdup(db_col_text(s, 0)));
                                if (strcmp(db_col_text(s, 1), "RUNNING") == 0)
                                        routes = true;
                        }
                }
                for (size_t j = 0; j < lost.n; j++)
                        xdb_exec(c, NULL, "DELETE FROM instances WHERE guid = ?", "s", lost.v[j]);
                kick = kick || lost.n > 0;
                strv_clear(&lost);
        }
        strv_clear(&reported);
        if (!api_tx_commit(r, resp)) {
                strv_clear(&unwanted);
                return;
        }
        if (routes)
                routes_changed(c);
        if (kick)
                sched_kick(c);
        api_respond(resp, 200, json_object());
        for (size_t j = 0; j < unwanted.n; j++) {
                log_info("cell %s runs instance %s the store does not want: stopping it", id, unwanted.v[j]);
                cell_stop_async(c, json_string_value(url), unwanted.v[j]);
        }
        strv_clear(&unwanted);
}

static void cells_event(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        json_t *in = json_object_get(r->body, "instance");
        if (!json_is_object(in)) {
                api_unprocessable(resp, "instance must be an object");
                return;
        }
        bool routes = false;
        _cleanup_free_ char *cell_url = NULL;
        if (!api_tx_begin(r, resp))
                return;
        int k = instance_apply(c, r->params[0], in, &routes);
        if (k == -ENOENT) {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT url FROM cells WHERE id = ?", "s", r->params[0]);
                if (s && sqlite3_step(s) == SQLITE_ROW)
                        cell_url = xstrdup(db_col_text(s, 0));
        }
        if (!api_tx_commit(r, resp))
                return;
        if (routes)
                routes_changed(c);
        if (routes || k == 0)
                sched_kick(c);
        api_respond(resp, 200, json_object());
        const char *g = json_string_value(json_object_get(in, "instance_guid"));
        if (cell_url && g)
                cell_stop_async(c, cell_url, g);
}

/* ---- convergence ---- */

struct cell_info {
        char *id, *url;
        int64_t free_mb;
};

struct action {
        bool put;   /* PUT body to url, else DELETE url */
        char *url;  /* {cell}/v1/lrps/:guid */
        char *guid; /* instance guid */
        char *cell_url;
        json_t *body;
};

struct plan {
        struct action *v;
        size_t n, cap;
};

static void plan_add(struct plan *p, bool put, const char *cell_url, const char *guid, json_t *body)
{
        if (p->n >= SCHED_MAX_ACTIONS) {
                json_decref(body);
                return;
        }
        if (p->n == p->cap) {
                p->cap = p->cap ? p->cap * 2 : 16;
                p->v = xrealloc(p->v, p->cap * sizeof(*p->v));
        }
        p->v[p->n++] = (struct action){ .put = put,
                                        .url = xasprintf("%s/v1/lrps/%s", cell_url, guid),
                                        .guid = xstrdup(guid),
                                        .cell_url = xstrdup(cell_url),
                                        .body = body };
}

static void plan_clear(struct plan *p)
{
        for (size_t i = 0; i < p->n; i++) {
                free(p->v[i].url);
                free(p->v[i].guid);
                free(p->v[i].cell_url);
                json_decref(p->v[i].body);
        }
        free(p->v);
        *p = (struct plan){ 0 };
}

/* The LRP body of a new instance (lock held); NULL if the process cannot run (no droplet, ...). */
static json_t *lrp_body(struct ctl *c, const char *inst_guid, const char *proc_guid, int idx)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
            c, NULL,
            "SELECT a.guid, a.name, a.env, d.image_pinned, d.execution_metadata, pk.username, "
            "pk.password_sealed,"
            " p.command, p.memory_mb, p.disk_mb, p.health_check_type, p.health_check_endpoint,"
            " p.health_check_timeout, p.invocation_timeout FROM processes p JOIN apps a ON a.guid = "
            "p.app_guid"
            " JOIN droplets d ON d.guid = a.droplet_guid LEFT JOIN packages pk ON pk.guid = d.package_guid"
            " WHERE p.guid = ?",
            "s", proc_guid);
        if (!s || sqlite3_step(s) != SQLITE_ROW)
                return NULL;
        const char *app = db_col_text(s, 0);
        _cleanup_free_ char *pass = NULL;
        if (db_col_text(s, 6)) {
                _cleanup_berr_ struct berr *e = NULL;
                if (crypt_open(c, db_col_text(s, 6), &pass, &e) < 0) {
                        log_warn("instance of %s: cannot decrypt the registry password: %s",
                                 db_col_text(s, 1), berr_msg(e));
                        return NULL;
                }
        }
        int port = env_app_port(db_col_text(s, 4));
        int mem = sqlite3_column_int(s, 8);
        _cleanup_json_ json_t *vcap = apps_vcap_application(c, app, proc_guid);
        _cleanup_json_ json_t *uenv = json_loads(db_col_text(s, 2), 0, NULL);
        json_t *env = env_instance_env(vcap, inst_guid, idx, port, mem, uenv);
        const char *cmd = db_col_text(s, 7);
        const char *hct = db_col_text(s, 10);
        int to = sqlite3_column_type(s, 12) == SQLITE_NULL ? 60 : sqlite3_column_int(s, 12);
        int ito = sqlite3_column_type(s, 13) == SQLITE_NULL ? 1 : sqlite3_column_int(s, 13);
        if (ito > 60)
                ito = 60;
        const char *ep = db_col_text(s, 11);
        json_t *hc = json_pack("{s:s,s:o,s:i,s:i}", "type", hct, "endpoint",
                               strcmp(hct, "http") == 0 ? json_string(ep ? ep : "/") : json_null(),
                               "timeout_s", to, "invocation_timeout_s", ito);
        /* The app port first, then every other EXPOSEd TCP port: a port health check probes them all (CF). */
        json_t *ports = json_pack("[i]", port);
        {
                _cleanup_json_ json_t *m = json_loads(db_col_text(s, 4) ? db_col_text(s, 4) : "{}", 0, NULL);
                size_t i, k;
                json_t *pe, *q;
                json_array_foreach (json_object_get(m, "ports"), i, pe) {
                        json_t *proto = json_object_get(pe, "Protocol");
                        json_int_t n = json_integer_value(json_object_get(pe, "Port"));
                        bool dup = false;
                        json_array_foreach (ports, k, q)
                                dup = dup || json_integer_value(q) == n;
                        if ((!proto || (json_is_string(proto) && !strcmp(json_string_value(proto), "tcp"))) &&
                            n > 0 && n <= 65535 && !dup && json_array_size(ports) < 16)
                                json_array_append_new(ports, json_integer(n));
                }
        }
        json_t *b = json_pack(
            "{s:s,s:s,s:s,s:s,s:i,s:s,s:o,s:o,s:o,s:o,s:o,s:i,s:i,s:o}", "instance_guid", inst_guid,
            "process_guid", proc_guid, "app_guid", app, "app_name", db_col_text(s, 1), "index", idx, "image",
            db_col_text(s, 3), "username", db_col_text(s, 5) ? json_string(db_col_text(s, 5)) : json_null(),
            "password", pass ? json_string(pass) : json_null(), "command",
            cmd && *cmd ? json_pack("[s,s,s]", "/bin/sh", "-c", cmd) : json_null(), "env", env, "ports",
            ports, "memory_mb", mem, "disk_mb", sqlite3_column_int(s, 9), "health_check", hc);
        if (pass)
                explicit_bzero(pass, strlen(pass));
        return b;
}

struct inst_row {
        char *guid, *proc, *cell, *state, *version;
        int idx, crash_count, mem;
        int64_t last_crash;
        bool keep;
};

struct want {
        char *proc, *version;
        int instances, mem;
};

/* Decide what to do (lock held, in a transaction). */
static void converge_plan(struct ctl *c, struct plan *plan, bool *routes)
{
        int64_t now = now_ms();
        bool docker = flag_enabled(c, "diego_docker");
        struct cell_info *cells = NULL;
        size_t ncells = 0;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT id, url, memory_mb, last_seen FROM cells ORDER BY id", NULL);
                while (s && sqlite3_step(s) == SQLITE_ROW) {
                        cells = xrealloc(cells, (ncells + 1) * sizeof(*cells));
                        bool live = sqlite3_column_int64(s, 3) > now - CELL_LIVE_MS;
                        cells[ncells++] =
                            (struct cell_info){ .id = xstrdup(db_col_text(s, 0)),
                                                .url = xstrdup(db_col_text(s, 1)),
                                                .free_mb = live ? sqlite3_column_int64(s, 2) : -1 };
                        if (live && cells[ncells - 1].free_mb <= 0)
                                cells[ncells - 1].free_mb = (int64_t)1 << 40; /* capacity not advertised */
                }
        }
        struct want *wants = NULL;
        size_t nwants = 0;
        if (docker) {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    c, NULL,
                    "SELECT p.guid, p.version, p.instances, p.memory_mb FROM processes p JOIN apps a ON"
                    " a.guid = p.app_guid JOIN droplets d ON d.guid = a.droplet_guid WHERE a.state ="
                    " 'STARTED' AND p.type = 'web' ORDER BY p.created_at, p.rowid",
                    NULL);
                while (s && sqlite3_step(s) == SQLITE_ROW) {
                        wants = xrealloc(wants, (nwants + 1) * sizeof(*wants));
                        wants[nwants++] = (struct want){ .proc = xstrdup(db_col_text(s, 0)),
                                                         .version = xstrdup(db_col_text(s, 1)),
                                                         .instances = sqlite3_column_int(s, 2),
                                                         .mem = sqlite3_column_int(s, 3) };
                }
        }
        struct inst_row *insts = NULL;
        size_t ninsts = 0;
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    c, NULL,
                    "SELECT guid, process_guid, cell_id, state, process_version, idx, crash_count, memory_mb,"
                    " last_crash_at FROM instances ORDER BY (state = 'CRASHED'), since_ms, rowid",
                    NULL);
                while (s && sqlite3_step(s) == SQLITE_ROW) {
                        insts = xrealloc(insts, (ninsts + 1) * sizeof(*insts));
                        insts[ninsts++] = (struct inst_row){ .guid = xstrdup(db_col_text(s, 0)),
                                                             .proc = xstrdup(db_col_text(s, 1)),
                                                             .cell = xstrdup(db_col_text(s, 2)),
                                                             .state = xstrdup(db_col_text(s, 3)),
                                                             .version = xstrdup(db_col_text(s, 4)),
                                                             .idx = sqlite3_column_int(s, 5),
                                                             .crash_count = sqlite3_column_int(s, 6),
                                                             .mem = sqlite3_column_int(s, 7),
                                                             .last_crash = sqlite3_column_int64(s, 8) };
                }
        }
        /* Which rows stay. */
        for (size_t i = 0; i < ninsts; i++) {
                struct inst_row *in = &insts[i];
                struct cell_info *cell = NULL;
                for (size_t j = 0; j < ncells; j++)
                        if (strcmp(cells[j].id, in->cell) == 0)
                                cell = &cells[j];
                struct want *w = NULL;
                for (size_t j = 0; j < nwants; j++)
                        if (strcmp(wants[j].proc, in->proc) == 0)
                                w = &wants[j];
                bool keep = w && cell && cell->free_mb >= 0 && in->idx < w->instances &&
                            strcmp(w->version, in->version) == 0;
                for (size_t j = 0; keep && j < i; j++)
                        if (insts[j].keep && insts[j].idx == in->idx && strcmp(insts[j].proc, in->proc) == 0)
                                keep = false; /* a duplicate of an index */
                if (keep && strcmp(in->state, "CRASHED") == 0) {
                        int64_t d = env_restart_delay_ms(in->crash_count);
                        if (d >= 0 && now >= in->last_crash + d) {
                                keep = false; /* restart: a new instance carries the crash count */
                                log_info("restarting crashed instance %s (index %d, crash %d)", in->guid,
                                         in->idx, in->crash_count);
                        }
                }
                in->keep = keep;
                if (keep) {
                        if (cell)
                                cell->free_mb -= in->mem;
                        continue;
                }
                if (cell && cell->free_mb >= 0)
                        plan_add(plan, false, cell->url, in->guid, NULL);
                xdb_exec(c, NULL, "DELETE FROM instances WHERE guid = ?", "s", in->guid);
                if (strcmp(in->state, "RUNNING") == 0)
                        *routes = true;
        }
        /* Missing indexes. */
        for (size_t w = 0; w < nwants; w++) {
                for (int idx = 0; idx < wants[w].instances; idx++) {
                        int carried = 0;
                        int64_t carried_at = 0;
                        bool have = false;
                        for (size_t i = 0; i < ninsts; i++) {
                                if (strcmp(insts[i].proc, wants[w].proc) != 0 || insts[i].idx != idx)
                                        continue;
                                if (insts[i].keep)
                                        have = true;
                                else if (strcmp(insts[i].state, "CRASHED") == 0 &&
                                         strcmp(insts[i].version, wants[w].version) == 0 &&
                                         insts[i].crash_count > carried) {
                                        carried = insts[i].crash_count;
                                        carried_at = insts[i].last_crash;
                                }
                        }
                        if (have)
                                continue;
                        struct cell_info *best = NULL;
                        for (size_t j = 0; j < ncells; j++)
                                if (cells[j].free_mb >= wants[w].mem &&
                                    (!best || cells[j].free_mb > best->free_mb))
                                        best = &cells[j];
                        if (!best) {
                                /* at most one warning every 30 s (the sweep runs every second) */
                                static int64_t warned;
                                if (now - warned > 30000) {
                                        warned = now;
                                        log_warn("no live cell with %d MB free for process %s index %d",
                                                 wants[w].mem, wants[w].proc, idx);
                                }
                                continue;
                        }
                        char guid[37], nows[21];
                        ctl_uuid(guid);
                        ctl_now(nows);
                        json_t *body = lrp_body(c, guid, wants[w].proc, idx);
                        if (!body)
                                continue;
                        xdb_exec(
                            c, NULL,
                            "INSERT INTO instances (guid, process_guid, app_guid, idx, cell_id, state, since,"
                            " since_ms, crash_count, last_crash_at, process_version, memory_mb) SELECT ?, "
                            "guid,"
                            " app_guid, ?, ?, 'STARTING', ?, ?, ?, ?, version, memory_mb FROM processes"
                            " WHERE guid = ?",
                            "sissIiIs", guid, idx, best->id, nows, now, carried, carried_at, wants[w].proc);
                        best->free_mb -= wants[w].mem;
                        plan_add(plan, true, best->url, guid, body);
                }
        }
        for (size_t i = 0; i < ncells; i++)
                free(cells[i].id), free(cells[i].url);
        free(cells);
        for (size_t i = 0; i < nwants; i++)
                free(wants[i].proc), free(wants[i].version);
        free(wants);
        for (size_t i = 0; i < ninsts; i++)
                free(insts[i].guid), free(insts[i].proc), free(insts[i].cell), free(insts[i].state),
                    free(insts[i].version);
        free(insts);
}

static void converge(struct ctl *c, struct http_client *hc)
{
        struct plan plan = { 0 };
        bool routes = false;
        _cleanup_berr_ struct berr *e = NULL;
        db_lock(c);
        if (db_begin(c, &e) < 0) {
                db_unlock(c);
                log_warn("scheduler: %s", berr_msg(e));
                return;
        }
        converge_plan(c, &plan, &routes);
        if (db_commit(c, &e) < 0) {
                db_unlock(c);
                log_warn("scheduler: %s", berr_msg(e));
                plan_clear(&plan);
                return;
        }
        db_unlock(c);
        if (routes)
                routes_changed(c);
        http_client_set_bearer(hc, c->internal_token);
        for (size_t i = 0; i < plan.n; i++) {
                struct action *a = &plan.v[i];
                if (!a->put) {
                        log_info("stopping instance %s on %s", a->guid, a->cell_url);
                        cell_stop_async(c, a->cell_url, a->guid);
                        continue;
                }
                long st = 0;
                json_t *j = NULL;
                _cleanup_berr_ struct berr *pe = NULL;
                int k = http_request_json(hc, "PUT", a->url, a->body, &st, &j, &pe);
                if (k == 0 && st >= 200 && st < 300) {
                        log_info("placed instance %s (%s index %lld) on %s", a->guid,
                                 json_string_value(json_object_get(a->body, "app_name")),
                                 json_integer_value(json_object_get(a->body, "index")), a->cell_url);
                } else {
                        _cleanup_free_ char *why =
                            k < 0 ? xstrdup(berr_msg(pe))
                                  : xasprintf("HTTP %ld %s", st,
                                              j ? json_string_value(json_object_get(j, "error")) ?: "" : "");
                        log_warn("placing instance %s on %s failed: %s", a->guid, a->cell_url, why);
                        db_lock(c);
                        xdb_exec(c, NULL, "DELETE FROM instances WHERE guid = ?", "s", a->guid);
                        db_unlock(c);
                }
                json_decref(j);
        }
        plan_clear(&plan);
}

static void *sched_thread(void *arg)
{
        struct ctl *c = arg;
        struct sched *s = c->sched;
        struct http_client *hc = sched_client();
        while (!c->stopping) {
                if (hc)
                        converge(c, hc);
                pthread_mutex_lock(&s->mu);
                if (!s->kicked && !c->stopping) {
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        unsigned ms = c->sync_interval_ms ? c->sync_interval_ms : 1000;
                        ts.tv_sec += ms / 1000;
                        ts.tv_nsec += (long)(ms % 1000) * 1000000;
                        if (ts.tv_nsec >= 1000000000) {
                                ts.tv_sec++;
                                ts.tv_nsec -= 1000000000;
                        }
                        pthread_cond_timedwait(&s->cond, &s->mu, &ts);
                }
                s->kicked = false;
                pthread_mutex_unlock(&s->mu);
        }
        http_client_free(hc);
        return NULL;
}

int sched_start(struct ctl *c, struct berr **err)
{
        struct sched *s = xcalloc(1, sizeof(*s));
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cond, NULL);
        c->sched = s;
        int r = pthread_create(&s->thread, NULL, sched_thread, c);
        if (r != 0) {
                c->sched = NULL;
                free(s);
                return berr_set_errno(err, -r, "start the scheduler");
        }
        s->running = true;
        return 0;
}

void sched_stop(struct ctl *c)
{
        struct sched *s = c->sched;
        if (!s)
                return;
        c->stopping = 1;
        sched_kick(c);
        if (s->running)
                pthread_join(s->thread, NULL);
        c->sched = NULL;
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cond);
        free(s);
}

void sched_kick(struct ctl *c)
{
        struct sched *s = c->sched;
        if (!s)
                return;
        pthread_mutex_lock(&s->mu);
        s->kicked = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
}

/* GET /internal/v1/cells: the registered cells and whether each is live (for `berth up` and operators). */
static void cells_list(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        json_t *cells = json_array();
        db_lock(c);
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    c, NULL, "SELECT id, url, memory_mb, disk_mb, last_seen FROM cells ORDER BY id", NULL);
                while (s && sqlite3_step(s) == SQLITE_ROW) {
                        int64_t seen = sqlite3_column_int64(s, 4);
                        json_array_append_new(cells,
                                              json_pack("{s:s, s:s, s:I, s:I, s:b}", "id", db_col_text(s, 0),
                                                        "url", db_col_text(s, 1), "memory_mb",
                                                        (json_int_t)sqlite3_column_int64(s, 2), "disk_mb",
                                                        (json_int_t)sqlite3_column_int64(s, 3), "live",
                                                        seen > now_ms() - CELL_LIVE_MS));
                }
        }
        db_unlock(c);
        api_respond(resp, 200, json_pack("{s:o}", "cells", cells));
}

const struct api_route api_routes_sched[] = {
        { "GET", "/internal/v1/cells", cells_list, API_INTERNAL },
        { "PUT", "/internal/v1/cells/:id", cells_heartbeat, API_INTERNAL },
        { "POST", "/internal/v1/cells/:id/events", cells_event, API_INTERNAL },
        { NULL },
};
