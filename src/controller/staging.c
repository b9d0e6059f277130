/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Packages (Docker references and their registry credentials), builds (staging = resolving the reference
 * to a pinned manifest digest and reading the image config, as Cloud Foundry's docker lifecycle does) and
 * droplets (docs/PLATFORM.md "Packages", "Builds", "Droplets").
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "controller/ctl.h"
#include "image/reference.h"
#include "image/resolve.h"
#include "lib/json.h"
#include "lib/log.h"

#define PKG_IMAGE_MAX 1024
#define CRED_MAX      4096

/* ---- packages ---- */

#define PKG_COLUMNS                                                                                    \
        "SELECT guid, app_guid, image, username, password_sealed, state, created_at, updated_at FROM " \
        "packages"

static json_t *pkg_row_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *g = db_col_text(s, 0), *app = db_col_text(s, 1), *user = db_col_text(s, 3);
        bool has_pw = sqlite3_column_type(s, 4) != SQLITE_NULL;
        return json_pack("{s:s,s:s,s:{s:s,s:o,s:o},s:s,s:s,s:s,s:{s:{s:{s:s}}},s:o,s:{s:o,s:o}}", "guid", g,
                         "type", "docker", "data", "image", db_col_text(s, 2), "username",
                         user ? json_string(user) : json_null(), "password",
                         has_pw ? json_string("***") : json_null(), "state", db_col_text(s, 5), "created_at",
                         db_col_text(s, 6), "updated_at", db_col_text(s, 7), "relationships", "app", "data",
                         "guid", app, "metadata", api_metadata(), "links", "self",
                         api_link(c, "/v3/packages/%s", g), "app", api_link(c, "/v3/apps/%s", app));
}

static json_t *pkg_json(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL, PKG_COLUMNS " WHERE guid = ?", "s", guid);
        return s && sqlite3_step(s) == SQLITE_ROW ? pkg_row_json(c, s) : NULL;
}

static bool opt_string(struct http_response *resp, json_t *obj, const char *key, size_t max, const char **ret)
{
        json_t *v = json_object_get(obj, key);
        *ret = NULL;
        if (!v || json_is_null(v))
                return true;
        if (!json_is_string(v) || strlen(json_string_value(v)) > max) {
                api_unprocessable(resp, "%s must be a string of at most %zu characters", key, max);
                return false;
        }
        *ret = json_string_value(v);
        return true;
}

static void packages_create(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        json_t *type = json_object_get(r->body, "type");
        json_t *data = json_object_get(r->body, "data");
        json_t *app = json_object_get(
            json_object_get(json_object_get(json_object_get(r->body, "relationships"), "app"), "data"),
            "guid");
        const char *image, *user, *pass;
        if (!json_is_string(type) || strcmp(json_string_value(type), "docker") != 0) {
                api_unprocessable(resp, "Type must be docker");
                return;
        }
        if (!json_is_string(app)) {
                api_unprocessable(resp, "App can't be blank");
                return;
        }
        if (!opt_string(resp, data, "image", PKG_IMAGE_MAX, &image) ||
            !opt_string(resp, data, "username", CRED_MAX, &user) ||
            !opt_string(resp, data, "password", CRED_MAX, &pass))
                return;
        if (!image || !*image) {
                api_unprocessable(resp, "Image can't be blank");
                return;
        }
        {
                struct image_ref *ref = NULL;
                _cleanup_berr_ struct berr *pe = NULL;
                if (image_ref_parse(image, &ref, &pe) < 0) {
                        api_unprocessable(resp, "Image '%s' is not a valid reference: %s", image,
                                          berr_msg(pe));
                        return;
                }
                image_ref_free(ref);
        }
        if ((user && *user) != (pass && *pass)) {
                api_unprocessable(resp, "Username and password must be given together");
                return;
        }
        char space[37];
        db_lock(c);
        int k = apps_space_of(c, json_string_value(app), space);
        if (k == 0)
                k = authz_space(r, space, AUTHZ_WRITE, true);
        db_unlock(c);
        if (k == -ENOENT) {
                api_unprocessable(resp, "App must exist and be visible to you");
                return;
        }
        if (!apps_authz_answer(k, resp, "App"))
                return;
        _cleanup_free_ char *sealed = pass && *pass ? crypt_seal(c, pass) : NULL;
        char guid[37], now[21];
        ctl_uuid(guid);
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        k = xdb_exec(
            c, &e,
            "INSERT INTO packages (guid, app_guid, image, username, password_sealed, state, created_at,"
            " updated_at) VALUES (?,?,?,?,?,'READY',?,?)",
            "sssssss", guid, json_string_value(app), image, user && *user ? user : NULL, sealed, now, now);
        json_t *j = k == 0 ? pkg_json(c, guid) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        _cleanup_stmt_ sqlite3_stmt *ns =
            xdb_query(c, NULL, "SELECT name FROM apps WHERE guid = ?", "s", json_string_value(app));
        audit_event(c, "audit.app.package.create", &r->user, "app", json_string_value(app),
                    ns && sqlite3_step(ns) == SQLITE_ROW ? db_col_text(ns, 0) : "", space,
                    json_pack("{s:s}", "package_guid", guid));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 201, j);
}

/* Authorize READ on the app owning a row of `table`; false with 404/403 sent. */
static bool owner_authz(struct api_req *r, struct http_response *resp, const char *table, const char *guid,
                        const char *what, enum authz_perm perm, char ret_app[static 37])
{
        char space[37];
        db_lock(r->ctl);
        _cleanup_free_ char *sql = xasprintf("SELECT app_guid FROM %s WHERE guid = ?", table);
        int k = -ENOENT;
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(r->ctl, NULL, sql, "s", guid);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        snprintf(ret_app, 37, "%s", db_col_text(s, 0));
                        k = apps_space_of(r->ctl, ret_app, space);
                }
        }
        if (k == 0)
                k = authz_space(r, space, perm, true);
        db_unlock(r->ctl);
        return apps_authz_answer(k, resp, what);
}

static void packages_show(struct api_req *r, struct http_response *resp)
{
        char app[37];
        if (!owner_authz(r, resp, "packages", r->params[0], "Package", AUTHZ_READ, app))
                return;
        db_lock(r->ctl);
        json_t *j = pkg_json(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Package");
                return;
        }
        api_respond(resp, 200, j);
}

static void app_packages(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
            r->ctl, NULL, PKG_COLUMNS " WHERE app_guid = ? ORDER BY created_at, rowid", "s", r->params[0]);
        while (s && sqlite3_step(s) == SQLITE_ROW)
                json_array_append_new(items, pkg_row_json(r->ctl, s));
        db_unlock(r->ctl);
        _cleanup_free_ char *path = xasprintf("/v3/apps/%s/packages", r->params[0]);
        api_respond_list(r, resp, path, items);
}

/* ---- droplets ---- */

#define DROPLET_COLUMNS                                                                         \
        "SELECT guid, app_guid, package_guid, image_pinned, docker_image, execution_metadata, " \
        "process_types,"                                                                        \
        " created_at, updated_at FROM droplets"

static json_t *droplet_row_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *g = db_col_text(s, 0), *app = db_col_text(s, 1), *pkg = db_col_text(s, 2);
        json_t *pt = json_loads(db_col_text(s, 6), 0, NULL);
        return json_pack("{s:s,s:s,s:n,s:{s:s,s:{}},s:s,s:o,s:n,s:[],s:n,s:s,s:s,s:s,s:s,s:{s:{s:{s:s}}},s:o,"
                         "s:{s:o,s:o,s:o,s:o}}",
                         "guid", g, "state", "STAGED", "error", "lifecycle", "type", "docker", "data",
                         "execution_metadata", db_col_text(s, 5), "process_types", pt ? pt : json_object(),
                         "checksum", "buildpacks", "stack", "image", db_col_text(s, 3), "docker_image",
                         db_col_text(s, 4), "created_at", db_col_text(s, 7), "updated_at", db_col_text(s, 8),
                         "relationships", "app", "data", "guid", app, "metadata", api_metadata(), "links",
                         "self", api_link(c, "/v3/droplets/%s", g), "package",
                         pkg ? api_link(c, "/v3/packages/%s", pkg) : json_null(), "app",
                         api_link(c, "/v3/apps/%s", app), "assign_current_droplet",
                         api_link(c, "/v3/apps/%s/relationships/current_droplet", app));
}

static json_t *droplet_json(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL, DROPLET_COLUMNS " WHERE guid = ?", "s", guid);
        return s && sqlite3_step(s) == SQLITE_ROW ? droplet_row_json(c, s) : NULL;
}

static void droplets_show(struct api_req *r, struct http_response *resp)
{
        char app[37];
        if (!owner_authz(r, resp, "droplets", r->params[0], "Droplet", AUTHZ_READ, app))
                return;
        db_lock(r->ctl);
        json_t *j = droplet_json(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Droplet");
                return;
        }
        api_respond(resp, 200, j);
}

static void app_droplets(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s =
            xdb_query(r->ctl, NULL, DROPLET_COLUMNS " WHERE app_guid = ? ORDER BY created_at, rowid", "s",
                      r->params[0]);
        while (s && sqlite3_step(s) == SQLITE_ROW)
                json_array_append_new(items, droplet_row_json(r->ctl, s));
        db_unlock(r->ctl);
        _cleanup_free_ char *path = xasprintf("/v3/apps/%s/droplets", r->params[0]);
        api_respond_list(r, resp, path, items);
}

static void app_droplet_current(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        db_lock(r->ctl);
        json_t *j = NULL;
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    r->ctl, NULL, "SELECT droplet_guid FROM apps WHERE guid = ?", "s", r->params[0]);
                if (s && sqlite3_step(s) == SQLITE_ROW && db_col_text(s, 0))
                        j = droplet_json(r->ctl, db_col_text(s, 0));
        }
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Droplet");
                return;
        }
        api_respond(resp, 200, j);
}

/* ---- builds ---- */

#define BUILD_COLUMNS                                                                               \
        "SELECT guid, app_guid, package_guid, state, error, droplet_guid, created_by, created_at, " \
        "updated_at"                                                                                \
        " FROM builds"

static json_t *build_row_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *g = db_col_text(s, 0), *app = db_col_text(s, 1), *err = db_col_text(s, 4),
                   *drop = db_col_text(s, 5);
        json_t *links = json_pack("{s:o,s:o}", "self", api_link(c, "/v3/builds/%s", g), "app",
                                  api_link(c, "/v3/apps/%s", app));
        if (drop)
                json_object_set_new(links, "droplet", api_link(c, "/v3/droplets/%s", drop));
        return json_pack(
            "{s:s,s:s,s:s,s:s,s:o,s:{s:s,s:{}},s:{s:s},s:o,s:{s:{s:{s:s}}},s:{s:s,s:s,s:s},s:o,s:o}", "guid",
            g, "created_at", db_col_text(s, 7), "updated_at", db_col_text(s, 8), "state", db_col_text(s, 3),
            "error", err ? json_string(err) : json_null(), "lifecycle", "type", "docker", "data", "package",
            "guid", db_col_text(s, 2), "droplet", drop ? json_pack("{s:s}", "guid", drop) : json_null(),
            "relationships", "app", "data", "guid", app, "created_by", "guid",
            db_col_text(s, 6) ? db_col_text(s, 6) : "", "name", "", "email", "", "metadata", api_metadata(),
            "links", links);
}

static json_t *build_json(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL, BUILD_COLUMNS " WHERE guid = ?", "s", guid);
        return s && sqlite3_step(s) == SQLITE_ROW ? build_row_json(c, s) : NULL;
}

static void builds_show(struct api_req *r, struct http_response *resp)
{
        char app[37];
        if (!owner_authz(r, resp, "builds", r->params[0], "Build", AUTHZ_READ, app))
                return;
        db_lock(r->ctl);
        json_t *j = build_json(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Build");
                return;
        }
        api_respond(resp, 200, j);
}

static void builds_create(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        json_t *pg = json_object_get(json_object_get(r->body, "package"), "guid");
        if (!json_is_string(pg)) {
                api_unprocessable(resp, "Package guid can't be blank");
                return;
        }
        const char *pkg = json_string_value(pg);
        char app[37], space[37];
        _cleanup_free_ char *image = NULL, *user = NULL, *sealed = NULL, *app_name = NULL;
        db_lock(c);
        int k = -ENOENT;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL,
                              "SELECT p.app_guid, a.space_guid, p.image, p.username, p.password_sealed, "
                              "a.name FROM packages p"
                              " JOIN apps a ON a.guid = p.app_guid WHERE p.guid = ?",
                              "s", pkg);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        snprintf(app, sizeof(app), "%s", db_col_text(s, 0));
                        snprintf(space, sizeof(space), "%s", db_col_text(s, 1));
                        image = xstrdup(db_col_text(s, 2));
                        user = db_col_text(s, 3) ? xstrdup(db_col_text(s, 3)) : NULL;
                        sealed = db_col_text(s, 4) ? xstrdup(db_col_text(s, 4)) : NULL;
                        app_name = xstrdup(db_col_text(s, 5));
                        k = 0;
                }
        }
        if (k == 0)
                k = authz_space(r, space, AUTHZ_WRITE, true);
        bool docker_ok = flag_enabled(c, "diego_docker");
        db_unlock(c);
        if (k == -ENOENT) {
                api_unprocessable(
                    resp, "Unable to use package. Ensure that the package exists and you have access to it.");
                return;
        }
        if (!apps_authz_answer(k, resp, "Package"))
                return;
        if (!docker_ok) {
                api_feature_disabled(c, resp, "diego_docker");
                return;
        }
        _cleanup_free_ char *pass = NULL;
        if (sealed && crypt_open(c, sealed, &pass, &e) < 0) {
                api_server_error(resp, e);
                return;
        }

        /* The registry round trips, without the store lock. */
        struct image_resolved res = { 0 };
        _cleanup_berr_ struct berr *se = NULL;
        int rk = image_resolve(c->cfg, image, user, pass, NULL, &res, &se);
        if (pass)
                explicit_bzero(pass, strlen(pass));

        char guid[37], now[21], dguid[37];
        ctl_uuid(guid);
        ctl_uuid(dguid);
        ctl_now(now);
        if (!api_tx_begin(r, resp)) {
                image_resolved_free(&res);
                return;
        }
        if (rk < 0) {
                /* Say what kind of failure it is before the registry's own words. */
                const char *kind = rk == -ENOENT    ? "image not found: "
                                   : rk == -EACCES  ? "registry authentication failed: "
                                   : rk == -EINVAL  ? "invalid image reference: "
                                   : rk == -ENOTSUP ? "unsupported image format: "
                                   : rk == -EHOSTUNREACH || rk == -ECONNREFUSED || rk == -ETIMEDOUT
                                       ? "registry unreachable: "
                                       : "";
                _cleanup_free_ char *detail = xasprintf("Staging error: %s%s", kind, berr_msg(se));
                log_info("staging %s (%s) failed: %s", app_name, image, berr_msg(se));
                int x =
                    xdb_exec(c, &e,
                             "INSERT INTO builds (guid, app_guid, package_guid, state, error, droplet_guid,"
                             " created_by, created_at, updated_at) VALUES (?,?,?,'FAILED',?,NULL,?,?,?)",
                             "sssssss", guid, app, pkg, detail, r->user.guid, now, now);
                if (x < 0 || !api_tx_commit(r, resp)) {
                        if (x < 0) {
                                api_tx_rollback(r);
                                api_server_error(resp, e);
                        }
                        return;
                }
                api_error(resp, 422, 170004, "CF-StagingError", "%s", detail);
                return;
        }
        _cleanup_json_ json_t *em = env_execution_metadata(res.config);
        _cleanup_free_ char *ems = json_dumps(em, JSON_COMPACT);
        _cleanup_free_ char *cmd = env_start_command(res.config);
        _cleanup_json_ json_t *pt = json_pack("{s:s}", "web", cmd);
        _cleanup_free_ char *pts = json_dumps(pt, JSON_COMPACT);
        k = xdb_exec(c, &e,
                     "INSERT INTO droplets (guid, app_guid, package_guid, image_pinned, docker_image,"
                     " execution_metadata, process_types, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                     "sssssssss", dguid, app, pkg, res.pinned, image, ems, pts, now, now);
        if (k == 0)
                k = xdb_exec(c, &e,
                             "INSERT INTO builds (guid, app_guid, package_guid, state, error, droplet_guid,"
                             " created_by, created_at, updated_at) VALUES (?,?,?,'STAGED',NULL,?,?,?,?)",
                             "sssssss", guid, app, pkg, dguid, r->user.guid, now, now);
        image_resolved_free(&res);
        json_t *j = k == 0 ? build_json(c, guid) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        audit_event(c, "audit.app.build.create", &r->user, "app", app, app_name, space,
                    json_pack("{s:s,s:s}", "build_guid", guid, "package_guid", pkg));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 201, j);
}

const struct api_route api_routes_staging[] = {
        { "POST", "/v3/packages", packages_create, API_USER },
        { "GET", "/v3/packages/:guid", packages_show, API_USER },
        { "GET", "/v3/apps/:guid/packages", app_packages, API_USER },
        { "POST", "/v3/builds", builds_create, API_USER },
        { "GET", "/v3/builds/:guid", builds_show, API_USER },
        { "GET", "/v3/droplets/:guid", droplets_show, API_USER },
        { "GET", "/v3/apps/:guid/droplets", app_droplets, API_USER },
        { "GET", "/v3/apps/:guid/droplets/current", app_droplet_current, API_USER },
        { NULL },
};
