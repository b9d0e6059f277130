/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Routes and destinations (docs/PLATFORM.md "Routes") and the route table the routers watch
 * ("Internal API: router → controller"): a long poll answered when the table's version passes the
 * router's index.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

#define ROUTE_HOST_MAX  63
#define ROUTE_PATH_MAX  128
#define ROUTES_WAIT_MAX 60

uint64_t routes_changed(struct ctl *c)
{
        pthread_mutex_lock(&c->rt_lock);
        uint64_t v = ++c->rt_version;
        pthread_cond_broadcast(&c->rt_cond);
        pthread_mutex_unlock(&c->rt_lock);
        return v;
}

uint64_t routes_version(struct ctl *c)
{
        pthread_mutex_lock(&c->rt_lock);
        uint64_t v = c->rt_version;
        pthread_mutex_unlock(&c->rt_lock);
        return v;
}

/*
 * The routers, as seen from their long polls. A router is known by its connection's peer address: its
 * watch keeps one keep-alive connection, and a router that reconnects shows up as a new one while the
 * old entry stops being live ROUTES_ROUTER_LIVE_MS after its last poll ended. An entry not live for
 * ROUTES_ROUTER_FORGET_MS is dropped.
 */
#define ROUTES_ROUTER_LIVE_MS   3000
#define ROUTES_ROUTER_FORGET_MS 120000
#define ROUTES_ROUTERS_MAX      1024

struct rt_router {
        char peer[64];
        uint64_t held;   /* the version it says it holds (its last ?index=) */
        int open;        /* polls in progress */
        int64_t last_ms; /* when its last poll ended */
};

static int64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool synced_locked(struct ctl *c, uint64_t version, int64_t now)
{
        for (size_t i = 0; i < c->n_routers; i++) {
                struct rt_router *r = &c->routers[i];
                bool live = r->open > 0 || now - r->last_ms < ROUTES_ROUTER_LIVE_MS;
                if (live && r->held < version)
                        return false;
        }
        return true;
}

bool routes_synced(struct ctl *c, uint64_t version)
{
        pthread_mutex_lock(&c->rt_lock);
        bool ok = synced_locked(c, version, mono_ms());
        pthread_mutex_unlock(&c->rt_lock);
        return ok;
}

bool routes_wait_synced(struct ctl *c, uint64_t version, unsigned timeout_ms)
{
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&c->rt_lock);
        bool ok;
        while (!(ok = synced_locked(c, version, mono_ms())) && !c->stopping)
                if (pthread_cond_timedwait(&c->rt_cond, &c->rt_lock, &deadline) == ETIMEDOUT) {
                        ok = synced_locked(c, version, mono_ms());
                        break;
                }
        pthread_mutex_unlock(&c->rt_lock);
        return ok;
}

void routes_routers_clear(struct ctl *c)
{
        pthread_mutex_lock(&c->rt_lock);
        free(c->routers);
        c->routers = NULL;
        c->n_routers = 0;
        pthread_mutex_unlock(&c->rt_lock);
}

/* A poll from `peer` saying it holds `held` begins (rt_lock held); returns its entry's index. */
static size_t router_poll_begin(struct ctl *c, const char *peer, uint64_t held, int64_t now)
{
        size_t i;
        for (i = 0; i < c->n_routers; i++)
                if (strcmp(c->routers[i].peer, peer) == 0)
                        break;
        if (i == c->n_routers) {
                /* Drop the entries of routers gone long ago (and the oldest one when full). */
                size_t k = 0;
                for (size_t j = 0; j < c->n_routers; j++)
                        if (c->routers[j].open > 0 || now - c->routers[j].last_ms < ROUTES_ROUTER_FORGET_MS)
                                c->routers[k++] = c->routers[j];
                c->n_routers = k;
                if (c->n_routers == ROUTES_ROUTERS_MAX)
                        memmove(c->routers, c->routers + 1, --c->n_routers * sizeof(*c->routers));
                c->routers = xrealloc(c->routers, (c->n_routers + 1) * sizeof(*c->routers));
                i = c->n_routers++;
                c->routers[i] = (struct rt_router){ 0 };
                snprintf(c->routers[i].peer, sizeof(c->routers[i].peer), "%s", peer);
        }
        c->routers[i].held = held;
        c->routers[i].open++;
        c->routers[i].last_ms = now;
        return i;
}

static void router_poll_end(struct ctl *c, const char *peer)
{
        for (size_t i = 0; i < c->n_routers; i++)
                if (strcmp(c->routers[i].peer, peer) == 0) {
                        if (c->routers[i].open > 0)
                                c->routers[i].open--;
                        c->routers[i].last_ms = mono_ms();
                        return;
                }
}

/* A DNS label, or "*" (a wildcard route: every name below its domain without a route of its own). */
static bool host_valid(const char *h)
{
        if (strcmp(h, "*") == 0)
                return true;
        size_t n = strlen(h);
        if (n == 0 || n > ROUTE_HOST_MAX || h[0] == '-' || h[n - 1] == '-')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= '0' && h[i] <= '9') || h[i] == '-'))
                        return false;
        return true;
}

static bool path_valid(const char *p)
{
        size_t n = strlen(p);
        if (n == 0)
                return true;
        if (p[0] != '/' || n == 1 || n > ROUTE_PATH_MAX || p[n - 1] == '/')
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)p[i] <= 0x20 || p[i] == '?' || p[i] == '#' || p[i] == 0x7f)
                        return false;
        return true;
}

/* The port a destination sends to: its own, else the app's (lowest exposed TCP port, else 8080). */
static int app_port(struct ctl *c, const char *app)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL,
                                                   "SELECT d.execution_metadata FROM apps a JOIN droplets d "
                                                   "ON d.guid = a.droplet_guid WHERE a.guid = ?",
                                                   "s", app);
        return env_app_port(s && sqlite3_step(s) == SQLITE_ROW ? db_col_text(s, 0) : NULL);
}

static json_t *destinations_json(struct ctl *c, const char *route)
{
        json_t *out = json_array();
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL,
                                                   "SELECT guid, app_guid, process_type, port FROM "
                                                   "destinations WHERE route_guid = ? ORDER BY created_at,"
                                                   " rowid",
                                                   "s", route);
        while (s && sqlite3_step(s) == SQLITE_ROW) {
                int port = sqlite3_column_type(s, 3) == SQLITE_NULL ? app_port(c, db_col_text(s, 1))
                                                                    : sqlite3_column_int(s, 3);
                json_array_append_new(out, json_pack("{s:s,s:{s:s,s:{s:s}},s:n,s:i,s:s}", "guid",
                                                     db_col_text(s, 0), "app", "guid", db_col_text(s, 1),
                                                     "process", "type", db_col_text(s, 2), "weight", "port",
                                                     port, "protocol", "http1"));
        }
        return out;
}

#define ROUTE_COLUMNS                                                                                     \
        "SELECT r.guid, r.host, r.path, r.domain_guid, r.space_guid, r.created_at, r.updated_at, d.name," \
        " s.org_guid FROM routes r JOIN domains d ON d.guid = r.domain_guid JOIN spaces s ON s.guid = "   \
        "r.space_guid"

static json_t *route_row_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *g = db_col_text(s, 0), *host = db_col_text(s, 1), *path = db_col_text(s, 2);
        _cleanup_free_ char *url = xasprintf("%s%s%s%s", host, *host ? "." : "", db_col_text(s, 7), path);
        return json_pack(
            "{s:s,s:s,s:n,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:{s:{s:{s:s}},s:{s:{s:s}}},s:{s:o,s:o,s:o,s:o}}",
            "guid", g, "protocol", "http", "port", "created_at", db_col_text(s, 5), "updated_at",
            db_col_text(s, 6), "host", host, "path", path, "url", url, "destinations",
            destinations_json(c, g), "metadata", api_metadata(), "relationships", "space", "data", "guid",
            db_col_text(s, 4), "domain", "data", "guid", db_col_text(s, 3), "links", "self",
            api_link(c, "/v3/routes/%s", g), "space", api_link(c, "/v3/spaces/%s", db_col_text(s, 4)),
            "domain", api_link(c, "/v3/domains/%s", db_col_text(s, 3)), "destinations",
            api_link(c, "/v3/routes/%s/destinations", g));
}

static json_t *route_json(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL, ROUTE_COLUMNS " WHERE r.guid = ?", "s", guid);
        return s && sqlite3_step(s) == SQLITE_ROW ? route_row_json(c, s) : NULL;
}

static void routes_list_where(struct api_req *r, struct http_response *resp, const char *app,
                              const char *path)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **hosts = api_query_list(r, "hosts");
        _cleanup_(strv_freep) char **guids = api_query_list(r, "guids");
        _cleanup_(strv_freep) char **spaces = api_query_list(r, "space_guids");
        _cleanup_(strv_freep) char **orgs = api_query_list(r, "organization_guids");
        _cleanup_(strv_freep) char **domains = api_query_list(r, "domain_guids");
        _cleanup_(strv_freep) char **paths = api_query_list(r, "paths");
        _cleanup_(strv_freep) char **apps = api_query_list(r, "app_guids");
        _cleanup_free_ char *vis = authz_space_filter_sql(r, "r.space_guid");
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        if (strcmp(field, "name") == 0)
                field = "host";
        _cleanup_free_ char *sql = xasprintf(
            ROUTE_COLUMNS
            " WHERE 1%s AND (?1 IS NULL OR r.guid IN (SELECT route_guid FROM destinations WHERE app_guid"
            " = ?1)) ORDER BY r.%s %s, r.rowid %s",
            vis, field, desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(r->ctl, &e, sql, "s", app);
        while (s && sqlite3_step(s) == SQLITE_ROW) {
                if (!api_in_list(hosts, db_col_text(s, 1)) || !api_in_list(guids, db_col_text(s, 0)) ||
                    !api_in_list(spaces, db_col_text(s, 4)) || !api_in_list(orgs, db_col_text(s, 8)) ||
                    !api_in_list(domains, db_col_text(s, 3)) || !api_in_list(paths, db_col_text(s, 2)))
                        continue;
                if (apps) {
                        bool any = false;
                        for (size_t i = 0; apps[i] && !any; i++) {
                                _cleanup_stmt_ sqlite3_stmt *d = xdb_query(
                                    r->ctl, NULL,
                                    "SELECT 1 FROM destinations WHERE route_guid = ? AND app_guid = ?", "ss",
                                    db_col_text(s, 0), apps[i]);
                                any = d && sqlite3_step(d) == SQLITE_ROW;
                        }
                        if (!any)
                                continue;
                }
                json_array_append_new(items, route_row_json(r->ctl, s));
        }
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, path, items);
}

static void routes_list(struct api_req *r, struct http_response *resp)
{
        routes_list_where(r, resp, NULL, "/v3/routes");
}

static void app_routes(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        _cleanup_free_ char *path = xasprintf("/v3/apps/%s/routes", r->params[0]);
        routes_list_where(r, resp, r->params[0], path);
}

static bool route_authz(struct api_req *r, struct http_response *resp, const char *guid, enum authz_perm perm,
                        char ret_space[static 37])
{
        db_lock(r->ctl);
        int k = -ENOENT;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(r->ctl, NULL, "SELECT space_guid FROM routes WHERE guid = ?", "s", guid);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        snprintf(ret_space, 37, "%s", db_col_text(s, 0));
                        k = 0;
                }
        }
        if (k == 0)
                k = authz_space(r, ret_space, perm, true);
        db_unlock(r->ctl);
        return apps_authz_answer(k, resp, "Route");
}

static void routes_show(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!route_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        db_lock(r->ctl);
        json_t *j = route_json(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Route");
                return;
        }
        api_respond(resp, 200, j);
}

static const char *rel_guid(json_t *body, const char *rel)
{
        return json_string_value(json_object_get(
            json_object_get(json_object_get(json_object_get(body, "relationships"), rel), "data"), "guid"));
}

static void routes_create(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        json_t *hj = json_object_get(r->body, "host"), *pj = json_object_get(r->body, "path");
        const char *space = rel_guid(r->body, "space"), *domain = rel_guid(r->body, "domain");
        if (!json_is_string(hj) || !host_valid(json_string_value(hj))) {
                api_unprocessable(resp, "Host must be a DNS label: 1-63 lowercase letters, digits or '-', not"
                                        " starting or ending with '-'; or '*' for a wildcard route");
                return;
        }
        if (strcmp(json_string_value(hj), "*") == 0 && !r->user.admin) {
                /* Every domain here is shared: a wildcard would take every unrouted name of all tenants. */
                api_error(resp, 403, 10003, "CF-NotAuthorized",
                          "You are not authorized to create a wildcard route on a shared domain.");
                return;
        }
        if (pj && !json_is_null(pj) && (!json_is_string(pj) || !path_valid(json_string_value(pj)))) {
                api_unprocessable(resp,
                                  "Path must start with '/', be at most 128 characters and not end with '/'");
                return;
        }
        const char *host = json_string_value(hj), *path = json_is_string(pj) ? json_string_value(pj) : "";
        if (!space || !domain) {
                api_unprocessable(resp, !space ? "Space can't be blank" : "Domain can't be blank");
                return;
        }
        int k = authz_space(r, space, AUTHZ_WRITE, false);
        if (k == -ENOENT) {
                api_unprocessable(resp,
                                  "Invalid space. Ensure that the space exists and you have access to it.");
                return;
        }
        if (!apps_authz_answer(k, resp, "Space"))
                return;
        db_lock(c);
        bool creation = r->user.admin || flag_enabled(c, "route_creation");
        db_unlock(c);
        if (!creation) {
                api_feature_disabled(c, resp, "route_creation");
                return;
        }
        char guid[37], now[21];
        ctl_uuid(guid);
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        _cleanup_free_ char *dname = NULL;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT name FROM domains WHERE guid = ?", "s", domain);
                if (s && sqlite3_step(s) == SQLITE_ROW)
                        dname = xstrdup(db_col_text(s, 0));
        }
        if (!dname) {
                api_tx_rollback(r);
                api_unprocessable(resp,
                                  "Invalid domain. Ensure that the domain exists and you have access to it.");
                return;
        }
        k = xdb_exec(c, &e,
                     "INSERT INTO routes (guid, host, path, domain_guid, space_guid, created_at, updated_at)"
                     " VALUES (?,?,?,?,?,?,?)",
                     "sssssss", guid, host, path, domain, space, now, now);
        if (k == -EEXIST) {
                api_tx_rollback(r);
                api_error(resp, 422, 10016, "CF-UniquenessError",
                          "Route already exists with host '%s'%s%s for domain '%s'.", host,
                          *path ? " and path " : "", path, dname);
                return;
        }
        json_t *j = k == 0 ? route_json(c, guid) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        audit_event(c, "audit.route.create", &r->user, "route", guid, host, space,
                    json_pack("{s:s,s:s,s:s}", "host", host, "path", path, "domain_guid", domain));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        routes_changed(c);
        api_respond(resp, 201, j);
}

static void routes_delete(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char space[37];
        if (!route_authz(r, resp, r->params[0], AUTHZ_WRITE, space))
                return;
        if (!api_tx_begin(r, resp))
                return;
        audit_event(c, "audit.route.delete-request", &r->user, "route", r->params[0], "", space, NULL);
        if (xdb_exec(c, &e, "DELETE FROM routes WHERE guid = ?", "s", r->params[0]) < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        routes_changed(c);
        api_respond_empty(resp, 202);
}

static json_t *destinations_body(struct ctl *c, const char *route)
{
        return json_pack("{s:o,s:{s:o,s:o}}", "destinations", destinations_json(c, route), "links", "self",
                         api_link(c, "/v3/routes/%s/destinations", route), "route",
                         api_link(c, "/v3/routes/%s", route));
}

static void destinations_list(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!route_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        db_lock(r->ctl);
        json_t *j = destinations_body(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        api_respond(resp, 200, j);
}

static void destinations_add(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char space[37], now[21];
        if (!route_authz(r, resp, r->params[0], AUTHZ_WRITE, space))
                return;
        json_t *dests = json_object_get(r->body, "destinations");
        if (!json_is_array(dests) || json_array_size(dests) == 0 || json_array_size(dests) > 100) {
                api_unprocessable(resp, "Destinations must be an array of 1-100 destinations");
                return;
        }
        size_t i;
        json_t *d;
        json_array_foreach (dests, i, d) {
                json_t *app = json_object_get(d, "app");
                json_t *type = json_object_get(json_object_get(app, "process"), "type");
                json_t *port = json_object_get(d, "port");
                if (!json_is_string(json_object_get(app, "guid"))) {
                        api_unprocessable(resp, "Destinations[%zu]: app guid must be a string", i);
                        return;
                }
                if (type && !json_is_string(type)) {
                        api_unprocessable(resp, "Destinations[%zu]: process type must be a string", i);
                        return;
                }
                if (port && !json_is_null(port) &&
                    (!json_is_integer(port) || json_integer_value(port) < 1 ||
                     json_integer_value(port) > 65535)) {
                        api_unprocessable(resp, "Destinations[%zu]: port must be an integer 1-65535", i);
                        return;
                }
        }
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        json_array_foreach (dests, i, d) {
                json_t *app = json_object_get(d, "app");
                const char *ag = json_string_value(json_object_get(app, "guid"));
                json_t *type = json_object_get(json_object_get(app, "process"), "type");
                json_t *port = json_object_get(d, "port");
                char aspace[37];
                if (apps_space_of(c, ag, aspace) < 0 || strcmp(aspace, space) != 0) {
                        api_tx_rollback(r);
                        api_unprocessable(resp, "App '%s' must exist in the route's space", ag);
                        return;
                }
                const char *pt = json_is_string(type) ? json_string_value(type) : "web";
                {
                        _cleanup_stmt_ sqlite3_stmt *s =
                            xdb_query(c, NULL,
                                      "SELECT 1 FROM destinations WHERE route_guid = ? AND app_guid = ? AND "
                                      "process_type = ? AND"
                                      " port IS ?",
                                      "sssi", r->params[0], ag, pt, 0);
                        if (json_is_integer(port))
                                sqlite3_bind_int(s, 4, (int)json_integer_value(port));
                        else
                                sqlite3_bind_null(s, 4);
                        if (s && sqlite3_step(s) == SQLITE_ROW)
                                continue;
                }
                char dg[37];
                ctl_uuid(dg);
                int k = xdb_exec(
                    c, &e,
                    "INSERT INTO destinations (guid, route_guid, app_guid, process_type, port, created_at)"
                    " VALUES (?,?,?,?,NULL,?)",
                    "sssss", dg, r->params[0], ag, pt, now);
                if (k == 0 && json_is_integer(port))
                        k = xdb_exec(c, &e, "UPDATE destinations SET port = ? WHERE guid = ?", "is",
                                     (int)json_integer_value(port), dg);
                if (k < 0) {
                        api_tx_rollback(r);
                        api_server_error(resp, e);
                        return;
                }
                _cleanup_stmt_ sqlite3_stmt *ns =
                    xdb_query(c, NULL, "SELECT name FROM apps WHERE guid = ?", "s", ag);
                audit_event(c, "audit.app.map-route", &r->user, "app", ag,
                            ns && sqlite3_step(ns) == SQLITE_ROW ? db_col_text(ns, 0) : "", space,
                            json_pack("{s:s,s:s,s:s}", "route_guid", r->params[0], "destination_guid", dg,
                                      "process_type", pt));
        }
        json_t *j = destinations_body(c, r->params[0]);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        routes_changed(c);
        api_respond(resp, 200, j);
}

static void destinations_delete(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char space[37];
        if (!route_authz(r, resp, r->params[0], AUTHZ_WRITE, space))
                return;
        if (!api_tx_begin(r, resp))
                return;
        _cleanup_free_ char *app = NULL;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT app_guid FROM destinations WHERE guid = ? AND route_guid = ?",
                              "ss", r->params[1], r->params[0]);
                if (s && sqlite3_step(s) == SQLITE_ROW)
                        app = xstrdup(db_col_text(s, 0));
        }
        if (!app) {
                api_tx_rollback(r);
                api_not_found(resp, "Destination");
                return;
        }
        if (xdb_exec(c, &e, "DELETE FROM destinations WHERE guid = ?", "s", r->params[1]) < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        _cleanup_stmt_ sqlite3_stmt *ns =
            xdb_query(c, NULL, "SELECT name FROM apps WHERE guid = ?", "s", app);
        audit_event(c, "audit.app.unmap-route", &r->user, "app", app,
                    ns && sqlite3_step(ns) == SQLITE_ROW ? db_col_text(ns, 0) : "", space,
                    json_pack("{s:s,s:s}", "route_guid", r->params[0], "destination_guid", r->params[1]));
        if (!api_tx_commit(r, resp))
                return;
        routes_changed(c);
        api_respond_empty(resp, 204);
}

/* ---- the route table (routers) ---- */

static json_t *route_table(struct ctl *c)
{
        bool docker = flag_enabled(c, "diego_docker");
        json_t *routes = json_array();
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL,
                                                   "SELECT r.guid, r.host, d.name, r.path FROM routes r JOIN "
                                                   "domains d ON d.guid = r.domain_guid ORDER BY"
                                                   " r.created_at, r.rowid",
                                                   NULL);
        while (s && sqlite3_step(s) == SQLITE_ROW) {
                const char *g = db_col_text(s, 0), *h = db_col_text(s, 1);
                _cleanup_free_ char *host = xasprintf("%s%s%s", h, *h ? "." : "", db_col_text(s, 2));
                for (char *p = host; *p; p++)
                        if (*p >= 'A' && *p <= 'Z')
                                *p = (char)(*p - 'A' + 'a');
                _cleanup_stmt_ sqlite3_stmt *ds = xdb_query(
                    c, NULL,
                    "SELECT DISTINCT ds.app_guid FROM destinations ds WHERE ds.route_guid = ? ORDER BY"
                    " ds.created_at",
                    "s", g);
                bool any = false;
                while (ds && sqlite3_step(ds) == SQLITE_ROW) {
                        any = true;
                        const char *app = db_col_text(ds, 0);
                        json_t *eps = json_array();
                        _cleanup_stmt_ sqlite3_stmt *is =
                            xdb_query(c, NULL,
                                      "SELECT i.guid, i.idx, i.host, i.port FROM instances i JOIN apps a ON "
                                      "a.guid = i.app_guid"
                                      " JOIN processes p ON p.guid = i.process_guid WHERE i.app_guid = ? AND "
                                      "i.state = 'RUNNING' AND i.routable = 1"
                                      " AND a.state = 'STARTED' AND p.type = 'web' AND i.host IS NOT NULL "
                                      "AND i.port IS NOT NULL"
                                      " ORDER BY i.idx",
                                      "s", app);
                        while (docker && is && sqlite3_step(is) == SQLITE_ROW)
                                json_array_append_new(
                                    eps, json_pack("{s:s,s:i,s:s,s:i}", "instance_guid", db_col_text(is, 0),
                                                   "index", sqlite3_column_int(is, 1), "host",
                                                   db_col_text(is, 2), "port", sqlite3_column_int(is, 3)));
                        json_array_append_new(routes, json_pack("{s:s,s:s,s:s,s:s,s:o}", "host", host, "path",
                                                                db_col_text(s, 3), "route_guid", g,
                                                                "app_guid", app, "endpoints", eps));
                }
                /* A route mapped to no app is not routable: unknown to the router (404), as in Gorouter. */
                (void)any;
        }
        return routes;
}

static void internal_routes(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        const char *q = r->http ? r->http->query : "";
        _cleanup_free_ char *is = http_query_get(q, "index"), *ws = http_query_get(q, "wait");
        unsigned long long index = is ? strtoull(is, NULL, 10) : 0;
        long wait = ws ? strtol(ws, NULL, 10) : 0;
        if (wait < 0)
                wait = 0;
        if (wait > ROUTES_WAIT_MAX)
                wait = ROUTES_WAIT_MAX;
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += wait;
        const char *peer = r->http && r->http->peer ? r->http->peer : "?";
        bool kick = false;
        pthread_mutex_lock(&c->rt_lock);
        /* ?index=N says the router holds table N: whoever waits for the routers to drop an instance may go
         * on (the scheduler, when it waits for one, is woken to act at once). */
        router_poll_begin(c, peer, index, mono_ms());
        if (c->rt_want && synced_locked(c, c->rt_want, mono_ms())) {
                c->rt_want = 0;
                kick = true;
        }
        pthread_cond_broadcast(&c->rt_cond);
        while (c->rt_version <= index && !c->stopping && wait > 0) {
                if (pthread_cond_timedwait(&c->rt_cond, &c->rt_lock, &deadline) == ETIMEDOUT)
                        break;
        }
        uint64_t v = c->rt_version;
        pthread_mutex_unlock(&c->rt_lock);
        if (kick)
                sched_kick(c);
        db_lock(c);
        json_t *routes = route_table(c);
        db_unlock(c);
        pthread_mutex_lock(&c->rt_lock);
        router_poll_end(c, peer);
        pthread_mutex_unlock(&c->rt_lock);
        api_respond(resp, 200, json_pack("{s:I,s:o}", "index", (json_int_t)v, "routes", routes));
}

const struct api_route api_routes_routes[] = {
        { "GET", "/v3/routes", routes_list, API_USER },
        { "POST", "/v3/routes", routes_create, API_USER },
        { "GET", "/v3/routes/:guid", routes_show, API_USER },
        { "DELETE", "/v3/routes/:guid", routes_delete, API_USER },
        { "GET", "/v3/routes/:guid/destinations", destinations_list, API_USER },
        { "POST", "/v3/routes/:guid/destinations", destinations_add, API_USER },
        { "DELETE", "/v3/routes/:guid/destinations/:dguid", destinations_delete, API_USER },
        { "GET", "/v3/apps/:guid/routes", app_routes, API_USER },
        { "GET", "/internal/v1/routes", internal_routes, API_INTERNAL },
        { NULL },
};
