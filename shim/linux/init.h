/* Lazy, once-only initialisation of the shim: settings from the environment and the
 * real libc symbols. Every hook calls socksify_init() first. */
#ifndef SOCKSIFY_INIT_H
#define SOCKSIFY_INIT_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "socksify_wire.h"

/* Settings, written once by socksify_init() and read-only afterwards. */
struct socksify_config {
    int log_level;                           /* SOCKSIFY_LOG: 0..3, default 1 */
    int timeout_ms;                          /* SOCKSIFY_TIMEOUT (seconds), default 120 */
    uint8_t session[SOCKSIFY_SESSION_SIZE];  /* SOCKSIFY_SESSION, zero if unset/invalid */
    char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int socket_path_error;                   /* 0, or -errno if no usable path */
    int proxy_loopback;                      /* SOCKSIFY_PROXY_LOOPBACK=1: loopback TCP
                                                destinations are the daemon's too */
};

/* Run the initialisation once (pthread_once); cheap after the first call. */
void socksify_init(void);

/* The settings (log_level is valid even before socksify_init() has finished). */
const struct socksify_config *socksify_config(void);

/* An environment variable, or NULL if unset, empty, or the process is setuid/setgid. */
const char *socksify_getenv(const char *name);

#endif
