/* Pure helpers for the exec hooks' environments (see env.h). */
#include <errno.h>
#include <string.h>

#include "env.h"

#define PRELOAD     "LD_PRELOAD="
#define PRELOAD_LEN (sizeof PRELOAD - 1)

int socksify_env_preload_has(const char *list, const char *shim)
{
    size_t n = strlen(shim);

    if (n == 0)
        return 0;
    while (*list != '\0') {
        size_t len = strcspn(list, " :");
        if (len == n && memcmp(list, shim, n) == 0)
            return 1;
        list += len;
        list += strspn(list, " :");
    }
    return 0;
}

static int is_preload(const char *entry)
{
    return strncmp(entry, PRELOAD, PRELOAD_LEN) == 0;
}

/* The length of NAME in "NAME=value" (the whole string if it has no '='). */
static size_t name_len(const char *entry)
{
    return strcspn(entry, "=");
}

/* 1 if entry is "NAME=..." for the NAME of var ("NAME=value"). */
static int same_name(const char *entry, const char *var)
{
    size_t n = name_len(var);

    return strncmp(entry, var, n) == 0 && entry[n] == '=';
}

/* The room for "LD_PRELOAD=shim VALUE" when entry is "LD_PRELOAD=VALUE": 0 if entry
 * already names the shim. */
static size_t preload_room(const char *entry, const char *shim)
{
    const char *value = entry + PRELOAD_LEN;

    if (socksify_env_preload_has(value, shim))
        return 0;
    return PRELOAD_LEN + strlen(shim) + 1 + strlen(value) + 1;
}

void socksify_env_merge_size(char *const envp[], const char *shim, char *const vars[],
                             size_t *entries, size_t *chars)
{
    size_t n = 2, room = 0;  /* a new LD_PRELOAD and the NULL */
    int have_shim = shim != NULL && shim[0] != '\0';

    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        n++;
        if (have_shim && is_preload(envp[i]))
            room += preload_room(envp[i], shim);
    }
    for (size_t i = 0; vars != NULL && vars[i] != NULL; i++)
        n++;
    if (have_shim)
        room += PRELOAD_LEN + strlen(shim) + 1;
    *entries = n;
    *chars = room;
}

/* Append s (len bytes) and a NUL at buf[*used]; NULL if it does not fit. */
static char *put(char *buf, size_t buf_size, size_t *used, const char *s, size_t len,
                 int nul)
{
    char *at = buf + *used;

    if (buf_size - *used < len + (nul ? 1 : 0))
        return NULL;
    memcpy(at, s, len);
    *used += len;
    if (nul)
        buf[(*used)++] = '\0';
    return at;
}

/* "LD_PRELOAD=shim[ VALUE]" in buf for value; NULL if it does not fit. */
static char *new_preload(const char *shim, const char *value, char *buf, size_t buf_size,
                         size_t *used)
{
    char *s = put(buf, buf_size, used, PRELOAD, PRELOAD_LEN, 0);

    if (s == NULL || put(buf, buf_size, used, shim, strlen(shim), value[0] == '\0') == NULL)
        return NULL;
    if (value[0] != '\0' && (put(buf, buf_size, used, " ", 1, 0) == NULL
                             || put(buf, buf_size, used, value, strlen(value), 1) == NULL))
        return NULL;
    return s;
}

/* The first non-empty-valued "NAME=" entry of envp for var's NAME, or NULL; sets *empty
 * if envp has the NAME only with empty values. */
static const char *find_set(char *const envp[], const char *var, int *empty)
{
    size_t n = name_len(var);

    *empty = 0;
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        if (!same_name(envp[i], var))
            continue;
        if (envp[i][n + 1] != '\0')
            return envp[i];
        *empty = 1;
    }
    return NULL;
}

int socksify_env_merge(char *const envp[], const char *shim, char *const vars[],
                       char **out, size_t out_size, char *buf, size_t buf_size)
{
    size_t n = 0, used = 0;
    int have_shim = shim != NULL && shim[0] != '\0', seen_preload = 0, empty;

    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        char *entry = envp[i];

        if (have_shim && is_preload(entry)) {
            seen_preload = 1;
            if (!socksify_env_preload_has(entry + PRELOAD_LEN, shim)
                && (entry = new_preload(shim, entry + PRELOAD_LEN, buf, buf_size, &used))
                   == NULL)
                return -E2BIG;
        } else if (entry[name_len(entry)] == '=' && entry[name_len(entry) + 1] == '\0') {
            /* An empty value of one of vars' names: the shim's value instead. */
            for (size_t v = 0; vars != NULL && vars[v] != NULL; v++)
                if (same_name(entry, vars[v])) {
                    entry = vars[v];
                    break;
                }
        }
        if (n + 1 >= out_size)
            return -E2BIG;
        out[n++] = entry;
    }
    for (size_t v = 0; vars != NULL && vars[v] != NULL; v++) {
        if (find_set(envp, vars[v], &empty) != NULL || empty)
            continue;  /* the program's own value, or replaced in place above */
        if (n + 1 >= out_size)
            return -E2BIG;
        out[n++] = vars[v];
    }
    if (have_shim && !seen_preload) {
        char *entry = new_preload(shim, "", buf, buf_size, &used);
        if (entry == NULL || n + 1 >= out_size)
            return -E2BIG;
        out[n++] = entry;
    }
    if (n >= out_size)
        return -E2BIG;
    out[n] = NULL;
    return (int)n;
}
