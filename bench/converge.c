/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Convergence at scale (issue 5), with simulated cells: the controller's real store (SQLite, WAL, on disk),
 * its real convergence plan (sched_plan), its real executor (sched_execute: PUTs in parallel over one
 * keep-alive client per cell) and its real heartbeat handler (PUT /internal/v1/cells/:id over HTTP), against
 * CELLS simulated cells served by one in-process HTTP server that accepts LRPs and reports them RUNNING.
 *
 *   berth-converge-bench [--cells N] [--instances N] [--apps N] [--dir D]
 *
 * Prints (one "name value unit" per line, for bench/converge.sh):
 *   placement: a sweep that must place every instance: plan (decide + insert rows), execute (the PUTs),
 * total, instances/s heartbeats: every cell reports all its instances RUNNING (first round: every row changes
 * state) and then the same again (steady state: nothing changes), sent by 8 clients in parallel noop sweep: a
 * full sweep with nothing to do (median of 5)
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "controller/ctl.h"
#include "lib/http_client.h"
#include "lib/http_server.h"
#include "lib/json.h"
#include "lib/log.h"

static double mono(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the simulated cells ---- */

struct sim_inst {
        char guid[37], proc[37], app[37];
        int index;
};

struct sim_cell {
        struct sim_inst *v;
        size_t n, cap;
};

static struct {
        pthread_mutex_t mu;
        struct sim_cell *cells;
        size_t ncells;
        size_t puts, deletes;
} sim = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* /sim/<cell number>/v1/lrps/<guid> */
static void sim_handle(void *userdata, const struct http_request *req, struct http_response *resp)
{
        (void)userdata;
        unsigned long cell = 0;
        char guid[37] = "";
        if (sscanf(req->path, "/sim/%lu/v1/lrps/%36s", &cell, guid) != 2 || cell >= sim.ncells) {
                http_response_json(resp, 404, json_pack("{s:s}", "error", "not found"));
                return;
        }
        if (strcmp(req->method, "PUT") == 0) {
                /* Only what the heartbeats need, found in the body without parsing it all: the cells' own
                 * work runs on their machines, not on the controller's two cores. */
                char proc[37] = "", app[37] = "";
                int index = -1;
                const char *b = req->body, *k;
                if ((k = strstr(b, "\"process_guid\":\"")))
                        sscanf(k + 16, "%36[^\"]", proc);
                if ((k = strstr(b, "\"app_guid\":\"")))
                        sscanf(k + 12, "%36[^\"]", app);
                if ((k = strstr(b, "\"index\":")))
                        sscanf(k + 8, "%d", &index);
                if (!proc[0] || !app[0] || index < 0) {
                        http_response_json(resp, 400, json_pack("{s:s}", "error", "bad body"));
                        return;
                }
                pthread_mutex_lock(&sim.mu);
                struct sim_cell *c = &sim.cells[cell];
                if (c->n == c->cap) {
                        c->cap = c->cap ? c->cap * 2 : 128;
                        c->v = xrealloc(c->v, c->cap * sizeof(*c->v));
                }
                struct sim_inst *in = &c->v[c->n++];
                snprintf(in->guid, sizeof(in->guid), "%s", guid);
                snprintf(in->proc, sizeof(in->proc), "%s", proc);
                snprintf(in->app, sizeof(in->app), "%s", app);
                in->index = index;
                sim.puts++;
                pthread_mutex_unlock(&sim.mu);
                http_response_body(resp, 202, "application/json", "{}", 2);
                return;
        }
        if (strcmp(req->method, "DELETE") == 0) {
                pthread_mutex_lock(&sim.mu);
                sim.deletes++;
                pthread_mutex_unlock(&sim.mu);
                http_response_json(resp, 202, json_object());
                return;
        }
        http_response_json(resp, 405, json_object());
}

static void *serve(void *arg)
{
        http_server_run(arg, NULL);
        return NULL;
}

/* ---- heartbeats ---- */

struct hb_run {
        const char *ctl_url, *token;
        char **bodies; /* per cell, serialized before the clock starts (the cells build their own) */
        size_t first, step;
        double worst;
};

static json_t *heartbeat_body(size_t cell, const char *sim_url)
{
        json_t *insts = json_array();
        struct sim_cell *c = &sim.cells[cell];
        for (size_t i = 0; i < c->n; i++) {
                struct sim_inst *in = &c->v[i];
                json_array_append_new(
                    insts,
                    json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:i,s:s,s:i,s:s,s:n,s:n,s:{s:I,s:I,s:I,s:I,s:I}}",
                              "instance_guid", in->guid, "process_guid", in->proc, "app_guid", in->app,
                              "index", in->index, "state", "RUNNING", "since", "2026-11-28T18:00:00Z", "host",
                              "10.88.0.5", "port", 8080, "external_ip", "127.0.0.1", "external_port",
                              61000 + (int)(i % 1000), "container_id", in->guid, "exit_code", "reason",
                              "usage", "cpu_ns", (json_int_t)12345, "mem_bytes", (json_int_t)(1 << 20),
                              "disk_bytes", (json_int_t)8192, "mem_quota", (json_int_t)(64 << 20),
                              "disk_quota", (json_int_t)(1 << 30)));
        }
        _cleanup_free_ char *url = xasprintf("%s/sim/%zu", sim_url, cell);
        return json_pack("{s:s,s:i,s:i,s:o}", "url", url, "memory_mb", 1 << 20, "disk_mb", 1 << 20,
                         "instances", insts);
}

static void *hb_worker(void *arg)
{
        struct hb_run *h = arg;
        struct http_client *hc = NULL;
        struct http_client_opts o = { .timeout_ms = 60000 };
        if (http_client_new(&o, &hc, NULL) < 0)
                return NULL;
        http_client_set_bearer(hc, h->token);
        for (size_t cell = h->first; cell < sim.ncells; cell += h->step) {
                _cleanup_free_ char *url = xasprintf("%s/internal/v1/cells/cell-%05zu", h->ctl_url, cell);
                struct http_result res = { 0 };
                double t0 = mono();
                int r = http_request(hc, "PUT", url, NULL, "application/json", h->bodies[cell],
                                     strlen(h->bodies[cell]), &res, NULL);
                double t = mono() - t0;
                if (t > h->worst)
                        h->worst = t;
                if (r < 0 || res.status != 200)
                        fprintf(stderr, "heartbeat of cell %zu: %d HTTP %ld\n", cell, r, res.status);
                http_result_free(&res);
        }
        http_client_free(hc);
        return NULL;
}

static double heartbeat_round(const char *ctl_url, char **bodies, const char *token, double *worst)
{
        enum { N = 8 };
        struct hb_run runs[N];
        pthread_t th[N];
        double t0 = mono();
        for (size_t i = 0; i < N; i++) {
                runs[i] = (struct hb_run){
                        .ctl_url = ctl_url, .bodies = bodies, .token = token, .first = i, .step = N
                };
                pthread_create(&th[i], NULL, hb_worker, &runs[i]);
        }
        *worst = 0;
        for (size_t i = 0; i < N; i++) {
                pthread_join(th[i], NULL);
                if (runs[i].worst > *worst)
                        *worst = runs[i].worst;
        }
        return mono() - t0;
}

/* ---- the store ---- */

static void must(int r, struct berr *e, const char *what)
{
        if (r < 0) {
                fprintf(stderr, "berth-converge-bench: %s: %s\n", what, e ? berr_msg(e) : "failed");
                exit(1);
        }
}

static void seed(struct ctl *c, size_t ncells, size_t ninst, size_t napps, const char *sim_url)
{
        struct berr *e = NULL;
        char org[37], space[37], now[21];
        ctl_now(now);
        db_lock(c);
        must(db_begin(c, &e), e, "begin");
        must(flags_bootstrap(c, &e), e, "flags");
        must(xdb_exec(c, &e, "UPDATE feature_flags SET enabled = 1 WHERE name = 'diego_docker'", NULL), e,
             "flag");
        must(tenancy_org_create(c, "bench", org, &e), e, "org");
        must(tenancy_space_create(c, org, "bench", space, &e), e, "space");
        int64_t now_ms = (int64_t)time(NULL) * 1000;
        for (size_t i = 0; i < ncells; i++) {
                char id[32];
                snprintf(id, sizeof(id), "cell-%05zu", i);
                _cleanup_free_ char *url = xasprintf("%s/sim/%zu", sim_url, i);
                must(xdb_exec(c, &e,
                              "INSERT INTO cells (id, url, memory_mb, disk_mb, last_seen) VALUES (?,?,?,?,?)",
                              "ssiiI", id, url, 1 << 20, 1 << 20, now_ms + 3600 * 1000),
                     e, "cell");
        }
        for (size_t a = 0; a < napps; a++) {
                char app[37], proc[37], drop[37], ver[37], name[32];
                ctl_uuid(app), ctl_uuid(proc), ctl_uuid(drop), ctl_uuid(ver);
                snprintf(name, sizeof(name), "app-%05zu", a);
                int n = (int)(ninst / napps + (a < ninst % napps ? 1 : 0));
                must(xdb_exec(c, &e,
                              "INSERT INTO apps (guid, name, space_guid, state, droplet_guid, created_at,"
                              " updated_at) VALUES (?,?,?,'STARTED',?,?,?)",
                              "ssssss", app, name, space, drop, now, now),
                     e, "app");
                must(xdb_exec(
                         c, &e,
                         "INSERT INTO droplets (guid, app_guid, image_pinned, docker_image,"
                         " execution_metadata, process_types, created_at, updated_at) VALUES (?,?,"
                         "'127.0.0.1:5000/bench@sha256:0000000000000000000000000000000000000000000000000000"
                         "000000000000', '127.0.0.1:5000/bench:1', '{\"entrypoint\":[],\"cmd\":[\"/web\"],"
                         "\"user\":\"\",\"workdir\":\"\",\"env\":[],\"ports\":[{\"Port\":8080,\"Protocol\":"
                         "\"tcp\"}]}', '{\"web\":\"/web\"}',?,?)",
                         "ssss", drop, app, now, now),
                     e, "droplet");
                must(xdb_exec(
                         c, &e,
                         "INSERT INTO processes (guid, app_guid, type, instances, memory_mb, disk_mb,"
                         " health_check_type, version, created_at, updated_at) VALUES (?,?,'web',?,64,1024,"
                         "'port',?,?,?)",
                         "ssisss", proc, app, n, ver, now, now),
                     e, "process");
        }
        must(db_commit(c, &e), e, "commit");
        db_unlock(c);
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
        size_t ncells = 1000, ninst = 100000, napps = 1000;
        const char *dir = NULL;
        static const struct option opts[] = { { "cells", required_argument, NULL, 'c' },
                                              { "instances", required_argument, NULL, 'i' },
                                              { "apps", required_argument, NULL, 'a' },
                                              { "dir", required_argument, NULL, 'd' },
                                              { NULL, 0, NULL, 0 } };
        int o;
        while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (o) {
                case 'c':
                        ncells = strtoul(optarg, NULL, 10);
                        break;
                case 'i':
                        ninst = strtoul(optarg, NULL, 10);
                        break;
                case 'a':
                        napps = strtoul(optarg, NULL, 10);
                        break;
                case 'd':
                        dir = optarg;
                        break;
                default:
                        fprintf(
                            stderr,
                            "usage: berth-converge-bench [--cells N] [--instances N] [--apps N] [--dir D]\n");
                        return 2;
                }
        }
        if (!ncells || !napps || napps > ninst) {
                fprintf(stderr, "berth-converge-bench: need cells > 0 and 0 < apps <= instances\n");
                return 2;
        }
        if (sodium_init() < 0)
                return 1;
        char tmpl[] = "/tmp/berth-converge-XXXXXX";
        if (!dir && !(dir = mkdtemp(tmpl))) {
                perror("mkdtemp");
                return 1;
        }
        struct berr *e = NULL;
        struct ctl c = { 0 };
        c.external_url = xstrdup("http://127.0.0.1:9022");
        c.domain = xstrdup("apps.localhost");
        c.internal_token = xstrdup("bench-token");
        c.token_ttl_s = 3600;
        pthread_mutex_init(&c.rt_lock, NULL);
        pthread_cond_init(&c.rt_cond, NULL);
        randombytes_buf(c.enc_key, sizeof(c.enc_key));
        _cleanup_free_ char *db = xasprintf("%s/berth.db", dir);
        must(db_open(&c, db, &e), e, "open the store");
        sched_attach(&c);

        /* the simulated cells and the controller's API, both in this process */
        sim.ncells = ncells;
        sim.cells = xcalloc(ncells, sizeof(*sim.cells));
        struct http_server *simsrv = NULL, *ctlsrv = NULL;
        struct http_server_opts so = { .listen = "127.0.0.1:0",
                                       .handler = sim_handle,
                                       .max_connections = 4096,
                                       .max_body_bytes = 1 << 20 };
        must(http_server_new(&so, &simsrv, &e), e, "simulated cells");
        struct http_server_opts co = { .listen = "127.0.0.1:0",
                                       .handler = api_handle,
                                       .userdata = &c,
                                       .max_connections = 256,
                                       .max_body_bytes = 64 << 20 };
        must(http_server_new(&co, &ctlsrv, &e), e, "controller API");
        pthread_t simt, ctlt;
        pthread_create(&simt, NULL, serve, simsrv);
        pthread_create(&ctlt, NULL, serve, ctlsrv);
        _cleanup_free_ char *sim_url = xasprintf("http://127.0.0.1:%d", http_server_port(simsrv));
        _cleanup_free_ char *ctl_url = xasprintf("http://127.0.0.1:%d", http_server_port(ctlsrv));

        seed(&c, ncells, ninst, napps, sim_url);
        printf("cells %zu\ninstances %zu\napps %zu\n", ncells, ninst, napps);

        /* 1. a sweep that places everything */
        struct sched_plan *p = NULL;
        struct sched_plan_stats st;
        double t0 = mono();
        must(sched_plan(&c, &p, &st, &e), e, "plan");
        double t1 = mono();
        size_t failed = sched_execute(&c, p);
        double t2 = mono();
        sched_plan_free(p);
        printf("placement_plan_load_s %.3f\nplacement_plan_decide_s %.3f\nplacement_plan_insert_s %.3f\n"
               "placement_plan_commit_s %.3f\n",
               st.load_s, st.decide_s, st.place_s, st.commit_s);
        printf("placement_plan_s %.3f\nplacement_puts_s %.3f\nplacement_total_s %.3f\nplaced %zu\n"
               "placement_failed %zu\nplacement_per_s %.0f\n",
               t1 - t0, t2 - t1, t2 - t0, st.placed, failed, (double)st.placed / (t2 - t0));
        if (st.placed != ninst || failed || sim.puts != ninst) {
                fprintf(stderr, "berth-converge-bench: placed %zu, failed %zu, cells got %zu of %zu\n",
                        st.placed, failed, sim.puts, ninst);
                return 1;
        }
        size_t lo = ninst, hi = 0;
        for (size_t i = 0; i < ncells; i++) {
                lo = sim.cells[i].n < lo ? sim.cells[i].n : lo;
                hi = sim.cells[i].n > hi ? sim.cells[i].n : hi;
        }
        printf("per_cell_min %zu\nper_cell_max %zu\n", lo, hi);

        /* 2. heartbeats: first every instance turns RUNNING, then nothing changes */
        double worst;
        char **bodies = xcalloc(ncells, sizeof(*bodies));
        size_t body_bytes = 0;
        for (size_t i = 0; i < ncells; i++) {
                _cleanup_json_ json_t *b = heartbeat_body(i, sim_url);
                bodies[i] = json_dumps(b, JSON_COMPACT);
                body_bytes += strlen(bodies[i]);
        }
        printf("heartbeat_body_bytes_mean %zu\n", body_bytes / ncells);
        double hb1 = heartbeat_round(ctl_url, bodies, c.internal_token, &worst);
        printf("heartbeats_first_s %.3f\nheartbeat_first_ms_mean %.2f\n", hb1, hb1 * 1000 / (double)ncells);
        double hb2 = heartbeat_round(ctl_url, bodies, c.internal_token, &worst);
        printf("heartbeats_steady_s %.3f\nheartbeat_steady_ms_mean %.2f\nheartbeat_steady_ms_max %.2f\n", hb2,
               hb2 * 1000 / (double)ncells, worst * 1000);
        /* What a real cell sends between its full reports: only changes, here none. */
        for (size_t i = 0; i < ncells; i++) {
                free(bodies[i]);
                _cleanup_free_ char *url = xasprintf("%s/sim/%zu", sim_url, i);
                _cleanup_json_ json_t *b = json_pack("{s:s,s:i,s:i,s:[],s:b}", "url", url, "memory_mb",
                                                     1 << 20, "disk_mb", 1 << 20, "instances", "full", 0);
                bodies[i] = json_dumps(b, JSON_COMPACT);
        }
        double hb3 = heartbeat_round(ctl_url, bodies, c.internal_token, &worst);
        printf("heartbeats_delta_s %.3f\nheartbeat_delta_ms_mean %.3f\nheartbeat_delta_ms_max %.2f\n", hb3,
               hb3 * 1000 / (double)ncells, worst * 1000);
        db_lock(&c);
        sqlite3_stmt *q = db_prepare(&c, "SELECT count(*) FROM instances WHERE state = 'RUNNING'", NULL);
        int64_t running = q && sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1;
        sqlite3_finalize(q);
        db_unlock(&c);
        printf("running %" PRId64 "\n", running);
        for (size_t i = 0; i < ncells; i++)
                free(bodies[i]);
        free(bodies);

        /* 3. sweeps with nothing to do */
        double t[5];
        for (int i = 0; i < 5; i++) {
                double a = mono();
                must(sched_plan(&c, &p, &st, &e), e, "plan");
                t[i] = mono() - a;
                if (i == 4)
                        printf("noop_sweep_load_s %.3f\nnoop_sweep_decide_s %.3f\nnoop_sweep_commit_s %.3f\n",
                               st.load_s, st.decide_s, st.commit_s);
                if (sched_plan_count(p) != 0) {
                        fprintf(stderr, "berth-converge-bench: a converged sweep wants %zu actions\n",
                                sched_plan_count(p));
                        return 1;
                }
                sched_plan_free(p);
        }
        qsort(t, 5, sizeof(t[0]), cmp_double);
        printf("noop_sweep_s_median %.3f\nnoop_sweep_s_min %.3f\nnoop_sweep_s_max %.3f\n", t[2], t[0], t[4]);

        c.stopping = 1;
        http_server_stop(simsrv);
        http_server_stop(ctlsrv);
        pthread_join(simt, NULL);
        pthread_join(ctlt, NULL);
        http_server_free(simsrv);
        http_server_free(ctlsrv);
        sched_stop(&c);
        db_close(&c);
        if (strcmp(dir, tmpl) == 0) {
                _cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "berth-converge-bench: could not remove %s\n", dir);
        }
        return 0;
}
