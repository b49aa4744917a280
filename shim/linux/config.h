/* The shim's settings, from the environment (docs/wire.md names the variables). */
#ifndef SOCKSIFY_CONFIG_H
#define SOCKSIFY_CONFIG_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "socksify_wire.h"

/* Settings, written once by socksify_config_read() and read-only afterwards.
 * SOCKSIFY_LOG (0..3, default 1) goes to the log (log.h). */
struct socksify_config {
    int timeout_ms;                          /* SOCKSIFY_TIMEOUT (seconds), default 120 */
    uint8_t session[SOCKSIFY_SESSION_SIZE];  /* SOCKSIFY_SESSION, zero if unset/invalid */
    char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int socket_path_error;                   /* 0, or -errno if no usable path */
    int proxy_loopback;                      /* SOCKSIFY_PROXY_LOOPBACK=1: loopback TCP
                                                destinations are the daemon's too */
};

/* Read the settings from the environment, SOCKSIFY_LOG first (called once, by the
 * initialisation). The control socket path is docs/wire.md's: $SOCKSIFY_SOCKET, else
 * $SOCKSIFY_RUNTIME_DIR/control.sock, else $XDG_RUNTIME_DIR/socksify/control.sock, else
 * /tmp/socksify-UID/control.sock; socket_path_error is -ENAMETOOLONG if it does not fit. */
void socksify_config_read(void);

/* The settings (valid once socksify_init() has run). */
const struct socksify_config *socksify_config(void);

/* An environment variable, or NULL if unset, empty, or the process is setuid/setgid. */
const char *socksify_getenv(const char *name);

#endif
