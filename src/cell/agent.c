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
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
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

#define HEARTBEAT_MS       2000
#define FULL_REPORT_MS     10000 /* a heartbeat lists every instance this often; the others only changes */
#define CHECK_EVERY_MS     100
#define CHECK_FIRST_MS     5    /* startup checks start this often, doubling up to CHECK_EARLY_MS */
#define CHECK_EARLY_MS     20   /* for the first CHECK_EARLY_FOR_MS (most apps listen by then), then ... */
#define CHECK_EARLY_FOR_MS 1000 /* ... every CHECK_EVERY_MS */
#define LIVENESS_MS        3000 /* Diego: 30 s by default; the issue asks for every few seconds */
#define READY_MS           3000 /* readiness checks of a ready instance (health_check-like readiness_check) */
#define UNREADY_MS         1000 /* and of one that is not ready (Diego's until-ready interval) */
#define STOP_TIMEOUT_S     10
#define MAX_EVENTS_QUEUE   4096
#define CPU_SAMPLE_MS      500           /* a CPU fraction needs two samples at least this far apart */
#define DISK_FULL_MARGIN   (1024 * 1024) /* a disk this close to its quota is full */

/*
 * Log retention (docs/PLATFORM.md "Internal API: cell agent"). A live or CRASHED instance: its container's
 * log (cell.log_max_bytes x cell.log_files) and its CELL lines (<= CELL_LOG_MAX bytes). A DELETEd instance:
 * its last HISTORY_LINES lines (at most HISTORY_BYTES), kept HISTORY_MAX_AGE_S for the next instances of the
 * same process index, at most HISTORY_KEEP per index. One answer holds at most LOG_TAIL_MAX lines.
 */
#define CELL_LOG_MAX      (64 * 1024)
#define HISTORY_LINES     1000
#define HISTORY_BYTES     (1024 * 1024)
#define HISTORY_KEEP      3
#define HISTORY_MAX_AGE_S 3600
#define HISTORY_READ_MAX  (2 * HISTORY_BYTES)
#define LOG_TAIL_MAX      10000

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
        bool ready;   /* its readiness check passes (always, without one): routable while RUNNING */
        bool deleting;
        int wake_fd; /* eventfd: wakes the worker out of its wait for the container's end */
        int64_t cpu_prev_ns, cpu_prev_ms; /* the last CPU sample (cpuacct ns, monotonic ms) */
        double cpu;                       /* CPU fraction (1.0: one core) between the last two samples */
        bool done;                        /* the worker returned */
        bool has_thread;                  /* thread is joinable */
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
        char *logs_dir; /* <data-dir>/cell/agent-logs: CELL lines, logs of deleted instances */
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

/* The readiness check's type, NULL without one ("process" is none: always ready). */
static const char *rc_type(const struct instance *in)
{
        const char *t =
            json_string_value(json_object_get(json_object_get(in->lrp, "readiness_check"), "type"));
        return t && strcmp(t, "process") != 0 ? t : NULL;
}

static int64_t rc_int(const struct instance *in, const char *key, int64_t dflt)
{
        json_t *v = json_object_get(json_object_get(in->lrp, "readiness_check"), key);
        return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : dflt;
}

static uint16_t inst_port(const struct instance *in, size_t i)
{
        return (uint16_t)json_integer_value(json_array_get(json_object_get(in->lrp, "ports"), i));
}

static int64_t inst_index(const struct instance *in)
{
        return json_integer_value(json_object_get(in->lrp, "index"));
}

static void wake(struct instance *in)
{
        uint64_t one = 1;
        if (in->wake_fd >= 0 && write(in->wake_fd, &one, sizeof(one)) < 0)
                log_debug("cell agent: wake %s: %s", in->guid, strerror(errno));
}

/* Wake every worker and the reporter; lock held. */
static void wake_all(struct agent *a)
{
        pthread_cond_broadcast(&a->cond);
        for (struct instance *in = a->instances; in; in = in->next)
                wake(in);
}

/* A log timestamp as the monitor writes container.log's (RFC 3339 UTC, nanoseconds): both sort as strings. */
static void log_time(char buf[48])
{
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t l = strftime(buf, 48, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + l, 48 - l, ".%09ldZ", ts.tv_nsec);
}

/*
 * Append one line of the cell's own about an instance (Diego's executor lines, shown as CELL/<index>) to
 * <logs_dir>/<guid>.cell as "TIME TEXT\n". Bounded by CELL_LOG_MAX; needs no lock.
 */
static void __attribute__((format(printf, 3, 4)))
cell_line(struct agent *a, const char *guid, const char *fmt, ...)
{
        char text[1024], t[48];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        for (char *p = text; *p; p++)
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
        log_time(t);
        _cleanup_free_ char *path = xasprintf("%s/%s.cell", a->logs_dir, guid);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || st.st_size > CELL_LOG_MAX)
                return;
        _cleanup_free_ char *line = xasprintf("%s %s\n", t, text);
        if (write(fd, line, strlen(line)) < 0)
                log_debug("cell agent: %s: %s", path, strerror(errno));
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
        static const char *const keys[] = { "instance_guid", "process_guid", "app_guid",       "app_name",
                                            "index",         "image",        "username",       "password",
                                            "command",       "env",          "ports",          "memory_mb",
                                            "disk_mb",       "health_check", "readiness_check" };
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
                    strcmp(k, "invocation_timeout_s") && strcmp(k, "interval_s"))
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
        v = json_object_get(hc, "interval_s");
        if (v && !json_is_null(v) &&
            (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 600))
                return fail_field(err, "health_check.interval_s", "must be an integer 1-600");
        json_t *rc = json_object_get(b, "readiness_check");
        if (!rc || json_is_null(rc))
                return 0;
        if (!json_is_object(rc))
                return fail_field(err, "readiness_check", "must be an object");
        json_object_foreach (rc, k, v) {
                if (strcmp(k, "type") && strcmp(k, "endpoint") && strcmp(k, "interval_s") &&
                    strcmp(k, "invocation_timeout_s"))
                        return berr_set(err, -EINVAL, "readiness_check.%s is not a known field", k);
        }
        type = json_string_value(json_object_get(rc, "type"));
        if (!type || (strcmp(type, "port") && strcmp(type, "http") && strcmp(type, "process")))
                return fail_field(err, "readiness_check.type", "must be port, http or process");
        v = json_object_get(rc, "endpoint");
        if (v && !json_is_null(v) &&
            (!json_is_string(v) || json_string_value(v)[0] != '/' || strpbrk(json_string_value(v), " \r\n") ||
             json_string_length(v) > 1024))
                return fail_field(err, "readiness_check.endpoint", "must be a path starting with /");
        v = json_object_get(rc, "interval_s");
        if (v && !json_is_null(v) &&
            (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 600))
                return fail_field(err, "readiness_check.interval_s", "must be an integer 1-600");
        v = json_object_get(rc, "invocation_timeout_s");
        if (v && !json_is_null(v) &&
            (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 60))
                return fail_field(err, "readiness_check.invocation_timeout_s", "must be an integer 1-60");
        return 0;
}

/* ---- instance JSON and persistence ---- */

/*
 * Record a cpuacct reading; lock held. The fraction is the CPU time used between two readings at least
 * CPU_SAMPLE_MS apart over the wall time between them (the heartbeats read every instance every 2 s), as
 * Cloud Foundry's stats report it (1.0: one core busy).
 */
static void cpu_sample(struct instance *in, int64_t ns)
{
        int64_t t = now_ms();
        if (in->cpu_prev_ms && t - in->cpu_prev_ms < CPU_SAMPLE_MS)
                return;
        if (in->cpu_prev_ms && ns >= in->cpu_prev_ns)
                in->cpu = (double)(ns - in->cpu_prev_ns) / 1e6 / (double)(t - in->cpu_prev_ms);
        in->cpu_prev_ns = ns;
        in->cpu_prev_ms = t;
}

/*
 * The container's inspect "Usage" (new reference), or NULL. Slow (reading the qgroup syncs the disk pool):
 * lock NOT held.
 */
static json_t *container_usage(struct agent *a, const char *cid)
{
        json_t *doc = NULL;
        if (!cid || cell_container_inspect(a->cell, cid, &doc, NULL) < 0)
                return NULL;
        json_t *u = json_incref(json_object_get(doc, "Usage"));
        json_decref(doc);
        return u;
}

/* The INSTANCE document; lock held. cu: its container's usage, read just before (NULL: zeros). */
static json_t *instance_json(struct agent *a, struct instance *in, const json_t *cu)
{
        char since[32];
        rfc3339(in->since, since);
        json_t *u = json_pack("{s:I, s:I, s:I, s:I, s:I}", "cpu_ns", (json_int_t)0, "mem_bytes",
                              (json_int_t)0, "disk_bytes", (json_int_t)0, "mem_quota",
                              (json_int_t)(json_integer_value(json_object_get(in->lrp, "memory_mb")) << 20),
                              "disk_quota",
                              (json_int_t)(json_integer_value(json_object_get(in->lrp, "disk_mb")) << 20));
        if (cu && in->state != ST_CRASHED) {
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
                json_t *ns = json_object_get(cu, "cpu_ns");
                if (json_is_integer(ns))
                        cpu_sample(in, json_integer_value(ns));
        }
        json_object_set_new(u, "cpu", json_real(in->state == ST_CRASHED ? 0.0 : in->cpu));
        return json_pack("{s:s, s:O, s:O, s:O, s:s, s:s, s:s?, s:i, s:s, s:i, s:s?, s:o, s:s?, s:o, s:b}",
                         "instance_guid", in->guid, "process_guid", json_object_get(in->lrp, "process_guid"),
                         "app_guid", json_object_get(in->lrp, "app_guid"), "index",
                         json_object_get(in->lrp, "index"), "state", state_names[in->state], "since", since,
                         "host", in->ip[0] ? in->ip : NULL, "port", (int)inst_port(in, 0), "external_ip",
                         a->advertise_ip, "external_port", (int)in->host_port, "container_id",
                         in->container_id, "exit_code",
                         in->exit_code >= 0 ? json_integer(in->exit_code) : json_null(), "reason", in->reason,
                         "usage", u, "routable", in->state == ST_RUNNING && in->ready);
}

/*
 * INSTANCE documents of every instance, with usage. Lock held on entry and on return, released while the
 * containers are read, so that a state change (a crash to report) never waits for them; an instance
 * deleted meanwhile is left out, one added meanwhile has no usage yet.
 */
static json_t *instances_json(struct agent *a)
{
        json_t *todo = json_array();
        for (struct instance *in = a->instances; in; in = in->next)
                if (in->container_id && in->state != ST_CRASHED)
                        json_array_append_new(todo, json_pack("[s, s]", in->guid, in->container_id));
        pthread_mutex_unlock(&a->lock);
        json_t *usages = json_object();
        size_t i;
        json_t *t;
        json_array_foreach (todo, i, t) {
                json_t *u = container_usage(a, json_string_value(json_array_get(t, 1)));
                if (u)
                        json_object_set_new(usages, json_string_value(json_array_get(t, 0)), u);
        }
        json_decref(todo);
        pthread_mutex_lock(&a->lock);
        json_t *list = json_array();
        for (struct instance *in = a->instances; in; in = in->next)
                json_array_append_new(list, instance_json(a, in, json_object_get(usages, in->guid)));
        json_decref(usages);
        return list;
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
        json_object_set_new(rec, "ready", json_boolean(in->ready));
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
        json_array_append_new(a->events, json_pack("{s:o}", "instance", instance_json(a, in, NULL)));
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
        if (in->wake_fd >= 0)
                close(in->wake_fd);
        free(in);
}

/* A new instance record (caller links it in); its wake fd is -1 if eventfd fails (the worker then polls). */
static struct instance *instance_new(const char *guid)
{
        struct instance *in = xcalloc(1, sizeof(*in));
        in->guid = xstrdup(guid);
        in->exit_code = -1;
        in->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        return in;
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

/*
 * Why a container ended, from its inspect document: "out of memory" (the memory cgroup's OOM killer acted,
 * even on another process than the init), "killed by signal N (SIGNAME)" for an init killed by a signal,
 * "disk quota exceeded" for a failure with its disk full to the quota (a write failed with EDQUOT: the
 * qgroup's usage stops within a few blocks of the limit), else "exited with status N". Caller frees.
 */
BERTH_STATIC char *agent_exit_reason(const json_t *doc, int code)
{
        const json_t *st = json_object_get(doc, "State");
        int sig = (int)json_integer_value(json_object_get(st, "Signal"));
        int64_t quota = json_integer_value(json_object_get(json_object_get(doc, "HostConfig"), "DiskQuota"));
        int64_t used = json_integer_value(json_object_get(json_object_get(doc, "Usage"), "disk_bytes"));
        if (json_is_true(json_object_get(st, "OOMKilled")))
                return xstrdup("out of memory");
        if (sig > 0) {
                const char *name = sigabbrev_np(sig);
                return name ? xasprintf("killed by signal %d (SIG%s)", sig, name)
                            : xasprintf("killed by signal %d", sig);
        }
        if (code < 0)
                return xstrdup("exited with an unknown status (its monitor died)");
        if (code > 0 && quota > 0 && used >= quota - MIN(quota / 16, DISK_FULL_MARGIN))
                return xstrdup("disk quota exceeded");
        return xasprintf("exited with status %d", code);
}

/*
 * 1: running, 0: exited (*reason, *code set), < 0: gone. *monitor_pid (optional): the live monitor's pid
 * (0 if unsupervised). Lock NOT held.
 */
static int container_alive(struct agent *a, const char *id, int *code, char **reason, int *monitor_pid)
{
        _cleanup_json_ json_t *doc = NULL;
        _cleanup_berr_ struct berr *e = NULL;
        /* The cheap look first (checks run every 100 ms while starting); inspect (usage) only at the end. */
        if (cell_container_running(a->cell, id, monitor_pid, NULL) > 0)
                return 1;
        if (monitor_pid)
                *monitor_pid = 0;
        if (cell_container_inspect(a->cell, id, &doc, &e) < 0) {
                *code = -1;
                *reason = xstrdup("container gone");
                return -ENOENT;
        }
        json_t *st = json_object_get(doc, "State");
        if (json_is_true(json_object_get(st, "Running"))) {
                if (monitor_pid)
                        *monitor_pid = (int)json_integer_value(json_object_get(st, "MonitorPid"));
                return 1;
        }
        *code = (int)json_integer_value(json_object_get(st, "ExitCode"));
        *reason = agent_exit_reason(doc, *code);
        return 0;
}

/* The "Exit status" CELL line for an ended container (Diego's executor appends the OOM note). */
static void exit_line(struct agent *a, const char *guid, int code, const char *reason)
{
        if (code < 0)
                cell_line(a, guid, "Exit status unknown: %s", reason ? reason : "container gone");
        else if (reason && strncmp(reason, "exited with status", 18))
                cell_line(a, guid, "Exit status %d (%s)", code, reason);
        else
                cell_line(a, guid, "Exit status %d", code);
}

/*
 * One round of the configured check: port = a TCP connect to every port of the LRP, http = GET the endpoint
 * on ports[0] answering 200 and a TCP connect to the other ports (Diego's checks: http for the first port
 * only), process = nothing. *why (optional, caller frees): the failure. Lock NOT held.
 */
static bool check_once(struct instance *in, const char *type, const char *ep, const char *ip,
                       unsigned timeout_ms, char **why)
{
        _cleanup_berr_ struct berr *e = NULL;
        int r = 0;
        if (!strcmp(type, "process"))
                return true;
        size_t first = 0, n = json_array_size(json_object_get(in->lrp, "ports"));
        if (!strcmp(type, "http")) {
                r = health_check_http(ip, inst_port(in, 0), ep ? ep : "/", timeout_ms, &e);
                first = 1;
        }
        for (size_t i = first; i < n && r == 0; i++) {
                berr_free(e);
                e = NULL;
                r = health_check_port(ip, inst_port(in, i), timeout_ms, &e);
        }
        if (r < 0 && why)
                *why = xstrdup(berr_msg(e));
        return r == 0;
}

static void stop_container(struct agent *a, const char *id)
{
        _cleanup_berr_ struct berr *e = NULL;
        if (cell_container_stop(a->cell, id, STOP_TIMEOUT_S, &e) < 0)
                log_warn("cell agent: stop %s: %s", id, berr_msg(e));
}

static int pidfd_open_(int pid)
{
        return pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
}

/*
 * Wait up to timeout_ms for the container's monitor to exit (pidfd, -1: none) or a wake-up (the instance's
 * wake fd). True if the monitor ended. Lock NOT held.
 */
static bool wait_monitor(struct instance *in, int pidfd, int64_t timeout_ms)
{
        struct pollfd p[2] = { { .fd = in->wake_fd, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };
        if (in->wake_fd < 0 && timeout_ms > CHECK_EVERY_MS)
                timeout_ms = CHECK_EVERY_MS; /* nothing can wake it: look at the flags often */
        int n = poll(p, 2, (int)timeout_ms);
        uint64_t v;
        if (n > 0 && (p[0].revents & POLLIN) && read(in->wake_fd, &v, sizeof(v)) < 0)
                log_debug("cell agent: wake fd of %s: %s", in->guid, strerror(errno));
        return n > 0 && pidfd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR));
}

/*
 * One readiness check of a RUNNING instance (lock NOT held); on a change, the CELL line and the event that
 * takes it out of (or back into) the routes (lock taken).
 */
static void readiness_round(struct agent *a, struct instance *in, const char *type, const char *ip)
{
        unsigned ms = (unsigned)rc_int(in, "invocation_timeout_s", 1) * 1000;
        _cleanup_free_ char *why = NULL;
        bool ok = check_once(
            in, type,
            json_string_value(json_object_get(json_object_get(in->lrp, "readiness_check"), "endpoint")), ip,
            ms, &why);
        pthread_mutex_lock(&a->lock);
        if (ok != in->ready && in->state != ST_CRASHED && !in->deleting && !a->stopping) {
                in->ready = ok;
                if (ok)
                        cell_line(a, in->guid,
                                  "Container passed the readiness health check. Container "
                                  "marked ready and added to route pool.");
                else
                        cell_line(a, in->guid,
                                  "Container failed the readiness health check (%s). Container "
                                  "marked not ready and removed from route pool.",
                                  why ? why : "check failed");
                log_info("cell agent: instance %s %s", in->guid, ok ? "ready" : "not ready");
                instance_save(a, in);
                if (in->state == ST_RUNNING)
                        queue_event(a, in); /* before RUNNING, the RUNNING event carries it */
        }
        pthread_mutex_unlock(&a->lock);
}

/*
 * An instance's life after its container exists: startup checks every CHECK_EVERY_MS until healthy (RUNNING)
 * or timeout_s after the start (CRASHED "start timeout"); then liveness every interval_s (LIVENESS_MS), and
 * between checks a wait on the monitor's pidfd, so the container's end is reported at once. A crash is
 * reported before the container is stopped, so the controller takes it out of the routes (and restarts it)
 * first. With a readiness check, a RUNNING instance is routable only while it passes (checked every
 * interval_s, READY_MS; every UNREADY_MS while it fails): the first check runs before RUNNING is reported.
 */
static void *worker(void *arg)
{
        struct instance *in = arg;
        struct agent *a = in->agent;
        pthread_mutex_lock(&a->lock);
        bool adopted = in->adopted;
        pthread_mutex_unlock(&a->lock);
        char *reason = NULL;
        int code = -1, mpid = 0, pidfd = -1;
        if (!adopted) {
                cell_line(a, in->guid, "Creating container");
                if (instance_create(a, in, &reason) < 0) {
                        cell_line(a, in->guid, "Failed to create container: %s", reason);
                        pthread_mutex_lock(&a->lock);
                        set_state(a, in, ST_CRASHED, -1, reason);
                        goto out;
                }
                cell_line(a, in->guid, "Successfully created container");
        }
        pthread_mutex_lock(&a->lock);
        const char *type = hc_str(in, "type");
        int64_t inv = hc_int(in, "invocation_timeout_s");
        unsigned inv_ms = (unsigned)((inv > 0 ? inv : 1) * 1000);
        int64_t timeout_s = hc_int(in, "timeout_s");
        /* The start timeout counts from the start of the container: after the pull (Diego: after creation).
         */
        int64_t deadline = now_ms() - (int64_t)(time(NULL) - in->since) * 1000 + timeout_s * 1000;
        if (!adopted)
                deadline = now_ms() + timeout_s * 1000;
        char ip[16];
        snprintf(ip, sizeof(ip), "%s", in->ip);
        char *id = xstrdup(in->container_id);
        const char *rtype = rc_type(in);
        int64_t live_every = hc_int(in, "interval_s") > 0 ? hc_int(in, "interval_s") * 1000 : LIVENESS_MS;
        int64_t ready_every = rc_int(in, "interval_s", READY_MS / 1000) * 1000;
        if (!adopted)
                in->ready = rtype == NULL;
        if (!adopted)
                cell_line(a, in->guid, "Starting health monitoring of container");
        /* Startup checks: an app usually listens within milliseconds, so look early, then every 100 ms. */
        int64_t every = CHECK_FIRST_MS, checks_from = now_ms();
        while (in->state == ST_STARTING && !in->deleting && !a->stopping) {
                pthread_mutex_unlock(&a->lock);
                free(reason);
                reason = NULL;
                int alive = container_alive(a, id, &code, &reason, NULL);
                bool ok = alive > 0 && check_once(in, type, hc_str(in, "endpoint"), ip, inv_ms, NULL);
                if (ok && rtype && !adopted)
                        readiness_round(a, in, rtype, ip); /* before RUNNING: routable at once if ready */
                pthread_mutex_lock(&a->lock);
                if (in->deleting || a->stopping)
                        break;
                if (alive <= 0) {
                        exit_line(a, in->guid, code, reason);
                        set_state(a, in, ST_CRASHED, code, reason);
                        break;
                }
                if (ok) {
                        cell_line(a, in->guid, "Container became healthy");
                        set_state(a, in, ST_RUNNING, -1, NULL);
                        break;
                }
                if (now_ms() >= deadline) {
                        cell_line(a, in->guid, "Failed after %llds: startup health check never passed.",
                                  (long long)timeout_s);
                        set_state(a, in, ST_CRASHED, -1, "start timeout");
                        pthread_mutex_unlock(&a->lock);
                        stop_container(a, id);
                        pthread_mutex_lock(&a->lock);
                        break;
                }
                wait_until(a, now_ms() + every);
                /* An app that listens just after a check waits at most CHECK_EARLY_MS in its first second. */
                every = MIN(every * 2,
                            now_ms() - checks_from < CHECK_EARLY_FOR_MS ? CHECK_EARLY_MS : CHECK_EVERY_MS);
        }
        /* Liveness (and readiness). */
        int64_t next = now_ms();
        int64_t next_ready = now_ms() + (in->ready ? ready_every : MIN(ready_every, UNREADY_MS));
        while (in->state == ST_RUNNING && !in->deleting && !a->stopping) {
                bool ended = false;
                int64_t left = MIN(next, rtype ? next_ready : next) - now_ms();
                if (left > 0) {
                        pthread_mutex_unlock(&a->lock);
                        ended = wait_monitor(in, pidfd, left);
                        pthread_mutex_lock(&a->lock);
                        if (in->deleting || a->stopping)
                                break;
                        if (!ended && now_ms() < MIN(next, rtype ? next_ready : next))
                                continue; /* woken for nothing */
                }
                if (!ended && now_ms() < next) {
                        /* Readiness only: a failing check takes the instance out of the routes, no crash. */
                        pthread_mutex_unlock(&a->lock);
                        readiness_round(a, in, rtype, ip);
                        pthread_mutex_lock(&a->lock);
                        next_ready = now_ms() + (in->ready ? ready_every : MIN(ready_every, UNREADY_MS));
                        continue;
                }
                if (ended) {
                        close(pidfd);
                        pidfd = -1;
                }
                pthread_mutex_unlock(&a->lock);
                free(reason);
                reason = NULL;
                _cleanup_free_ char *why = NULL;
                int alive = container_alive(a, id, &code, &reason, &mpid);
                /* A monitor that died leaving its container running: liveness checks go on. */
                bool ok =
                    alive > 0 && (ended || check_once(in, type, hc_str(in, "endpoint"), ip, inv_ms, &why));
                pthread_mutex_lock(&a->lock);
                if (in->deleting || a->stopping)
                        break;
                if (alive <= 0) {
                        exit_line(a, in->guid, code, reason);
                        set_state(a, in, ST_CRASHED, code, reason);
                        break;
                }
                if (!ok) {
                        cell_line(a, in->guid, "Container became unhealthy: %s", why ? why : "check failed");
                        set_state(a, in, ST_CRASHED, -1, "health check failed");
                        pthread_mutex_unlock(&a->lock);
                        stop_container(a, id);
                        pthread_mutex_lock(&a->lock);
                        break;
                }
                if (pidfd < 0 && mpid > 0 && !ended)
                        pidfd = pidfd_open_(mpid);
                if (!ended)
                        next = now_ms() + live_every;
        }
        free(id);
out:
        if (pidfd >= 0)
                close(pidfd);
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

/* ---- logs: APP/PROC/WEB/<index> and CELL/<index> lines, and those of deleted instances ---- */

struct line_sink {
        json_t *arr;
        const char *source;
};

/* One NDJSON record {"time","source","stream","text"}; text that is not UTF-8 is replaced. */
static json_t *log_rec(const char *time, const char *source, int stream, const char *text, size_t len)
{
        const char *sn = stream == 2 ? "stderr" : "stdout";
        json_t *j = json_pack("{s:s, s:s, s:s, s:s%}", "time", time, "source", source, "stream", sn, "text",
                              text, len);
        return j ? j
                 : json_pack("{s:s, s:s, s:s, s:s}", "time", time, "source", source, "stream", sn, "text",
                             "(binary output)");
}

static int sink_line(int stream, const char *time, const char *text, size_t len, void *userdata)
{
        struct line_sink *ls = userdata;
        if (len && text[len - 1] == '\n')
                len--;
        json_array_append_new(ls->arr, log_rec(time, ls->source, stream, text, len));
        return 0;
}

/* Append the instance's CELL lines (<guid>.cell) to out. */
static void cell_lines(struct agent *a, const char *guid, const char *source, json_t *out)
{
        _cleanup_free_ char *path = xasprintf("%s/%s.cell", a->logs_dir, guid);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        if (fs_read_file_at(AT_FDCWD, path, 2 * CELL_LOG_MAX, &buf, &len) < 0)
                return;
        for (char *p = buf; p < buf + len;) {
                char *nl = memchr(p, '\n', (size_t)(buf + len - p));
                char *end = nl ? nl : buf + len;
                char *sp = memchr(p, ' ', (size_t)(end - p));
                if (sp) {
                        *sp = '\0';
                        json_array_append_new(out, log_rec(p, source, 1, sp + 1, (size_t)(end - sp - 1)));
                }
                p = end + 1;
        }
}

/* <logs_dir>/<process_guid>.<index>: the logs of deleted instances of that index; NULL for odd guids. */
static char *history_dir(struct agent *a, const char *proc, int64_t idx)
{
        return proc && is_guidish(proc) ? xasprintf("%s/%s.%lld", a->logs_dir, proc, (long long)idx) : NULL;
}

static int name_cmp(const void *x, const void *y)
{
        return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The entries of dir but "." and "..", sorted (never NULL; caller frees). */
static char **dir_names(const char *dir)
{
        struct strv v = { 0 };
        DIR *d = opendir(dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d)))
                        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                                strv_push(&v, xstrdup(de->d_name));
                closedir(d);
        }
        size_t n = v.n;
        char **names = strv_take(&v);
        qsort(names, n, sizeof(*names), name_cmp);
        return names;
}

/* Append the NDJSON records of every archive in dir (oldest first) to out. */
static void history_lines(const char *dir, json_t *out)
{
        _cleanup_(strv_freep) char **names = dir_names(dir);
        for (char **n = names; *n; n++) {
                _cleanup_free_ char *path = xasprintf("%s/%s", dir, *n);
                _cleanup_free_ char *buf = NULL;
                size_t len = 0;
                if (fs_read_file_at(AT_FDCWD, path, HISTORY_READ_MAX, &buf, &len) < 0)
                        continue;
                for (char *p = buf; p < buf + len;) {
                        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
                        size_t l = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);
                        json_t *j = json_loadb(p, l, 0, NULL);
                        if (json_is_string(json_object_get(j, "time")))
                                json_array_append_new(out, j);
                        else
                                json_decref(j);
                        p += l + 1;
                }
        }
}

struct rec_ref {
        json_t *j;
        const char *time;
        size_t i;
};

static int rec_cmp(const void *x, const void *y)
{
        const struct rec_ref *a = x, *b = y;
        int c = strcmp(a->time, b->time);
        return c ? c : (a->i > b->i) - (a->i < b->i);
}

/* Sort records by time, keeping the order of equal times (stable); keep the last `tail`. Steals arr. */
BERTH_STATIC json_t *agent_sort_tail(json_t *arr, size_t tail)
{
        size_t n = json_array_size(arr);
        struct rec_ref *v = xcalloc(n ? n : 1, sizeof(*v));
        for (size_t i = 0; i < n; i++) {
                v[i].j = json_array_get(arr, i);
                v[i].time = json_string_value(json_object_get(v[i].j, "time")) ?: "";
                v[i].i = i;
        }
        qsort(v, n, sizeof(*v), rec_cmp);
        json_t *out = json_array();
        for (size_t i = n > tail ? n - tail : 0; i < n; i++)
                json_array_append(out, v[i].j);
        free(v);
        json_decref(arr);
        return out;
}

/*
 * The last `tail` lines of an instance: its CELL lines and its container's output in time order, after
 * those of the deleted instances of its process index (with_history). New reference.
 */
static json_t *instance_lines(struct agent *a, const char *guid, const char *container_id, const char *proc,
                              int64_t idx, size_t tail, bool with_history)
{
        char app_src[48], cell_src[48];
        snprintf(app_src, sizeof(app_src), "APP/PROC/WEB/%lld", (long long)idx);
        snprintf(cell_src, sizeof(cell_src), "CELL/%lld", (long long)idx);
        json_t *arr = json_array();
        _cleanup_free_ char *hdir = with_history ? history_dir(a, proc, idx) : NULL;
        if (hdir)
                history_lines(hdir, arr);
        cell_lines(a, guid, cell_src, arr);
        if (container_id) {
                struct cell_log_opts o = {
                        .tail = (long)tail, .follow = false, .log_fd = -1, .end_fd = -1, .proxy_signal_fd = -1
                };
                struct line_sink ls = { .arr = arr, .source = app_src };
                cell_container_logs(a->cell, container_id, &o, sink_line, &ls, NULL);
        }
        return agent_sort_tail(arr, tail);
}

/*
 * Keep the logs of an instance being deleted for the next instances of its process index: its last
 * HISTORY_LINES lines (at most HISTORY_BYTES) in <history dir>/<ms>-<guid>.ndjson; at most HISTORY_KEEP
 * archives per index. Lock NOT held (the instance is deleting: nobody else changes it).
 */
static void history_archive(struct agent *a, struct instance *in)
{
        const char *proc = json_string_value(json_object_get(in->lrp, "process_guid"));
        _cleanup_free_ char *dir = history_dir(a, proc, inst_index(in));
        if (!dir || fs_mkdir_p_at(AT_FDCWD, dir, 0700) < 0)
                return;
        _cleanup_json_ json_t *lines =
            instance_lines(a, in->guid, in->container_id, proc, inst_index(in), HISTORY_LINES, false);
        /* The newest lines that fit in HISTORY_BYTES. */
        size_t n = json_array_size(lines), first = n, bytes = 0;
        struct strv dumped = { 0 };
        while (first > 0) {
                char *d = json_dumps(json_array_get(lines, first - 1), JSON_COMPACT);
                if (!d || bytes + strlen(d) + 1 > HISTORY_BYTES) {
                        free(d);
                        break;
                }
                bytes += strlen(d) + 1;
                strv_push(&dumped, d);
                first--;
        }
        _cleanup_free_ char *text = xcalloc(1, bytes + 1);
        size_t off = 0;
        for (size_t i = dumped.n; i-- > 0;) {
                size_t l = strlen(dumped.v[i]);
                memcpy(text + off, dumped.v[i], l);
                text[off + l] = '\n';
                off += l + 1;
        }
        strv_clear(&dumped);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        _cleanup_free_ char *name =
            xasprintf("%013lld-%s.ndjson", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, in->guid);
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fs_write_file_replace_at(dfd, name, text, off, 0600) < 0) {
                log_warn("cell agent: cannot keep the logs of %s in %s", in->guid, dir);
                return;
        }
        _cleanup_(strv_freep) char **names = dir_names(dir);
        size_t count = 0;
        while (names[count])
                count++;
        for (size_t i = 0; i + HISTORY_KEEP < count; i++)
                unlinkat(dfd, names[i], 0);
}

/*
 * Drop archives older than HISTORY_MAX_AGE_S (and empty history directories), and CELL logs of instances
 * the agent no longer has. Lock held.
 */
static void history_sweep(struct agent *a)
{
        time_t now = time(NULL);
        _cleanup_(strv_freep) char **names = dir_names(a->logs_dir);
        for (char **n = names; *n; n++) {
                _cleanup_free_ char *path = xasprintf("%s/%s", a->logs_dir, *n);
                size_t l = strlen(*n);
                if (l > 5 && !strcmp(*n + l - 5, ".cell")) {
                        _cleanup_free_ char *guid = xstrndup(*n, l - 5);
                        if (!find_instance(a, guid))
                                unlink(path);
                        continue;
                }
                _cleanup_(strv_freep) char **files = dir_names(path);
                size_t left = 0;
                for (char **f = files; *f; f++) {
                        _cleanup_free_ char *fp = xasprintf("%s/%s", path, *f);
                        struct stat st;
                        if (stat(fp, &st) == 0 && now - st.st_mtime > HISTORY_MAX_AGE_S)
                                unlink(fp);
                        else
                                left++;
                }
                if (!left)
                        rmdir(path);
        }
}

/* Stop the worker, stop and remove the container, forget the record. The instance stays in the list
 * (deleting) until this returns; lock NOT held. */
static void instance_destroy(struct agent *a, struct instance *in)
{
        pthread_mutex_lock(&a->lock);
        in->deleting = true;
        pthread_cond_broadcast(&a->cond);
        wake(in);
        pthread_mutex_unlock(&a->lock);
        if (in->has_thread)
                pthread_join(in->thread, NULL);
        in->has_thread = false;
        cell_line(a, in->guid, "Stopping instance");
        if (in->container_id) {
                stop_container(a, in->container_id);
                cell_line(a, in->guid, "Destroying container");
        }
        /* Its output stays readable for its successors (a restart deletes the crashed instance first). */
        history_archive(a, in);
        if (in->container_id) {
                _cleanup_berr_ struct berr *e = NULL;
                pthread_mutex_lock(&a->ops);
                if (cell_container_remove(a->cell, a->store, in->container_id, true, &e) < 0)
                        log_warn("cell agent: remove %s: %s", in->container_id, berr_msg(e));
                pthread_mutex_unlock(&a->ops);
        }
        pthread_mutex_lock(&a->lock);
        instance_forget(a, in->guid);
        _cleanup_free_ char *cell_log = xasprintf("%s/%s.cell", a->logs_dir, in->guid);
        unlink(cell_log);
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
                struct instance *in = instance_new(guid);
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
                json_t *rdy = json_object_get(rec, "ready");
                in->ready = json_is_boolean(rdy) ? json_is_true(rdy) : rc_type(in) == NULL;
                in->next = a->instances;
                a->instances = in;
                pthread_mutex_lock(&a->lock);
                if (in->state != ST_CRASHED) {
                        int code = -1;
                        char *reason = NULL;
                        if (!in->container_id) {
                                set_state(a, in, ST_CRASHED, -1,
                                          "agent restarted before the container was created");
                        } else if (container_alive(a, in->container_id, &code, &reason, NULL) <= 0) {
                                exit_line(a, in->guid, code, reason);
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
        const char *source;
};

static int write_rec(struct http_response *resp, const json_t *j)
{
        _cleanup_free_ char *s = json_dump_str(j, false);
        _cleanup_free_ char *line = xasprintf("%s\n", s);
        return http_response_stream_write(resp, line, strlen(line)) < 0 ? -EPIPE : 0;
}

static int log_line(int stream, const char *time, const char *text, size_t len, void *userdata)
{
        struct log_stream *ls = userdata;
        if (len && text[len - 1] == '\n')
                len--;
        _cleanup_json_ json_t *j = log_rec(time, ls->source, stream, text, len);
        return write_rec(ls->resp, j);
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
        _cleanup_free_ char *id = in && in->container_id ? xstrdup(in->container_id) : NULL;
        _cleanup_free_ char *proc =
            in ? xstrdup(json_string_value(json_object_get(in->lrp, "process_guid"))) : NULL;
        int64_t idx = in ? inst_index(in) : 0;
        pthread_mutex_unlock(&a->lock);
        if (!in)
                return reply_error(resp, 404, "instance not found");
        size_t n = tail < 0 || tail > LOG_TAIL_MAX ? LOG_TAIL_MAX : (size_t)tail;
        _cleanup_json_ json_t *lines = instance_lines(a, guid, id, proc, idx, n, true);
        if (http_response_stream_begin(resp, 200, "application/x-ndjson") < 0)
                return;
        size_t i;
        json_t *j;
        json_array_foreach (lines, i, j)
                if (write_rec(resp, j) < 0)
                        return;
        if (!follow || !id)
                return;
        /* Then the container's new output until it stops. */
        char src[48];
        snprintf(src, sizeof(src), "APP/PROC/WEB/%lld", (long long)idx);
        struct cell_log_opts o = {
                .tail = 0, .follow = true, .log_fd = -1, .end_fd = -1, .proxy_signal_fd = -1
        };
        struct log_stream ls = { .resp = resp, .source = src };
        _cleanup_berr_ struct berr *e = NULL;
        cell_container_logs(a->cell, id, &o, log_line, &ls, &e);
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
        in = instance_new(guid);
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
                pthread_mutex_lock(&a->lock);
                json_t *list = instances_json(a);
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
                _cleanup_free_ char *cid =
                    in && in->container_id && in->state != ST_CRASHED ? xstrdup(in->container_id) : NULL;
                pthread_mutex_unlock(&a->lock);
                _cleanup_json_ json_t *u = container_usage(a, cid); /* without the lock: slow */
                pthread_mutex_lock(&a->lock);
                in = find_instance(a, guid);
                json_t *j = in ? instance_json(a, in, u) : NULL;
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

/* What the controller keeps of an instance's report (all but usage), as text to compare reports by. */
static char *report_key(const json_t *inst)
{
        _cleanup_json_ json_t *c = json_copy((json_t *)inst);
        json_object_del(c, "usage");
        return json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
}

/*
 * The instances a heartbeat lists (list: every instance, owned; returned: a new array). A full report lists
 * all; another only those whose report changed since the last heartbeat the controller took (sent: guid →
 * report_key of it). *next_sent (owned by the caller): sent as it is once this heartbeat is taken.
 */
static json_t *report_pick(json_t *list, const json_t *sent, bool full, json_t **next_sent)
{
        json_t *out = json_array();
        *next_sent = json_object();
        size_t i;
        json_t *inst;
        json_array_foreach (list, i, inst) {
                const char *g = json_string_value(json_object_get(inst, "instance_guid"));
                char *k = report_key(inst);
                if (!g || !k) {
                        free(k);
                        continue;
                }
                const char *was = json_string_value(json_object_get(sent, g));
                if (full || !was || strcmp(was, k) != 0)
                        json_array_append(out, inst);
                json_object_set_new(*next_sent, g, json_string(k));
                free(k);
        }
        return out;
}

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
        /* This agent process: a new one lists every instance it has (re-adopted ones too), nothing else. */
        char session[48];
        int64_t session_born = now_ms();
        snprintf(session, sizeof(session), "%d-%lld", (int)getpid(), (long long)session_born);
        bool warned = false;
        int64_t next_sweep = now_ms() + 60000;
        /*
         * Heartbeats list only the instances whose report changed since the last one the controller took
         * (events carry every change at once; this repairs any that was lost), and every FULL_REPORT_MS (and
         * whenever the controller asks: it restarted, or it does not know this session) all of them.
         */
        int64_t next_full = 0;
        _cleanup_json_ json_t *sent = json_object();
        pthread_mutex_lock(&a->lock);
        while (!a->stopping) {
                if (now_ms() >= next_sweep) {
                        history_sweep(a);
                        next_sweep = now_ms() + 60000;
                }
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
                        _cleanup_json_ json_t *all = instances_json(a);
                        pthread_mutex_unlock(&a->lock);
                        bool full = now_ms() >= next_full;
                        _cleanup_json_ json_t *next_sent = NULL;
                        json_t *list = report_pick(all, sent, full, &next_sent);
                        _cleanup_json_ json_t *hb =
                            json_pack("{s:s, s:I, s:I, s:o, s:s, s:I, s:b}", "url", a->url, "memory_mb",
                                      (json_int_t)a->memory_mb, "disk_mb", (json_int_t)a->disk_mb,
                                      "instances", list, "session", session, "session_age_ms",
                                      (json_int_t)(now_ms() - session_born), "full", full);
                        long status = 0;
                        berr_free(e);
                        e = NULL;
                        _cleanup_json_ json_t *answer = NULL;
                        int r = http_request_json(hc, "PUT", cell_url, hb, &status, &answer, &e);
                        bool hb_failed = r < 0 || status >= 300;
                        bool want_full =
                            !hb_failed && json_is_true(json_object_get(answer, "full_report_wanted"));
                        if (!hb_failed && !want_full) {
                                json_decref(sent);
                                sent = json_incref(next_sent);
                                if (full)
                                        next_full = now_ms() + FULL_REPORT_MS;
                        }
                        if (want_full)
                                next_full = 0;
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
                        next_hb = now_ms() + (hb_failed ? hb_retry_ms : want_full ? 0 : HEARTBEAT_MS);
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
        wake_all(a);
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
        free(a->logs_dir);
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
        a->logs_dir = xasprintf("%s/cell/agent-logs", data_dir);
        if (fs_mkdir_p_at(AT_FDCWD, a->logs_dir, 0700) < 0) {
                berr_set_errno(err, -errno, "create %s", a->logs_dir);
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
        /* Each instance's worker holds two fds (its wake eventfd, the monitor's pidfd): lift the soft limit.
         */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        log_warn("cell agent: cannot raise the open files limit: %s", strerror(errno));
        }
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
        pthread_mutex_lock(&a->lock);
        history_sweep(a);
        pthread_mutex_unlock(&a->lock);
        pthread_t sig_t, rep_t;
        pthread_create(&sig_t, NULL, signal_thread, a);
        pthread_detach(sig_t);
        pthread_create(&rep_t, NULL, reporter, a);
        log_info("cell agent %s: listening on %s (port %d), controller %s, host ports %u-%u", a->id,
                 a->listen, http_server_port(a->server), a->controller, a->port_lo, a->port_hi);
        int r = http_server_run(a->server, err);
        pthread_mutex_lock(&a->lock);
        a->stopping = true;
        wake_all(a);
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
                history_sweep(a); /* their CELL lines */
        }
        http_server_free(a->server);
        a->server = NULL;
        rc = r < 0 ? 1 : 0;
out:
        agent_free(a);
        return rc;
}
