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

/* libc's own dlsym(), never the shim's hook (linux/dlsym.c): with RTLD_NEXT, the next
 * definition after the shim. */
void *socksify_real_dlsym(void *handle, const char *name);

/* dlsym(RTLD_NEXT, name); aborts with a message if the symbol is missing. */
void *socksify_real_symbol(const char *name);

/* dlsym(RTLD_NEXT, name), or NULL if this libc lacks it (a call its hook then refuses). */
void *socksify_real_symbol_optional(const char *name);

/* Per-hook resolvers of the real symbols, called by the initialisation. */
void socksify_connect_resolve(void);
void socksify_getpeername_resolve(void);
void socksify_getaddrinfo_resolve(void);
void socksify_gethostbyname_resolve(void);
void socksify_getnameinfo_resolve(void);
void socksify_gethostbyaddr_resolve(void);
void socksify_sendto_resolve(void);
void socksify_sendmsg_resolve(void);
void socksify_sendmmsg_resolve(void);
void socksify_execve_resolve(void);
void socksify_execvp_resolve(void);
void socksify_fexecve_resolve(void);
void socksify_execveat_resolve(void);
void socksify_posix_spawn_resolve(void);
void socksify_res_query_resolve(void);
void socksify_res_search_resolve(void);
void socksify_res_querydomain_resolve(void);
void socksify_res_send_resolve(void);

/* libc's connect() and getpeername(), for the shim's own use (the exported ones may ask
 * the daemon). Valid after socksify_init(). */
int socksify_real_connect(int fd, const struct sockaddr *addr, socklen_t len);
int socksify_real_getpeername(int fd, struct sockaddr *addr, socklen_t *len);
ssize_t socksify_real_sendmsg(int fd, const struct msghdr *msg, int flags);

/* The connect() hook's logic (0 or -errno), for sendto()/sendmsg() with MSG_FASTOPEN on
 * a stream socket: the destination is judged as connect() would judge it. */
int socksify_connect_checked(int fd, const struct sockaddr *addr, socklen_t len);

#endif
