// config: schema table, TOML and command-line loading, checks of plain values and printing.
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/toml.h"

// ---- the schema table, generated from the X-macros in config.h ----

#define DEFAULTS_BOOL(d) .default_int = (d)
#define DEFAULTS_INT(d) .default_int = (d)
#define DEFAULTS_FLOAT(d) .default_float = (d)
#define DEFAULTS_STR(d) .default_str = (d)
#define KEY_ENTRY(S, kind, name, def, lo, hi, ch, st, hl)                                          \
    {.section = #S,                                                                                \
     .key = #name,                                                                                 \
     .type = DSV3_CFG_##kind,                                                                      \
     DEFAULTS_##kind(def),                                                                         \
     .min = (double)(lo),                                                                          \
     .max = (double)(hi),                                                                          \
     .choices = (ch),                                                                              \
     st,                                                                                           \
     .help = (hl),                                                                                 \
     .offset = offsetof(Dsv3Config, S.name)},
#define SECTION_ENTRIES(section, KEYS) KEYS(KEY_ENTRY, section)

const Dsv3ConfigKey dsv3_config_keys[DSV3_CONFIG_KEY_COUNT] = {
    DSV3_CONFIG_SECTIONS(SECTION_ENTRIES)};

// A suggestion is offered when the unknown name is this close (edits) to a known one.
// Config files are read in chunks of CONFIG_READ_CHUNK bytes, doubling.
// Messages quote at most VALUE_SHOWN_BYTES of a string value (VALUE_TEXT_CAPACITY leaves room
// for the quotes, "..." and the NUL; numbers are far shorter).
enum {
    SUGGESTION_MAX_DISTANCE = 3,
    NAME_CAPACITY = 128,
    CONFIG_READ_CHUNK = 16384,
    VALUE_SHOWN_BYTES = 200,
    VALUE_TEXT_CAPACITY = VALUE_SHOWN_BYTES + 8,
};

static void *key_field(Dsv3Config *cfg, const Dsv3ConfigKey *k) { return (char *)cfg + k->offset; }

static const void *key_field_const(const Dsv3Config *cfg, const Dsv3ConfigKey *k) {
    return (const char *)cfg + k->offset;
}

static int key_index(const Dsv3ConfigKey *k) { return (int)(k - dsv3_config_keys); }

const Dsv3ConfigKey *dsv3_config_key_find(const char *section, const char *name) {
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++)
        if (strcmp(dsv3_config_keys[i].section, section) == 0 &&
            strcmp(dsv3_config_keys[i].key, name) == 0)
            return &dsv3_config_keys[i];
    return NULL;
}

static int section_exists(const char *section) {
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++)
        if (strcmp(dsv3_config_keys[i].section, section) == 0) return 1;
    return 0;
}

// Levenshtein distance of two short names (longer names are never close).
static int name_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la >= NAME_CAPACITY || lb >= NAME_CAPACITY) return SUGGESTION_MAX_DISTANCE + 1;
    int row[NAME_CAPACITY];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diagonal = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int above = row[j];
            int best = diagonal + (a[i - 1] != b[j - 1]);
            if (above + 1 < best) best = above + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diagonal = above;
        }
    }
    return row[lb];
}

// " (did you mean 'x'?)" for the closest known key of `section` (or section, when NULL), or "".
static void suggest(const char *section, const char *name, char *out, size_t capacity) {
    const char *best = NULL;
    int best_distance = SUGGESTION_MAX_DISTANCE + 1;
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        const char *candidate = section ? k->key : k->section;
        if (section && strcmp(k->section, section) != 0) continue;
        int d = name_distance(name, candidate);
        if (d < best_distance) best_distance = d, best = candidate;
    }
    if (best)
        snprintf(out, capacity, " (did you mean '%s'?)", best);
    else
        out[0] = '\0';
}

static Dsv3Err unknown_key(const char *where, const char *section, const char *name) {
    char hint[NAME_CAPACITY + 32];
    if (!section_exists(section)) {
        suggest(NULL, section, hint, sizeof hint);
        DSV3_RAISE(DSV3_ERR_CONFIG,
                   "%s: unknown section [%s]%s; `--help` lists every section and key", where,
                   section, hint);
    }
    suggest(section, name, hint, sizeof hint);
    DSV3_RAISE(DSV3_ERR_CONFIG, "%s: unknown key '%s' in [%s]%s; `--help` lists every key", where,
               name, section, hint);
}

// A plain key at the top of a file, where only [section] tables may stand.
static Dsv3Err key_outside_sections(const char *where, const char *name) {
    char owners[NAME_CAPACITY * 2] = "";
    size_t used = 0;
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT && used < sizeof owners; i++) {
        if (strcmp(dsv3_config_keys[i].key, name) != 0) continue;
        int n = snprintf(owners + used, sizeof owners - used, "%s[%s]", used ? " or " : "",
                         dsv3_config_keys[i].section);
        if (n < 0) break;
        used += (size_t)n;
    }
    if (owners[0])
        DSV3_RAISE(DSV3_ERR_CONFIG, "%s: '%s' stands outside any section; put it under %s", where,
                   name, owners);
    DSV3_RAISE(DSV3_ERR_CONFIG,
               "%s: '%s' stands outside any section and is no known key; "
               "`--help` lists every section and key",
               where, name);
}

// ---- setting values ----

static Dsv3Err set_string(Dsv3Config *cfg, const Dsv3ConfigKey *k, const char *value,
                          const char *where) {
    size_t n = strlen(value);
    DSV3_CHECK(n < DSV3_CONFIG_STRING_CAPACITY, DSV3_ERR_CONFIG,
               "%s: %s.%s is %zu bytes long; at most %d are supported", where, k->section, k->key,
               n, DSV3_CONFIG_STRING_CAPACITY - 1);
    memcpy(key_field(cfg, k), value, n + 1);
    return DSV3_OK;
}

static void set_origin(Dsv3Config *cfg, const Dsv3ConfigKey *k, const char *where) {
    snprintf(cfg->origin[key_index(k)], DSV3_CONFIG_ORIGIN_CAPACITY, "%s", where);
}

static Dsv3Err set_from_toml(Dsv3Config *cfg, const Dsv3ConfigKey *k, const Dsv3TomlValue *v,
                             const char *where) {
    static const char *const expected[] = {"a boolean (true or false)", "an integer", "a number",
                                           "a string"};
    int ok = 0;
    switch (k->type) {
    case DSV3_CFG_BOOL:
        if ((ok = v->type == DSV3_TOML_BOOL)) *(int *)key_field(cfg, k) = v->boolean;
        break;
    case DSV3_CFG_INT:
        if ((ok = v->type == DSV3_TOML_INTEGER)) *(int64_t *)key_field(cfg, k) = v->integer;
        break;
    case DSV3_CFG_FLOAT:
        ok = v->type == DSV3_TOML_FLOAT || v->type == DSV3_TOML_INTEGER;
        if (ok)
            *(double *)key_field(cfg, k) =
                v->type == DSV3_TOML_FLOAT ? v->number : (double)v->integer;
        break;
    case DSV3_CFG_STR:
        if ((ok = v->type == DSV3_TOML_STRING)) DSV3_CALL(set_string(cfg, k, v->string, where));
        break;
    }
    DSV3_CHECK(ok, DSV3_ERR_CONFIG, "%s: %s.%s must be %s, not %s", where, k->section, k->key,
               expected[k->type], dsv3_toml_type_name(v->type));
    set_origin(cfg, k, where);
    return DSV3_OK;
}

static Dsv3Err set_from_text(Dsv3Config *cfg, const Dsv3ConfigKey *k, const char *value,
                             const char *where) {
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case DSV3_CFG_BOOL:
        if (!value || strcmp(value, "true") == 0)
            *(int *)key_field(cfg, k) = 1;
        else if (strcmp(value, "false") == 0)
            *(int *)key_field(cfg, k) = 0;
        else
            DSV3_RAISE(DSV3_ERR_CONFIG, "%s: %s.%s must be true or false, not '%s'", where,
                       k->section, k->key, value);
        break;
    case DSV3_CFG_INT: {
        DSV3_CHECK(value, DSV3_ERR_CONFIG, "%s: %s.%s needs an integer value", where, k->section,
                   k->key);
        long long n = strtoll(value, &end, 10);
        DSV3_CHECK(*value && !*end && errno == 0, DSV3_ERR_CONFIG,
                   "%s: %s.%s must be an integer, not '%s'", where, k->section, k->key, value);
        *(int64_t *)key_field(cfg, k) = n;
        break;
    }
    case DSV3_CFG_FLOAT: {
        DSV3_CHECK(value, DSV3_ERR_CONFIG, "%s: %s.%s needs a number", where, k->section, k->key);
        double x = strtod(value, &end);
        DSV3_CHECK(*value && !*end && errno == 0, DSV3_ERR_CONFIG,
                   "%s: %s.%s must be a number, not '%s'", where, k->section, k->key, value);
        *(double *)key_field(cfg, k) = x;
        break;
    }
    case DSV3_CFG_STR:
        DSV3_CHECK(value, DSV3_ERR_CONFIG, "%s: %s.%s needs a value", where, k->section, k->key);
        DSV3_CALL(set_string(cfg, k, value, where));
        break;
    }
    set_origin(cfg, k, where);
    return DSV3_OK;
}

void dsv3_config_init(Dsv3Config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        void *field = key_field(cfg, k);
        switch (k->type) {
        case DSV3_CFG_BOOL: *(int *)field = (int)k->default_int; break;
        case DSV3_CFG_INT: *(int64_t *)field = k->default_int; break;
        case DSV3_CFG_FLOAT: *(double *)field = k->default_float; break;
        case DSV3_CFG_STR:
            snprintf((char *)field, DSV3_CONFIG_STRING_CAPACITY, "%s", k->default_str);
            break;
        }
    }
}

// ---- loading ----

// "source:line". A source too long for an origin loses its start, never the line number.
static void format_where(char *out, const char *source, int line) {
    static const char elided[] = "...";
    char suffix[32];
    int n = snprintf(suffix, sizeof suffix, ":%d", line);
    size_t room = DSV3_CONFIG_ORIGIN_CAPACITY - 1 - (size_t)n, length = strlen(source);
    if (length <= room) {
        snprintf(out, DSV3_CONFIG_ORIGIN_CAPACITY, "%s%s", source, suffix);
        return;
    }
    const char *tail = source + length - (room - (sizeof elided - 1));
    while ((*(const unsigned char *)tail & 0xc0) == 0x80)
        tail++; // not inside a UTF-8 character
    snprintf(out, DSV3_CONFIG_ORIGIN_CAPACITY, "%s%s%s", elided, tail, suffix);
}

static Dsv3Err load_section(Dsv3Config *cfg, const char *section, const Dsv3TomlValue *table,
                            const char *source) {
    char where[DSV3_CONFIG_ORIGIN_CAPACITY];
    for (size_t i = 0; i < table->table.count; i++) {
        const char *name = table->table.keys[i];
        const Dsv3TomlValue *v = &table->table.values[i];
        format_where(where, source, v->line);
        const Dsv3ConfigKey *k = dsv3_config_key_find(section, name);
        if (!k) DSV3_CALL(unknown_key(where, section, name));
        DSV3_CALL(set_from_toml(cfg, k, v, where));
    }
    return DSV3_OK;
}

Dsv3Err dsv3_config_load_text(Dsv3Config *cfg, const char *text, size_t length,
                              const char *source) {
    Dsv3TomlValue *root = NULL;
    DSV3_CALL(dsv3_toml_parse(text, length, source, &root));
    Dsv3Err err = DSV3_OK;
    char where[DSV3_CONFIG_ORIGIN_CAPACITY];
    for (size_t i = 0; i < root->table.count && err == DSV3_OK; i++) {
        const char *section = root->table.keys[i];
        const Dsv3TomlValue *v = &root->table.values[i];
        format_where(where, source, v->line);
        if (!section_exists(section) && v->type != DSV3_TOML_TABLE) {
            // Most likely a key written above its section's header.
            DSV3_CALL_GOTO(err, done, key_outside_sections(where, section));
        }
        if (!section_exists(section)) {
            DSV3_CALL_GOTO(err, done, unknown_key(where, section, ""));
        }
        DSV3_CHECK_GOTO(err, done, v->type == DSV3_TOML_TABLE, DSV3_ERR_CONFIG,
                        "%s: '%s' must be a table ([%s] followed by its keys), not %s", where,
                        section, section, dsv3_toml_type_name(v->type));
        DSV3_CALL_GOTO(err, done, load_section(cfg, section, v, source));
    }
done:
    dsv3_toml_free(root);
    return err;
}

Dsv3Err dsv3_config_load_file(Dsv3Config *cfg, const char *path) {
    FILE *f = fopen(path, "rb");
    DSV3_CHECK(f, DSV3_ERR_IO, "cannot open config file '%s': %s", path, strerror(errno));
    // Read until the end instead of trusting the size from fseek/ftell: a folder opens like a
    // file and "ends" at LONG_MAX, and pipes (<(...), /dev/stdin) have no size at all.
    Dsv3Err err = DSV3_OK;
    char *text = NULL, *grown = NULL;
    size_t length = 0, capacity = 0;
    for (;;) {
        if (length == capacity) {
            capacity = capacity ? 2 * capacity : CONFIG_READ_CHUNK;
            DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&grown, capacity, "config file text"));
            if (text) memcpy(grown, text, length);
            dsv3_free(text);
            text = grown;
            grown = NULL;
        }
        errno = 0;
        size_t n = fread(text + length, 1, capacity - length, f);
        length += n;
        if (n == 0) break;
    }
    DSV3_CHECK_GOTO(err, done, !ferror(f), DSV3_ERR_IO, "cannot read config file '%s': %s", path,
                    errno ? strerror(errno) : "read error");
    DSV3_CALL_GOTO(err, done, dsv3_config_load_text(cfg, text, length, path));
done:
    dsv3_free(text);
    fclose(f);
    return err;
}

Dsv3Err dsv3_config_override(Dsv3Config *cfg, const char *dotted, const char *value) {
    char where[DSV3_CONFIG_ORIGIN_CAPACITY];
    snprintf(where, sizeof where, "command line --%s", dotted);
    const char *dot = strchr(dotted, '.');
    DSV3_CHECK(dot && dot != dotted && dot[1], DSV3_ERR_CONFIG,
               "%s: an override is --section.key value (e.g. --training.steps 20)", where);
    char section[NAME_CAPACITY];
    size_t n = (size_t)(dot - dotted);
    DSV3_CHECK(n < sizeof section, DSV3_ERR_CONFIG, "%s: unknown section", where);
    memcpy(section, dotted, n);
    section[n] = '\0';
    const Dsv3ConfigKey *k = dsv3_config_key_find(section, dot + 1);
    if (!k) DSV3_CALL(unknown_key(where, section, dot + 1));
    DSV3_CALL(set_from_text(cfg, k, value, where));
    return DSV3_OK;
}

// The value of the option at argv[*i]: after '=', or the next argument (consumed). A boolean
// key may stand bare (NULL) when the next argument is another option or there is none.
static const char *option_value(int argc, char **argv, int *i, const char *eq, int bare_ok) {
    if (eq) return eq + 1;
    if (*i + 1 < argc && !(bare_ok && strncmp(argv[*i + 1], "--", 2) == 0)) return argv[++*i];
    return NULL;
}

Dsv3Err dsv3_config_parse_args(Dsv3Config *cfg, int argc, char **argv) {
    static const char config_flag[] = "--job.config_file";
    // The file comes first so that every override wins over it, wherever it stands.
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], config_flag, sizeof config_flag - 1) != 0) continue;
        const char *rest = argv[i] + sizeof config_flag - 1;
        if (*rest != '\0' && *rest != '=') continue;
        const char *path = option_value(argc, argv, &i, *rest == '=' ? rest : NULL, 0);
        DSV3_CHECK(path, DSV3_ERR_USAGE, "%s needs a file name", config_flag);
        DSV3_CALL(dsv3_config_load_file(cfg, path));
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        DSV3_CHECK(strncmp(arg, "--", 2) == 0 && arg[2], DSV3_ERR_USAGE,
                   "unexpected argument '%s': options are --section.key value; `--help` lists them",
                   arg);
        char dotted[2 * NAME_CAPACITY];
        const char *eq = strchr(arg, '=');
        size_t n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        DSV3_CHECK(n < sizeof dotted, DSV3_ERR_USAGE, "option '%s' is too long", arg);
        memcpy(dotted, arg + 2, n);
        dotted[n] = '\0';
        const char *dot = strchr(dotted, '.');
        const Dsv3ConfigKey *k = NULL;
        if (dot) {
            char section[NAME_CAPACITY];
            size_t sn = (size_t)(dot - dotted);
            if (sn < sizeof section) {
                memcpy(section, dotted, sn);
                section[sn] = '\0';
                k = dsv3_config_key_find(section, dot + 1);
            }
        }
        const char *value = option_value(argc, argv, &i, eq, k && k->type == DSV3_CFG_BOOL);
        if (k && k->offset == offsetof(Dsv3Config, job.config_file)) {
            // Loaded above; recorded so that the printed config says which file it was.
            DSV3_CALL(set_from_text(cfg, k, value, "command line --job.config_file"));
            continue;
        }
        DSV3_CALL(dsv3_config_override(cfg, dotted, value));
    }
    return DSV3_OK;
}

// ---- resolution and validation ----

int dsv3_config_key_is_set(const Dsv3Config *cfg, const Dsv3ConfigKey *k) {
    return cfg->origin[key_index(k)][0] != '\0';
}

const char *dsv3_config_key_where(const Dsv3Config *cfg, const Dsv3ConfigKey *k) {
    return dsv3_config_key_is_set(cfg, k) ? cfg->origin[key_index(k)] : "default";
}

static int choice_ok(const char *choices, const char *value) {
    size_t n = strlen(value);
    for (const char *c = choices; c && *c;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && strncmp(c, value, n) == 0) return 1;
        c = bar ? bar + 1 : c + len;
    }
    return 0;
}

static int value_is_default(const Dsv3Config *cfg, const Dsv3ConfigKey *k) {
    const void *f = key_field_const(cfg, k);
    switch (k->type) {
    case DSV3_CFG_BOOL: return *(const int *)f == (int)k->default_int;
    case DSV3_CFG_INT: return *(const int64_t *)f == k->default_int;
    case DSV3_CFG_FLOAT: return *(const double *)f == k->default_float;
    case DSV3_CFG_STR: return strcmp((const char *)f, k->default_str) == 0;
    }
    return 0;
}

// A value as the user writes it in TOML (strings quoted; long ones cut), for messages.
static void format_value(const void *f, Dsv3ConfigType type, char *out, size_t capacity) {
    switch (type) {
    case DSV3_CFG_BOOL: snprintf(out, capacity, "%s", *(const int *)f ? "true" : "false"); break;
    case DSV3_CFG_INT: snprintf(out, capacity, "%" PRId64, *(const int64_t *)f); break;
    case DSV3_CFG_FLOAT: snprintf(out, capacity, "%g", *(const double *)f); break;
    case DSV3_CFG_STR: {
        const char *text = f;
        int cut = strlen(text) > VALUE_SHOWN_BYTES;
        snprintf(out, capacity, "\"%.*s%s\"", VALUE_SHOWN_BYTES, text, cut ? "..." : "");
        break;
    }
    }
}

// The schema's default of a key, formatted as format_value does.
static void format_default(const Dsv3ConfigKey *k, char *out, size_t capacity) {
    int flag = (int)k->default_int; // a BOOL field is an int
    const void *f = k->type == DSV3_CFG_BOOL    ? (const void *)&flag
                    : k->type == DSV3_CFG_INT   ? (const void *)&k->default_int
                    : k->type == DSV3_CFG_FLOAT ? (const void *)&k->default_float
                                                : (const void *)k->default_str;
    format_value(f, k->type, out, capacity);
}

// A key that waits for a capability keeps its default, or the run stops before any work.
static Dsv3Err check_supported(const Dsv3Config *cfg, const Dsv3ConfigKey *k) {
    if (k->status != DSV3_KEY_NOT_YET || value_is_default(cfg, k)) return DSV3_OK;
    char value[VALUE_TEXT_CAPACITY], fallback[VALUE_TEXT_CAPACITY];
    format_value(key_field_const(cfg, k), k->type, value, sizeof value);
    format_default(k, fallback, sizeof fallback);
    DSV3_RAISE(DSV3_ERR_CONFIG,
               "%s: %s.%s = %s is not supported yet: it needs %s, which is not implemented "
               "(only the default %s is accepted)",
               dsv3_config_key_where(cfg, k), k->section, k->key, value, k->needs, fallback);
}

static Dsv3Err check_key(const Dsv3Config *cfg, const Dsv3ConfigKey *k) {
    const char *where = dsv3_config_key_where(cfg, k);
    const void *f = key_field_const(cfg, k);
    DSV3_CALL(check_supported(cfg, k));
    switch (k->type) {
    case DSV3_CFG_BOOL: break;
    case DSV3_CFG_INT: {
        int64_t v = *(const int64_t *)f;
        if ((double)v >= k->min && (double)v <= k->max) break;
        // DSV3_I64_MAX as a double prints as 2^63, one more than any int64_t: say "≥ min".
        if (k->max >= (double)DSV3_I64_MAX)
            DSV3_RAISE(DSV3_ERR_CONFIG,
                       "%s: %s.%s = %" PRId64 " is out of range: expected an "
                       "integer ≥ %.0f (%s)",
                       where, k->section, k->key, v, k->min, k->help);
        DSV3_RAISE(DSV3_ERR_CONFIG,
                   "%s: %s.%s = %" PRId64 " is out of range: expected an integer "
                   "in [%.0f, %.0f] (%s)",
                   where, k->section, k->key, v, k->min, k->max, k->help);
    }
    case DSV3_CFG_FLOAT: {
        double v = *(const double *)f;
        DSV3_CHECK(isfinite(v) && v >= k->min && v <= k->max, DSV3_ERR_CONFIG,
                   "%s: %s.%s = %g is out of range: expected a number in [%g, %g] (%s)", where,
                   k->section, k->key, v, k->min, k->max, k->help);
        break;
    }
    case DSV3_CFG_STR:
        DSV3_CHECK(!k->choices || choice_ok(k->choices, (const char *)f), DSV3_ERR_CONFIG,
                   "%s: %s.%s = \"%s\" is not one of: %s", where, k->section, k->key,
                   (const char *)f, k->choices);
        break;
    }
    return DSV3_OK;
}

// Where a value came from, for messages about combinations of keys.
#define WHERE(cfg, section, name)                                                                  \
    dsv3_config_key_where((cfg), dsv3_config_key_find(#section, #name))

// [validation]: -1 takes training's batch and length; the model is built for training's length.
static Dsv3Err check_validation(const Dsv3Config *cfg) {
    const char *where_b = WHERE(cfg, validation, local_batch_size),
               *where_t = WHERE(cfg, validation, seq_len);
    DSV3_CHECK(cfg->validation.local_batch_size != 0, DSV3_ERR_CONFIG,
               "%s: validation.local_batch_size must be -1 (training's) or >= 1", where_b);
    DSV3_CHECK(cfg->validation.seq_len != 0, DSV3_ERR_CONFIG,
               "%s: validation.seq_len must be -1 (training's) or >= 1", where_t);
    if (!cfg->validation.enable) return DSV3_OK;
    DSV3_CHECK(cfg->validation.seq_len <= cfg->training.seq_len, DSV3_ERR_CONFIG,
               "%s: validation.seq_len %" PRId64 " exceeds training.seq_len %" PRId64
               ": the model is "
               "built for training's sequence length (shorter held-out sequences are padded)",
               where_t, cfg->validation.seq_len, cfg->training.seq_len);
    DSV3_CHECK(
        strcmp(cfg->validation.dataset, "text") != 0, DSV3_ERR_CONFIG,
        "%s: validation.dataset = \"text\" is not supported yet: use \"synthetic\" or \"tokens\"",
        WHERE(cfg, validation, dataset));
    DSV3_CHECK(strcmp(cfg->validation.dataset, "tokens") != 0 || cfg->validation.dataset_path[0],
               DSV3_ERR_CONFIG, "%s: validation.dataset = \"tokens\" needs validation.dataset_path",
               WHERE(cfg, validation, dataset));
    return DSV3_OK;
}

// Checks that need two or more keys. Those that also need model arguments (a parallel degree
// against num_experts, n_layers or n_heads) are model_config's.
static Dsv3Err check_combinations(const Dsv3Config *cfg) {
    DSV3_CHECK(cfg->optimizer.lr > 0, DSV3_ERR_CONFIG, "%s: optimizer.lr must be > 0, not %g",
               WHERE(cfg, optimizer, lr), cfg->optimizer.lr);
    DSV3_CHECK(cfg->optimizer.beta1 < 1 && cfg->optimizer.beta2 < 1, DSV3_ERR_CONFIG,
               "optimizer.beta1 (%g) and optimizer.beta2 (%g) must be < 1", cfg->optimizer.beta1,
               cfg->optimizer.beta2);
    DSV3_CHECK(cfg->optimizer.eps > 0, DSV3_ERR_CONFIG, "%s: optimizer.eps must be > 0",
               WHERE(cfg, optimizer, eps));
    DSV3_CHECK(cfg->training.max_norm > 0, DSV3_ERR_CONFIG, "%s: training.max_norm must be > 0",
               WHERE(cfg, training, max_norm));
    double ratio = cfg->lr_scheduler.decay_ratio;
    DSV3_CHECK(ratio == -1.0 || ratio >= 0.0, DSV3_ERR_CONFIG,
               "%s: lr_scheduler.decay_ratio = %g: expected -1 (decay right after warm-up) or a "
               "share in [0, 1]",
               WHERE(cfg, lr_scheduler, decay_ratio), ratio);
    int64_t gbs = cfg->training.global_batch_size;
    DSV3_CHECK(gbs == -1 || gbs >= 1, DSV3_ERR_CONFIG,
               "%s: training.global_batch_size = %" PRId64
               ": expected -1 or a positive multiple of "
               "training.local_batch_size",
               WHERE(cfg, training, global_batch_size), gbs);
    DSV3_CHECK(gbs == -1 || gbs % cfg->training.local_batch_size == 0, DSV3_ERR_CONFIG,
               "%s: training.global_batch_size %" PRId64 " is not a multiple of "
               "training.local_batch_size %" PRId64,
               WHERE(cfg, training, global_batch_size), gbs, cfg->training.local_batch_size);
    DSV3_CHECK(strcmp(cfg->training.dataset, "synthetic") == 0 || cfg->training.dataset_path[0],
               DSV3_ERR_CONFIG, "%s: training.dataset = \"%s\" needs training.dataset_path",
               WHERE(cfg, training, dataset), cfg->training.dataset);
    DSV3_CHECK(
        cfg->parallelism.data_parallel_shard_degree != 0, DSV3_ERR_CONFIG,
        "%s: parallelism.data_parallel_shard_degree must be -1 (fill from the processes) or ≥ 1",
        WHERE(cfg, parallelism, data_parallel_shard_degree));
    const char *ac = cfg->activation_checkpoint.selective_ac_option;
    char *end = NULL;
    long every = strtol(ac, &end, 10);
    DSV3_CHECK(strcmp(ac, "op") == 0 || (*ac && !*end && every >= 1), DSV3_ERR_CONFIG,
               "%s: activation_checkpoint.selective_ac_option = \"%s\": expected \"op\" or a "
               "positive integer N (checkpoint every N-th layer)",
               WHERE(cfg, activation_checkpoint, selective_ac_option), ac);
    DSV3_CALL(check_validation(cfg));
    int64_t cp = cfg->parallelism.context_parallel_degree;
    DSV3_CHECK(cfg->training.seq_len % (2 * cp) == 0 || cp == 1, DSV3_ERR_CONFIG,
               "%s: training.seq_len %" PRId64 " must be a multiple of 2 × "
               "parallelism.context_parallel_degree = %" PRId64
               " (each rank takes a head and a tail chunk)",
               WHERE(cfg, training, seq_len), cfg->training.seq_len, 2 * cp);
    return DSV3_OK;
}

// The [model] keys hold values: the flavor's (filled by model_config) or the user's own.
static Dsv3Err check_model_filled(const Dsv3Config *cfg) {
    if (cfg->model_filled) return DSV3_OK;
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        DSV3_CHECK(k->status != DSV3_KEY_FROM_FLAVOR || dsv3_config_key_is_set(cfg, k),
                   DSV3_ERR_USAGE,
                   "%s.%s has no value yet: the [model] keys the user leaves unset take the "
                   "flavor's values; resolve the config with dsv3_model_config_resolve "
                   "(common/model/model_config.h), which fills them first",
                   k->section, k->key);
    }
    return DSV3_OK;
}

Dsv3Err dsv3_config_resolve(Dsv3Config *cfg) {
    DSV3_CALL(check_model_filled(cfg));
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++)
        DSV3_CALL(check_key(cfg, &dsv3_config_keys[i]));
    DSV3_CALL(check_combinations(cfg));
    return DSV3_OK;
}

// ---- printing ----

// A growing text buffer from the counted allocator.
typedef struct {
    char *data;
    size_t length, capacity;
} TextBuffer;

static Dsv3Err text_append(TextBuffer *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static Dsv3Err text_append(TextBuffer *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->data ? t->data + t->length : NULL,
                          t->data ? t->capacity - t->length : 0, fmt, ap);
        va_end(ap);
        DSV3_ASSERT(n >= 0);
        if (t->data && t->length + (size_t)n < t->capacity) {
            t->length += (size_t)n;
            return DSV3_OK;
        }
        size_t capacity = 2 * (t->capacity + (size_t)n) + 256;
        char *grown = NULL;
        DSV3_CALL(dsv3_alloc((void **)&grown, capacity, "config text"));
        if (t->data)
            memcpy(grown, t->data, t->length + 1);
        else
            grown[0] = '\0';
        dsv3_free(t->data);
        t->data = grown;
        t->capacity = capacity;
    }
}

// A TOML basic string: quotes, backslashes and control characters escaped.
static Dsv3Err append_quoted(TextBuffer *t, const char *s) {
    DSV3_CALL(text_append(t, "\""));
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            DSV3_CALL(text_append(t, "\\%c", *p));
        else if (*p < 0x20 || *p == 0x7f)
            DSV3_CALL(text_append(t, "\\u%04x", *p));
        else
            DSV3_CALL(text_append(t, "%c", *p));
    }
    return text_append(t, "\"");
}

// A float that reads back bit-exactly and as a TOML float (never as an integer).
static Dsv3Err append_float(TextBuffer *t, double x) {
    char s[64];
    snprintf(s, sizeof s, "%.17g", x);
    for (int digits = 1; digits < 17; digits++) { // shortest form that round-trips
        char shorter[64];
        snprintf(shorter, sizeof shorter, "%.*g", digits, x);
        if (strtod(shorter, NULL) == x) {
            memcpy(s, shorter, sizeof s);
            break;
        }
    }
    return text_append(t, strpbrk(s, ".eEn") ? "%s" : "%s.0", s);
}

static Dsv3Err append_value(TextBuffer *t, const Dsv3Config *cfg, const Dsv3ConfigKey *k) {
    const void *f = key_field_const(cfg, k);
    switch (k->type) {
    case DSV3_CFG_BOOL: return text_append(t, "%s", *(const int *)f ? "true" : "false");
    case DSV3_CFG_INT: return text_append(t, "%" PRId64, *(const int64_t *)f);
    case DSV3_CFG_FLOAT: return append_float(t, *(const double *)f);
    case DSV3_CFG_STR: return append_quoted(t, (const char *)f);
    }
    DSV3_ASSERT(!"unknown key type");
    return DSV3_OK;
}

Dsv3Err dsv3_config_to_toml(const Dsv3Config *cfg, char **out) {
    TextBuffer t = {0};
    Dsv3Err err = DSV3_OK;
    const char *section = NULL;
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        if (!section || strcmp(section, k->section) != 0) {
            DSV3_CALL_GOTO(err, fail, text_append(&t, "%s[%s]\n", section ? "\n" : "", k->section));
            section = k->section;
        }
        DSV3_CALL_GOTO(err, fail, text_append(&t, "%s = ", k->key));
        DSV3_CALL_GOTO(err, fail, append_value(&t, cfg, k));
        DSV3_CALL_GOTO(err, fail, text_append(&t, "\n"));
    }
    *out = t.data;
    return DSV3_OK;
fail:
    dsv3_free(t.data);
    return err;
}

Dsv3Err dsv3_config_help(char **out) {
    static const char *const type_names[] = {"bool", "int", "float", "string"};
    Dsv3Config defaults;
    dsv3_config_init(&defaults);
    TextBuffer t = {0};
    Dsv3Err err = DSV3_OK;
    for (int i = 0; i < DSV3_CONFIG_KEY_COUNT; i++) {
        const Dsv3ConfigKey *k = &dsv3_config_keys[i];
        DSV3_CALL_GOTO(err, fail,
                       text_append(&t, "  --%s.%s (%s", k->section, k->key, type_names[k->type]));
        if (k->choices) DSV3_CALL_GOTO(err, fail, text_append(&t, ": %s", k->choices));
        if (k->status == DSV3_KEY_FROM_FLAVOR) {
            DSV3_CALL_GOTO(err, fail, text_append(&t, ", default from model.flavor)"));
        } else {
            DSV3_CALL_GOTO(err, fail, text_append(&t, ", default "));
            DSV3_CALL_GOTO(err, fail, append_value(&t, &defaults, k));
            DSV3_CALL_GOTO(err, fail, text_append(&t, ")"));
        }
        if (k->status == DSV3_KEY_NOT_YET)
            DSV3_CALL_GOTO(err, fail,
                           text_append(&t,
                                       " [not supported yet]\n      %s (it needs %s, which is "
                                       "not implemented)\n",
                                       k->help, k->needs));
        else
            DSV3_CALL_GOTO(err, fail, text_append(&t, "\n      %s\n", k->help));
    }
    *out = t.data;
    return DSV3_OK;
fail:
    dsv3_free(t.data);
    return err;
}
