/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cells and the scheduler (docs/PLATFORM.md "Internal API: cell agent", "Convergence"): cells register and
 * heartbeat with their instances and report state changes as events; a thread converges the instances the
 * store wants (every web process of a STARTED app with a droplet, while diego_docker is on: indexes
 * 0..instances-1) with those that exist: it places missing ones on the live cell with the most free memory
 * (PUT /v1/lrps/:guid), stops extra ones, restarts crashed ones per Diego's policy
 * (cloud-foundry-behaviour.md §6) and replaces the instances of an app with an active rolling deployment one
 * at a time.
 *
 * Stopping an instance: the sweep marks its row STOPPING (it leaves the route table at once), bumps the
 * route table, and only once every live router holds a table without it (at most STOP_ROUTES_WAIT_MS) sends
 * DELETE to its cell; the row goes when the cell confirms (the DELETE's answer, or a heartbeat without it).
 *
 * No network call is made with the store lock held.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controller/ctl.h"
#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

#define CELL_LIVE_MS       10000 /* a cell silent longer is gone: its instances are replaced */
#define CELL_LOST_GRACE_MS 15000 /* a STARTING instance a live cell does not report after this is gone */
static pthread_mutex_t sessions_mu = PTHREAD_MUTEX_INITIALIZER;
static json_t *sessions;            /* cell id → the agent session of its last heartbeat */
#define CELL_SESSION_SLACK_MS  1000 /* a session's start as the controller sees it: earlier by this much */
#define CELL_REPORTED_GRACE_MS 3000 /* the same for one the cell reported already (heartbeats every 2 s) */
#define CRASH_RESET_MS         (5 * 60 * 1000)
#define SCHED_HTTP_TIMEOUT     10000
#define STOP_ROUTES_WAIT_MS    1000 /* a dead router does not hold stops longer than this */
#define ROUTABLE_GRACE_MS                                                                             \
        1000             /* a new RUNNING instance counts as routed after this even if no router said \
                          */
#define PUT_WORKERS   32 /* cells served in parallel by one sweep */
#define MAX_IN_FLIGHT 1  /* rolling deployments: instances being replaced at a time */

struct cell_client {
        char *url;
        struct http_client *hc;
};

struct sched {
        pthread_t thread;
        pthread_mutex_t mu;
        pthread_cond_t cond;
        bool kicked;
        bool running;
        /* one keep-alive client per cell URL, sorted by url (used by the scheduler thread only) */
        struct cell_client *clients;
        size_t n_clients;
};

static double mono_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct http_client *sched_client(unsigned timeout_ms)
{
        struct http_client *hc = NULL;
        struct http_client_opts o = { .timeout_ms = timeout_ms, .connect_timeout_ms = 2000 };
        if (http_client_new(&o, &hc, NULL) < 0)
                return NULL;
        return hc;
}

/* ---- stopping instances ---- */

/*
 * A cell's DELETE returns once the instance stopped (SIGTERM, SIGKILL after 10 s, at once for an init that
 * does not catch it): each runs on a detached thread of its own so that neither the scheduler nor a cell's
 * heartbeat waits for it, all of a sweep's stops proceed in parallel, and an instance already being stopped
 * is not asked twice. Beyond STOPS_MAX in flight, the next sweeps send the rest (their rows stay STOPPING).
 */
#define STOP_TIMEOUT_MS 30000
#define STOPS_MAX       1024
static pthread_mutex_t stops_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stops_cond = PTHREAD_COND_INITIALIZER;
static struct strv stops; /* instance guids being stopped */

struct stop_job {
        struct ctl *c;
        char *token, *cell_url, *guid;
        uint64_t routes; /* send the DELETE once the routers hold this table version (0: at once) */
};

static bool stop_in_flight(const char *guid)
{
        pthread_mutex_lock(&stops_mu);
        bool busy = false;
        for (size_t i = 0; !busy && i < stops.n; i++)
                busy = strcmp(stops.v[i], guid) == 0;
        pthread_mutex_unlock(&stops_mu);
        return busy;
}

static void *stop_thread(void *arg)
{
        struct stop_job *j = arg;
        struct ctl *c = j->c;
        if (j->routes && !routes_wait_synced(c, j->routes, STOP_ROUTES_WAIT_MS))
                log_warn("stop instance %s: a router did not take route table %llu within %d ms", j->guid,
                         (unsigned long long)j->routes, STOP_ROUTES_WAIT_MS);
        struct http_client *hc = sched_client(STOP_TIMEOUT_MS);
        bool gone = false;
        if (hc) {
                _cleanup_berr_ struct berr *e = NULL;
                _cleanup_free_ char *url = xasprintf("%s/v1/lrps/%s", j->cell_url, j->guid);
                long st = 0;
                json_t *resp = NULL;
                http_client_set_bearer(hc, j->token);
                if (http_request_json(hc, "DELETE", url, NULL, &st, &resp, &e) < 0)
                        log_warn("stop instance %s: %s", j->guid, berr_msg(e));
                else if (st >= 300 && st != 404)
                        log_warn("stop instance %s: %s answered HTTP %ld", j->guid, j->cell_url, st);
                else
                        gone = true;
                json_decref(resp);
                http_client_free(hc);
        }
        if (gone) {
                /* The cell confirmed: the row goes (before the guid leaves `stops`, so that a sweep in
                 * between does not send the DELETE again). */
                db_lock(c);
                xdb_cexec(c, NULL, "DELETE FROM instances WHERE guid = ? AND state = 'STOPPING'", "s",
                          j->guid);
                db_unlock(c);
        }
        pthread_mutex_lock(&stops_mu);
        for (size_t i = 0; i < stops.n; i++)
                if (strcmp(stops.v[i], j->guid) == 0) {
                        free(stops.v[i]);
                        stops.v[i] = stops.v[--stops.n];
                        stops.v[stops.n] = NULL;
                        break;
                }
        pthread_cond_broadcast(&stops_cond);
        pthread_mutex_unlock(&stops_mu);
        free(j->token);
        free(j->cell_url);
        free(j->guid);
        free(j);
        return NULL;
}

static void cell_stop_async(struct ctl *c, const char *cell_url, const char *guid, uint64_t routes)
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
        j->c = c;
        j->token = xstrdup(c->internal_token ? c->internal_token : "");
        j->cell_url = xstrdup(cell_url);
        j->guid = xstrdup(guid);
        j->routes = routes;
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int r = pthread_create(&t, &attr, stop_thread, j);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                log_warn("stop instance %s: cannot start a thread", guid);
                stop_thread(j); /* synchronously then */
        }
}

bool sched_stops_wait(unsigned timeout_ms)
{
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&stops_mu);
        while (stops.n > 0)
                if (pthread_cond_timedwait(&stops_cond, &stops_mu, &deadline) == ETIMEDOUT)
                        break;
        bool none = stops.n == 0;
        pthread_mutex_unlock(&stops_mu);
        return none;
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

static bool str_eq(const char *a, const char *b)
{
        return a == b || (a && b && strcmp(a, b) == 0);
}

static const char *opt_str(const json_t *o, const char *k)
{
        return json_string_value(json_object_get(o, k));
}

/* An integer field or INT64_MIN when absent/null. */
static int64_t opt_int(const json_t *o, const char *k)
{
        json_t *v = json_object_get(o, k);
        return json_is_integer(v) ? json_integer_value(v) : INT64_MIN;
}

static void bind_opt_int(sqlite3_stmt *s, int i, int64_t v)
{
        if (v == INT64_MIN)
                sqlite3_bind_null(s, i);
        else
                sqlite3_bind_int64(s, i, v);
}

static int64_t col_opt_int(sqlite3_stmt *s, int i)
{
        return sqlite3_column_type(s, i) == SQLITE_NULL ? INT64_MIN : sqlite3_column_int64(s, i);
}

/*
 * Apply an INSTANCE report (lock held, in a transaction). 0 known, -ENOENT unknown to the store (the cell
 * should drop it). *routes: the set of endpoints may have changed. A row the scheduler is stopping keeps
 * its STOPPING state whatever the cell says until the cell confirms it is gone; its exit is not a crash.
 * A report equal to the row writes nothing (heartbeats repeat every instance every 2 s).
 */
static int instance_apply(struct ctl *c, const char *cell_id, const json_t *inst, bool *routes)
{
        const char *guid = opt_str(inst, "instance_guid");
        const char *state = opt_str(inst, "state");
        if (!guid || !state)
                return 0;
        const char *host = opt_str(inst, "host"), *ext_ip = opt_str(inst, "external_ip");
        const char *reason = opt_str(inst, "reason"), *since = opt_str(inst, "since");
        int64_t port = opt_int(inst, "port"), eport = opt_int(inst, "external_port");
        int64_t ec = opt_int(inst, "exit_code");
        /* The cell's readiness verdict; an agent without readiness checks says nothing: routable. */
        json_t *rj = json_object_get(inst, "routable");
        int routable = !json_is_false(rj) || strcmp(state, INST_RUNNING) != 0;
        char old[16];
        int crash_count = 0, old_routable = 1;
        int64_t since_ms = 0;
        {
                _cleanup_reset_ sqlite3_stmt *s = xdb_cquery(
                    c, NULL,
                    "SELECT state, crash_count, since_ms, host, port, external_ip, external_port, exit_code,"
                    " reason, routable FROM instances WHERE guid = ? AND cell_id = ?",
                    "ss", guid, cell_id);
                if (!s || sqlite3_step(s) != SQLITE_ROW)
                        return -ENOENT;
                snprintf(old, sizeof(old), "%s", db_col_text(s, 0));
                crash_count = sqlite3_column_int(s, 1);
                since_ms = sqlite3_column_int64(s, 2);
                old_routable = sqlite3_column_int(s, 9);
                if (strcmp(old, INST_STOPPING) == 0)
                        return 0;
                if (strcmp(old, state) == 0 && routable == old_routable && str_eq(db_col_text(s, 3), host) &&
                    col_opt_int(s, 4) == port && str_eq(db_col_text(s, 5), ext_ip) &&
                    col_opt_int(s, 6) == eport && (ec == INT64_MIN || col_opt_int(s, 7) == ec) &&
                    str_eq(db_col_text(s, 8), reason))
                        return 0;
        }
        bool changed = strcmp(old, state) != 0;
        int64_t now = now_ms();
        char nows[21];
        ctl_now(nows);
        {
                _cleanup_reset_ sqlite3_stmt *u =
                    db_cached(c,
                              "UPDATE instances SET state = ?1, since = ?2, host = ?3, port = ?4,"
                              " external_ip = ?5, external_port = ?6, exit_code = COALESCE(?7, exit_code),"
                              " reason = ?8, routable = ?10 WHERE guid = ?9",
                              NULL);
                if (!u)
                        return 0;
                sqlite3_bind_text(u, 1, state, -1, SQLITE_STATIC);
                sqlite3_bind_text(u, 2, since ? since : nows, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(u, 3, host, -1, SQLITE_STATIC);
                bind_opt_int(u, 4, port);
                sqlite3_bind_text(u, 5, ext_ip, -1, SQLITE_STATIC);
                bind_opt_int(u, 6, eport);
                bind_opt_int(u, 7, ec);
                sqlite3_bind_text(u, 8, reason, -1, SQLITE_STATIC);
                sqlite3_bind_text(u, 9, guid, -1, SQLITE_STATIC);
                sqlite3_bind_int(u, 10, routable);
                sqlite3_step(u);
        }
        if (!changed) {
                if (strcmp(state, INST_RUNNING) == 0)
                        *routes = true; /* its address or readiness may have changed */
                if (strcmp(state, INST_RUNNING) == 0 && routable && !old_routable)
                        xdb_cexec(c, NULL,
                                  "UPDATE instances SET routed_ms = ?, routed_version = ? WHERE guid = ?",
                                  "IIs", now, (int64_t)routes_version(c) + 1, guid);
                return 0;
        }
        /*
         * A RUNNING instance is in every route table from the next version on (the caller bumps the version
         * after its commit, and a table is built under the lock after the version is read): a rolling
         * deployment stops the instance it replaces once the routers hold that version.
         */
        uint64_t routed = strcmp(state, INST_RUNNING) == 0 && routable ? routes_version(c) + 1 : 0;
        xdb_cexec(c, NULL,
                  "UPDATE instances SET since_ms = ?, routed_version = ?, routed_ms = ? WHERE guid = ?",
                  "IIIs", now, (int64_t)routed, now, guid);
        if (strcmp(state, INST_CRASHED) == 0) {
                /* Diego: the count restarts after 5 minutes of running. */
                crash_count =
                    strcmp(old, INST_RUNNING) == 0 && now - since_ms > CRASH_RESET_MS ? 1 : crash_count + 1;
                xdb_cexec(c, NULL, "UPDATE instances SET crash_count = ?, last_crash_at = ? WHERE guid = ?",
                          "iIs", crash_count, now, guid);
                crash_event(c, guid, inst, crash_count);
        }
        if (strcmp(state, INST_RUNNING) == 0 || strcmp(old, INST_RUNNING) == 0 ||
            strcmp(state, INST_CRASHED) == 0)
                *routes = true;
        return 0;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
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
        int64_t now = now_ms();
        if (!api_tx_begin(r, resp))
                return;
        /*
         * A heartbeat from a new agent process (or the first since this controller started) lists all the
         * cell runs: rows placed before that process began that it omits are gone at once, without the
         * grace below.
         */
        const char *session = opt_str(r->body, "session");
        bool new_session = false;
        pthread_mutex_lock(&sessions_mu);
        if (!sessions)
                sessions = json_object();
        const char *had = json_string_value(json_object_get(sessions, id));
        new_session = session && (!had || strcmp(had, session) != 0);
        pthread_mutex_unlock(&sessions_mu);
        /*
         * Rows placed since the session began may be PUTs still on their way (or a heartbeat built before
         * they arrived, such as a second one while the first is in flight): they keep the grace below. The
         * age is the agent's clock, not its time of day, so cells' clocks need not agree; the slack covers
         * the heartbeat's transit.
         */
        json_t *age = json_object_get(r->body, "session_age_ms");
        int64_t born = json_is_integer(age) && json_integer_value(age) >= 0
                           ? now - json_integer_value(age) - CELL_SESSION_SLACK_MS
                           : INT64_MAX;
        bool known = false;
        {
                _cleanup_reset_ sqlite3_stmt *s =
                    xdb_cquery(c, NULL, "SELECT last_seen FROM cells WHERE id = ?", "s", id);
                known = s && sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int64(s, 0) > now - CELL_LIVE_MS;
        }
        int k = xdb_cexec(c, &e,
                          "INSERT INTO cells (id, url, memory_mb, disk_mb, last_seen) VALUES (?,?,?,?,?)"
                          " ON CONFLICT(id) DO UPDATE SET url = excluded.url, memory_mb = excluded.memory_mb,"
                          " disk_mb = excluded.disk_mb, last_seen = excluded.last_seen",
                          "ssiiI", id, json_string_value(url),
                          (int)json_integer_value(json_object_get(r->body, "memory_mb")),
                          (int)json_integer_value(json_object_get(r->body, "disk_mb")), now);
        if (k < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!known)
                kick = true;
        /*
         * A heartbeat that lists only changes ("full": false) says nothing of the instances it omits. From a
         * session this controller does not know (it restarted, or a new agent) it cannot be trusted to
         * list everything: the cell is asked for a full report at once.
         */
        bool full = !json_is_false(json_object_get(r->body, "full"));
        if (!full && new_session) {
                if (!api_tx_commit(r, resp))
                        return;
                if (kick)
                        sched_kick(c);
                api_respond(resp, 200, json_pack("{s:b}", "full_report_wanted", 1));
                return;
        }
        size_t i;
        json_t *in;
        size_t nrep = 0;
        const char **reported = xcalloc(json_array_size(insts) + 1, sizeof(*reported));
        json_array_foreach (insts, i, in) {
                const char *g = opt_str(in, "instance_guid");
                if (!g)
                        continue;
                reported[nrep++] = g;
                if (instance_apply(c, id, in, &routes) == -ENOENT)
                        strv_push(&unwanted, xstrdup(g));
        }
        qsort(reported, nrep, sizeof(*reported), cmp_str);
        /*
         * Rows of this cell a full report omits: a STOPPING one is gone (the cell confirms the stop); any
         * other placed more than CELL_LOST_GRACE_MS ago is lost (or its PUT never arrived) and replaced.
         */
        if (full) {
                struct strv lost = { 0 };
                _cleanup_reset_ sqlite3_stmt *s = xdb_cquery(
                    c, NULL, "SELECT guid, state, since_ms FROM instances WHERE cell_id = ?", "s", id);
                while (s && sqlite3_step(s) == SQLITE_ROW) {
                        const char *g = db_col_text(s, 0), *st = db_col_text(s, 1);
                        if (bsearch(&g, reported, nrep, sizeof(*reported), cmp_str))
                                continue;
                        bool stopping = strcmp(st, INST_STOPPING) == 0;
                        /*
                         * A STARTING row may be a PUT still on its way; a row the cell already reported
                         * (RUNNING, CRASHED) is gone once a heartbeat newer than its last change omits it
                         * (CELL_REPORTED_GRACE_MS covers a heartbeat built before an event that overtook it).
                         */
                        int64_t grace =
                            strcmp(st, INST_STARTING) == 0 ? CELL_LOST_GRACE_MS : CELL_REPORTED_GRACE_MS;
                        int64_t since = sqlite3_column_int64(s, 2);
                        if (!stopping && !(new_session && since < born) && since >= now - grace)
                                continue;
                        strv_push(&lost, xstrdup(g));
                        if (strcmp(st, INST_RUNNING) == 0)
                                routes = true;
                        if (!stopping)
                                kick = true;
                }
                for (size_t j = 0; j < lost.n; j++)
                        xdb_cexec(c, NULL, "DELETE FROM instances WHERE guid = ?", "s", lost.v[j]);
                strv_clear(&lost);
        }
        free(reported);
        if (!api_tx_commit(r, resp)) {
                strv_clear(&unwanted);
                return;
        }
        if (new_session) {
                pthread_mutex_lock(&sessions_mu);
                json_object_set_new(sessions, id, json_string(session));
                pthread_mutex_unlock(&sessions_mu);
        }
        if (routes)
                routes_changed(c);
        if (kick)
                sched_kick(c);
        api_respond(resp, 200, json_object());
        for (size_t j = 0; j < unwanted.n; j++) {
                if (stop_in_flight(unwanted.v[j]))
                        continue;
                log_info("cell %s runs instance %s the store does not want: stopping it", id, unwanted.v[j]);
                cell_stop_async(c, json_string_value(url), unwanted.v[j], 0);
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
        const char *g = opt_str(in, "instance_guid");
        if (cell_url && g && !stop_in_flight(g))
                cell_stop_async(c, cell_url, g, 0);
}

/* ---- convergence: the plan ---- */

/* Strings of one plan: bump-allocated in chunks, freed at once (a sweep reads 100,000s of rows). */
struct arena {
        char **chunks;
        size_t n;
        size_t used, cap;
};

#define ARENA_CHUNK (1 << 20)

static const char *arena_str(struct arena *a, const char *s)
{
        if (!s)
                return NULL;
        size_t n = strlen(s) + 1;
        if (a->n == 0 || a->used + n > a->cap) {
                size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
                a->chunks = xrealloc(a->chunks, (a->n + 1) * sizeof(*a->chunks));
                a->chunks[a->n++] = xmalloc(cap);
                a->used = 0;
                a->cap = cap;
        }
        char *p = a->chunks[a->n - 1] + a->used;
        memcpy(p, s, n);
        a->used += n;
        return p;
}

static void arena_free(struct arena *a)
{
        for (size_t i = 0; i < a->n; i++)
                free(a->chunks[i]);
        free(a->chunks);
        *a = (struct arena){ 0 };
}

struct cell_info {
        const char *id, *url;
        int64_t free_mb;
        bool live;
};

/* What a new instance of a process gets, built once per process and sweep (lock held), completed per
 * instance by the PUT workers (no lock). */
struct lrp_tmpl {
        json_t *base; /* the LRP body without instance_guid, index, env */
        json_t *vcap, *uenv;
        int port, mem;
};

struct want {
        const char *proc, *app, *version, *deployment, *dep_state;
        int instances, mem;
        struct lrp_tmpl *tmpl; /* built when an instance is placed */
        bool tmpl_failed;
};

enum inst_state { ST_STARTING, ST_RUNNING, ST_CRASHED, ST_STOPPING, ST_OTHER };

struct inst_row {
        const char *guid, *proc, *cell, *version;
        enum inst_state state;
        int idx, crash_count, mem;
        int64_t last_crash, since_ms, routed_version, routed_ms;
        bool routable; /* RUNNING and its readiness check passes */
        struct cell_info *c;
};

struct action {
        bool put;
        int idx;
        char guid[37];
        const char *cell_url; /* plan arena */
        struct lrp_tmpl *tmpl;
        uint64_t routes; /* stops: send once the routers hold this version */
        bool barrier;    /* stops: the instance was in the route table */
};

struct sched_plan {
        struct arena strings;
        struct cell_info *cells;
        size_t ncells;
        struct want *wants;
        size_t nwants;
        struct action *v;
        size_t n, cap;
        uint64_t want_rt;
};

static struct action *plan_push(struct sched_plan *p)
{
        if (p->n == p->cap) {
                p->cap = p->cap ? p->cap * 2 : 64;
                p->v = xrealloc(p->v, p->cap * sizeof(*p->v));
        }
        struct action *a = &p->v[p->n++];
        memset(a, 0, sizeof(*a));
        return a;
}

static void tmpl_free(struct lrp_tmpl *t)
{
        if (!t)
                return;
        json_decref(t->base);
        json_decref(t->vcap);
        json_decref(t->uenv);
        free(t);
}

void sched_plan_free(struct sched_plan *p)
{
        if (!p)
                return;
        for (size_t i = 0; i < p->nwants; i++)
                tmpl_free(p->wants[i].tmpl);
        free(p->wants);
        free(p->cells);
        free(p->v);
        arena_free(&p->strings);
        free(p);
}

size_t sched_plan_count(const struct sched_plan *p)
{
        return p ? p->n : 0;
}

void sched_plan_action(const struct sched_plan *p, size_t i, bool *put, const char **guid,
                       const char **cell_url, int *index)
{
        const struct action *a = &p->v[i];
        *put = a->put;
        *guid = a->guid;
        *cell_url = a->cell_url;
        *index = a->idx;
}

/* The LRP template of a process (lock held); NULL if the process cannot run (no droplet, ...). */
static struct lrp_tmpl *lrp_tmpl_new(struct ctl *c, const char *proc_guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
            c, NULL,
            "SELECT a.guid, a.name, a.env, d.image_pinned, d.execution_metadata, pk.username,"
            " pk.password_sealed, p.command, p.memory_mb, p.disk_mb, p.health_check_type,"
            " p.health_check_endpoint, p.health_check_timeout, p.invocation_timeout, p.health_check_interval,"
            " p.readiness_type, p.readiness_endpoint, p.readiness_invocation_timeout, p.readiness_interval"
            " FROM processes p JOIN "
            "apps"
            " a ON a.guid = p.app_guid JOIN droplets d ON d.guid = a.droplet_guid LEFT JOIN packages pk ON"
            " pk.guid = d.package_guid WHERE p.guid = ?",
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
        struct lrp_tmpl *t = xcalloc(1, sizeof(*t));
        t->port = env_app_port(db_col_text(s, 4));
        t->mem = sqlite3_column_int(s, 8);
        t->vcap = apps_vcap_application(c, app, proc_guid);
        t->uenv = json_loads(db_col_text(s, 2), 0, NULL);
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
        if (sqlite3_column_type(s, 14) != SQLITE_NULL)
                json_object_set_new(hc, "interval_s", json_integer(sqlite3_column_int(s, 14)));
        /* A readiness check (port or http): the instance is routable only while it passes. */
        const char *rct = db_col_text(s, 15);
        json_t *rc = NULL;
        if (rct && strcmp(rct, "process") != 0) {
                const char *rep = db_col_text(s, 16);
                int rito = sqlite3_column_type(s, 17) == SQLITE_NULL ? 1 : MIN(sqlite3_column_int(s, 17), 60);
                rc = json_pack("{s:s,s:o,s:i}", "type", rct, "endpoint",
                               strcmp(rct, "http") == 0 ? json_string(rep ? rep : "/") : json_null(),
                               "invocation_timeout_s", rito);
                if (sqlite3_column_type(s, 18) != SQLITE_NULL)
                        json_object_set_new(rc, "interval_s", json_integer(sqlite3_column_int(s, 18)));
        }
        /* The app port first, then every other EXPOSEd TCP port: a port health check probes them all (CF). */
        json_t *ports = json_pack("[i]", t->port);
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
        t->base =
            json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:i,s:i,s:o}", "process_guid", proc_guid, "app_guid",
                      app, "app_name", db_col_text(s, 1), "image", db_col_text(s, 3), "username",
                      db_col_text(s, 5) ? json_string(db_col_text(s, 5)) : json_null(), "password",
                      pass ? json_string(pass) : json_null(), "command",
                      cmd && *cmd ? json_pack("[s,s,s]", "/bin/sh", "-c", cmd) : json_null(), "ports", ports,
                      "memory_mb", t->mem, "disk_mb", sqlite3_column_int(s, 9), "health_check", hc);
        if (t->base && rc)
                json_object_set_new(t->base, "readiness_check", rc);
        else
                json_decref(rc);
        if (pass)
                explicit_bzero(pass, strlen(pass));
        if (!t->base) {
                tmpl_free(t);
                return NULL;
        }
        return t;
}

/* The PUT body of one instance (no lock needed: the template is only read). New reference. */
static json_t *lrp_body(const struct lrp_tmpl *t, const char *guid, int idx)
{
        json_t *b = json_copy(t->base);
        json_object_set_new(b, "instance_guid", json_string(guid));
        json_object_set_new(b, "index", json_integer(idx));
        json_object_set_new(b, "env", env_instance_env(t->vcap, guid, idx, t->port, t->mem, t->uenv));
        return b;
}

static int cmp_cell_id(const void *key, const void *elem)
{
        return strcmp(key, ((const struct cell_info *)elem)->id);
}

static enum inst_state parse_state(const char *s)
{
        if (!s)
                return ST_OTHER;
        if (strcmp(s, INST_RUNNING) == 0)
                return ST_RUNNING;
        if (strcmp(s, INST_STARTING) == 0)
                return ST_STARTING;
        if (strcmp(s, INST_CRASHED) == 0)
                return ST_CRASHED;
        if (strcmp(s, INST_STOPPING) == 0)
                return ST_STOPPING;
        return ST_OTHER;
}

/* The per-sweep state of the planner. */
struct planner {
        struct ctl *c;
        struct sched_plan *p;
        struct sched_plan_stats *st;
        int64_t now;
        struct placement {
                struct want *w;
                int idx, carried;
                int64_t carried_at;
        } * places;
        size_t nplaces, capplaces;
};

static void want_place(struct planner *pl, struct want *w, int idx, int carried, int64_t carried_at)
{
        if (pl->nplaces == pl->capplaces) {
                pl->capplaces = pl->capplaces ? pl->capplaces * 2 : 64;
                pl->places = xrealloc(pl->places, pl->capplaces * sizeof(*pl->places));
        }
        pl->places[pl->nplaces++] =
            (struct placement){ .w = w, .idx = idx, .carried = carried, .carried_at = carried_at };
}

/* Stop an instance row (lock held): a STOPPING row on a live cell plus a DELETE for the executor; a row on a
 * cell that is gone just goes. */
static void row_stop(struct planner *pl, struct inst_row *in)
{
        struct ctl *c = pl->c;
        if (in->state == ST_RUNNING)
                pl->st->routes = true;
        if (!in->c || !in->c->live) {
                xdb_cexec(c, NULL, "DELETE FROM instances WHERE guid = ?", "s", in->guid);
                return;
        }
        if (in->state != ST_STOPPING)
                xdb_cexec(c, NULL, "UPDATE instances SET state = 'STOPPING', since_ms = ? WHERE guid = ?",
                          "Is", pl->now, in->guid);
        else if (stop_in_flight(in->guid))
                return;
        struct action *a = plan_push(pl->p);
        a->put = false;
        a->idx = in->idx;
        snprintf(a->guid, sizeof(a->guid), "%s", in->guid);
        a->cell_url = in->c->url;
        a->barrier = in->state == ST_RUNNING;
        pl->st->stopped++;
}

/* Is a new RUNNING instance in the tables the routers hold (or has it been RUNNING long enough)? */
static bool row_routed(struct planner *pl, const struct inst_row *in)
{
        if (in->state != ST_RUNNING || !in->routable)
                return false; /* a new instance not ready yet replaces nothing */
        if (pl->now - MAX(in->since_ms, in->routed_ms) >= ROUTABLE_GRACE_MS ||
            routes_synced(pl->c, (uint64_t)in->routed_version))
                return true;
        if ((uint64_t)in->routed_version > pl->p->want_rt)
                pl->p->want_rt = (uint64_t)in->routed_version;
        return false;
}

/* Is a crashed instance due for its restart (Diego's restart calculator)? */
static bool crash_restart_due(const struct inst_row *in, int64_t now)
{
        int64_t d = env_restart_delay_ms(in->crash_count);
        return d >= 0 && now >= in->last_crash + d;
}

/*
 * The instances of one wanted process, rows [0, n) sorted by index, then not crashed first, oldest first.
 * Without a deployment every index keeps its first live instance of the process' version (a crashed one
 * until its restart is due) and everything else stops. With an active rolling deployment an index also
 * keeps one serving instance of an older version until its replacement is RUNNING and routed.
 */
static void plan_process(struct planner *pl, struct want *w, struct inst_row *rows, size_t n)
{
        bool rolling = w->deployment != NULL;
        int ni = w->instances > 0 ? w->instances : 0;
        struct slot {
                struct inst_row *new_k, *old_k;
                int carried;
                int64_t carried_at;
        } *slots = xcalloc((size_t)ni + 1, sizeof(*slots));
        bool old_left = false;
        for (size_t i = 0; i < n; i++) {
                struct inst_row *in = &rows[i];
                if (in->state == ST_STOPPING) {
                        row_stop(pl, in); /* re-sent if its DELETE is not in flight */
                        continue;
                }
                if (!in->c || !in->c->live || in->idx < 0 || in->idx >= ni) {
                        row_stop(pl, in);
                        continue;
                }
                struct slot *sl = &slots[in->idx];
                if (strcmp(in->version, w->version) == 0) {
                        if (in->state == ST_CRASHED && crash_restart_due(in, pl->now)) {
                                /* restart: a new instance carries the crash count */
                                if (in->crash_count > sl->carried) {
                                        sl->carried = in->crash_count;
                                        sl->carried_at = in->last_crash;
                                }
                                log_info("restarting crashed instance %s (index %d, crash %d)", in->guid,
                                         in->idx, in->crash_count);
                                row_stop(pl, in);
                        } else if (!sl->new_k) {
                                sl->new_k = in;
                        } else {
                                row_stop(pl, in); /* a duplicate of an index */
                        }
                        continue;
                }
                /* an older version */
                if (rolling && !sl->old_k && (in->state == ST_RUNNING || in->state == ST_STARTING))
                        sl->old_k = in;
                else
                        row_stop(pl, in);
        }
        int in_flight = 0;
        for (int i = 0; i < ni; i++)
                if (slots[i].new_k && slots[i].old_k)
                        in_flight++;
        bool done = true;
        for (int i = 0; i < ni; i++) {
                struct slot *sl = &slots[i];
                if (sl->new_k)
                        pl->st->kept++;
                if (sl->old_k)
                        pl->st->kept++;
                if (sl->new_k && sl->old_k) {
                        /* Its replacement serves: the old one leaves the routes, then stops. */
                        if (row_routed(pl, sl->new_k)) {
                                log_info("rolling: instance %s (index %d) replaces %s", sl->new_k->guid, i,
                                         sl->old_k->guid);
                                row_stop(pl, sl->old_k);
                                pl->st->kept--;
                                sl->old_k = NULL;
                                in_flight--; /* the next index may start in this sweep */
                        } else {
                                done = false;
                        }
                } else if (!sl->new_k && !sl->old_k) {
                        want_place(pl, w, i, sl->carried, sl->carried_at);
                        done = false;
                } else if (!sl->new_k) {
                        /* Still served by an old instance: one replacement at a time. */
                        if (in_flight < MAX_IN_FLIGHT) {
                                want_place(pl, w, i, sl->carried, sl->carried_at);
                                in_flight++;
                        }
                        done = false;
                }
                if (sl->new_k && sl->new_k->state != ST_RUNNING)
                        done = false;
                if (sl->old_k)
                        old_left = true;
        }
        free(slots);
        if (rolling && done && !old_left) {
                bool canceling = w->dep_state && strcmp(w->dep_state, "CANCELING") == 0;
                char nows[21];
                ctl_now(nows);
                xdb_cexec(
                    pl->c, NULL,
                    "UPDATE deployments SET state = ?, status_value = 'FINALIZED', status_reason = ?,"
                    " updated_at = ?, last_status_change = ? WHERE guid = ? AND status_value = 'ACTIVE'",
                    "sssss", canceling ? "CANCELED" : "DEPLOYED", canceling ? "CANCELED" : "DEPLOYED", nows,
                    nows, w->deployment);
                log_info("deployment %s of process %s: %s", w->deployment, w->proc,
                         canceling ? "canceled" : "deployed");
        }
}

/* A max-heap of live cells by free memory: placement takes the cell with the most free memory. */
struct cell_heap {
        struct cell_info **v;
        size_t n;
};

static void heap_down(struct cell_heap *h, size_t i)
{
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, m = i;
                if (l < h->n && h->v[l]->free_mb > h->v[m]->free_mb)
                        m = l;
                if (r < h->n && h->v[r]->free_mb > h->v[m]->free_mb)
                        m = r;
                if (m == i)
                        return;
                struct cell_info *t = h->v[i];
                h->v[i] = h->v[m];
                h->v[m] = t;
                i = m;
        }
}

static int place_all(struct planner *pl)
{
        struct ctl *c = pl->c;
        struct sched_plan *p = pl->p;
        struct cell_heap h = { .v = xcalloc(p->ncells + 1, sizeof(*h.v)) };
        for (size_t i = 0; i < p->ncells; i++)
                if (p->cells[i].live)
                        h.v[h.n++] = &p->cells[i];
        for (size_t i = h.n; i-- > 0;)
                heap_down(&h, i);
        char nows[21];
        ctl_now(nows);
        for (size_t k = 0; k < pl->nplaces; k++) {
                struct placement *pc = &pl->places[k];
                struct want *w = pc->w;
                if (h.n == 0 || h.v[0]->free_mb < w->mem) {
                        /* at most one warning every 30 s (the sweep runs every second) */
                        static int64_t warned;
                        if (pl->now - warned > 30000) {
                                warned = pl->now;
                                log_warn("no live cell with %d MB free for process %s index %d", w->mem,
                                         w->proc, pc->idx);
                        }
                        pl->st->unplaced++;
                        continue;
                }
                if (!w->tmpl && !w->tmpl_failed) {
                        w->tmpl = lrp_tmpl_new(c, w->proc);
                        w->tmpl_failed = !w->tmpl;
                }
                if (!w->tmpl) {
                        pl->st->unplaced++;
                        continue;
                }
                struct cell_info *best = h.v[0];
                struct action *a = plan_push(p);
                a->put = true;
                a->idx = pc->idx;
                ctl_uuid(a->guid);
                a->cell_url = best->url;
                a->tmpl = w->tmpl;
                int k2 = xdb_cexec(c, NULL,
                                   "INSERT INTO instances (guid, process_guid, app_guid, idx, cell_id, state,"
                                   " since, since_ms, crash_count, last_crash_at, process_version, memory_mb)"
                                   " VALUES (?,?,?,?,?,'STARTING',?,?,?,?,?,?)",
                                   "sssissIiIsi", a->guid, w->proc, w->app, pc->idx, best->id, nows, pl->now,
                                   pc->carried, pc->carried_at, w->version, w->mem);
                if (k2 < 0) {
                        p->n--;
                        continue;
                }
                best->free_mb -= w->mem;
                heap_down(&h, 0);
                pl->st->placed++;
        }
        free(h.v);
        return 0;
}

static int cmp_row(const void *a, const void *b)
{
        const struct inst_row *x = a, *y = b;
        int k = strcmp(x->proc, y->proc);
        if (k)
                return k;
        if (x->idx != y->idx)
                return x->idx < y->idx ? -1 : 1;
        bool cx = x->state == ST_CRASHED, cy = y->state == ST_CRASHED;
        if (cx != cy)
                return cx ? 1 : -1;
        if (x->since_ms != y->since_ms)
                return x->since_ms < y->since_ms ? -1 : 1;
        return strcmp(x->guid, y->guid);
}

/* Decide (lock held, in a transaction). */
static int plan_decide(struct planner *pl, struct berr **err)
{
        struct ctl *c = pl->c;
        struct sched_plan *p = pl->p;
        struct arena *A = &p->strings;
        int64_t now = pl->now;
        double t0 = mono_s();
        /* Deployments whose process moved on (a plain restart, a new droplet or limits) are superseded. */
        char nows[21];
        ctl_now(nows);
        xdb_cexec(c, NULL,
                  "UPDATE deployments SET state = 'DEPLOYED', status_value = 'FINALIZED', status_reason ="
                  " 'SUPERSEDED', updated_at = ?1, last_status_change = ?1 WHERE status_value = 'ACTIVE' AND"
                  " version IS NOT (SELECT version FROM processes WHERE guid = deployments.process_guid)",
                  "s", nows);
        bool docker = flag_enabled(c, "diego_docker");
        {
                _cleanup_reset_ sqlite3_stmt *s =
                    xdb_cquery(c, err, "SELECT id, url, memory_mb, last_seen FROM cells ORDER BY id", NULL);
                if (!s)
                        return -EIO;
                size_t cap = 0;
                while (sqlite3_step(s) == SQLITE_ROW) {
                        if (p->ncells == cap) {
                                cap = cap ? cap * 2 : 16;
                                p->cells = xrealloc(p->cells, cap * sizeof(*p->cells));
                        }
                        bool live = sqlite3_column_int64(s, 3) > now - CELL_LIVE_MS;
                        int64_t mem = sqlite3_column_int64(s, 2);
                        p->cells[p->ncells++] =
                            (struct cell_info){ .id = arena_str(A, db_col_text(s, 0)),
                                                .url = arena_str(A, db_col_text(s, 1)),
                                                .live = live,
                                                .free_mb = mem > 0 ? mem : (int64_t)1 << 40 };
                }
        }
        if (docker) {
                _cleanup_reset_ sqlite3_stmt *s = xdb_cquery(
                    c, err,
                    "SELECT p.guid, p.version, p.instances, p.memory_mb, a.guid, dp.guid, dp.state FROM"
                    " processes p JOIN apps a ON a.guid = p.app_guid JOIN droplets d ON d.guid = "
                    "a.droplet_guid"
                    " LEFT JOIN deployments dp ON dp.process_guid = p.guid AND dp.status_value = 'ACTIVE' AND"
                    " dp.version = p.version WHERE a.state = 'STARTED' AND p.type = 'web' ORDER BY p.guid",
                    NULL);
                if (!s)
                        return -EIO;
                size_t cap = 0;
                while (sqlite3_step(s) == SQLITE_ROW) {
                        const char *g = db_col_text(s, 0);
                        if (p->nwants && strcmp(p->wants[p->nwants - 1].proc, g) == 0)
                                continue; /* two active deployments: the first one rolls */
                        if (p->nwants == cap) {
                                cap = cap ? cap * 2 : 16;
                                p->wants = xrealloc(p->wants, cap * sizeof(*p->wants));
                        }
                        p->wants[p->nwants++] = (struct want){ .proc = arena_str(A, g),
                                                               .version = arena_str(A, db_col_text(s, 1)),
                                                               .instances = sqlite3_column_int(s, 2),
                                                               .mem = sqlite3_column_int(s, 3),
                                                               .app = arena_str(A, db_col_text(s, 4)),
                                                               .deployment = arena_str(A, db_col_text(s, 5)),
                                                               .dep_state = arena_str(A, db_col_text(s, 6)) };
                }
        }
        struct inst_row *rows = NULL;
        size_t nrows = 0, caprows = 0;
        {
                _cleanup_reset_ sqlite3_stmt *s =
                    xdb_cquery(c, err,
                               "SELECT guid, process_guid, cell_id, state, process_version, idx, crash_count,"
                               " memory_mb, last_crash_at, since_ms, routed_version, routable, routed_ms"
                               " FROM instances",
                               NULL);
                if (!s)
                        return -EIO;
                while (sqlite3_step(s) == SQLITE_ROW) {
                        if (nrows == caprows) {
                                caprows = caprows ? caprows * 2 : 256;
                                rows = xrealloc(rows, caprows * sizeof(*rows));
                        }
                        const char *cell = db_col_text(s, 2);
                        struct inst_row *in = &rows[nrows++];
                        *in = (struct inst_row){ .guid = arena_str(A, db_col_text(s, 0)),
                                                 .proc = arena_str(A, db_col_text(s, 1)),
                                                 .cell = NULL,
                                                 .state = parse_state(db_col_text(s, 3)),
                                                 .version = arena_str(A, db_col_text(s, 4)),
                                                 .idx = sqlite3_column_int(s, 5),
                                                 .crash_count = sqlite3_column_int(s, 6),
                                                 .mem = sqlite3_column_int(s, 7),
                                                 .last_crash = sqlite3_column_int64(s, 8),
                                                 .since_ms = sqlite3_column_int64(s, 9),
                                                 .routed_version = sqlite3_column_int64(s, 10),
                                                 .routable = sqlite3_column_int(s, 11) != 0,
                                                 .routed_ms = sqlite3_column_int64(s, 12) };
                        in->c = p->ncells ? bsearch(cell, p->cells, p->ncells, sizeof(*p->cells), cmp_cell_id)
                                          : NULL;
                        if (in->c)
                                in->cell = in->c->id;
                }
        }
        pl->st->instances = nrows;
        if (nrows)
                qsort(rows, nrows, sizeof(*rows), cmp_row);
        double t1 = mono_s();
        pl->st->load_s = t1 - t0;
        /* Every instance on a live cell holds its memory until the cell says it is gone. */
        for (size_t i = 0; i < nrows; i++)
                if (rows[i].c && rows[i].c->live)
                        rows[i].c->free_mb -= rows[i].mem;
        size_t wi = 0;
        for (size_t i = 0; i < nrows;) {
                size_t j = i + 1;
                while (j < nrows && strcmp(rows[j].proc, rows[i].proc) == 0)
                        j++;
                /* wants are sorted by proc too: advance, placing the instances of processes without rows */
                while (wi < p->nwants && strcmp(p->wants[wi].proc, rows[i].proc) < 0)
                        plan_process(pl, &p->wants[wi++], NULL, 0);
                struct want *w =
                    wi < p->nwants && strcmp(p->wants[wi].proc, rows[i].proc) == 0 ? &p->wants[wi++] : NULL;
                if (w) {
                        plan_process(pl, w, &rows[i], j - i);
                } else {
                        for (size_t k = i; k < j; k++)
                                row_stop(pl, &rows[k]);
                }
                i = j;
        }
        while (wi < p->nwants)
                plan_process(pl, &p->wants[wi++], NULL, 0);
        free(rows);
        double t2 = mono_s();
        pl->st->decide_s = t2 - t1;
        int r = place_all(pl);
        pl->st->place_s = mono_s() - t2;
        return r;
}

int sched_plan(struct ctl *c, struct sched_plan **ret, struct sched_plan_stats *ret_stats, struct berr **err)
{
        struct sched_plan *p = xcalloc(1, sizeof(*p));
        struct sched_plan_stats st = { 0 };
        struct planner pl = { .c = c, .p = p, .st = &st, .now = now_ms() };
        int r;
        db_lock(c);
        if ((r = db_begin(c, err)) < 0) {
                db_unlock(c);
                sched_plan_free(p);
                return r;
        }
        r = plan_decide(&pl, err);
        free(pl.places);
        if (r < 0) {
                db_rollback(c);
                db_unlock(c);
                sched_plan_free(p);
                return r;
        }
        double tc = mono_s();
        if ((r = db_commit(c, err)) < 0) {
                db_unlock(c);
                sched_plan_free(p);
                return r;
        }
        db_unlock(c);
        st.commit_s = mono_s() - tc;
        /* After the commit: a router that reads this version (or a later one) gets a table without the
         * instances just marked STOPPING, so their DELETEs wait for it. */
        uint64_t v = st.routes ? routes_changed(c) : routes_version(c);
        for (size_t i = 0; i < p->n; i++)
                if (!p->v[i].put && p->v[i].barrier)
                        p->v[i].routes = v;
        if (p->want_rt) {
                pthread_mutex_lock(&c->rt_lock);
                if (!c->rt_want || p->want_rt < c->rt_want)
                        c->rt_want = p->want_rt;
                pthread_mutex_unlock(&c->rt_lock);
        }
        if (ret_stats)
                *ret_stats = st;
        *ret = p;
        return 0;
}

/* ---- convergence: sending the plan ---- */

struct put_batch {
        const char *cell_url;
        struct http_client *hc;
        bool own_hc;
        size_t first, n; /* into the sorted put list */
};

struct put_run {
        struct ctl *c;
        struct sched_plan *p;
        struct action **puts;
        struct put_batch *batches;
        size_t nbatches;
        atomic_size_t next;
        pthread_mutex_t mu;
        struct strv failed;
};

static void put_one(struct put_run *run, struct put_batch *b, struct action *a)
{
        long st = 0;
        json_t *j = NULL;
        _cleanup_berr_ struct berr *pe = NULL;
        _cleanup_free_ char *url = xasprintf("%s/v1/lrps/%s", a->cell_url, a->guid);
        _cleanup_json_ json_t *body = lrp_body(a->tmpl, a->guid, a->idx);
        int k = b->hc ? http_request_json(b->hc, "PUT", url, body, &st, &j, &pe)
                      : berr_set(&pe, -ENOMEM, "no HTTP client");
        if (k == 0 && st >= 200 && st < 300) {
                log_debug("placed instance %s (%s index %d) on %s", a->guid,
                          json_string_value(json_object_get(body, "app_name")), a->idx, a->cell_url);
        } else {
                _cleanup_free_ char *why =
                    k < 0 ? xstrdup(berr_msg(pe))
                          : xasprintf("HTTP %ld %s", st,
                                      j ? json_string_value(json_object_get(j, "error")) ?: "" : "");
                log_warn("placing instance %s on %s failed: %s", a->guid, a->cell_url, why);
                pthread_mutex_lock(&run->mu);
                strv_push(&run->failed, xstrdup(a->guid));
                pthread_mutex_unlock(&run->mu);
        }
        json_decref(j);
}

static void *put_worker(void *arg)
{
        struct put_run *run = arg;
        for (;;) {
                size_t b = atomic_fetch_add(&run->next, 1);
                if (b >= run->nbatches)
                        return NULL;
                struct put_batch *pb = &run->batches[b];
                for (size_t i = 0; i < pb->n; i++)
                        put_one(run, pb, run->puts[pb->first + i]);
        }
}

static int cmp_put_cell(const void *a, const void *b)
{
        const struct action *x = *(struct action *const *)a, *y = *(struct action *const *)b;
        return strcmp(x->cell_url, y->cell_url);
}

/* The scheduler's keep-alive client for a cell (created on first use); NULL without a scheduler. */
static struct http_client *cell_client(struct ctl *c, const char *url)
{
        struct sched *s = c->sched;
        if (!s)
                return NULL;
        size_t lo = 0, hi = s->n_clients;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                int k = strcmp(url, s->clients[mid].url);
                if (k == 0)
                        return s->clients[mid].hc;
                if (k < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        struct http_client *hc = sched_client(SCHED_HTTP_TIMEOUT);
        if (!hc)
                return NULL;
        http_client_set_bearer(hc, c->internal_token);
        s->clients = xrealloc(s->clients, (s->n_clients + 1) * sizeof(*s->clients));
        memmove(&s->clients[lo + 1], &s->clients[lo], (s->n_clients - lo) * sizeof(*s->clients));
        s->clients[lo] = (struct cell_client){ .url = xstrdup(url), .hc = hc };
        s->n_clients++;
        return hc;
}

size_t sched_execute(struct ctl *c, struct sched_plan *p)
{
        size_t nputs = 0;
        for (size_t i = 0; i < p->n; i++) {
                struct action *a = &p->v[i];
                if (a->put) {
                        nputs++;
                        continue;
                }
                log_info("stopping instance %s on %s", a->guid, a->cell_url);
                cell_stop_async(c, a->cell_url, a->guid, a->routes);
        }
        if (nputs == 0)
                return 0;
        struct put_run run = { .c = c, .p = p };
        pthread_mutex_init(&run.mu, NULL);
        run.puts = xcalloc(nputs, sizeof(*run.puts));
        size_t k = 0;
        for (size_t i = 0; i < p->n; i++)
                if (p->v[i].put)
                        run.puts[k++] = &p->v[i];
        qsort(run.puts, nputs, sizeof(*run.puts), cmp_put_cell);
        run.batches = xcalloc(nputs, sizeof(*run.batches));
        for (size_t i = 0; i < nputs;) {
                size_t j = i + 1;
                while (j < nputs && strcmp(run.puts[j]->cell_url, run.puts[i]->cell_url) == 0)
                        j++;
                struct put_batch *b = &run.batches[run.nbatches++];
                b->cell_url = run.puts[i]->cell_url;
                b->first = i;
                b->n = j - i;
                b->hc = cell_client(c, b->cell_url);
                if (!b->hc) {
                        b->hc = sched_client(SCHED_HTTP_TIMEOUT);
                        b->own_hc = true;
                        if (b->hc)
                                http_client_set_bearer(b->hc, c->internal_token);
                }
                i = j;
        }
        size_t nw = run.nbatches < PUT_WORKERS ? run.nbatches : PUT_WORKERS;
        pthread_t *th = xcalloc(nw, sizeof(*th));
        size_t started = 0;
        for (size_t i = 1; i < nw; i++) {
                pthread_attr_t attr;
                pthread_attr_init(&attr);
                pthread_attr_setstacksize(&attr, 512 * 1024);
                if (pthread_create(&th[started], &attr, put_worker, &run) == 0)
                        started++;
                pthread_attr_destroy(&attr);
        }
        put_worker(&run); /* this thread works too */
        for (size_t i = 0; i < started; i++)
                pthread_join(th[i], NULL);
        free(th);
        if (run.failed.n) {
                /* Not placed: the next sweep places them again. */
                db_lock(c);
                for (size_t i = 0; i < run.failed.n; i++)
                        xdb_cexec(c, NULL, "DELETE FROM instances WHERE guid = ?", "s", run.failed.v[i]);
                db_unlock(c);
        }
        size_t nfailed = run.failed.n;
        for (size_t i = 0; i < run.nbatches; i++)
                if (run.batches[i].own_hc)
                        http_client_free(run.batches[i].hc);
        strv_clear(&run.failed);
        free(run.batches);
        free(run.puts);
        pthread_mutex_destroy(&run.mu);
        return nfailed;
}

static void converge(struct ctl *c)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(sched_plan_freep) struct sched_plan *p = NULL;
        struct sched_plan_stats st;
        if (sched_plan(c, &p, &st, &e) < 0) {
                log_warn("scheduler: %s", berr_msg(e));
                return;
        }
        if (st.placed)
                log_info("scheduler: placing %zu instance%s", st.placed, st.placed == 1 ? "" : "s");
        sched_execute(c, p);
}

static void *sched_thread(void *arg)
{
        struct ctl *c = arg;
        struct sched *s = c->sched;
        while (!c->stopping) {
                converge(c);
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

void sched_attach(struct ctl *c)
{
        struct sched *s = xcalloc(1, sizeof(*s));
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cond, NULL);
        c->sched = s;
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
        for (size_t i = 0; i < s->n_clients; i++) {
                free(s->clients[i].url);
                http_client_free(s->clients[i].hc);
        }
        free(s->clients);
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
