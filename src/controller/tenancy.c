/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Organizations, spaces, roles and the authorization checks every endpoint uses (docs/PLATFORM.md "Roles").
 * What a user may not see answers 404, never 403, so that names do not leak.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

#define TENANCY_NAME_MAX 255

/* Role bits of a user in one space (and its org). */
enum {
        ROLE_SPACE_DEVELOPER = 1 << 0,
        ROLE_SPACE_AUDITOR = 1 << 1,
        ROLE_SPACE_MANAGER = 1 << 2,
        ROLE_SPACE_SUPPORTER = 1 << 3,
        ROLE_ORG_MANAGER = 1 << 4,
        ROLE_ORG_USER = 1 << 5,
        ROLE_ORG_AUDITOR = 1 << 6,
        ROLE_ORG_BILLING = 1 << 7,
};

static const struct {
        const char *name;
        unsigned bit;
        bool space;
} role_types[] = {
        { "space_developer", ROLE_SPACE_DEVELOPER, true },
        { "space_auditor", ROLE_SPACE_AUDITOR, true },
        { "space_manager", ROLE_SPACE_MANAGER, true },
        { "space_supporter", ROLE_SPACE_SUPPORTER, true },
        { "organization_manager", ROLE_ORG_MANAGER, false },
        { "organization_user", ROLE_ORG_USER, false },
        { "organization_auditor", ROLE_ORG_AUDITOR, false },
        { "organization_billing_manager", ROLE_ORG_BILLING, false },
};

static int role_type_index(const char *t)
{
        for (size_t i = 0; i < ARRAY_SIZE(role_types); i++)
                if (strcmp(role_types[i].name, t) == 0)
                        return (int)i;
        return -1;
}

static unsigned role_bit(const char *t)
{
        int i = t ? role_type_index(t) : -1;
        return i < 0 ? 0 : role_types[i].bit;
}

bool tenancy_name_valid(const char *name)
{
        size_t n = strlen(name);
        if (n == 0 || n > TENANCY_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
                        return false;
        return true;
}

/* A guid safe to paste into SQL (only hex digits and '-'), as we generate them. */
static bool guid_safe(const char *g)
{
        if (!*g || strlen(g) > 36)
                return false;
        for (const char *p = g; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
                        return false;
        return true;
}

/* ---- authorization ---- */

/* The org of a space (lock held): 0, -ENOENT. */
static int space_org(struct ctl *c, const char *space_guid, char org[static 37])
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, "SELECT org_guid FROM spaces WHERE guid = ?", NULL);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, space_guid, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_ROW)
                return -ENOENT;
        snprintf(org, 37, "%s", db_col_text(s, 0));
        return 0;
}

/* Role bits of user in space (space roles there + org roles of its org) or, space NULL, in org. */
static unsigned user_roles(struct ctl *c, const char *user, const char *space, const char *org)
{
        unsigned bits = 0;
        _cleanup_stmt_ sqlite3_stmt *s =
            space ? db_prepare(c,
                               "SELECT type FROM roles WHERE user_guid = ?1 AND (space_guid = ?2 OR"
                               " (space_guid IS NULL AND org_guid = ?3))",
                               NULL)
                  : db_prepare(c, "SELECT type FROM roles WHERE user_guid = ?1 AND org_guid = ?3", NULL);
        if (!s)
                return 0;
        sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
        if (space)
                sqlite3_bind_text(s, 2, space, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, org, -1, SQLITE_STATIC);
        while (sqlite3_step(s) == SQLITE_ROW)
                bits |= role_bit(db_col_text(s, 0));
        return bits;
}

int authz_space(struct api_req *r, const char *space_guid, enum authz_perm perm, bool locked)
{
        struct ctl *c = r->ctl;
        char org[37];
        int ret;
        (void)locked; /* the store lock is recursive */
        db_lock(c);
        int k = space_org(c, space_guid, org);
        if (k < 0) {
                ret = -ENOENT;
        } else if (r->user.admin || r->user.internal) {
                ret = 0;
        } else {
                unsigned b = user_roles(c, r->user.guid, space_guid, org);
                bool visible = b & (ROLE_SPACE_DEVELOPER | ROLE_SPACE_AUDITOR | ROLE_SPACE_MANAGER |
                                    ROLE_SPACE_SUPPORTER | ROLE_ORG_MANAGER);
                bool ok;
                switch (perm) {
                case AUTHZ_READ:
                        ok = visible;
                        break;
                case AUTHZ_SECRET:
                case AUTHZ_WRITE:
                        ok = b & ROLE_SPACE_DEVELOPER;
                        break;
                case AUTHZ_MANAGE:
                default:
                        ok = b & (ROLE_SPACE_MANAGER | ROLE_ORG_MANAGER);
                        break;
                }
                ret = !visible ? -ENOENT : ok ? 0 : -EPERM;
        }
        db_unlock(c);
        return ret;
}

static bool org_exists(struct ctl *c, const char *org_guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, "SELECT 1 FROM organizations WHERE guid = ?", NULL);
        if (!s)
                return false;
        sqlite3_bind_text(s, 1, org_guid, -1, SQLITE_STATIC);
        return sqlite3_step(s) == SQLITE_ROW;
}

int authz_org(struct api_req *r, const char *org_guid, enum authz_perm perm, bool locked)
{
        struct ctl *c = r->ctl;
        int ret;
        (void)locked;
        db_lock(c);
        if (!org_exists(c, org_guid)) {
                ret = -ENOENT;
        } else if (r->user.admin || r->user.internal) {
                ret = 0;
        } else {
                /* Space roles carry their org, so any role in the org or its spaces makes it visible. */
                unsigned b = user_roles(c, r->user.guid, NULL, org_guid);
                bool visible = b != 0;
                bool ok = perm == AUTHZ_READ ? visible : (b & ROLE_ORG_MANAGER) != 0;
                ret = !visible ? -ENOENT : ok ? 0 : -EPERM;
        }
        db_unlock(c);
        return ret;
}

char *authz_space_filter_sql(struct api_req *r, const char *column)
{
        if (r->user.admin || r->user.internal)
                return xstrdup("");
        if (!guid_safe(r->user.guid))
                return xstrdup(" AND 0");
        return xasprintf(
            " AND %s IN (SELECT space_guid FROM roles WHERE user_guid = '%s' AND space_guid IS NOT NULL"
            " UNION SELECT sp.guid FROM spaces sp JOIN roles ro ON ro.org_guid = sp.org_guid"
            " WHERE ro.user_guid = '%s' AND ro.type = 'organization_manager' AND ro.space_guid IS NULL)",
            column, r->user.guid, r->user.guid);
}

/* The same for organizations: those where the user holds any role (space roles carry their org). */
static char *authz_org_filter_sql(struct api_req *r, const char *column)
{
        if (r->user.admin || r->user.internal)
                return xstrdup("");
        if (!guid_safe(r->user.guid))
                return xstrdup(" AND 0");
        return xasprintf(" AND %s IN (SELECT org_guid FROM roles WHERE user_guid = '%s')", column,
                         r->user.guid);
}

int tenancy_space_info(struct ctl *c, const char *space_guid, char **space_name, char **org_guid,
                       char **org_name)
{
        _cleanup_stmt_ sqlite3_stmt *s =
            db_prepare(c,
                       "SELECT s.name, o.guid, o.name FROM spaces s JOIN organizations o"
                       " ON o.guid = s.org_guid WHERE s.guid = ?",
                       NULL);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, space_guid, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_ROW)
                return -ENOENT;
        if (space_name)
                *space_name = xstrdup(db_col_text(s, 0));
        if (org_guid)
                *org_guid = xstrdup(db_col_text(s, 1));
        if (org_name)
                *org_name = xstrdup(db_col_text(s, 2));
        return 0;
}

/* ---- organizations ---- */

int tenancy_org_create(struct ctl *c, const char *name, char ret_guid[static 37], struct berr **err)
{
        if (!tenancy_name_valid(name))
                return berr_set(err, -EINVAL, "Name must be 1-255 characters");
        char guid[37], now[21];
        ctl_uuid(guid);
        ctl_now(now);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(
            c, "INSERT INTO organizations (guid, name, created_at, updated_at) VALUES (?,?,?,?)", err);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, now, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, now, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
                return berr_set(err, -EEXIST, "Organization name '%s' is already taken.", name);
        if (rc != SQLITE_DONE)
                return berr_set(err, -EIO, "insert organization: %s", sqlite3_errmsg(c->db));
        memcpy(ret_guid, guid, 37);
        return 0;
}

#define ORG_COLUMNS "SELECT guid, name, created_at, updated_at FROM organizations"

static json_t *org_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *guid = db_col_text(s, 0);
        return json_pack("{s:s,s:s,s:s,s:s,s:b,s:{s:{s:n}},s:o,s:{s:o,s:o,s:o}}", "guid", guid, "created_at",
                         db_col_text(s, 2), "updated_at", db_col_text(s, 3), "name", db_col_text(s, 1),
                         "suspended", 0, "relationships", "quota", "data", "metadata", api_metadata(),
                         "links", "self", api_link(c, "/v3/organizations/%s", guid), "domains",
                         api_link(c, "/v3/organizations/%s/domains", guid), "default_domain",
                         api_link(c, "/v3/organizations/%s/domains/default", guid));
}

static json_t *org_get(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, ORG_COLUMNS " WHERE guid = ?", NULL);
        if (!s)
                return NULL;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        return sqlite3_step(s) == SQLITE_ROW ? org_json(c, s) : NULL;
}

static void orgs_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **names = api_query_list(r, "names");
        _cleanup_(strv_freep) char **guids = api_query_list(r, "guids");
        _cleanup_free_ char *vis = authz_org_filter_sql(r, "guid");
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        _cleanup_free_ char *sql = xasprintf(ORG_COLUMNS " WHERE 1%s ORDER BY %s %s, rowid %s", vis, field,
                                             desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, sql, &e);
        while (s && sqlite3_step(s) == SQLITE_ROW)
                if (api_in_list(names, db_col_text(s, 1)) && api_in_list(guids, db_col_text(s, 0)))
                        json_array_append_new(items, org_json(r->ctl, s));
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, "/v3/organizations", items);
}

static void orgs_show(struct api_req *r, struct http_response *resp)
{
        if (authz_org(r, r->params[0], AUTHZ_READ, false) < 0) {
                api_not_found(resp, "Organization");
                return;
        }
        db_lock(r->ctl);
        json_t *j = org_get(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Organization");
                return;
        }
        api_respond(resp, 200, j);
}

/* Insert a role row (lock held, in a transaction); INSERT OR IGNORE when `ignore` (implied roles). */
static int role_insert(struct ctl *c, const char *type, const char *user, const char *org, const char *space,
                       bool ignore, char *ret_guid, struct berr **err)
{
        char guid[37], now[21];
        ctl_uuid(guid);
        ctl_now(now);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(
            c,
            ignore ? "INSERT OR IGNORE INTO roles (guid, type, user_guid, org_guid, space_guid, created_at,"
                     " updated_at) VALUES (?,?,?,?,?,?,?)"
                   : "INSERT INTO roles (guid, type, user_guid, org_guid, space_guid, created_at, updated_at)"
                     " VALUES (?,?,?,?,?,?,?)",
            err);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, type, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, user, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, org, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, space, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, now, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 7, now, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
                return berr_set(err, -EEXIST, "role exists");
        if (rc != SQLITE_DONE)
                return berr_set(err, -EIO, "insert role: %s", sqlite3_errmsg(c->db));
        if (ret_guid)
                memcpy(ret_guid, guid, 37);
        return 0;
}

/* A string field of the body that must be a valid name; false with 422 sent. */
static bool body_name(struct api_req *r, struct http_response *resp, bool required, const char **ret)
{
        json_t *n = json_object_get(r->body, "name");
        *ret = NULL;
        if (!n && !required)
                return true;
        if (!json_is_string(n)) {
                api_unprocessable(resp, n ? "Name must be a string" : "Name can't be blank");
                return false;
        }
        const char *v = json_string_value(n);
        if (!*v) {
                api_unprocessable(resp, "Name can't be blank");
                return false;
        }
        if (!tenancy_name_valid(v)) {
                api_unprocessable(resp,
                                  "Name is too long (maximum is 255 characters) or has control characters");
                return false;
        }
        *ret = v;
        return true;
}

static void orgs_create(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        const char *name;
        if (!r->user.admin && !flag_enabled(c, "user_org_creation")) {
                api_forbidden(resp);
                return;
        }
        if (!body_name(r, resp, true, &name))
                return;
        if (!api_tx_begin(r, resp))
                return;
        char guid[37];
        int k = tenancy_org_create(c, name, guid, &e);
        /* CF: a non-admin creating an org (user_org_creation) becomes its manager. */
        if (k == 0 && !r->user.admin &&
            ((k = role_insert(c, "organization_manager", r->user.guid, guid, NULL, true, NULL, &e)) < 0 ||
             (k = role_insert(c, "organization_user", r->user.guid, guid, NULL, true, NULL, &e)) < 0))
                k = -EIO;
        if (k < 0) {
                api_tx_rollback(r);
                if (k == -EEXIST)
                        api_error(resp, 422, 10016, "CF-UniquenessError", "%s", berr_msg(e));
                else
                        api_server_error(resp, e);
                return;
        }
        json_t *j = org_get(c, guid);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 201, j);
}

/* 404/403 for a failed authz; true if allowed. */
static bool authz_answer(int k, struct http_response *resp, const char *what)
{
        if (k == -ENOENT)
                api_not_found(resp, what);
        else if (k < 0)
                api_forbidden(resp);
        return k == 0;
}

static void orgs_update(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        const char *name;
        if (!authz_answer(authz_org(r, r->params[0], AUTHZ_WRITE, false), resp, "Organization"))
                return;
        if (!body_name(r, resp, false, &name))
                return;
        if (!api_tx_begin(r, resp))
                return;
        if (name) {
                char now[21];
                ctl_now(now);
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c, "UPDATE organizations SET name = ?, updated_at = ? WHERE guid = ?", NULL);
                int rc = SQLITE_ERROR;
                if (s) {
                        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
                        sqlite3_bind_text(s, 2, now, -1, SQLITE_STATIC);
                        sqlite3_bind_text(s, 3, r->params[0], -1, SQLITE_STATIC);
                        rc = sqlite3_step(s);
                }
                if ((rc & 0xff) == SQLITE_CONSTRAINT) {
                        api_tx_rollback(r);
                        api_error(resp, 422, 10016, "CF-UniquenessError",
                                  "Organization name '%s' is already taken.", name);
                        return;
                }
                if (rc != SQLITE_DONE) {
                        _cleanup_berr_ struct berr *e = NULL;
                        berr_set(&e, -EIO, "update organization: %s", sqlite3_errmsg(c->db));
                        api_tx_rollback(r);
                        api_server_error(resp, e);
                        return;
                }
        }
        json_t *j = org_get(c, r->params[0]);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 200, j);
}

/* Delete a space and everything in it (lock held, in a transaction). */
static int space_delete_rows(struct ctl *c, const char *space_guid, struct berr **err)
{
        apps_space_deleted(c, space_guid);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, "DELETE FROM spaces WHERE guid = ?", err);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, space_guid, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
                return berr_set(err, -EIO, "delete space: %s", sqlite3_errmsg(c->db));
        return 0;
}

static void orgs_delete(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        int k = authz_org(r, r->params[0], AUTHZ_READ, false);
        if (k == 0 && !r->user.admin)
                k = -EPERM; /* CF: only admins delete organizations */
        if (!authz_answer(k, resp, "Organization"))
                return;
        if (!api_tx_begin(r, resp))
                return;
        struct strv spaces = { 0 };
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c, "SELECT guid FROM spaces WHERE org_guid = ?", &e);
                if (s) {
                        sqlite3_bind_text(s, 1, r->params[0], -1, SQLITE_STATIC);
                        while (sqlite3_step(s) == SQLITE_ROW)
                                strv_push(&spaces, xstrdup(db_col_text(s, 0)));
                } else {
                        k = -EIO;
                }
        }
        for (size_t i = 0; k == 0 && i < spaces.n; i++)
                k = space_delete_rows(c, spaces.v[i], &e);
        strv_clear(&spaces);
        if (k == 0) {
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c, "DELETE FROM organizations WHERE guid = ?", &e);
                if (!s || (sqlite3_bind_text(s, 1, r->params[0], -1, SQLITE_STATIC), sqlite3_step(s)) !=
                              SQLITE_DONE)
                        k = berr_set(&e, -EIO, "delete organization: %s", sqlite3_errmsg(c->db));
        }
        if (k < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        sched_kick(c);
        routes_changed(c);
        api_respond_empty(resp, 202);
}

/* ---- spaces ---- */

int tenancy_space_create(struct ctl *c, const char *org_guid, const char *name, char ret_guid[static 37],
                         struct berr **err)
{
        if (!tenancy_name_valid(name))
                return berr_set(err, -EINVAL, "Name must be 1-255 characters");
        char guid[37], now[21];
        ctl_uuid(guid);
        ctl_now(now);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(
            c, "INSERT INTO spaces (guid, name, org_guid, created_at, updated_at) VALUES (?,?,?,?,?)", err);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, org_guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, now, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, now, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
                return berr_set(err, -ENOENT, "Organization not found");
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
                return berr_set(err, -EEXIST, "Name must be unique per organization");
        if (rc != SQLITE_DONE)
                return berr_set(err, -EIO, "insert space: %s", sqlite3_errmsg(c->db));
        memcpy(ret_guid, guid, 37);
        return 0;
}

#define SPACE_COLUMNS "SELECT guid, name, org_guid, created_at, updated_at FROM spaces"

static json_t *space_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *guid = db_col_text(s, 0), *org = db_col_text(s, 2);
        return json_pack(
            "{s:s,s:s,s:s,s:s,s:{s:{s:{s:s}},s:{s:n}},s:o,s:{s:o,s:o,s:o,s:o}}", "guid", guid, "created_at",
            db_col_text(s, 3), "updated_at", db_col_text(s, 4), "name", db_col_text(s, 1), "relationships",
            "organization", "data", "guid", org, "quota", "data", "metadata", api_metadata(), "links", "self",
            api_link(c, "/v3/spaces/%s", guid), "organization", api_link(c, "/v3/organizations/%s", org),
            "apps", api_link(c, "/v3/apps?space_guids=%s", guid), "features",
            api_link(c, "/v3/spaces/%s/features", guid));
}

static json_t *space_get(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, SPACE_COLUMNS " WHERE guid = ?", NULL);
        if (!s)
                return NULL;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        return sqlite3_step(s) == SQLITE_ROW ? space_json(c, s) : NULL;
}

static void spaces_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **names = api_query_list(r, "names");
        _cleanup_(strv_freep) char **guids = api_query_list(r, "guids");
        _cleanup_(strv_freep) char **orgs = api_query_list(r, "organization_guids");
        _cleanup_free_ char *vis = authz_space_filter_sql(r, "guid");
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        _cleanup_free_ char *sql = xasprintf(SPACE_COLUMNS " WHERE 1%s ORDER BY %s %s, rowid %s", vis, field,
                                             desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, sql, &e);
        while (s && sqlite3_step(s) == SQLITE_ROW)
                if (api_in_list(names, db_col_text(s, 1)) && api_in_list(guids, db_col_text(s, 0)) &&
                    api_in_list(orgs, db_col_text(s, 2)))
                        json_array_append_new(items, space_json(r->ctl, s));
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, "/v3/spaces", items);
}

static void spaces_show(struct api_req *r, struct http_response *resp)
{
        if (!authz_answer(authz_space(r, r->params[0], AUTHZ_READ, false) == 0 ? 0 : -ENOENT, resp, "Space"))
                return;
        db_lock(r->ctl);
        json_t *j = space_get(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Space");
                return;
        }
        api_respond(resp, 200, j);
}

/* relationships.<rel>.data.<key> as a string, or NULL. Borrowed from body. */
static const char *rel_str(json_t *body, const char *rel, const char *key)
{
        json_t *v = json_object_get(
            json_object_get(json_object_get(json_object_get(body, "relationships"), rel), "data"), key);
        return json_is_string(v) ? json_string_value(v) : NULL;
}

static void spaces_create(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        const char *name;
        if (!body_name(r, resp, true, &name))
                return;
        const char *org = rel_str(r->body, "organization", "guid");
        if (!org) {
                api_unprocessable(
                    resp,
                    "Relationships Organization must be provided (relationships.organization.data.guid)");
                return;
        }
        int k = authz_org(r, org, AUTHZ_MANAGE, false);
        if (k == -ENOENT) {
                api_unprocessable(
                    resp, "Invalid organization. Ensure the organization exists and you have access to it.");
                return;
        }
        if (!authz_answer(k, resp, "Organization"))
                return;
        if (!api_tx_begin(r, resp))
                return;
        char guid[37];
        k = tenancy_space_create(c, org, name, guid, &e);
        if (k < 0) {
                api_tx_rollback(r);
                if (k == -EEXIST)
                        api_error(resp, 422, 10016, "CF-UniquenessError",
                                  "Space with name '%s' already exists in the organization", name);
                else if (k == -ENOENT)
                        api_unprocessable(resp, "Invalid organization. Ensure the organization exists and "
                                                "you have access to it.");
                else
                        api_server_error(resp, e);
                return;
        }
        json_t *j = space_get(c, guid);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 201, j);
}

static void spaces_update(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        const char *name;
        if (!authz_answer(authz_space(r, r->params[0], AUTHZ_MANAGE, false), resp, "Space"))
                return;
        if (!body_name(r, resp, false, &name))
                return;
        if (!api_tx_begin(r, resp))
                return;
        if (name) {
                char now[21];
                ctl_now(now);
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c, "UPDATE spaces SET name = ?, updated_at = ? WHERE guid = ?", NULL);
                int rc = SQLITE_ERROR;
                if (s) {
                        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
                        sqlite3_bind_text(s, 2, now, -1, SQLITE_STATIC);
                        sqlite3_bind_text(s, 3, r->params[0], -1, SQLITE_STATIC);
                        rc = sqlite3_step(s);
                }
                if ((rc & 0xff) == SQLITE_CONSTRAINT) {
                        api_tx_rollback(r);
                        api_error(resp, 422, 10016, "CF-UniquenessError",
                                  "Space with name '%s' already exists in the organization", name);
                        return;
                }
                if (rc != SQLITE_DONE) {
                        _cleanup_berr_ struct berr *e = NULL;
                        berr_set(&e, -EIO, "update space: %s", sqlite3_errmsg(c->db));
                        api_tx_rollback(r);
                        api_server_error(resp, e);
                        return;
                }
        }
        json_t *j = space_get(c, r->params[0]);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 200, j);
}

static void spaces_delete(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char org[37];
        if (!authz_answer(authz_space(r, r->params[0], AUTHZ_READ, false), resp, "Space"))
                return;
        if (!api_tx_begin(r, resp))
                return;
        int k = space_org(c, r->params[0], org);
        if (k < 0) {
                api_tx_rollback(r);
                api_not_found(resp, "Space");
                return;
        }
        /* CF: org managers and admins delete spaces. */
        if (authz_org(r, org, AUTHZ_MANAGE, true) < 0) {
                api_tx_rollback(r);
                api_forbidden(resp);
                return;
        }
        if (space_delete_rows(c, r->params[0], &e) < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        sched_kick(c);
        routes_changed(c);
        api_respond_empty(resp, 202);
}

/* ---- roles ---- */

#define ROLE_COLUMNS "SELECT guid, type, user_guid, org_guid, space_guid, created_at, updated_at FROM roles"

static json_t *role_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *guid = db_col_text(s, 0), *type = db_col_text(s, 1), *user = db_col_text(s, 2);
        const char *org = db_col_text(s, 3), *space = db_col_text(s, 4);
        bool is_space = space != NULL;
        json_t *links = json_pack("{s:o,s:o}", "self", api_link(c, "/v3/roles/%s", guid), "user",
                                  api_link(c, "/v3/users/%s", user));
        if (is_space)
                json_object_set_new(links, "space", api_link(c, "/v3/spaces/%s", space));
        else
                json_object_set_new(links, "organization", api_link(c, "/v3/organizations/%s", org));
        return json_pack("{s:s,s:s,s:s,s:s,s:{s:{s:{s:s}},s:{s:o},s:{s:o}},s:o}", "guid", guid, "created_at",
                         db_col_text(s, 5), "updated_at", db_col_text(s, 6), "type", type, "relationships",
                         "user", "data", "guid", user, "space", "data",
                         is_space ? json_pack("{s:s}", "guid", space) : json_null(), "organization", "data",
                         is_space ? json_null() : json_pack("{s:s}", "guid", org), "links", links);
}

static void roles_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **types = api_query_list(r, "types");
        _cleanup_(strv_freep) char **guids = api_query_list(r, "guids");
        _cleanup_(strv_freep) char **users = api_query_list(r, "user_guids");
        _cleanup_(strv_freep) char **spaces = api_query_list(r, "space_guids");
        _cleanup_(strv_freep) char **orgs = api_query_list(r, "organization_guids");
        _cleanup_free_ char *vis = authz_org_filter_sql(r, "org_guid");
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        if (strcmp(field, "name") == 0)
                field = "type";
        _cleanup_free_ char *sql = xasprintf(ROLE_COLUMNS " WHERE 1%s ORDER BY %s %s, rowid %s", vis, field,
                                             desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, sql, &e);
        while (s && sqlite3_step(s) == SQLITE_ROW) {
                const char *space = db_col_text(s, 4);
                if (!api_in_list(types, db_col_text(s, 1)) || !api_in_list(guids, db_col_text(s, 0)) ||
                    !api_in_list(users, db_col_text(s, 2)) || !api_in_list(spaces, space) ||
                    (orgs && (space || !api_in_list(orgs, db_col_text(s, 3)))))
                        continue;
                json_array_append_new(items, role_json(r->ctl, s));
        }
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, "/v3/roles", items);
}

/* A role's org and space (lock held) and its resource; NULL if unknown. */
static json_t *role_get(struct ctl *c, const char *guid, char org[static 37], char space[static 37])
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, ROLE_COLUMNS " WHERE guid = ?", NULL);
        if (!s)
                return NULL;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_ROW)
                return NULL;
        snprintf(org, 37, "%s", db_col_text(s, 3) ? db_col_text(s, 3) : "");
        snprintf(space, 37, "%s", db_col_text(s, 4) ? db_col_text(s, 4) : "");
        return role_json(c, s);
}

static void roles_show(struct api_req *r, struct http_response *resp)
{
        char org[37], space[37];
        db_lock(r->ctl);
        json_t *j = role_get(r->ctl, r->params[0], org, space);
        db_unlock(r->ctl);
        if (!j || authz_org(r, org, AUTHZ_READ, false) < 0) {
                json_decref(j);
                api_not_found(resp, "Role");
                return;
        }
        api_respond(resp, 200, j);
}

static void roles_create(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        json_t *type = json_object_get(r->body, "type");
        int ti = json_is_string(type) ? role_type_index(json_string_value(type)) : -1;
        if (ti < 0) {
                api_unprocessable(resp,
                                  "Type must be one of the allowed types: space_developer, space_auditor,"
                                  " space_manager, space_supporter, organization_user, organization_auditor,"
                                  " organization_manager, organization_billing_manager");
                return;
        }
        const char *tname = role_types[ti].name;
        const char *user_guid = rel_str(r->body, "user", "guid");
        const char *username = rel_str(r->body, "user", "username");
        const char *space = rel_str(r->body, "space", "guid");
        const char *org = rel_str(r->body, "organization", "guid");
        if (role_types[ti].space ? (!space || org) : (!org || space)) {
                api_unprocessable(
                    resp, role_types[ti].space
                              ? "Relationships Space must be provided for a space role"
                              : "Relationships Organization must be provided for an organization role");
                return;
        }
        if (!user_guid && !username) {
                api_unprocessable(resp, "Relationships User must be provided (guid or username)");
                return;
        }
        int k = space ? authz_space(r, space, AUTHZ_MANAGE, false) : authz_org(r, org, AUTHZ_MANAGE, false);
        if (k == -ENOENT) {
                api_unprocessable(resp, "Invalid %s. Ensure the %s exists and you have access to it.",
                                  space ? "space" : "organization", space ? "space" : "organization");
                return;
        }
        if (!authz_answer(k, resp, space ? "Space" : "Organization"))
                return;
        if (!api_tx_begin(r, resp))
                return;
        char uguid[37] = "", org_guid[37] = "";
        _cleanup_free_ char *uname = NULL;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c,
                               user_guid ? "SELECT guid, username FROM users WHERE guid = ?"
                                         : "SELECT guid, username FROM users WHERE username = ?",
                               NULL);
                if (s) {
                        sqlite3_bind_text(s, 1, user_guid ? user_guid : username, -1, SQLITE_STATIC);
                        if (sqlite3_step(s) == SQLITE_ROW) {
                                snprintf(uguid, sizeof(uguid), "%s", db_col_text(s, 0));
                                uname = xstrdup(db_col_text(s, 1));
                        }
                }
        }
        if (!uguid[0]) {
                api_tx_rollback(r);
                api_unprocessable(resp,
                                  "Invalid user. Ensure that the user exists and you have access to it.");
                return;
        }
        if (space)
                k = space_org(c, space, org_guid);
        else
                snprintf(org_guid, sizeof(org_guid), "%s", org);
        char guid[37];
        if (k == 0)
                k = role_insert(c, tname, uguid, org_guid, space, false, guid, &e);
        /* A space role implies organization_user in its org (docs/PLATFORM.md). */
        if (k == 0 && space)
                k = role_insert(c, "organization_user", uguid, org_guid, NULL, true, NULL, &e);
        if (k < 0) {
                api_tx_rollback(r);
                if (k == -EEXIST)
                        api_error(resp, 422, 10016, "CF-UniquenessError",
                                  "User '%s' already has '%s' role in %s '%s'.", uname, tname,
                                  space ? "space" : "organization", space ? space : org);
                else
                        api_server_error(resp, e);
                return;
        }
        char o2[37], s2[37];
        json_t *j = role_get(c, guid, o2, s2);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 201, j);
}

static void roles_delete(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        char org[37], space[37];
        db_lock(c);
        json_t *j = role_get(c, r->params[0], org, space);
        db_unlock(c);
        if (!j || authz_org(r, org, AUTHZ_READ, false) < 0) {
                json_decref(j);
                api_not_found(resp, "Role");
                return;
        }
        json_decref(j);
        int k =
            space[0] ? authz_space(r, space, AUTHZ_MANAGE, false) : authz_org(r, org, AUTHZ_MANAGE, false);
        if (k < 0) {
                api_forbidden(resp);
                return;
        }
        if (!api_tx_begin(r, resp))
                return;
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, "DELETE FROM roles WHERE guid = ?", NULL);
        if (!s ||
            (sqlite3_bind_text(s, 1, r->params[0], -1, SQLITE_STATIC), sqlite3_step(s)) != SQLITE_DONE) {
                _cleanup_berr_ struct berr *e = NULL;
                berr_set(&e, -EIO, "delete role: %s", sqlite3_errmsg(c->db));
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        api_respond_empty(resp, 202);
}

const struct api_route api_routes_tenancy[] = {
        { "GET", "/v3/organizations", orgs_list, API_USER },
        { "POST", "/v3/organizations", orgs_create, API_USER },
        { "GET", "/v3/organizations/:guid", orgs_show, API_USER },
        { "PATCH", "/v3/organizations/:guid", orgs_update, API_USER },
        { "DELETE", "/v3/organizations/:guid", orgs_delete, API_USER },
        { "GET", "/v3/spaces", spaces_list, API_USER },
        { "POST", "/v3/spaces", spaces_create, API_USER },
        { "GET", "/v3/spaces/:guid", spaces_show, API_USER },
        { "PATCH", "/v3/spaces/:guid", spaces_update, API_USER },
        { "DELETE", "/v3/spaces/:guid", spaces_delete, API_USER },
        { "GET", "/v3/roles", roles_list, API_USER },
        { "POST", "/v3/roles", roles_create, API_USER },
        { "GET", "/v3/roles/:guid", roles_show, API_USER },
        { "DELETE", "/v3/roles/:guid", roles_delete, API_USER },
        { NULL },
};
