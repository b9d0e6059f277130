/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logins: argon2id password hashes, opaque bearer tokens (stored as SHA-256 with an expiry), UAA's
 * /oauth/token shapes, GET / and /v3/info, users (docs/PLATFORM.md "Auth").
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "berth-config.h"
#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

#define AUTH_TOKEN_BYTES   32
#define AUTH_REFRESH_TTL_S (30 * 24 * 3600)
#define AUTH_USERNAME_MAX  255
/* Passwords longer than this are refused (argon2 accepts any length; a bound keeps requests cheap). */
#define AUTH_PASSWORD_MAX 1024
#define AUTH_SCOPE        "openid cloud_controller.read cloud_controller.write"
#define AUTH_HASH_HEX     (2 * crypto_hash_sha256_BYTES + 1)

_Static_assert(crypto_pwhash_STRBYTES == 128, "ctl.h: auth_password_hash out is 128 bytes");

int auth_password_hash(const char *password, char out[static 128], struct berr **err)
{
        if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
                return berr_set(err, -ENOMEM, "password hash: out of memory");
        return 0;
}

bool auth_password_verify(const char *hash, const char *password)
{
        return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

bool auth_username_valid(const char *username)
{
        size_t n = strlen(username);
        if (n == 0 || n > AUTH_USERNAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (isspace((unsigned char)username[i]) || iscntrl((unsigned char)username[i]))
                        return false;
        return true;
}

int auth_user_create(struct ctl *c, const char *username, const char *password, bool admin,
                     char ret_guid[static 37], struct berr **err)
{
        char hash[crypto_pwhash_STRBYTES];
        int r;
        if (!auth_username_valid(username))
                return berr_set(err, -EINVAL, "Username must be 1-255 characters without whitespace");
        if (!password || !*password || strlen(password) > AUTH_PASSWORD_MAX)
                return berr_set(err, -EINVAL, "Password must be 1-%d characters", AUTH_PASSWORD_MAX);
        if ((r = auth_password_hash(password, hash, err)) < 0)
                return r;
        char guid[37], now[21];
        ctl_uuid(guid);
        ctl_now(now);
        _cleanup_stmt_ sqlite3_stmt *s =
            db_prepare(c,
                       "INSERT INTO users (guid, username, password_hash, admin, created_at, updated_at)"
                       " VALUES (?,?,?,?,?,?)",
                       err);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, username, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, hash, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 4, admin);
        sqlite3_bind_text(s, 5, now, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, now, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
                return berr_set(err, -EEXIST, "User with username '%s' already exists", username);
        if (rc != SQLITE_DONE)
                return berr_set(err, -EIO, "insert user: %s", sqlite3_errmsg(c->db));
        memcpy(ret_guid, guid, 37);
        return 0;
}

/* SHA-256 of a token as lowercase hex. */
static void token_hash(const char *token, char out[static AUTH_HASH_HEX])
{
        unsigned char d[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(d, (const unsigned char *)token, strlen(token));
        sodium_bin2hex(out, AUTH_HASH_HEX, d, sizeof(d));
}

/* A new random token (base64url, no padding). Caller frees. */
static char *token_new(void)
{
        unsigned char b[AUTH_TOKEN_BYTES];
        randombytes_buf(b, sizeof(b));
        size_t n = sodium_base64_ENCODED_LEN(sizeof(b), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        char *s = xmalloc(n);
        sodium_bin2base64(s, n, b, sizeof(b), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        return s;
}

static int token_insert(struct ctl *c, const char *hash, const char *user_guid, const char *kind,
                        int64_t expires, const char *pair, struct berr **err)
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(
            c, "INSERT INTO tokens (hash, user_guid, kind, expires_at, pair) VALUES (?,?,?,?,?)", err);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, hash, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, user_guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, expires);
        sqlite3_bind_text(s, 5, pair, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
                return berr_set(err, -EIO, "insert token: %s", sqlite3_errmsg(c->db));
        return 0;
}

/* Issue an access token paired with refresh (an existing refresh token's hash, or a new one if NULL). */
static int token_issue_pair(struct ctl *c, const char *user_guid, const char *refresh_hash, char **ret_access,
                            char **ret_refresh, struct berr **err)
{
        int r;
        int64_t now = (int64_t)time(NULL);
        _cleanup_free_ char *access = token_new();
        _cleanup_free_ char *refresh = NULL;
        char ah[AUTH_HASH_HEX], rh[AUTH_HASH_HEX];
        token_hash(access, ah);
        if (!refresh_hash) {
                refresh = token_new();
                token_hash(refresh, rh);
                if ((r = token_insert(c, rh, user_guid, "refresh", now + AUTH_REFRESH_TTL_S, NULL, err)) < 0)
                        return r;
                refresh_hash = rh;
        }
        if ((r = token_insert(c, ah, user_guid, "access", now + (c->token_ttl_s ? c->token_ttl_s : 43200),
                              refresh_hash, err)) < 0)
                return r;
        /* Expired tokens are dropped on the way. */
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, "DELETE FROM tokens WHERE expires_at <= ?", NULL);
        if (s) {
                sqlite3_bind_int64(s, 1, now);
                sqlite3_step(s);
        }
        *ret_access = TAKE_PTR(access);
        if (ret_refresh)
                *ret_refresh = TAKE_PTR(refresh);
        return 0;
}

int auth_token_issue(struct ctl *c, const char *user_guid, char **ret_access, char **ret_refresh,
                     struct berr **err)
{
        return token_issue_pair(c, user_guid, NULL, ret_access, ret_refresh, err);
}

/* Look a token of `kind` up; fills ret (if not NULL) and the hash. */
static int token_lookup_kind(struct ctl *c, const char *token, const char *kind, struct api_user *ret)
{
        char h[AUTH_HASH_HEX];
        token_hash(token, h);
        _cleanup_stmt_ sqlite3_stmt *s =
            db_prepare(c,
                       "SELECT u.guid, u.username, u.admin FROM tokens t JOIN users u ON u.guid = t.user_guid"
                       " WHERE t.hash = ? AND t.kind = ? AND t.expires_at > ?",
                       NULL);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, h, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, (int64_t)time(NULL));
        if (sqlite3_step(s) != SQLITE_ROW)
                return -ENOENT;
        if (ret) {
                memset(ret, 0, sizeof(*ret));
                snprintf(ret->guid, sizeof(ret->guid), "%s", db_col_text(s, 0));
                snprintf(ret->username, sizeof(ret->username), "%s", db_col_text(s, 1));
                ret->admin = sqlite3_column_int(s, 2) != 0;
        }
        return 0;
}

int auth_token_lookup(struct ctl *c, const char *token, struct api_user *ret)
{
        return token_lookup_kind(c, token, "access", ret);
}

/* ---- /oauth/token ---- */

static void uaa_error(struct http_response *resp, int status, const char *error, const char *desc)
{
        http_response_header(resp, "Cache-Control", "no-store");
        api_respond(resp, status, json_pack("{s:s,s:s}", "error", error, "error_description", desc));
}

/* A hash to verify against when the user does not exist, so that the answer takes as long either way. */
static char dummy_hash[crypto_pwhash_STRBYTES];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static void dummy_hash_init(void)
{
        if (auth_password_hash("berth-no-such-user", dummy_hash, NULL) < 0)
                dummy_hash[0] = '\0';
}

static void token_respond(struct ctl *c, struct http_response *resp, char *access, char *refresh)
{
        char jti[37];
        ctl_uuid(jti);
        http_response_header(resp, "Cache-Control", "no-store");
        api_respond(resp, 200,
                    json_pack("{s:s,s:s,s:s,s:I,s:s,s:s}", "access_token", access, "token_type", "bearer",
                              "refresh_token", refresh, "expires_in",
                              (json_int_t)(c->token_ttl_s ? c->token_ttl_s : 43200), "scope", AUTH_SCOPE,
                              "jti", jti));
}

static void grant_password(struct api_req *r, struct http_response *resp, const char *form)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_free_ char *user = http_query_get(form, "username");
        _cleanup_free_ char *pass = http_query_get(form, "password");
        _cleanup_free_ char *hash = NULL;
        char guid[37] = "";
        if (!user || !pass || strlen(pass) > AUTH_PASSWORD_MAX) {
                uaa_error(resp, 401, "unauthorized", "Bad credentials");
                return;
        }
        db_lock(c);
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c, "SELECT guid, password_hash FROM users WHERE username = ?", &e);
                if (s) {
                        sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
                        if (sqlite3_step(s) == SQLITE_ROW) {
                                snprintf(guid, sizeof(guid), "%s", db_col_text(s, 0));
                                hash = xstrdup(db_col_text(s, 1));
                        }
                }
        }
        db_unlock(c);
        /* argon2 takes tens of milliseconds and much memory: never under the store lock. */
        bool ok;
        if (hash) {
                ok = auth_password_verify(hash, pass);
        } else {
                pthread_once(&dummy_once, dummy_hash_init);
                auth_password_verify(dummy_hash, pass);
                ok = false;
        }
        sodium_memzero(pass, strlen(pass));
        if (!ok) {
                uaa_error(resp, 401, "unauthorized", "Bad credentials");
                return;
        }
        _cleanup_free_ char *access = NULL, *refresh = NULL;
        if (!api_tx_begin(r, resp))
                return;
        if (auth_token_issue(c, guid, &access, &refresh, &e) < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        token_respond(c, resp, access, refresh);
}

static void grant_refresh(struct api_req *r, struct http_response *resp, const char *form)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_free_ char *refresh = http_query_get(form, "refresh_token");
        _cleanup_free_ char *access = NULL;
        struct api_user u;
        if (!refresh || strlen(refresh) > 512) {
                uaa_error(resp, 401, "invalid_token", "Invalid refresh token");
                return;
        }
        if (!api_tx_begin(r, resp))
                return;
        if (token_lookup_kind(c, refresh, "refresh", &u) < 0) {
                api_tx_rollback(r);
                uaa_error(resp, 401, "invalid_token", "Invalid refresh token (expired or revoked)");
                return;
        }
        char rh[AUTH_HASH_HEX];
        token_hash(refresh, rh);
        /* The refresh token stays valid (UAA's non-rotating default). */
        if (token_issue_pair(c, u.guid, rh, &access, NULL, &e) < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        token_respond(c, resp, access, refresh);
}

static void oauth_token(struct api_req *r, struct http_response *resp)
{
        const char *form = r->http->body ? r->http->body : "";
        _cleanup_free_ char *grant = http_query_get(form, "grant_type");
        if (grant && strcmp(grant, "password") == 0)
                grant_password(r, resp, form);
        else if (grant && strcmp(grant, "refresh_token") == 0)
                grant_refresh(r, resp, form);
        else
                uaa_error(resp, 400, "unsupported_grant_type",
                          "grant_type must be password or refresh_token");
}

/* Logout: revoke the caller's access token and the refresh token it came with. */
static void oauth_revoke(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        const char *h = http_request_header(r->http, "Authorization");
        if (!h || strncasecmp(h, "bearer ", 7) != 0) {
                uaa_error(resp, 401, "unauthorized",
                          "Full authentication is required to access this resource");
                return;
        }
        const char *tok = h + 7;
        while (*tok == ' ')
                tok++;
        char hh[AUTH_HASH_HEX];
        token_hash(tok, hh);
        if (!api_tx_begin(r, resp))
                return;
        /* The refresh token first: its subquery reads the access token's row. */
        _cleanup_stmt_ sqlite3_stmt *s1 = db_prepare(
            c, "DELETE FROM tokens WHERE hash = (SELECT pair FROM tokens WHERE hash = ? AND kind = 'access')",
            NULL);
        _cleanup_stmt_ sqlite3_stmt *s2 = db_prepare(c, "DELETE FROM tokens WHERE hash = ?", NULL);
        int n = 0;
        if (s1 && s2) {
                sqlite3_bind_text(s1, 1, hh, -1, SQLITE_STATIC);
                sqlite3_step(s1);
                sqlite3_bind_text(s2, 1, hh, -1, SQLITE_STATIC);
                sqlite3_step(s2);
                n = sqlite3_changes(c->db);
        }
        if (!api_tx_commit(r, resp))
                return;
        if (n == 0) {
                uaa_error(resp, 401, "invalid_token", "Invalid token");
                return;
        }
        api_respond_empty(resp, 204);
}

/* ---- GET /, /v3/info ---- */

static void root_info(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        api_respond(resp, 200,
                    json_pack("{s:{s:o,s:o,s:o,s:o}}", "links", "self", api_link(c, "%s", ""),
                              "cloud_controller_v3", api_link(c, "/v3"), "login", api_link(c, "%s", ""),
                              "uaa", api_link(c, "%s", "")));
}

static void v3_root(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        api_respond(resp, 200,
                    json_pack("{s:{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}}", "links", "self",
                              api_link(c, "/v3"), "apps", api_link(c, "/v3/apps"), "organizations",
                              api_link(c, "/v3/organizations"), "spaces", api_link(c, "/v3/spaces"),
                              "domains", api_link(c, "/v3/domains"), "routes", api_link(c, "/v3/routes"),
                              "feature_flags", api_link(c, "/v3/feature_flags"), "users",
                              api_link(c, "/v3/users"), "info", api_link(c, "/v3/info")));
}

static void v3_info(struct api_req *r, struct http_response *resp)
{
        api_respond(resp, 200,
                    json_pack("{s:s,s:s,s:s,s:s,s:i,s:{},s:{s:o}}", "name", "berth", "version", BERTH_VERSION,
                              "build", BERTH_VERSION, "description",
                              "berth: Docker images as routed, supervised web apps", "min_cli_version", 0,
                              "custom", "links", "self", api_link(r->ctl, "/v3/info")));
}

/* ---- users ---- */

#define USER_COLUMNS "SELECT guid, username, admin, created_at, updated_at FROM users"

static json_t *user_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *guid = db_col_text(s, 0);
        return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:b,s:o,s:{s:o}}", "guid", guid, "created_at",
                         db_col_text(s, 3), "updated_at", db_col_text(s, 4), "username", db_col_text(s, 1),
                         "presentation_name", db_col_text(s, 1), "origin", "uaa", "admin",
                         sqlite3_column_int(s, 2) != 0, "metadata", api_metadata(), "links", "self",
                         api_link(c, "/v3/users/%s", guid));
}

/*
 * Users r's caller may see: admins all; others themselves and the users holding a role in an org they hold
 * a role in (CF shows org members to each other).
 */
#define USER_VISIBLE                                                                        \
        " AND (?1 OR guid = ?2 OR guid IN (SELECT r2.user_guid FROM roles r1 JOIN roles r2" \
        " ON r2.org_guid = r1.org_guid WHERE r1.user_guid = ?2))"

static void users_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **names = api_query_list(r, "usernames");
        _cleanup_(strv_freep) char **guids = api_query_list(r, "guids");
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        if (strcmp(field, "name") == 0)
                field = "username";
        _cleanup_free_ char *sql = xasprintf(USER_COLUMNS " WHERE 1" USER_VISIBLE " ORDER BY %s %s, rowid %s",
                                             field, desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, sql, &e);
        if (s) {
                sqlite3_bind_int(s, 1, r->user.admin);
                sqlite3_bind_text(s, 2, r->user.guid, -1, SQLITE_STATIC);
        }
        while (s && sqlite3_step(s) == SQLITE_ROW) {
                bool keep = true;
                if (names) {
                        keep = false;
                        for (size_t i = 0; names[i]; i++)
                                keep = keep || strcmp(names[i], db_col_text(s, 1)) == 0;
                }
                if (keep && guids) {
                        keep = false;
                        for (size_t i = 0; guids[i]; i++)
                                keep = keep || strcmp(guids[i], db_col_text(s, 0)) == 0;
                }
                if (keep)
                        json_array_append_new(items, user_json(r->ctl, s));
        }
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, "/v3/users", items);
}

/* The user's resource if visible to r (lock held), or NULL. */
static json_t *user_get(struct api_req *r, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s =
            db_prepare(r->ctl, USER_COLUMNS " WHERE guid = ?3" USER_VISIBLE, NULL);
        if (!s)
                return NULL;
        sqlite3_bind_int(s, 1, r->user.admin);
        sqlite3_bind_text(s, 2, r->user.guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, guid, -1, SQLITE_STATIC);
        return sqlite3_step(s) == SQLITE_ROW ? user_json(r->ctl, s) : NULL;
}

static void users_show(struct api_req *r, struct http_response *resp)
{
        db_lock(r->ctl);
        json_t *j = user_get(r, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "User");
                return;
        }
        api_respond(resp, 200, j);
}

static void users_create(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        if (!r->user.admin) {
                api_forbidden(resp);
                return;
        }
        json_t *name = json_object_get(r->body, "username");
        json_t *pass = json_object_get(r->body, "password");
        json_t *admin = json_object_get(r->body, "admin");
        if (!json_is_string(name) || !auth_username_valid(json_string_value(name))) {
                api_unprocessable(resp, "Username must be 1-255 characters without whitespace");
                return;
        }
        if (!json_is_string(pass) || !*json_string_value(pass) ||
            strlen(json_string_value(pass)) > AUTH_PASSWORD_MAX) {
                api_unprocessable(resp, "Password must be 1-%d characters", AUTH_PASSWORD_MAX);
                return;
        }
        if (admin && !json_is_boolean(admin)) {
                api_unprocessable(resp, "Admin must be a boolean");
                return;
        }
        if (!api_tx_begin(r, resp))
                return;
        char guid[37];
        /* The argon2 hash runs under the lock here: creating users is rare and admin-only. */
        int k = auth_user_create(r->ctl, json_string_value(name), json_string_value(pass),
                                 json_is_true(admin), guid, &e);
        if (k < 0) {
                api_tx_rollback(r);
                if (k == -EEXIST)
                        api_error(resp, 422, 10016, "CF-UniquenessError", "%s", berr_msg(e));
                else if (k == -EINVAL)
                        api_unprocessable(resp, "%s", berr_msg(e));
                else
                        api_server_error(resp, e);
                return;
        }
        json_t *j = user_get(r, guid);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 201, j);
}

static void users_delete(struct api_req *r, struct http_response *resp)
{
        if (!api_tx_begin(r, resp))
                return;
        json_t *j = user_get(r, r->params[0]);
        if (!j) {
                api_tx_rollback(r);
                api_not_found(resp, "User");
                return;
        }
        json_decref(j);
        if (!r->user.admin) {
                api_tx_rollback(r);
                api_forbidden(resp);
                return;
        }
        if (strcmp(r->params[0], r->user.guid) == 0) {
                api_tx_rollback(r);
                api_unprocessable(resp, "You cannot delete yourself");
                return;
        }
        /* Tokens and roles go with the user (ON DELETE CASCADE). */
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, "DELETE FROM users WHERE guid = ?", NULL);
        if (!s ||
            (sqlite3_bind_text(s, 1, r->params[0], -1, SQLITE_STATIC), sqlite3_step(s)) != SQLITE_DONE) {
                _cleanup_berr_ struct berr *e = NULL;
                berr_set(&e, -EIO, "delete user: %s", sqlite3_errmsg(r->ctl->db));
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        api_respond_empty(resp, 202);
}

const struct api_route api_routes_auth[] = {
        { "GET", "/", root_info, API_PUBLIC },
        { "GET", "/v3", v3_root, API_PUBLIC },
        { "GET", "/v3/info", v3_info, API_PUBLIC },
        { "POST", "/oauth/token", oauth_token, API_PUBLIC },
        { "DELETE", "/oauth/token", oauth_revoke, API_PUBLIC },
        { "GET", "/v3/users", users_list, API_USER },
        { "POST", "/v3/users", users_create, API_USER },
        { "GET", "/v3/users/:guid", users_show, API_USER },
        { "DELETE", "/v3/users/:guid", users_delete, API_USER },
        { NULL },
};
