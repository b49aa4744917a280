/* The Windows DLL's internal declarations: settings, logging, the real functions it
 * hooks, and the pieces the hook files share. One file per hooked call, as in
 * shim/linux; the wire format is shim/common's. */
#ifndef SOCKSIFY_WIN_SHIM_H
#define SOCKSIFY_WIN_SHIM_H

#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0601
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
#include <stdint.h>

#include "socksify_wire.h"

#ifdef _MSC_VER
#define SOCKSIFY_TLS __declspec(thread)
#else
#define SOCKSIFY_TLS __thread
#endif

#define SOCKSIFY_LOG_ERROR 0
#define SOCKSIFY_LOG_WARN  1
#define SOCKSIFY_LOG_INFO  2
#define SOCKSIFY_LOG_DEBUG 3

/* What the DLL read at load time (dllmain.c). */
struct socksify_win_config {
    int log_level;
    int timeout_ms;                /* SOCKSIFY_TIMEOUT: how long a CONNECT may take */
    int proxy_loopback;            /* SOCKSIFY_PROXY_LOOPBACK=1 */
    uint8_t session[SOCKSIFY_SESSION_SIZE];
    wchar_t control_file[MAX_PATH]; /* where the daemon writes its port and key */
    wchar_t dll_path[MAX_PATH];    /* this DLL, injected into children */
};

extern struct socksify_win_config socksify_cfg;

/* log.c: one line on stderr, "socksify[pid] func: message", if level is enabled. */
void socksify_log(int level, const char *func, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;
#define LOG_WARN(...)  socksify_log(SOCKSIFY_LOG_WARN, __func__, __VA_ARGS__)
#define LOG_INFO(...)  socksify_log(SOCKSIFY_LOG_INFO, __func__, __VA_ARGS__)
#define LOG_DEBUG(...) socksify_log(SOCKSIFY_LOG_DEBUG, __func__, __VA_ARGS__)

/* hook.c: the table of hooked functions and the import-table patcher. */
struct socksify_hook {
    const wchar_t *module;   /* where the real function lives */
    const char *name;
    void *hook;              /* ours */
    void **real;             /* where the real address is stored */
    void *alt;               /* kernel32's stub when *real is kernelbase's function */
};
void socksify_hooks_resolve(void);
void socksify_hooks_patch_all(void);
/* The hook for a real function's address (for GetProcAddress), or NULL. */
void *socksify_hooks_lookup(void *real);

/* The real functions (set by socksify_hooks_resolve before any hook can run). */
extern int (WSAAPI *real_connect)(SOCKET, const struct sockaddr *, int);
extern int (WSAAPI *real_WSAConnect)(SOCKET, const struct sockaddr *, int, LPWSABUF,
                                     LPWSABUF, LPQOS, LPQOS);
extern int (WSAAPI *real_WSAIoctl)(SOCKET, DWORD, LPVOID, DWORD, LPVOID, DWORD, LPDWORD,
                                   LPWSAOVERLAPPED, LPWSAOVERLAPPED_COMPLETION_ROUTINE);
extern INT (WSAAPI *real_getaddrinfo)(PCSTR, PCSTR, const ADDRINFOA *, PADDRINFOA *);
extern INT (WSAAPI *real_GetAddrInfoW)(PCWSTR, PCWSTR, const ADDRINFOW *, PADDRINFOW *);
extern int (WSAAPI *real_getpeername)(SOCKET, struct sockaddr *, int *);
extern int (WSAAPI *real_sendto)(SOCKET, const char *, int, int, const struct sockaddr *,
                                 int);
extern int (WSAAPI *real_WSASendTo)(SOCKET, LPWSABUF, DWORD, LPDWORD, DWORD,
                                    const struct sockaddr *, int, LPWSAOVERLAPPED,
                                    LPWSAOVERLAPPED_COMPLETION_ROUTINE);
extern LPFN_WSASENDMSG real_WSASendMsg;
extern int (WSAAPI *real_send)(SOCKET, const char *, int, int);
extern int (WSAAPI *real_WSASend)(SOCKET, LPWSABUF, DWORD, LPDWORD, DWORD, LPWSAOVERLAPPED,
                                  LPWSAOVERLAPPED_COMPLETION_ROUTINE);
extern int (WSAAPI *real_recv)(SOCKET, char *, int, int);
extern int (WSAAPI *real_recvfrom)(SOCKET, char *, int, int, struct sockaddr *, int *);
extern int (WSAAPI *real_WSARecv)(SOCKET, LPWSABUF, DWORD, LPDWORD, LPDWORD,
                                  LPWSAOVERLAPPED, LPWSAOVERLAPPED_COMPLETION_ROUTINE);
extern int (WSAAPI *real_WSARecvFrom)(SOCKET, LPWSABUF, DWORD, LPDWORD, LPDWORD,
                                      struct sockaddr *, LPINT, LPWSAOVERLAPPED,
                                      LPWSAOVERLAPPED_COMPLETION_ROUTINE);
extern int (WSAAPI *real_closesocket)(SOCKET);
extern FARPROC (WINAPI *real_GetProcAddress)(HMODULE, LPCSTR);

/* control.c: one request/reply exchange with the daemon over its loopback TCP control
 * listener. Returns the reply's length (32, or more for a NAME reply), or a negative
 * WSA/Win32 error: -WSAECONNREFUSED when the daemon cannot be reached. */
int socksify_control_send(const uint8_t *request, size_t len, uint8_t *reply,
                          size_t replymax);
/* The daemon's relay ports from the last RELAY reply (0, 0 before the first), so that
 * getpeername asks the daemon only about sockets connected to one of them. */
void socksify_relay_ports_note(uint16_t port4, uint16_t port6);
void socksify_relay_ports(uint16_t *port4, uint16_t *port6);

/* connect.c: the decision shared by connect, WSAConnect, WSAConnectByName and
 * ConnectEx. */
enum socksify_verdict { SOCKSIFY_GO_DIRECT, SOCKSIFY_GO_FAIL, SOCKSIFY_GO_RELAY,
                        SOCKSIFY_GO_CARRY /* datagrams only: rep is a CARRY reply */ };
/* Cheap local checks only: 1 if the daemon must be asked about this connect, 0 if it
 * is not ours (loopback, not TCP/UDP over IPv4/IPv6, already connected). */
int socksify_connect_needs_daemon(SOCKET s, const struct sockaddr *addr, int len);
/* Ask the daemon. *err is the WSA error for SOCKSIFY_GO_FAIL; rep is filled for RELAY
 * and CARRY (a CARRY for a datagram socket only; req, if not NULL, gets the request). */
enum socksify_verdict socksify_connect_ask(SOCKET s, const struct sockaddr *addr, int len,
                                          struct socksify_reply *rep, int *err);
enum socksify_verdict socksify_connect_ask_req(SOCKET s, const struct sockaddr *addr,
                                              int len, struct socksify_reply *rep,
                                              int *err, struct socksify_connect_req *req);
/* Connect s to the daemon's relay and hand over the token; 0 or a WSA error. Works on
 * blocking and non-blocking sockets (it waits for the loopback connect). */
int socksify_connect_attach(SOCKET s, const struct sockaddr *addr,
                            const struct socksify_reply *rep);
/* The whole of connect(): ask, then attach or fail; direct() is the caller's real call
 * for DIRECT (its own return value and error are passed through). Returns 0 or
 * SOCKET_ERROR with WSASetLastError. */
int socksify_connect_run(SOCKET s, const struct sockaddr *addr, int len,
                         int (*direct)(void *ctx), void *ctx);

/* A grant: the daemon's CARRY answer for one destination (docs/wire.md "Carried
 * datagrams"): the datagrams to dest go, enveloped with token, to the carrier. */
struct socksify_grant {
    struct socksify_connect_req dest;  /* family, port, addr as the program gave them */
    uint8_t token[SOCKSIFY_CARRY_TOKEN_SIZE];
    uint16_t port4, port6;             /* the carrier on 127.0.0.1 / ::1 */
    uint64_t generation;               /* 0: the daemon keeps none (nothing cached) */
};

/* datagram.c: where does a datagram from s to `to` go? SOCKSIFY_DGRAM_SEND (0): as
 * the program asked, without asking for no destination (unless s is connected for a
 * carried peer), one that is not IPv4/IPv6, a socket that is not SOCK_DGRAM or a
 * loopback destination, or when the daemon says DIRECT; SOCKSIFY_DGRAM_CARRY (1): to
 * the carrier with *g's envelope (socksify_carry_send); else a negative WSA error
 * (-WSAEACCES under a chain or block rule, -WSAECONNREFUSED or -WSAETIMEDOUT when the
 * daemon cannot be asked, -WSAEOPNOTSUPP for a socket with an overlapped receive).
 * Fails closed: never sent around the daemon. */
#define SOCKSIFY_DGRAM_SEND  0
#define SOCKSIFY_DGRAM_CARRY 1
int socksify_datagram_route(SOCKET s, const struct sockaddr *to, int tolen,
                            struct socksify_grant *g);

/* carry.c: the sockets whose datagrams the daemon carries, and their grants. */
/* A grant for req from the socket's own or (unless socket_only) the process's cache,
 * while the policy generation it came with holds (a grant of generation 0 is kept by
 * its socket only); 1 and *g, else 0. A socket's own grant means it is a datagram
 * socket (it was one when the grant came). */
int socksify_carry_cached(SOCKET s, const struct socksify_connect_req *req,
                          struct socksify_grant *g, int socket_only);
/* Make a grant of a CARRY reply for req, remember it for s and the process; 0, or
 * -WSAEOPNOTSUPP when s had an overlapped receive posted (it would get an envelope),
 * -WSAENOBUFS when the table of carried sockets is full. */
int socksify_carry_grant(SOCKET s, const struct socksify_connect_req *req,
                         const struct socksify_reply *rep, struct socksify_grant *g);
/* Send bufs to the carrier with g's envelope before them (overlapped: refused with
 * WSAEOPNOTSUPP); *sent is the payload's bytes. 0 or a negative WSA error. */
int socksify_carry_send(SOCKET s, const struct socksify_grant *g, const WSABUF *bufs,
                        DWORD nbufs, DWORD flags, DWORD *sent);
/* connect() of a datagram socket to a carried destination: connect s to the carrier
 * and remember g as its peer; 0 or a WSA error. */
int socksify_carry_connect(SOCKET s, const struct socksify_grant *g);
/* s is (re)connected elsewhere or disconnected: it no longer has a carried peer. */
void socksify_carry_unconnect(SOCKET s);
/* 1 and the carried peer of a connected socket in *g, else 0. */
int socksify_carry_peer(SOCKET s, struct socksify_grant *g);
/* As socksify_carry_peer for a send: a peer grant whose policy generation has gone
 * (a reload, a restart) is asked for again (CARRY: the new grant, the socket moved to
 * a new carrier if the daemon's changed; DIRECT: the socket is connected to the peer
 * itself and 0 returned; else the refusal as a negative WSA error). */
int socksify_carry_peer_fresh(SOCKET s, struct socksify_grant *g);
/* closesocket: forget s. */
void socksify_carry_forget(SOCKET s);
/* How the carried path reads one datagram: the real call with these buffers, flags and
 * source, not overlapped. */
typedef int (*socksify_recv_fn)(void *ctx, WSABUF *bufs, DWORD nbufs, DWORD *got,
                                DWORD *flags, struct sockaddr *from, int *fromlen);
/* One receive call as a hook got it. */
struct socksify_recv_call {
    SOCKET s;
    WSABUF *bufs;            /* the program's buffers */
    DWORD nbufs;
    DWORD *flags;            /* in: the call's flags; out: as the real call left them */
    struct sockaddr *from;   /* where the source goes (NULL: not wanted) */
    int *fromlen;
    const void *ov;          /* the program's OVERLAPPED (NULL: a blocking call) */
    /* The program's own call, as it made it (overlapped as asked): 0 with *got (if
     * got is not NULL), or SOCKET_ERROR with the WSA error set. */
    int (*real)(struct socksify_recv_call *c, DWORD *got);
    /* How the carried path reads (not overlapped); NULL: WSARecvFrom on s. */
    socksify_recv_fn read;
    void *arg;               /* the hook's own, for real and read */
};
/* The whole of a receive hook: on a carried socket the datagram is read into [36-byte
 * envelope, the program's buffers] and the envelope stripped, the remote reported as
 * the source (a datagram from the carrier without a valid envelope is dropped, never
 * handed over; an ERROR envelope fails a connected socket's receive); on any other
 * socket c->real is called, and a datagram that a receive begun before the socket's
 * first carried send got is stripped in place or dropped. An overlapped receive on a
 * carried socket is refused (WSAEOPNOTSUPP); one on another datagram socket marks it
 * as never to be carried. Returns 0 with *got, or SOCKET_ERROR with the WSA error set
 * (*got set too for WSAEMSGSIZE: the payload's bytes that fit). */
int socksify_carry_receive(struct socksify_recv_call *c, DWORD *got);
/* 1 once a socket of the process was carried (before, no handle is: the ReadFile and
 * WriteFile hooks pass straight on). */
int socksify_carry_active(void);
/* The Win32 error a real ReadFile/WriteFile on a socket gives where Winsock gives err
 * (the NTSTATUS both come from); others unchanged. */
DWORD socksify_wsa_to_win32(int err);
/* wsasendmsg.c: after a successful WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER),
 * put our WSASendMsg in out if in is WSAID_WSASENDMSG. */
void socksify_wsaioctl_sendmsg(const void *in, DWORD inlen, void *out, DWORD outlen);
/* transmit.c: the same for WSAID_TRANSMITFILE and WSAID_TRANSMITPACKETS. */
void socksify_wsaioctl_transmit(const void *in, DWORD inlen, void *out, DWORD outlen);
/* wsarecvmsg.c: the same for WSAID_WSARECVMSG (WSARecvMsg is not exported). */
void socksify_wsaioctl_recvmsg(const void *in, DWORD inlen, void *out, DWORD outlen);

/* gencache.c: DIRECT answers kept while the daemon's policy generation holds
 * (docs/wire.md "Caching"). 1 if req may go direct without asking, else 0. */
int socksify_cache_direct(const struct socksify_connect_req *req);
/* The daemon's policy generation now (0: unknown, nothing cached). */
uint64_t socksify_cache_generation(void);
/* A CARRY reply came with generation gen: map the generation file if not yet. */
void socksify_cache_carry_note(uint64_t gen);
/* Remember a DIRECT reply that carries SOCKSIFY_FLAG_CACHE (others are ignored). */
void socksify_cache_note(const struct socksify_connect_req *req,
                         const struct socksify_reply *rep);

/* The WSA error for a wire reply code. */
int socksify_code_to_wsa(unsigned code);

/* resolve.c: RESOLVE name with the daemon. Returns 1 (use the real resolver), 0 with
 * the stand-in address in *peer, or a negative WSA error (-WSAHOST_NOT_FOUND for a
 * refused name, -WSATRY_AGAIN when the daemon cannot be reached). */
int socksify_resolve(const char *name, int af, struct socksify_peer *peer);
/* The stand-in address as text for a numeric lookup ("10.x.y.z" or "fdxx::..."). */
void socksify_peer_text(const struct socksify_peer *peer, char *buf, size_t len);
/* A wide name as ASCII (printable, no space); 0, or -1 if it is not such a name. */
int socksify_name_ascii(const wchar_t *name, char *out, size_t outlen);

/* connectex.c: the IOCP a socket was bound to (CreateIoCompletionPort hook). */
void socksify_iocp_note(HANDLE file, HANDLE port, ULONG_PTR key);
int socksify_iocp_find(HANDLE file, HANDLE *port, ULONG_PTR *key);

/* inject.c: load this DLL into a (suspended) process; 0 or a Win32 error. */
DWORD socksify_inject(HANDLE process);
/* createprocess.c: the environment block a child gets, with the SOCKSIFY_* values
 * put back; NULL when env is NULL (the child inherits ours). Free with HeapFree. */
wchar_t *socksify_child_env(const void *env, int unicode);
void socksify_child_env_capture(void);

#endif
