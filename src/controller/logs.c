/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process stats and app logs, gathered from the cells that run the instances (docs/PLATFORM.md
 * "Processes" stats, "Apps" logs). The store says where instances are; usage and log lines come live from
 * each cell's /v1/lrps/:guid and /v1/lrps/:guid/logs, asked without the store lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "controller/ctl.h"
#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/log.h"

#define LOGS_LINES_DEFAULT   100
#define LOGS_LINES_MAX       10000
#define LOGS_INSTANCES_MAX   256
#define LOGS_KEEPALIVE_POLLS 20 /* polls of 0.5 s */
#define MIB                  (1024LL * 1024LL)

/*
 * Weak: the controller's unit tests link the controller library with fake http_response_* functions
 * (tests/unit/controller/ctltest.h) and no streaming; a strong reference would pull lib/http_server.c in
 * twice. The daemon links the server, so these resolve there.
 */
#pragma weak http_response_stream_begin
#pragma weak http_response_stream_write

struct stat_inst {
        char guid[37];
        char *cell_url, *state, *since, *host, *reason;
        int idx, port, external_port, since_set;
        int64_t since_ms;
        bool routable; /* RUNNING and ready (its readiness check passes) */
        json_t *usage;
};

/*
 * The routers' access log lines (source RTR), kept in memory per app: the last RTR_LINES_PER_APP each, for at
 * most RTR_APPS_MAX apps (lines for more apps are dropped). Entries are already in the API's shape.
 */
#define RTR_LINES_PER_APP 1000
#define RTR_APPS_MAX      10000
#define RTR_BATCH_MAX     20000
#define RTR_MESSAGE_MAX   8192
static pthread_mutex_t rtr_mu = PTHREAD_MUTEX_INITIALIZER;
static json_t *rtr_lines; /* app guid → [entry...] in arrival order */

static bool guid_like(const char *g)
{
        size_t n = strlen(g);
        if (n == 0 || n > 36)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(g[i] == '-' || (g[i] >= '0' && g[i] <= '9') || (g[i] >= 'a' && g[i] <= 'z') ||
                      (g[i] >= 'A' && g[i] <= 'Z')))
                        return false;
        return true;
}

/* POST /internal/v1/logs {"lines":[{"app_guid","timestamp","message"}...]} from a router. */
static void internal_logs(struct api_req *r, struct http_response *resp)
{
        json_t *lines = json_object_get(r->body, "lines");
        if (!json_is_array(lines) || json_array_size(lines) > RTR_BATCH_MAX) {
                api_error(resp, 422, 10008, "CF-UnprocessableEntity",
                          "lines must be a list of at most 20000 {app_guid, timestamp, message}");
                return;
        }
        size_t kept = 0, i;
        json_t *l;
        pthread_mutex_lock(&rtr_mu);
        if (!rtr_lines)
                rtr_lines = json_object();
        json_array_foreach (lines, i, l) {
                const char *app = json_string_value(json_object_get(l, "app_guid"));
                const char *t = json_string_value(json_object_get(l, "timestamp"));
                const char *m = json_string_value(json_object_get(l, "message"));
                if (!app || !t || !m || !guid_like(app) || strlen(t) > 40 || strlen(m) > RTR_MESSAGE_MAX)
                        continue;
                json_t *arr = json_object_get(rtr_lines, app);
                if (!arr) {
                        if (json_object_size(rtr_lines) >= RTR_APPS_MAX)
                                continue;
                        arr = json_array();
                        json_object_set_new(rtr_lines, app, arr);
                }
                json_array_append_new(arr,
                                      json_pack("{s:s,s:s,s:i,s:s,s:s}", "timestamp", t, "source_type", "RTR",
                                                "instance_index", 0, "message_type", "OUT", "message", m));
                if (json_array_size(arr) > RTR_LINES_PER_APP)
                        json_array_remove(arr, 0);
                kept++;
        }
        pthread_mutex_unlock(&rtr_mu);
        api_respond(resp, 202, json_pack("{s:I}", "accepted", (json_int_t)kept));
}

static bool is_rtr(const json_t *e)
{
        const char *st = json_string_value(json_object_get(e, "source_type"));
        return st && strcmp(st, "RTR") == 0;
}

/* Append the app's RTR entries with timestamp > after (NULL: all) to out; *last gets the newest seen. */
static void rtr_fetch(const char *app, const char *after, json_t *out, char last[static 48])
{
        pthread_mutex_lock(&rtr_mu);
        json_t *arr = rtr_lines ? json_object_get(rtr_lines, app) : NULL;
        size_t i;
        json_t *e;
        json_array_foreach (arr, i, e) {
                const char *t = json_string_value(json_object_get(e, "timestamp"));
                if (after && strcmp(t, after) <= 0)
                        continue;
                json_array_append(out, e);
                if (strcmp(t, last) > 0)
                        snprintf(last, 48, "%s", t);
        }
        pthread_mutex_unlock(&rtr_mu);
}

static struct http_client *logs_client(struct ctl *c, unsigned timeout_ms)
{
        struct http_client *hc = NULL;
        struct http_client_opts o = { .timeout_ms = timeout_ms, .connect_timeout_ms = 2000 };
        if (http_client_new(&o, &hc, NULL) < 0)
                return NULL;
        http_client_set_bearer(hc, c->internal_token);
        return hc;
}

static void stat_inst_clear(struct stat_inst *s)
{
        free(s->cell_url);
        free(s->state);
        free(s->since);
        free(s->host);
        free(s->reason);
        json_decref(s->usage);
}

static void stats_for(struct api_req *r, struct http_response *resp, const char *proc)
{
        struct ctl *c = r->ctl;
        int n = 0, mem = 0, disk = 0;
        bool started = false;
        struct stat_inst *insts = NULL;
        size_t ninsts = 0;
        db_lock(c);
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL,
                                                           "SELECT p.instances, p.memory_mb, p.disk_mb, "
                                                           "a.state FROM processes p JOIN apps a ON a.guid ="
                                                           " p.app_guid WHERE p.guid = ?",
                                                           "s", proc);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        n = sqlite3_column_int(s, 0);
                        mem = sqlite3_column_int(s, 1);
                        disk = sqlite3_column_int(s, 2);
                        started = strcmp(db_col_text(s, 3), "STARTED") == 0;
                }
        }
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    c, NULL,
                    "SELECT i.guid, c.url, i.state, i.since, i.host, i.port, i.external_port, "
                    "i.reason, i.idx,"
                    " i.since_ms, i.routable FROM instances i LEFT JOIN cells c ON c.id = i.cell_id WHERE "
                    "i.process_guid = ?"
                    " ORDER BY i.idx, (i.state = 'RUNNING') DESC, i.since_ms DESC",
                    "s", proc);
                while (s && sqlite3_step(s) == SQLITE_ROW && ninsts < LOGS_INSTANCES_MAX) {
                        insts = xrealloc(insts, (ninsts + 1) * sizeof(*insts));
                        struct stat_inst *in = &insts[ninsts++];
                        *in = (struct stat_inst){ 0 };
                        snprintf(in->guid, sizeof(in->guid), "%s", db_col_text(s, 0));
                        in->cell_url = db_col_text(s, 1) ? xstrdup(db_col_text(s, 1)) : NULL;
                        in->state = xstrdup(db_col_text(s, 2));
                        in->since = xstrdup(db_col_text(s, 3));
                        in->host = db_col_text(s, 4) ? xstrdup(db_col_text(s, 4)) : NULL;
                        in->port = sqlite3_column_type(s, 5) == SQLITE_NULL ? 0 : sqlite3_column_int(s, 5);
                        in->external_port =
                            sqlite3_column_type(s, 6) == SQLITE_NULL ? 0 : sqlite3_column_int(s, 6);
                        in->reason = db_col_text(s, 7) ? xstrdup(db_col_text(s, 7)) : NULL;
                        in->idx = sqlite3_column_int(s, 8);
                        in->since_ms = sqlite3_column_int64(s, 9);
                        in->routable = sqlite3_column_int(s, 10) != 0;
                }
        }
        db_unlock(c);
        _cleanup_(http_client_freep) struct http_client *hc = logs_client(c, 3000);
        for (size_t i = 0; hc && i < ninsts; i++) {
                if (!insts[i].cell_url)
                        continue;
                _cleanup_free_ char *url = xasprintf("%s/v1/lrps/%s", insts[i].cell_url, insts[i].guid);
                long st = 0;
                json_t *j = NULL;
                if (http_request_json(hc, "GET", url, NULL, &st, &j, NULL) == 0 && st == 200 && j)
                        insts[i].usage = json_incref(json_object_get(j, "usage"));
                json_decref(j);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        char nows[21];
        ctl_now(nows);
        json_t *res = json_array();
        for (int idx = 0; idx < n; idx++) {
                struct stat_inst *in = NULL;
                for (size_t i = 0; i < ninsts && !in; i++)
                        if (insts[i].idx == idx)
                                in = &insts[i];
                if (!in || !started) {
                        json_array_append_new(
                            res, json_pack("{s:s,s:i,s:s,s:s,s:n,s:[],s:i,s:I,s:I,s:i,s:{},s:n,s:n,s:n,s:b}",
                                           "type", "web", "index", idx, "state", "DOWN", "host", "", "port",
                                           "instance_ports", "uptime", 0, "mem_quota", (json_int_t)mem * MIB,
                                           "disk_quota", (json_int_t)disk * MIB, "fds_quota", 16384, "usage",
                                           "details", "since", "guid", "routable", 0));
                        continue;
                }
                bool running = strcmp(in->state, "RUNNING") == 0;
                json_int_t uptime = running && in->since_ms ? (now - in->since_ms) / 1000 : 0;
                json_t *u = in->usage;
                double cpu = 0;
                json_int_t cpu_ns = json_integer_value(json_object_get(u, "cpu_ns"));
                if (json_is_number(json_object_get(u, "cpu")))
                        cpu = json_number_value(json_object_get(u, "cpu")); /* the cell's recent fraction */
                else if (uptime > 0 && cpu_ns > 0)
                        cpu = (double)cpu_ns / 1e9 / (double)uptime;
                json_t *usage = u ? json_pack("{s:s,s:f,s:I,s:I}", "time", nows, "cpu", cpu, "mem",
                                              json_integer_value(json_object_get(u, "mem_bytes")), "disk",
                                              json_integer_value(json_object_get(u, "disk_bytes")))
                                  : json_object();
                json_t *ports = json_array();
                if (in->port)
                        json_array_append_new(ports, json_pack("{s:i,s:i}", "external", in->external_port,
                                                               "internal", in->port));
                json_array_append_new(
                    res, json_pack("{s:s,s:i,s:s,s:s,s:o,s:o,s:I,s:I,s:I,s:i,s:o,s:o,s:s,s:s,s:b}", "type",
                                   "web", "index", idx, "state", in->state, "host", in->host ? in->host : "",
                                   "port", in->port ? json_integer(in->port) : json_null(), "instance_ports",
                                   ports, "uptime", uptime, "mem_quota", (json_int_t)mem * MIB, "disk_quota",
                                   (json_int_t)disk * MIB, "fds_quota", 16384, "usage", usage, "details",
                                   in->reason && !running ? json_string(in->reason) : json_null(), "since",
                                   in->since, "guid", in->guid, "routable", running && in->routable));
        }
        for (size_t i = 0; i < ninsts; i++)
                stat_inst_clear(&insts[i]);
        free(insts);
        api_respond(resp, 200, json_pack("{s:o}", "resources", res));
}

static void process_stats(struct api_req *r, struct http_response *resp)
{
        char space[37];
        int k = -ENOENT;
        db_lock(r->ctl);
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(r->ctl, NULL,
                                                           "SELECT a.space_guid FROM processes p JOIN apps a "
                                                           "ON a.guid = p.app_guid WHERE p.guid = ?",
                                                           "s", r->params[0]);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        snprintf(space, sizeof(space), "%s", db_col_text(s, 0));
                        k = 0;
                }
        }
        if (k == 0)
                k = authz_space(r, space, AUTHZ_READ, true);
        db_unlock(r->ctl);
        if (!apps_authz_answer(k, resp, "Process"))
                return;
        stats_for(r, resp, r->params[0]);
}

static void app_web_stats(struct api_req *r, struct http_response *resp)
{
        char space[37], proc[37] = "";
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        db_lock(r->ctl);
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(r->ctl, NULL, "SELECT guid FROM processes WHERE app_guid = ? AND type = 'web'",
                              "s", r->params[0]);
                if (s && sqlite3_step(s) == SQLITE_ROW)
                        snprintf(proc, sizeof(proc), "%s", db_col_text(s, 0));
        }
        db_unlock(r->ctl);
        if (!*proc) {
                api_not_found(resp, "Process");
                return;
        }
        stats_for(r, resp, proc);
}

/* ---- logs ---- */

struct log_src {
        char guid[37];
        char *cell_url;
        int idx;
        char last[64]; /* time of the last line sent (follow) */
};

static int app_log_sources(struct ctl *c, const char *app, struct log_src **ret)
{
        struct log_src *v = NULL;
        int n = 0;
        db_lock(c);
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL,
                                                   "SELECT i.guid, c.url, i.idx FROM instances i JOIN cells "
                                                   "c ON c.id = i.cell_id WHERE i.app_guid = ?"
                                                   " ORDER BY i.idx",
                                                   "s", app);
        while (s && sqlite3_step(s) == SQLITE_ROW && n < LOGS_INSTANCES_MAX) {
                v = xrealloc(v, (size_t)(n + 1) * sizeof(*v));
                v[n] = (struct log_src){ .cell_url = xstrdup(db_col_text(s, 1)),
                                         .idx = sqlite3_column_int(s, 2) };
                snprintf(v[n].guid, sizeof(v[n].guid), "%s", db_col_text(s, 0));
                n++;
        }
        db_unlock(c);
        *ret = v;
        return n;
}

/* Fetch up to `tail` lines of one instance, appending converted entries with time > after to out. */
static void fetch_lines(struct http_client *hc, struct log_src *src, unsigned long tail, const char *after,
                        json_t *out)
{
        _cleanup_free_ char *url =
            xasprintf("%s/v1/lrps/%s/logs?tail=%lu&follow=false", src->cell_url, src->guid, tail);
        struct http_result res = { 0 };
        if (http_request(hc, "GET", url, NULL, NULL, NULL, 0, &res, NULL) < 0)
                return;
        if (res.status == 200 && res.body) {
                char *p = res.body;
                while (*p) {
                        char *e = strchr(p, '\n');
                        size_t len = e ? (size_t)(e - p) : strlen(p);
                        json_t *j = json_loadb(p, len, 0, NULL);
                        const char *t = json_string_value(json_object_get(j, "time"));
                        const char *stream = json_string_value(json_object_get(j, "stream"));
                        const char *text = json_string_value(json_object_get(j, "text"));
                        /* The cell's tag ("APP/PROC/WEB/0", "CELL/0") without its index. */
                        const char *source = json_string_value(json_object_get(j, "source"));
                        const char *slash = source ? strrchr(source, '/') : NULL;
                        _cleanup_free_ char *type = slash && slash > source
                                                        ? xstrndup(source, (size_t)(slash - source))
                                                        : xstrdup("APP/PROC/WEB");
                        if (t && text && (!after || strcmp(t, after) > 0))
                                json_array_append_new(
                                    out, json_pack("{s:s,s:s,s:i,s:s,s:s}", "timestamp", t, "source_type",
                                                   type, "instance_index", src->idx, "message_type",
                                                   stream && strcmp(stream, "stderr") == 0 ? "ERR" : "OUT",
                                                   "message", text));
                        json_decref(j);
                        p = e ? e + 1 : p + len;
                }
        }
        http_result_free(&res);
}

static int by_time(const void *a, const void *b)
{
        const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
        return strcmp(json_string_value(json_object_get(x, "timestamp")),
                      json_string_value(json_object_get(y, "timestamp")));
}

/*
 * Sort the entries by time (stable enough: per-instance order kept for equal times by index). Drop exact
 * repeats: two instances of one index (a replacement overlapping its predecessor) both return the lines
 * the cell kept of the deleted ones before them.
 */
static json_t *sorted(json_t *arr)
{
        size_t n = json_array_size(arr);
        json_t **v = xcalloc(n ? n : 1, sizeof(*v));
        for (size_t i = 0; i < n; i++)
                v[i] = json_array_get(arr, i);
        qsort(v, n, sizeof(*v), by_time);
        json_t *out = json_array();
        for (size_t i = 0; i < n; i++)
                if (i == 0 || !json_equal(v[i], v[i - 1]))
                        json_array_append(out, v[i]);
        free(v);
        json_decref(arr);
        return out;
}

static void app_logs(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        const char *q = r->http ? r->http->query : "";
        _cleanup_free_ char *ls = http_query_get(q, "lines"), *fs = http_query_get(q, "follow");
        unsigned long lines = LOGS_LINES_DEFAULT;
        if (ls) {
                char *end = NULL;
                lines = strtoul(ls, &end, 10);
                if (!*ls || *end || lines < 1 || lines > LOGS_LINES_MAX) {
                        api_error(resp, 400, 10005, "CF-BadQueryParameter",
                                  "The query parameter is invalid: lines must be between 1 and 10000");
                        return;
                }
        }
        bool follow = fs && strcmp(fs, "true") == 0;
        struct log_src *srcs = NULL;
        int n = app_log_sources(c, r->params[0], &srcs);
        _cleanup_(http_client_freep) struct http_client *hc = logs_client(c, 5000);
        json_t *all = json_array();
        for (int i = 0; hc && i < n; i++)
                fetch_lines(hc, &srcs[i], lines, NULL, all);
        char rtr_last[48] = "";
        rtr_fetch(r->params[0], NULL, all, rtr_last);
        all = sorted(all);
        size_t total = json_array_size(all);
        json_t *last = json_array();
        for (size_t i = total > lines ? total - lines : 0; i < total; i++)
                json_array_append(last, json_array_get(all, i));
        json_decref(all);
        if (!follow) {
                for (int i = 0; i < n; i++)
                        free(srcs[i].cell_url);
                free(srcs);
                api_respond(resp, 200, json_pack("{s:o}", "resources", last));
                return;
        }
        /* Follow: recent lines first, then poll the cells each second for newer lines. */
        if (!http_response_stream_begin || !http_response_stream_write) {
                api_respond(resp, 200, json_pack("{s:O}", "resources", last));
                goto out;
        }
        if (http_response_stream_begin(resp, 200, "application/x-ndjson") < 0)
                goto out;
        int gone = 0, idle = 0;
        size_t i;
        json_t *e;
        json_array_foreach (last, i, e) {
                _cleanup_free_ char *s = json_dumps(e, JSON_COMPACT);
                _cleanup_free_ char *line = xasprintf("%s\n", s);
                if (http_response_stream_write(resp, line, strlen(line)) < 0)
                        gone = 1;
                for (int k = 0; k < n; k++)
                        if (json_integer_value(json_object_get(e, "instance_index")) == srcs[k].idx &&
                            !is_rtr(e))
                                snprintf(srcs[k].last, sizeof(srcs[k].last), "%s",
                                         json_string_value(json_object_get(e, "timestamp")));
        }
        while (!gone && !c->stopping) {
                usleep(500000);
                /* new instances (restarts) join the stream */
                struct log_src *now = NULL;
                int nn = app_log_sources(c, r->params[0], &now);
                for (int a = 0; a < nn; a++) {
                        bool known = false;
                        for (int b = 0; b < n; b++)
                                if (strcmp(now[a].guid, srcs[b].guid) == 0) {
                                        memcpy(now[a].last, srcs[b].last, sizeof(now[a].last));
                                        known = true;
                                }
                        /*
                         * A successor at an index the stream followed starts where its predecessor stopped:
                         * the cell shows the predecessor's kept lines first, already sent.
                         */
                        for (int b = 0; !known && b < n; b++)
                                if (srcs[b].idx == now[a].idx && strcmp(srcs[b].last, now[a].last) > 0)
                                        memcpy(now[a].last, srcs[b].last, sizeof(now[a].last));
                }
                for (int b = 0; b < n; b++)
                        free(srcs[b].cell_url);
                free(srcs);
                srcs = now;
                n = nn;
                json_t *batch = json_array();
                for (int k = 0; hc && k < n; k++)
                        fetch_lines(hc, &srcs[k], LOGS_LINES_MAX, srcs[k].last[0] ? srcs[k].last : NULL,
                                    batch);
                rtr_fetch(r->params[0], rtr_last[0] ? rtr_last : NULL, batch, rtr_last);
                batch = sorted(batch);
                json_array_foreach (batch, i, e) {
                        _cleanup_free_ char *s = json_dumps(e, JSON_COMPACT);
                        _cleanup_free_ char *line = xasprintf("%s\n", s);
                        if (http_response_stream_write(resp, line, strlen(line)) < 0)
                                gone = 1;
                        for (int k = 0; k < n; k++)
                                if (json_integer_value(json_object_get(e, "instance_index")) == srcs[k].idx &&
                                    !is_rtr(e))
                                        snprintf(srcs[k].last, sizeof(srcs[k].last), "%s",
                                                 json_string_value(json_object_get(e, "timestamp")));
                }
                /* Every 10 s without news, an empty line (a keep-alive readers skip) finds a closed client.
                 */
                if (json_array_size(batch) == 0 && ++idle >= LOGS_KEEPALIVE_POLLS) {
                        idle = 0;
                        if (!gone && http_response_stream_write(resp, "\n", 1) < 0)
                                gone = 1;
                } else if (json_array_size(batch) > 0) {
                        idle = 0;
                }
                json_decref(batch);
        }
out:
        json_decref(last);
        for (int k = 0; k < n; k++)
                free(srcs[k].cell_url);
        free(srcs);
}

const struct api_route api_routes_logs[] = {
        { "GET", "/v3/processes/:guid/stats", process_stats, API_USER },
        { "GET", "/v3/apps/:guid/processes/web/stats", app_web_stats, API_USER },
        { "GET", "/v3/apps/:guid/logs", app_logs, API_USER },
        { "POST", "/internal/v1/logs", internal_logs, API_INTERNAL },
        { NULL },
};
