/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cell agent: serves the internal API of docs/PLATFORM.md, runs one worker thread per instance (pull,
 * create, start, health-check, liveness), records each instance under <data-dir>/cell/agent/<guid>.json so a
 * restarted agent re-adopts its containers, and reports to the controller (heartbeats every 2 s, events at
 * once, retried while the controller is unreachable).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cell/agent.h"
#include "cell/container.h"
#include "cell/health.h"
#include "image/store.h"
#include "lib/fs.h"
#include "lib/http_client.h"
#include "lib/http_server.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/macro.h"
#include "lib/strv.h"

#define HEARTBEAT_MS     2000
#define CHECK_EVERY_MS   100
#define LIVENESS_MS      5000
#define STOP_TIMEOUT_S   10
#define MAX_EVENTS_QUEUE 4096

enum inst_state { ST_STARTING, ST_RUNNING, ST_CRASHED };
static const char *const state_names[] = { "STARTING", "RUNNING", "CRASHED" };

struct instance {
        char *guid;
        json_t *lrp;    /* the desired body without credentials (owned) */
        char *username; /* credentials for the first pull only; wiped after it */
        char *password;
        char *container_id;
        char ip[16];
        uint16_t host_port;
        enum inst_state state;
        time_t since;
        int exit_code; /* -1: none */
        char *reason;
        bool adopted; /* re-adopted after a restart: skip pull/create/start */
        bool deleting;
        bool done;       /* the worker returned */
        bool has_thread; /* thread is joinable */
        pthread_t thread;
        struct agent *agent;
        struct instance *next;
};

struct agent {
        pthread_mutex_t lock; /* instances, events, states */
        pthread_cond_t cond;  /* wakes workers and the reporter */
        pthread_mutex_t ops;  /* serialises image store and cell calls that create or remove */
        struct instance *instances;
        json_t *events; /* array of pending event bodies */
        struct cell *cell;
        struct image_store *store;
        char *token;
        char *listen, *url, *controller, *id, *advertise_ip;
        uint16_t port_lo, port_hi;
        int64_t memory_mb, disk_mb;
        char *state_dir;
        bool stopping;
        struct http_server *server;
};

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rfc3339(time_t t, char buf[32])
{
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static time_t parse_rfc3339(const char *s)
{
        struct tm tm = { 0 };
        if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm))
                return time(NULL);
        return timegm(&tm);
}

/* Wait on the agent's condition until deadline (monotonic ms) or a wake-up; lock held. */
static void wait_until(struct agent *a, int64_t deadline_ms)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t left = deadline_ms - now_ms();
        if (left <= 0)
                return;
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&a->cond, &a->lock, &ts);
}

static int64_t hc_int(const struct instance *in, const char *key)
{
        return json_integer_value(json_object_get(json_object_get(in->lrp, "health_check"), key));
}

static const char *hc_str(const struct instance *in, const char *key)
{
        return json_string_value(json_object_get(json_object_get(in->lrp, "health_check"), key));
}

static uint16_t inst_port(const struct instance *in, size_t i)
{
        return (uint16_t)json_integer_value(json_array_get(json_object_get(in->lrp, "ports"), i));
}

/* ---- validation of a desired LRP ---- */

static int fail_field(struct berr **err, const char *field, const char *what)
{
        return berr_set(err, -EINVAL, "%s %s", field, what);
}

static bool is_guidish(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 64)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
                        return false;
        return true;
}

static bool is_nullable_string(const json_t *v)
{
        return !v || json_is_null(v) || json_is_string(v);
}

int cell_agent_lrp_validate(const json_t *b, const char *guid, struct berr **err)
{
        static const char *const keys[] = { "instance_guid", "process_guid", "app_guid", "app_name",
                                            "index",         "image",        "username", "password",
                                            "command",       "env",          "ports",    "memory_mb",
                                            "disk_mb",       "health_check" };
        if (!json_is_object(b))
                return berr_set(err, -EINVAL, "body must be a JSON object");
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)b, k, v) {
                bool known = false;
                for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
                        known = known || !strcmp(k, keys[i]);
                if (!known)
                        return fail_field(err, k, "is not a known field");
        }
        if (!is_guidish(guid))
                return fail_field(err, "instance_guid", "must be 1-64 letters, digits, '-' or '_'");
        v = json_object_get(b, "instance_guid");
        if (v && (!json_is_string(v) || strcmp(json_string_value(v), guid)))
                return fail_field(err, "instance_guid", "must match the URL");
        static const char *const strs[] = { "process_guid", "app_guid", "image" };
        for (size_t i = 0; i < ARRAY_SIZE(strs); i++) {
                v = json_object_get(b, strs[i]);
                if (!json_is_string(v) || !json_string_length(v))
                        return fail_field(err, strs[i], "must be a non-empty string");
        }
        if (!is_nullable_string(json_object_get(b, "app_name")))
                return fail_field(err, "app_name", "must be a string");
        if (!is_nullable_string(json_object_get(b, "username")) ||
            !is_nullable_string(json_object_get(b, "password")))
                return fail_field(err, "username/password", "must be strings or null");
        v = json_object_get(b, "index");
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return fail_field(err, "index", "must be an integer >= 0");
        v = json_object_get(b, "command");
        if (v && !json_is_null(v)) {
                if (!json_is_array(v) || !json_array_size(v))
                        return fail_field(err, "command", "must be null or a non-empty array of strings");
                size_t i;
                json_t *e;
                json_array_foreach (v, i, e)
                        if (!json_is_string(e))
                                return fail_field(err, "command",
                                                  "must be null or a non-empty array of strings");
        }
        v = json_object_get(b, "env");
        if (v && !json_is_array(v))
                return fail_field(err, "env", "must be an array of [name, value] pairs");
        size_t i;
        json_t *e;
        json_array_foreach (v, i, e) {
                const char *name = json_string_value(json_array_get(e, 0));
                if (!json_is_array(e) || json_array_size(e) != 2 || !name || !name[0] || strchr(name, '=') ||
                    !json_is_string(json_array_get(e, 1)))
                        return fail_field(err, "env", "must be an array of [name, value] string pairs");
        }
        v = json_object_get(b, "ports");
        if (!json_is_array(v) || !json_array_size(v) || json_array_size(v) > 16)
                return fail_field(err, "ports", "must be an array of 1-16 ports");
        json_array_foreach (v, i, e)
                if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > 65535)
                        return fail_field(err, "ports", "must be ports 1-65535");
        v = json_object_get(b, "memory_mb");
        if (!json_is_integer(v) || json_integer_value(v) < 1)
                return fail_field(err, "memory_mb", "must be an integer >= 1");
        v = json_object_get(b, "disk_mb");
        if (!json_is_integer(v) || json_integer_value(v) < 1)
                return fail_field(err, "disk_mb", "must be an integer >= 1");
        json_t *hc = json_object_get(b, "health_check");
        if (!json_is_object(hc))
                return fail_field(err, "health_check", "must be an object");
        json_object_foreach (hc, k, v) {
                if (strcmp(k, "type") && strcmp(k, "endpoint") && strcmp(k, "timeout_s") &&
                    strcmp(k, "invocation_timeout_s"))
                        return berr_set(err, -EINVAL, "health_check.%s is not a known field", k);
        }
        const char *type = json_string_value(json_object_get(hc, "type"));
        if (!type || (strcmp(type, "port") && strcmp(type, "http") && strcmp(type, "process")))
                return fail_field(err, "health_check.type", "must be port, http or process");
        v = json_object_get(hc, "endpoint");
        if (v && !json_is_null(v) &&
            (!json_is_string(v) || json_string_value(v)[0] != '/' || strpbrk(json_string_value(v), " \r\n") ||
             json_string_length(v) > 1024))
                return fail_field(err, "health_check.endpoint", "must be a path starting with /");
        v = json_object_get(hc, "timeout_s");
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 600)
                return fail_field(err, "health_check.timeout_s", "must be an integer 1-600");
        v = json_object_get(hc, "invocation_timeout_s");
        if (v && (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 60))
                return fail_field(err, "health_check.invocation_timeout_s", "must be an integer 1-60");
        return 0;
}

/* ---- instance JSON and persistence ---- */

/* The INSTANCE document; lock held. usage: inspect the container (slower; only for API answers). */
static json_t *instance_json(struct agent *a, struct instance *in, bool usage)
{
        char since[32];
        rfc3339(in->since, since);
        json_t *u = json_pack("{s:I, s:I, s:I, s:I, s:I}", "cpu_ns", (json_int_t)0, "mem_bytes",
                              (json_int_t)0, "disk_bytes", (json_int_t)0, "mem_quota",
                              (json_int_t)(json_integer_value(json_object_get(in->lrp, "memory_mb")) << 20),
                              "disk_quota",
                              (json_int_t)(json_integer_value(json_object_get(in->lrp, "disk_mb")) << 20));
        if (usage && in->container_id && in->state != ST_CRASHED) {
                json_t *doc = NULL;
                struct berr *e = NULL;
                if (cell_container_inspect(a->cell, in->container_id, &doc, &e) == 0) {
                        json_t *cu = json_object_get(doc, "Usage");
                        static const char *const map[][2] = {
                                { "cpu_ns", "cpu_ns" },
                                { "memory_bytes", "mem_bytes" },
                                { "disk_bytes", "disk_bytes" },
                        };
                        for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
                                json_t *x = json_object_get(cu, map[i][0]);
                                if (json_is_integer(x))
                                        json_object_set(u, map[i][1], x);
                        }
                        json_decref(doc);
                }
                berr_free(e);
        }
        return json_pack(
            "{s:s, s:O, s:O, s:O, s:s, s:s, s:s?, s:i, s:s, s:i, s:s?, s:o, s:s?, s:o}", "instance_guid",
            in->guid, "process_guid", json_object_get(in->lrp, "process_guid"), "app_guid",
            json_object_get(in->lrp, "app_guid"), "index", json_object_get(in->lrp, "index"), "state",
            state_names[in->state], "since", since, "host", in->ip[0] ? in->ip : NULL, "port",
            (int)inst_port(in, 0), "external_ip", a->advertise_ip, "external_port", (int)in->host_port,
            "container_id", in->container_id, "exit_code",
            in->exit_code >= 0 ? json_integer(in->exit_code) : json_null(), "reason", in->reason, "usage", u);
}

/* Write <state_dir>/<guid>.json (no credentials); lock held. */
static void instance_save(struct agent *a, struct instance *in)
{
        char since[32];
        rfc3339(in->since, since);
        _cleanup_json_ json_t *rec =
            json_pack("{s:O, s:s?, s:s, s:i, s:s, s:i, s:s?}", "lrp", in->lrp, "container_id",
                      in->container_id, "ip", in->ip, "host_port", (int)in->host_port, "state",
                      state_names[in->state], "exit_code", in->exit_code, "reason", in->reason);
        json_object_set_new(rec, "since", json_string(since));
        _cleanup_free_ char *text = json_dump_str(rec, false);
        _cleanup_free_ char *name = xasprintf("%s.json", in->guid);
        int dfd = open(a->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fs_write_file_atomic_at(dfd, name, text, strlen(text), 0600) < 0)
                log_warn("cell agent: cannot record instance %s in %s", in->guid, a->state_dir);
        if (dfd >= 0)
                close(dfd);
}

static void instance_forget(struct agent *a, const char *guid)
{
        _cleanup_free_ char *p = xasprintf("%s/%s.json", a->state_dir, guid);
        unlink(p);
}

static void queue_event(struct agent *a, struct instance *in)
{
        if (json_array_size(a->events) >= MAX_EVENTS_QUEUE)
                json_array_remove(a->events, 0);
        json_array_append_new(a->events, json_pack("{s:o}", "instance", instance_json(a, in, false)));
        pthread_cond_broadcast(&a->cond);
}

/* Change state (lock held): record, queue the event. */
static void set_state(struct agent *a, struct instance *in, enum inst_state st, int exit_code,
                      const char *reason)
{
        if (in->state == st && !reason)
                return;
        in->state = st;
        in->since = time(NULL);
        in->exit_code = exit_code;
        free(in->reason);
        in->reason = reason ? xstrdup(reason) : NULL;
        log_info("cell agent: instance %s %s%s%s", in->guid, state_names[st], reason ? ": " : "",
                 reason ? reason : "");
        instance_save(a, in);
        queue_event(a, in);
}

static struct instance *find_instance(struct agent *a, const char *guid)
{
        for (struct instance *in = a->instances; in; in = in->next)
                if (!strcmp(in->guid, guid))
                        return in;
        return NULL;
}

static void instance_free(struct instance *in)
{
        if (!in)
                return;
        if (in->password) {
                explicit_bzero(in->password, strlen(in->password));
                free(in->password);
        }
        free(in->username);
        free(in->guid);
        json_decref(in->lrp);
        free(in->container_id);
        free(in->reason);
        free(in);
}

/* ---- the worker ---- */

struct env_ctx {
        struct agent *a;
        struct instance *in;
};

static char **instance_env(const char *ip, void *userdata)
{
        struct env_ctx *ctx = userdata;
        struct instance *in = ctx->in;
        struct agent *a = ctx->a;
        pthread_mutex_lock(&a->lock);
        snprintf(in->ip, sizeof(in->ip), "%s", ip);
        pthread_mutex_unlock(&a->lock);
        /* Only ports[0] is published on the host. */
        _cleanup_json_ json_t *ports =
            json_pack("[{s:i, s:i}]", "external", (int)in->host_port, "internal", (int)inst_port(in, 0));
        _cleanup_free_ char *ports_s = json_dump_str(ports, false);
        int64_t index = json_integer_value(json_object_get(in->lrp, "index"));
        struct strv v = { 0 };
        strv_push(&v, xasprintf("CF_INSTANCE_GUID=%s", in->guid));
        strv_push(&v, xasprintf("CF_INSTANCE_INDEX=%lld", (long long)index));
        strv_push(&v, xasprintf("CF_INSTANCE_IP=%s", a->advertise_ip));
        strv_push(&v, xasprintf("CF_INSTANCE_INTERNAL_IP=%s", ip));
        strv_push(&v, xasprintf("CF_INSTANCE_PORT=%u", in->host_port));
        strv_push(&v, xasprintf("CF_INSTANCE_ADDR=%s:%u", a->advertise_ip, in->host_port));
        strv_push(&v, xasprintf("CF_INSTANCE_PORTS=%s", ports_s));
        strv_push(&v, xasprintf("INSTANCE_GUID=%s", in->guid));
        strv_push(&v, xasprintf("INSTANCE_INDEX=%lld", (long long)index));
        return strv_take(&v);
}

static bool port_taken(struct agent *a, uint16_t port)
{
        for (struct instance *o = a->instances; o; o = o->next)
                if (o->host_port == port)
                        return true;
        return false;
}

/* Pull and create; lock NOT held. Returns 0, or < 0 with the CRASHED reason in *reason. */
static int instance_create(struct agent *a, struct instance *in, char **reason)
{
        const char *image = json_string_value(json_object_get(in->lrp, "image"));
        _cleanup_berr_ struct berr *e = NULL;
        pthread_mutex_lock(&a->ops);
        struct pull_opts po = { .username = in->username, .password = in->password };
        int r = store_pull(a->store, image, &po, NULL, &e);
        pthread_mutex_lock(&a->lock);
        if (in->password) {
                explicit_bzero(in->password, strlen(in->password));
                free(in->password);
                in->password = NULL;
        }
        free(in->username);
        in->username = NULL;
        pthread_mutex_unlock(&a->lock);
        if (r < 0) {
                pthread_mutex_unlock(&a->ops);
                *reason = xasprintf("pull failed: %s", berr_msg(e));
                return r;
        }
        /* Env: the controller's pairs in order, then the cell's CF_INSTANCE_* (after the lease). */
        struct strv env = { 0 };
        size_t i;
        json_t *pr;
        json_array_foreach (json_object_get(in->lrp, "env"), i, pr)
                strv_push(&env, xasprintf("%s=%s", json_string_value(json_array_get(pr, 0)),
                                          json_string_value(json_array_get(pr, 1))));
        _cleanup_(strv_freep) char **envv = strv_take(&env);
        struct strv cmd = { 0 };
        json_t *cj = json_object_get(in->lrp, "command");
        json_array_foreach (cj, i, pr)
                strv_push(&cmd, xstrdup(json_string_value(pr)));
        _cleanup_(strv_freep) char **cmdv = json_is_array(cj) ? strv_take(&cmd) : NULL;
        _cleanup_free_ char *name = xasprintf("i-%s", in->guid);
        struct env_ctx ctx = { .a = a, .in = in };
        char *id = NULL;
        r = -EADDRINUSE;
        for (uint32_t port = a->port_lo; port <= a->port_hi && r == -EADDRINUSE; port++) {
                pthread_mutex_lock(&a->lock);
                bool taken = port_taken(a, (uint16_t)port);
                if (!taken)
                        in->host_port = (uint16_t)port;
                pthread_mutex_unlock(&a->lock);
                if (taken)
                        continue;
                struct cell_port_map pm = { .host_port = (uint16_t)port,
                                            .container_port = inst_port(in, 0),
                                            .host_ip = a->advertise_ip };
                struct cell_create_opts o = {
                        .image = image,
                        .name = name,
                        .process = { .entrypoint = cmdv ? (char *[]){ NULL } : NULL,
                                     .entrypoint_set = cmdv != NULL,
                                     .cmd = cmdv,
                                     .env = envv },
                        .memory_bytes = (uint64_t)json_integer_value(json_object_get(in->lrp, "memory_mb"))
                                        << 20,
                        .disk_bytes = (uint64_t)json_integer_value(json_object_get(in->lrp, "disk_mb")) << 20,
                        .ports = &pm,
                        .n_ports = 1,
                        .network = CELL_NET_BRIDGE,
                        .stop_uncaught_now = true,
                        .env_after_lease = instance_env,
                        .env_after_lease_userdata = &ctx,
                };
                berr_free(e);
                e = NULL;
                r = cell_container_create(a->cell, a->store, &o, &id, &e);
        }
        if (r < 0) {
                pthread_mutex_lock(&a->lock);
                in->host_port = 0;
                pthread_mutex_unlock(&a->lock);
                pthread_mutex_unlock(&a->ops);
                /* Cloud Foundry's launcher says this when an image has neither ENTRYPOINT nor CMD. */
                if (e && strstr(berr_msg(e), "no command specified"))
                        *reason = xstrdup("No start command found or specified");
                else
                        *reason = xasprintf("create failed: %s", e ? berr_msg(e) : "no free host port");
                return r;
        }
        pthread_mutex_lock(&a->lock);
        in->container_id = id;
        instance_save(a, in);
        pthread_mutex_unlock(&a->lock);
        r = cell_container_start(a->cell, id, NULL, &e);
        pthread_mutex_unlock(&a->ops);
        if (r < 0) {
                *reason = xasprintf("start failed: %s", berr_msg(e));
                return r;
        }
        return 0;
}

/* 1: running, 0: exited (*reason, *code set), < 0: gone. Lock NOT held. */
static int container_alive(struct agent *a, const char *id, int *code, char **reason)
{
        _cleanup_json_ json_t *doc = NULL;
        _cleanup_berr_ struct berr *e = NULL;
        if (cell_container_inspect(a->cell, id, &doc, &e) < 0) {
                *code = -1;
                *reason = xstrdup("container gone");
                return -ENOENT;
        }
        json_t *st = json_object_get(doc, "State");
        if (json_is_true(json_object_get(st, "Running")))
                return 1;
        *code = (int)json_integer_value(json_object_get(st, "ExitCode"));
        if (json_is_true(json_object_get(st, "OOMKilled")))
                *reason = xstrdup("out of memory");
        else
                *reason = xasprintf("exited with status %d", *code);
        return 0;
}

/* One round of the configured check on every port. Lock NOT held. */
static bool check_once(struct instance *in, const char *type, const char *ip, unsigned timeout_ms)
{
        _cleanup_berr_ struct berr *e = NULL;
        if (!strcmp(type, "process"))
                return true;
        if (!strcmp(type, "http")) {
                const char *ep = hc_str(in, "endpoint");
                return health_check_http(ip, inst_port(in, 0), ep ? ep : "/", timeout_ms, &e) == 0;
        }
        size_t n = json_array_size(json_object_get(in->lrp, "ports"));
        for (size_t i = 0; i < n; i++) {
                berr_free(e);
                e = NULL;
                if (health_check_port(ip, inst_port(in, i), timeout_ms, &e) < 0)
                        return false;
        }
        return true;
}

static void stop_container(struct agent *a, const char *id)
{
        _cleanup_berr_ struct berr *e = NULL;
        if (cell_container_stop(a->cell, id, STOP_TIMEOUT_S, &e) < 0)
                log_warn("cell agent: stop %s: %s", id, berr_msg(e));
}

static void *worker(void *arg)
{
        struct instance *in = arg;
        struct agent *a = in->agent;
        pthread_mutex_lock(&a->lock);
        bool adopted = in->adopted;
        pthread_mutex_unlock(&a->lock);
        char *reason = NULL;
        int code = -1;
        if (!adopted && instance_create(a, in, &reason) < 0) {
                pthread_mutex_lock(&a->lock);
                set_state(a, in, ST_CRASHED, -1, reason);
                goto out;
        }
        pthread_mutex_lock(&a->lock);
        const char *type = hc_str(in, "type");
        int64_t inv = hc_int(in, "invocation_timeout_s");
        unsigned inv_ms = (unsigned)((inv > 0 ? inv : 1) * 1000);
        int64_t deadline =
            now_ms() - (int64_t)(time(NULL) - in->since) * 1000 + hc_int(in, "timeout_s") * 1000;
        if (!adopted)
                deadline = now_ms() + hc_int(in, "timeout_s") * 1000;
        char ip[16];
        snprintf(ip, sizeof(ip), "%s", in->ip);
        char *id = xstrdup(in->container_id);
        /* Startup checks. */
        while (in->state == ST_STARTING && !in->deleting && !a->stopping) {
                pthread_mutex_unlock(&a->lock);
                int alive = container_alive(a, id, &code, &reason);
                bool ok = alive > 0 && check_once(in, type, ip, inv_ms);
                pthread_mutex_lock(&a->lock);
                if (in->deleting || a->stopping)
                        break;
                if (alive <= 0) {
                        set_state(a, in, ST_CRASHED, code, reason);
                        break;
                }
                if (ok) {
                        set_state(a, in, ST_RUNNING, -1, NULL);
                        break;
                }
                if (now_ms() >= deadline) {
                        pthread_mutex_unlock(&a->lock);
                        stop_container(a, id);
                        pthread_mutex_lock(&a->lock);
                        set_state(a, in, ST_CRASHED, -1, "start timeout");
                        break;
                }
                wait_until(a, now_ms() + CHECK_EVERY_MS);
        }
        /* Liveness. */
        int64_t next = now_ms();
        while (in->state == ST_RUNNING && !in->deleting && !a->stopping) {
                if (now_ms() < next) {
                        wait_until(a, next);
                        continue;
                }
                pthread_mutex_unlock(&a->lock);
                free(reason);
                reason = NULL;
                int alive = container_alive(a, id, &code, &reason);
                bool ok = alive > 0 && check_once(in, type, ip, inv_ms);
                if (alive > 0 && !ok)
                        stop_container(a, id);
                pthread_mutex_lock(&a->lock);
                if (in->deleting || a->stopping)
                        break;
                if (alive <= 0)
                        set_state(a, in, ST_CRASHED, code, reason);
                else if (!ok)
                        set_state(a, in, ST_CRASHED, -1, "health check failed");
                next = now_ms() + LIVENESS_MS;
        }
        free(id);
out:
        free(reason);
        in->done = true;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
        return NULL;
}

/* Lock held. */
static int start_worker(struct agent *a, struct instance *in)
{
        in->agent = a;
        int r = pthread_create(&in->thread, NULL, worker, in);
        if (r != 0) {
                in->done = true;
                return -r;
        }
        in->has_thread = true;
        return 0;
}

/* Stop the worker, stop and remove the container, forget the record. The instance stays in the list
 * (deleting) until this returns; lock NOT held. */
static void instance_destroy(struct agent *a, struct instance *in)
{
        pthread_mutex_lock(&a->lock);
        in->deleting = true;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
        if (in->has_thread)
                pthread_join(in->thread, NULL);
        in->has_thread = false;
        if (in->container_id) {
                _cleanup_berr_ struct berr *e = NULL;
                stop_container(a, in->container_id);
                pthread_mutex_lock(&a->ops);
                if (cell_container_remove(a->cell, a->store, in->container_id, true, &e) < 0)
                        log_warn("cell agent: remove %s: %s", in->container_id, berr_msg(e));
                pthread_mutex_unlock(&a->ops);
        }
        pthread_mutex_lock(&a->lock);
        instance_forget(a, in->guid);
        for (struct instance **p = &a->instances; *p; p = &(*p)->next)
                if (*p == in) {
                        *p = in->next;
                        break;
                }
        pthread_mutex_unlock(&a->lock);
        log_info("cell agent: instance %s removed", in->guid);
        instance_free(in);
}

/* ---- re-adoption ---- */

static void adopt_all(struct agent *a)
{
        DIR *d = opendir(a->state_dir);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n < 6 || strcmp(de->d_name + n - 5, ".json"))
                        continue;
                _cleanup_free_ char *guid = xstrndup(de->d_name, n - 5);
                _cleanup_free_ char *p = xasprintf("%s/%s", a->state_dir, de->d_name);
                _cleanup_free_ char *buf = NULL;
                size_t len = 0;
                _cleanup_json_ json_t *rec = NULL;
                _cleanup_berr_ struct berr *e = NULL;
                if (fs_read_file_at(AT_FDCWD, p, 1 << 20, &buf, &len) < 0 ||
                    json_parse_buf(buf, len, &rec, &e) < 0 ||
                    cell_agent_lrp_validate(json_object_get(rec, "lrp"), guid, &e) < 0) {
                        log_warn("cell agent: ignoring unreadable record %s", p);
                        continue;
                }
                struct instance *in = xcalloc(1, sizeof(*in));
                in->guid = xstrdup(guid);
                in->lrp = json_deep_copy(json_object_get(rec, "lrp"));
                const char *cid = json_string_value(json_object_get(rec, "container_id"));
                in->container_id = cid ? xstrdup(cid) : NULL;
                snprintf(in->ip, sizeof(in->ip), "%s", json_string_value(json_object_get(rec, "ip")) ?: "");
                in->host_port = (uint16_t)json_integer_value(json_object_get(rec, "host_port"));
                in->exit_code = (int)json_integer_value(json_object_get(rec, "exit_code"));
                const char *rs = json_string_value(json_object_get(rec, "reason"));
                in->reason = rs ? xstrdup(rs) : NULL;
                in->since = parse_rfc3339(json_string_value(json_object_get(rec, "since")));
                const char *st = json_string_value(json_object_get(rec, "state"));
                in->state = st && !strcmp(st, "RUNNING")   ? ST_RUNNING
                            : st && !strcmp(st, "CRASHED") ? ST_CRASHED
                                                           : ST_STARTING;
                in->adopted = true;
                in->next = a->instances;
                a->instances = in;
                pthread_mutex_lock(&a->lock);
                if (in->state != ST_CRASHED) {
                        int code = -1;
                        char *reason = NULL;
                        if (!in->container_id) {
                                set_state(a, in, ST_CRASHED, -1,
                                          "agent restarted before the container was created");
                        } else if (container_alive(a, in->container_id, &code, &reason) <= 0) {
                                set_state(a, in, ST_CRASHED, code, reason);
                        } else {
                                log_info("cell agent: re-adopted instance %s (container %.12s, %s)", in->guid,
                                         in->container_id, state_names[in->state]);
                        }
                        free(reason);
                }
                if (in->state != ST_CRASHED)
                        start_worker(a, in);
                else
                        in->done = true;
                pthread_mutex_unlock(&a->lock);
        }
        closedir(d);
}

/* ---- HTTP API ---- */

static void reply_error(struct http_response *resp, int status, const char *msg)
{
        http_response_json(resp, status, json_pack("{s:s}", "error", msg));
}

struct log_stream {
        struct http_response *resp;
};

static int log_line(int stream, const char *time, const char *text, size_t len, void *userdata)
{
        struct log_stream *ls = userdata;
        if (len && text[len - 1] == '\n')
                len--;
        _cleanup_json_ json_t *j = json_pack("{s:s, s:s, s:s%}", "time", time, "stream",
                                             stream == 2 ? "stderr" : "stdout", "text", text, len);
        if (!j) /* not UTF-8 */
                j = json_pack("{s:s, s:s, s:s}", "time", time, "stream", stream == 2 ? "stderr" : "stdout",
                              "text", "(binary output)");
        _cleanup_free_ char *s = json_dump_str(j, false);
        _cleanup_free_ char *line = xasprintf("%s\n", s);
        return http_response_stream_write(ls->resp, line, strlen(line)) < 0 ? -EPIPE : 0;
}

/* "key=value" from a raw query; bounded copy; NULL if absent. */
static bool query_get(const char *q, const char *key, char *out, size_t outlen)
{
        size_t kl = strlen(key);
        for (const char *p = q; p && *p;) {
                const char *amp = strchr(p, '&');
                size_t seg = amp ? (size_t)(amp - p) : strlen(p);
                if (seg > kl && !strncmp(p, key, kl) && p[kl] == '=') {
                        size_t vl = seg - kl - 1;
                        if (vl >= outlen)
                                vl = outlen - 1;
                        memcpy(out, p + kl + 1, vl);
                        out[vl] = '\0';
                        return true;
                }
                p = amp ? amp + 1 : NULL;
        }
        return false;
}

static void handle_logs(struct agent *a, const struct http_request *req, struct http_response *resp,
                        const char *guid)
{
        char buf[32];
        long tail = -1;
        bool follow = false;
        if (query_get(req->query, "tail", buf, sizeof(buf))) {
                char *end;
                errno = 0;
                tail = strtol(buf, &end, 10);
                if (errno || *end || tail < 0)
                        return reply_error(resp, 422, "tail must be an integer >= 0");
        }
        if (query_get(req->query, "follow", buf, sizeof(buf))) {
                if (strcmp(buf, "true") && strcmp(buf, "false"))
                        return reply_error(resp, 422, "follow must be true or false");
                follow = !strcmp(buf, "true");
        }
        pthread_mutex_lock(&a->lock);
        struct instance *in = find_instance(a, guid);
        char *id = in && in->container_id ? xstrdup(in->container_id) : NULL;
        /* An instance that never got a container (create failed): its reason is its only output. */
        char *why = in && !id && in->reason ? xstrdup(in->reason) : NULL;
        time_t since = in ? in->since : 0;
        pthread_mutex_unlock(&a->lock);
        if (!in)
                return reply_error(resp, 404, "instance not found");
        if (http_response_stream_begin(resp, 200, "application/x-ndjson") < 0 || !id) {
                if (why && tail != 0) {
                        char t[32];
                        struct tm tm;
                        gmtime_r(&since, &tm);
                        strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S.000000000Z", &tm);
                        struct log_stream ls = { .resp = resp };
                        log_line(2, t, why, strlen(why), &ls);
                }
                free(why);
                free(id);
                return;
        }
        struct cell_log_opts o = {
                .tail = tail, .follow = follow, .log_fd = -1, .end_fd = -1, .proxy_signal_fd = -1
        };
        struct log_stream ls = { .resp = resp };
        _cleanup_berr_ struct berr *e = NULL;
        cell_container_logs(a->cell, id, &o, log_line, &ls, &e);
        free(id);
}

static void handle_put(struct agent *a, const struct http_request *req, struct http_response *resp,
                       const char *guid)
{
        _cleanup_json_ json_t *body = NULL;
        _cleanup_berr_ struct berr *e = NULL;
        if (json_parse_buf(req->body, req->body_len, &body, &e) < 0)
                return reply_error(resp, 400, "body is not JSON");
        if (cell_agent_lrp_validate(body, guid, &e) < 0)
                return reply_error(resp, 422, berr_msg(e));
        pthread_mutex_lock(&a->lock);
        struct instance *in = find_instance(a, guid);
        if (in) {
                pthread_mutex_unlock(&a->lock);
                return http_response_json(resp, 202, json_pack("{s:s}", "instance_guid", guid));
        }
        if (a->stopping) {
                pthread_mutex_unlock(&a->lock);
                return reply_error(resp, 503, "the cell is shutting down");
        }
        in = xcalloc(1, sizeof(*in));
        in->guid = xstrdup(guid);
        const char *u = json_string_value(json_object_get(body, "username"));
        const char *p = json_string_value(json_object_get(body, "password"));
        in->username = u ? xstrdup(u) : NULL;
        in->password = p ? xstrdup(p) : NULL;
        /* The password must not live on in the request copy we keep. */
        json_object_del(body, "password");
        json_object_del(body, "username");
        json_object_set_new(body, "instance_guid", json_string(guid));
        if (!json_object_get(body, "command"))
                json_object_set_new(body, "command", json_null());
        if (!json_object_get(body, "env"))
                json_object_set_new(body, "env", json_array());
        in->lrp = json_incref(body);
        in->state = ST_STARTING;
        in->since = time(NULL);
        in->exit_code = -1;
        in->next = a->instances;
        a->instances = in;
        instance_save(a, in);
        queue_event(a, in);
        log_info("cell agent: instance %s desired (%s)", guid,
                 json_string_value(json_object_get(body, "image")));
        if (start_worker(a, in) < 0)
                set_state(a, in, ST_CRASHED, -1, "cannot start a worker thread");
        pthread_mutex_unlock(&a->lock);
        http_response_json(resp, 202, json_pack("{s:s}", "instance_guid", guid));
}

static void agent_handler(void *userdata, const struct http_request *req, struct http_response *resp)
{
        struct agent *a = userdata;
        const char *auth = http_request_header(req, "Authorization");
        bool ok = auth && !strncasecmp(auth, "Bearer ", 7) && strlen(auth + 7) == strlen(a->token);
        if (ok) {
                /* constant time over the token's length */
                unsigned char diff = 0;
                for (size_t i = 0; a->token[i]; i++)
                        diff |= (unsigned char)(auth[7 + i] ^ a->token[i]);
                ok = diff == 0;
        }
        if (!ok)
                return reply_error(resp, 401, "missing or wrong internal token");
        const char *path = req->path;
        const char *m = req->method;
        if (!strcmp(path, "/v1/ping"))
                return http_response_json(resp, 200, json_pack("{s:s}", "cell_id", a->id));
        if (!strcmp(path, "/v1/lrps")) {
                if (strcmp(m, "GET"))
                        return reply_error(resp, 405, "method not allowed");
                json_t *list = json_array();
                pthread_mutex_lock(&a->lock);
                for (struct instance *in = a->instances; in; in = in->next)
                        json_array_append_new(list, instance_json(a, in, true));
                pthread_mutex_unlock(&a->lock);
                return http_response_json(resp, 200,
                                          json_pack("{s:s, s:o}", "cell_id", a->id, "instances", list));
        }
        if (strncmp(path, "/v1/lrps/", 9))
                return reply_error(resp, 404, "not found");
        char guid[80];
        const char *rest = path + 9;
        const char *slash = strchr(rest, '/');
        size_t gl = slash ? (size_t)(slash - rest) : strlen(rest);
        if (gl == 0 || gl >= sizeof(guid))
                return reply_error(resp, 404, "not found");
        memcpy(guid, rest, gl);
        guid[gl] = '\0';
        if (slash) {
                if (strcmp(slash, "/logs"))
                        return reply_error(resp, 404, "not found");
                if (strcmp(m, "GET"))
                        return reply_error(resp, 405, "method not allowed");
                return handle_logs(a, req, resp, guid);
        }
        if (!strcmp(m, "PUT"))
                return handle_put(a, req, resp, guid);
        if (!strcmp(m, "GET")) {
                pthread_mutex_lock(&a->lock);
                struct instance *in = find_instance(a, guid);
                json_t *j = in ? instance_json(a, in, true) : NULL;
                pthread_mutex_unlock(&a->lock);
                if (!j)
                        return reply_error(resp, 404, "instance not found");
                return http_response_json(resp, 200, j);
        }
        if (!strcmp(m, "DELETE")) {
                pthread_mutex_lock(&a->lock);
                struct instance *in = find_instance(a, guid);
                bool busy = in && in->deleting;
                if (in)
                        in->deleting = true;
                pthread_mutex_unlock(&a->lock);
                if (!in)
                        return reply_error(resp, 404, "instance not found");
                if (!busy)
                        instance_destroy(a, in);
                return http_response_json(resp, 202, json_pack("{s:s}", "instance_guid", guid));
        }
        return reply_error(resp, 405, "method not allowed");
}

/* ---- reporter ---- */

static void *reporter(void *arg)
{
        struct agent *a = arg;
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        _cleanup_berr_ struct berr *e = NULL;
        struct http_client_opts o = { .timeout_ms = 5000, .connect_timeout_ms = 2000 };
        if (http_client_new(&o, &hc, &e) < 0) {
                log_error("cell agent: http client: %s", berr_msg(e));
                return NULL;
        }
        http_client_set_bearer(hc, a->token);
        _cleanup_free_ char *cell_url = xasprintf("%s/internal/v1/cells/%s", a->controller, a->id);
        _cleanup_free_ char *events_url = xasprintf("%s/events", cell_url);
        int64_t next_hb = now_ms();
        int64_t hb_retry_ms = 100; /* after a failed heartbeat: 100 ms, doubling up to HEARTBEAT_MS */
        bool warned = false;
        pthread_mutex_lock(&a->lock);
        while (!a->stopping) {
                /* Events first, in order; one failure leaves them queued for the next round. */
                bool failed = false;
                while (json_array_size(a->events) && !failed) {
                        json_t *ev = json_incref(json_array_get(a->events, 0));
                        pthread_mutex_unlock(&a->lock);
                        long status = 0;
                        berr_free(e);
                        e = NULL;
                        int r = http_request_json(hc, "POST", events_url, ev, &status, NULL, &e);
                        json_decref(ev);
                        pthread_mutex_lock(&a->lock);
                        if (r < 0 || status >= 500) {
                                failed = true;
                        } else {
                                if (status >= 300)
                                        log_warn("cell agent: controller answered %ld to an event", status);
                                json_array_remove(a->events, 0);
                        }
                }
                if (now_ms() >= next_hb) {
                        json_t *list = json_array();
                        for (struct instance *in = a->instances; in; in = in->next)
                                json_array_append_new(list, instance_json(a, in, true));
                        pthread_mutex_unlock(&a->lock);
                        _cleanup_json_ json_t *hb = json_pack(
                            "{s:s, s:I, s:I, s:o}", "url", a->url, "memory_mb", (json_int_t)a->memory_mb,
                            "disk_mb", (json_int_t)a->disk_mb, "instances", list);
                        long status = 0;
                        berr_free(e);
                        e = NULL;
                        int r = http_request_json(hc, "PUT", cell_url, hb, &status, NULL, &e);
                        bool hb_failed = r < 0 || status >= 300;
                        if (hb_failed) {
                                if (!warned)
                                        log_warn("cell agent: heartbeat to %s failed: %s (retrying)",
                                                 cell_url, r < 0 ? berr_msg(e) : "bad status");
                                warned = true;
                                failed = true;
                        } else if (warned) {
                                log_info("cell agent: controller reachable again");
                                warned = false;
                        }
                        pthread_mutex_lock(&a->lock);
                        /* Register quickly with a controller that is just starting. */
                        next_hb = now_ms() + (hb_failed ? hb_retry_ms : HEARTBEAT_MS);
                        hb_retry_ms = hb_failed
                                          ? (hb_retry_ms * 2 < HEARTBEAT_MS ? hb_retry_ms * 2 : HEARTBEAT_MS)
                                          : 100;
                }
                if (a->stopping)
                        break;
                int64_t wake = next_hb;
                if (failed && json_array_size(a->events))
                        wake = now_ms() + 500 < wake ? now_ms() + 500 : wake;
                if (json_array_size(a->events) && !failed)
                        continue;
                wait_until(a, wake);
        }
        pthread_mutex_unlock(&a->lock);
        return NULL;
}

/* ---- options and configuration ---- */

static int parse_host_ports(const char *s, uint16_t *lo, uint16_t *hi)
{
        unsigned a, b;
        char extra;
        if (sscanf(s, "%u-%u%c", &a, &b, &extra) != 2 || a < 1 || b > 65535 || a > b)
                return -EINVAL;
        *lo = (uint16_t)a;
        *hi = (uint16_t)b;
        return 0;
}

static int config_section(struct agent *a, const json_t *sec, struct berr **err)
{
        if (!sec)
                return 0;
        if (!json_is_object(sec))
                return berr_set(err, -EINVAL, "cell.agent: must be a mapping");
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)sec, k, v) {
                char **dst = !strcmp(k, "listen")         ? &a->listen
                             : !strcmp(k, "url")          ? &a->url
                             : !strcmp(k, "controller")   ? &a->controller
                             : !strcmp(k, "id")           ? &a->id
                             : !strcmp(k, "advertise_ip") ? &a->advertise_ip
                                                          : NULL;
                if (dst) {
                        if (!json_is_string(v) || !json_string_length(v))
                                return berr_set(err, -EINVAL, "cell.agent.%s: must be a non-empty string", k);
                        free(*dst);
                        *dst = xstrdup(json_string_value(v));
                } else if (!strcmp(k, "host_ports")) {
                        if (!json_is_string(v) ||
                            parse_host_ports(json_string_value(v), &a->port_lo, &a->port_hi) < 0)
                                return berr_set(err, -EINVAL,
                                                "cell.agent.host_ports: must be \"LOW-HIGH\" (1-65535)");
                } else if (!strcmp(k, "memory_mb") || !strcmp(k, "disk_mb")) {
                        if (!json_is_integer(v) || json_integer_value(v) < 0)
                                return berr_set(err, -EINVAL, "cell.agent.%s: must be an integer >= 0", k);
                        *(!strcmp(k, "memory_mb") ? &a->memory_mb : &a->disk_mb) = json_integer_value(v);
                } else {
                        return berr_set(err, -EINVAL, "cell.agent: unknown key \"%s\"", k);
                }
        }
        return 0;
}

static const char usage_text[] =
    "usage: berth cell [--listen HOST:PORT] [--url URL] [--controller URL] [--id ID] [--advertise-ip IP]\n"
    "                  [--internal-token-file FILE] [--drain-on-exit]";

static void *signal_thread(void *arg)
{
        struct agent *a = arg;
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        int sig = 0;
        sigwait(&set, &sig);
        log_info("cell agent: %s, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
        pthread_mutex_lock(&a->lock);
        a->stopping = true;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
        http_server_stop(a->server);
        return NULL;
}

static void agent_free(struct agent *a)
{
        while (a->instances) {
                struct instance *in = a->instances;
                a->instances = in->next;
                instance_free(in);
        }
        json_decref(a->events);
        if (a->token) {
                explicit_bzero(a->token, strlen(a->token));
                free(a->token);
        }
        free(a->listen), free(a->url), free(a->controller), free(a->id), free(a->advertise_ip);
        free(a->state_dir);
        if (a->cell)
                cell_close(a->cell);
        if (a->store)
                store_close(a->store);
}

int cell_agent_main(const char *data_dir, const char *config_path, const struct berth_config *cfg, int argc,
                    char **argv, struct berr **err)
{
        struct agent ag = { .lock = PTHREAD_MUTEX_INITIALIZER,
                            .cond = PTHREAD_COND_INITIALIZER,
                            .ops = PTHREAD_MUTEX_INITIALIZER,
                            .port_lo = 61000,
                            .port_hi = 61999 };
        struct agent *a = &ag;
        int rc = 1;
        a->listen = xstrdup("127.0.0.1:9023");
        a->controller = xstrdup("http://127.0.0.1:9022");
        a->id = xstrdup("cell-0");
        a->advertise_ip = xstrdup("127.0.0.1");
        a->events = json_array();
        _cleanup_free_ char *token_file = cfg->internal_token_file ? xstrdup(cfg->internal_token_file)
                                                                   : xasprintf("%s/internal-token", data_dir);
        bool drain = false;
        if (config_section(a, cfg->cell_agent, err) < 0)
                goto out;
        enum {
                OPT_LISTEN = 256,
                OPT_URL,
                OPT_CONTROLLER,
                OPT_ID,
                OPT_ADVERTISE,
                OPT_TOKEN,
                OPT_DRAIN,
                OPT_HELP
        };
        static const struct option opts[] = {
                { "listen", required_argument, NULL, OPT_LISTEN },
                { "url", required_argument, NULL, OPT_URL },
                { "controller", required_argument, NULL, OPT_CONTROLLER },
                { "id", required_argument, NULL, OPT_ID },
                { "advertise-ip", required_argument, NULL, OPT_ADVERTISE },
                { "internal-token-file", required_argument, NULL, OPT_TOKEN },
                { "drain-on-exit", no_argument, NULL, OPT_DRAIN },
                { "help", no_argument, NULL, OPT_HELP },
                { 0 },
        };
        optind = 1;
        opterr = 0;
        int ch;
        while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
                char **dst = NULL;
                switch (ch) {
                case OPT_LISTEN:
                        dst = &a->listen;
                        break;
                case OPT_URL:
                        dst = &a->url;
                        break;
                case OPT_CONTROLLER:
                        dst = &a->controller;
                        break;
                case OPT_ID:
                        dst = &a->id;
                        break;
                case OPT_ADVERTISE:
                        dst = &a->advertise_ip;
                        break;
                case OPT_TOKEN:
                        free(token_file);
                        token_file = xstrdup(optarg);
                        break;
                case OPT_DRAIN:
                        drain = true;
                        break;
                case OPT_HELP:
                case 'h':
                        berr_set(err, -EINVAL, "%s", usage_text);
                        goto out;
                default:
                        berr_set(err, -EINVAL, "cell: unknown option %s\n%s", argv[optind - 1], usage_text);
                        goto out;
                }
                if (dst) {
                        if (!optarg[0]) {
                                berr_set(err, -EINVAL, "cell: empty value for %s", argv[optind - 1]);
                                goto out;
                        }
                        free(*dst);
                        *dst = xstrdup(optarg);
                }
        }
        if (optind < argc) {
                berr_set(err, -EINVAL, "cell: unexpected argument %s\n%s", argv[optind], usage_text);
                goto out;
        }
        if (!a->id[0] || !is_guidish(a->id)) {
                berr_set(err, -EINVAL, "cell: invalid cell id \"%s\"", a->id);
                goto out;
        }
        {
                struct in_addr ia;
                if (inet_pton(AF_INET, a->advertise_ip, &ia) != 1) {
                        berr_set(err, -EINVAL, "cell: advertise_ip must be an IPv4 address, not \"%s\"",
                                 a->advertise_ip);
                        goto out;
                }
        }
        {
                char *buf = NULL;
                size_t len = 0;
                int r = fs_read_file_at(AT_FDCWD, token_file, 4096, &buf, &len);
                if (r < 0) {
                        berr_set(
                            err, r,
                            "cannot read the internal token file %s: %s (berth up or the controller creates "
                            "it; or pass --internal-token-file)",
                            token_file, strerror(-r));
                        goto out;
                }
                while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
                        buf[--len] = '\0';
                if (!len || strlen(buf) != len) {
                        free(buf);
                        berr_set(err, -EINVAL, "the internal token file %s is empty", token_file);
                        goto out;
                }
                a->token = buf;
        }
        if (!a->url)
                a->url = xasprintf("http://%s", a->listen);
        if (a->memory_mb == 0) {
                long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
                a->memory_mb = pages > 0 && psz > 0 ? (int64_t)pages * psz / (1024 * 1024) : 0;
        }
        if (a->disk_mb == 0) {
                struct statvfs sv;
                if (statvfs(data_dir, &sv) == 0)
                        a->disk_mb = (int64_t)((uint64_t)sv.f_blocks * sv.f_frsize / (1024 * 1024));
        }
        a->state_dir = xasprintf("%s/cell/agent", data_dir);
        if (fs_mkdir_p_at(AT_FDCWD, a->state_dir, 0700) < 0) {
                berr_set_errno(err, -errno, "create %s", a->state_dir);
                goto out;
        }
        if (store_open(data_dir, cfg, &a->store, err) < 0)
                goto out;
        {
                struct cell_config cc = {
                        .data_dir = data_dir,
                        .runtime = cfg->cell_runtime,
                        .config_path = config_path,
                        .log_max_bytes = cfg->cell_log_max_bytes,
                        .log_files = (unsigned)cfg->cell_log_files,
                        .disk_pool_bytes = cfg->cell_disk_pool_bytes,
                        .net = { .bridge = cfg->cell_bridge,
                                 .nft_table = cfg->cell_nft_table,
                                 .subnet = cfg->cell_subnet,
                                 .ipv6 = cfg->cell_ipv6,
                                 .allow_host_ports = cfg->cell_allow_host_ports,
                                 .n_allow_host_ports = cfg->n_cell_allow_host_ports },
                };
                if (cell_open(&cc, &a->cell, err) < 0)
                        goto out;
        }
        cell_sweep(a->cell, a->store);
        /* Signals go to the signal thread only (every thread created after this inherits the mask). */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);
        struct http_server_opts so = { .listen = a->listen, .handler = agent_handler, .userdata = a };
        if (http_server_new(&so, &a->server, err) < 0)
                goto out;
        adopt_all(a);
        pthread_t sig_t, rep_t;
        pthread_create(&sig_t, NULL, signal_thread, a);
        pthread_detach(sig_t);
        pthread_create(&rep_t, NULL, reporter, a);
        log_info("cell agent %s: listening on %s (port %d), controller %s, host ports %u-%u", a->id,
                 a->listen, http_server_port(a->server), a->controller, a->port_lo, a->port_hi);
        int r = http_server_run(a->server, err);
        pthread_mutex_lock(&a->lock);
        a->stopping = true;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
        pthread_join(rep_t, NULL);
        /* Workers end at once (stopping); then drain if asked. */
        for (struct instance *in = a->instances; in; in = in->next)
                if (in->has_thread) {
                        pthread_join(in->thread, NULL);
                        in->has_thread = false;
                }
        if (drain) {
                log_info("cell agent: draining %s", "all instances");
                while (a->instances) {
                        struct instance *in = a->instances;
                        if (in->container_id) {
                                _cleanup_berr_ struct berr *e = NULL;
                                stop_container(a, in->container_id);
                                if (cell_container_remove(a->cell, a->store, in->container_id, true, &e) < 0)
                                        log_warn("cell agent: remove %s: %s", in->container_id, berr_msg(e));
                        }
                        instance_forget(a, in->guid);
                        a->instances = in->next;
                        instance_free(in);
                }
        }
        http_server_free(a->server);
        a->server = NULL;
        rc = r < 0 ? 1 : 0;
out:
        agent_free(a);
        return rc;
}
