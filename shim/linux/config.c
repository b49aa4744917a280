/* The settings (config.h), read once from the environment by the initialisation. The
 * environment is not read in setuid/setgid processes. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define DEFAULT_TIMEOUT_S 120
#define MAX_TIMEOUT_S     (24 * 3600)

static struct socksify_config config = {.timeout_ms = DEFAULT_TIMEOUT_S * 1000};

const struct socksify_config *socksify_config(void)
{
    return &config;
}

const char *socksify_getenv(const char *name)
{
    const char *value = secure_getenv(name);  /* NULL when AT_SECURE (setuid/setgid) */

    return value != NULL && value[0] != '\0' ? value : NULL;
}

static void read_log_level(void)
{
    const char *value = socksify_getenv("SOCKSIFY_LOG");

    if (value == NULL)
        return;
    if (value[0] >= '0' && value[0] <= '3' && value[1] == '\0')
        socksify_log_set_level(value[0] - '0');
    else
        LOG_WARN("ignoring SOCKSIFY_LOG=%s (expected 0, 1, 2 or 3)", value);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void read_session(void)
{
    const char *value = socksify_getenv("SOCKSIFY_SESSION");
    uint8_t session[SOCKSIFY_SESSION_SIZE];

    if (value == NULL)
        return;
    if (strlen(value) != 2 * SOCKSIFY_SESSION_SIZE)
        goto invalid;
    for (size_t i = 0; i < SOCKSIFY_SESSION_SIZE; i++) {
        int hi = hex_digit(value[2 * i]), lo = hex_digit(value[2 * i + 1]);
        if (hi < 0 || lo < 0)
            goto invalid;
        session[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(config.session, session, sizeof session);
    return;
invalid:
    LOG_WARN("ignoring SOCKSIFY_SESSION=%s (expected 16 hex digits); using session 0", value);
}

static void read_timeout(void)
{
    const char *value = socksify_getenv("SOCKSIFY_TIMEOUT");
    char *end;
    double seconds;

    if (value == NULL)
        return;
    seconds = strtod(value, &end);
    if (*end != '\0' || !isfinite(seconds) || seconds <= 0) {
        LOG_WARN("ignoring SOCKSIFY_TIMEOUT=%s (expected seconds > 0); using %d",
                 value, DEFAULT_TIMEOUT_S);
        return;
    }
    if (seconds > MAX_TIMEOUT_S)
        seconds = MAX_TIMEOUT_S;
    config.timeout_ms = seconds * 1000 < 1 ? 1 : (int)(seconds * 1000);
}

static int find_socket_path(char *out, size_t outlen)
{
    const char *value;
    int n;

    if ((value = socksify_getenv("SOCKSIFY_SOCKET")) != NULL)
        n = snprintf(out, outlen, "%s", value);
    else if ((value = socksify_getenv("SOCKSIFY_RUNTIME_DIR")) != NULL)
        n = snprintf(out, outlen, "%s/control.sock", value);
    else if ((value = socksify_getenv("XDG_RUNTIME_DIR")) != NULL)
        n = snprintf(out, outlen, "%s/socksify/control.sock", value);
    else
        n = snprintf(out, outlen, "/tmp/socksify-%u/control.sock", (unsigned)getuid());
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

void socksify_config_read(void)
{
    read_log_level();
    read_session();
    read_timeout();
    config.proxy_loopback = socksify_getenv("SOCKSIFY_PROXY_LOOPBACK") != NULL &&
                            strcmp(socksify_getenv("SOCKSIFY_PROXY_LOOPBACK"), "1") == 0;
    config.socket_path_error = find_socket_path(config.socket_path, sizeof config.socket_path);
    if (config.socket_path_error == 0)
        LOG_DEBUG("control socket %s, timeout %d ms", config.socket_path, config.timeout_ms);
    else
        LOG_WARN("no usable control socket path: %s; connections will fail",
                 socksify_strerror(-config.socket_path_error));
}
