/* SPDX-License-Identifier: Apache-2.0 */
/* Domains: all shared (no private domains in berth); the configured one exists from the first start. */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/strv.h"

/* RFC 1035: at most 253 characters, labels of 1-63 letters, digits and '-' not at either end. */
bool domain_name_valid(const char *name)
{
        size_t n = strlen(name);
        if (n == 0 || n > 253)
                return false;
        const char *p = name;
        while (1) {
                const char *e = strchrnul(p, '.');
                size_t l = (size_t)(e - p);
                if (l == 0 || l > 63 || p[0] == '-' || p[l - 1] == '-')
                        return false;
                for (size_t i = 0; i < l; i++)
                        if (!isalnum((unsigned char)p[i]) && p[i] != '-')
                                return false;
                if (!*e)
                        return true;
                p = e + 1;
        }
}

int domain_create(struct ctl *c, const char *name, bool internal, char ret_guid[static 37], struct berr **err)
{
        if (!domain_name_valid(name))
                return berr_set(err, -EINVAL, "Name must be a valid domain name");
        char guid[37], now[21];
        ctl_uuid(guid);
        ctl_now(now);
        _cleanup_free_ char *lower = xstrdup(name);
        for (char *p = lower; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(
            c, "INSERT INTO domains (guid, name, internal, created_at, updated_at) VALUES (?,?,?,?,?)", err);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, lower, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 3, internal);
        sqlite3_bind_text(s, 4, now, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, now, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT)
                return berr_set(err, -EEXIST, "The domain name \"%s\" is already in use", lower);
        if (rc != SQLITE_DONE)
                return berr_set(err, -EIO, "insert domain: %s", sqlite3_errmsg(c->db));
        memcpy(ret_guid, guid, 37);
        return 0;
}

#define DOMAIN_COLUMNS "SELECT guid, name, internal, created_at, updated_at FROM domains"

static json_t *domain_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *guid = db_col_text(s, 0);
        return json_pack("{s:s,s:s,s:s,s:s,s:b,s:n,s:[s],s:o,s:{s:{s:n},s:{s:[]}},s:{s:o,s:o}}", "guid", guid,
                         "created_at", db_col_text(s, 3), "updated_at", db_col_text(s, 4), "name",
                         db_col_text(s, 1), "internal", sqlite3_column_int(s, 2) != 0, "router_group",
                         "supported_protocols", "http", "metadata", api_metadata(), "relationships",
                         "organization", "data", "shared_organizations", "data", "links", "self",
                         api_link(c, "/v3/domains/%s", guid), "route_reservations",
                         api_link(c, "/v3/domains/%s/route_reservations", guid));
}

static void domains_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **names = api_query_list(r, "names");
        _cleanup_(strv_freep) char **guids = api_query_list(r, "guids");
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        _cleanup_free_ char *sql = xasprintf(DOMAIN_COLUMNS " ORDER BY %s %s, rowid %s", field,
                                             desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, sql, &e);
        while (s && sqlite3_step(s) == SQLITE_ROW) {
                bool keep = true;
                if (names) {
                        keep = false;
                        for (size_t i = 0; names[i]; i++)
                                keep = keep || strcasecmp(names[i], db_col_text(s, 1)) == 0;
                }
                if (keep && guids) {
                        keep = false;
                        for (size_t i = 0; guids[i]; i++)
                                keep = keep || strcmp(guids[i], db_col_text(s, 0)) == 0;
                }
                if (keep)
                        json_array_append_new(items, domain_json(r->ctl, s));
        }
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, "/v3/domains", items);
}

/* The domain's resource (lock held) or NULL. */
static json_t *domain_get(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, DOMAIN_COLUMNS " WHERE guid = ?", NULL);
        if (!s)
                return NULL;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        return sqlite3_step(s) == SQLITE_ROW ? domain_json(c, s) : NULL;
}

static void domains_show(struct api_req *r, struct http_response *resp)
{
        db_lock(r->ctl);
        json_t *j = domain_get(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Domain");
                return;
        }
        api_respond(resp, 200, j);
}

static void domains_create(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        if (!r->user.admin) {
                api_forbidden(resp);
                return;
        }
        json_t *name = json_object_get(r->body, "name");
        json_t *internal = json_object_get(r->body, "internal");
        if (!json_is_string(name)) {
                api_unprocessable(resp, "Name must be a string");
                return;
        }
        if (internal && !json_is_null(internal) && !json_is_boolean(internal)) {
                api_unprocessable(resp, "Internal must be a boolean");
                return;
        }
        if (json_object_get(r->body, "relationships") &&
            json_object_get(json_object_get(r->body, "relationships"), "organization")) {
                api_unprocessable(resp, "Private domains are not supported by berth");
                return;
        }
        if (!domain_name_valid(json_string_value(name))) {
                api_unprocessable(resp, "Name must be a valid domain name (letters, digits, '-' and '.')");
                return;
        }
        if (!api_tx_begin(r, resp))
                return;
        char guid[37];
        int k = domain_create(r->ctl, json_string_value(name), json_is_true(internal), guid, &e);
        if (k == -EEXIST) {
                api_tx_rollback(r);
                api_error(resp, 422, 10016, "CF-UniquenessError", "%s", berr_msg(e));
                return;
        }
        if (k < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        json_t *j = domain_get(r->ctl, guid);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 201, j);
}

static void domains_delete(struct api_req *r, struct http_response *resp)
{
        if (!r->user.admin) {
                db_lock(r->ctl);
                json_t *j = domain_get(r->ctl, r->params[0]);
                db_unlock(r->ctl);
                if (!j) {
                        api_not_found(resp, "Domain");
                        return;
                }
                json_decref(j);
                api_forbidden(resp);
                return;
        }
        if (!api_tx_begin(r, resp))
                return;
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, "DELETE FROM domains WHERE guid = ?", NULL);
        int rc = SQLITE_ERROR;
        if (s) {
                sqlite3_bind_text(s, 1, r->params[0], -1, SQLITE_STATIC);
                rc = sqlite3_step(s);
        }
        if ((rc & 0xff) == SQLITE_CONSTRAINT) {
                api_tx_rollback(r);
                api_unprocessable(resp, "Domain has routes; delete them first");
                return;
        }
        if (rc != SQLITE_DONE) {
                _cleanup_berr_ struct berr *e = NULL;
                berr_set(&e, -EIO, "delete domain: %s", sqlite3_errmsg(r->ctl->db));
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (sqlite3_changes(r->ctl->db) == 0) {
                api_tx_rollback(r);
                api_not_found(resp, "Domain");
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        routes_changed(r->ctl);
        api_respond_empty(resp, 202);
}

const struct api_route api_routes_domains[] = {
        { "GET", "/v3/domains", domains_list, API_USER },
        { "POST", "/v3/domains", domains_create, API_USER },
        { "GET", "/v3/domains/:guid", domains_show, API_USER },
        { "DELETE", "/v3/domains/:guid", domains_delete, API_USER },
        { NULL },
};
