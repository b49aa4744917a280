/* One request/reply exchange with the daemon (docs/wire.md) over its loopback TCP
 * control listener (docs/windows.md): the control file names the port and a 16-byte
 * key; the daemon and the DLL prove to each other that they hold it (tcpauth.c, never
 * sending it), then the DLL sends the unchanged v1 request. A listener that cannot
 * prove it (another user's, on a dead daemon's port) gets a random nonce and nothing
 * else, and the request fails closed. The file is read for every request, so a
 * restarted daemon (new port, new key) is found again. */
#include <stdio.h>
#include <string.h>

#include "shim.h"
#include "socksify_tcpauth.h"

#define SECRET_SIZE SOCKSIFY_TCPAUTH_KEY_SIZE
/* exchange(): the listener did not prove it holds the key */
#define NOT_THE_DAEMON (-0x7fff)
/* PEERNAME, NAMEOF and RESOLVE are bookkeeping in the daemon: no chain to build. */
#define QUICK_TIMEOUT_MS 5000

static INIT_ONCE wsa_once = INIT_ONCE_STATIC_INIT;
static volatile LONG relay_ports;  /* port4 << 16 | port6 */

void socksify_relay_ports_note(uint16_t port4, uint16_t port6)
{
    InterlockedExchange(&relay_ports, (LONG)((uint32_t)port4 << 16 | port6));
}

void socksify_relay_ports(uint16_t *port4, uint16_t *port6)
{
    uint32_t v = (uint32_t)InterlockedCompareExchange(&relay_ports, 0, 0);

    *port4 = (uint16_t)(v >> 16);
    *port6 = (uint16_t)(v & 0xffff);
}

static BOOL CALLBACK wsa_start(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
    WSADATA data;

    (void)once, (void)param, (void)ctx;
    return WSAStartup(MAKEWORD(2, 2), &data) == 0;  /* never cleaned up: ours for life */
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* "tcp 127.0.0.1:PORT SECRETHEX" from the control file; 0 or a WSA error. */
static int read_control_file(uint16_t *port, uint8_t secret[SECRET_SIZE])
{
    char buf[256], hex[2 * SECRET_SIZE + 1];
    unsigned p;
    DWORD got = 0;
    HANDLE f;

    if (socksify_cfg.control_file[0] == L'\0')
        return WSAECONNREFUSED;
    f = CreateFileW(socksify_cfg.control_file, GENERIC_READ,
                    FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                    OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (f == INVALID_HANDLE_VALUE) {
        LOG_WARN("cannot read the daemon's control file %ls (error %lu): is socksifyd "
                 "running?", socksify_cfg.control_file, GetLastError());
        return WSAECONNREFUSED;
    }
    if (!ReadFile(f, buf, sizeof buf - 1, &got, NULL))
        got = 0;
    CloseHandle(f);
    buf[got] = '\0';
    if (sscanf(buf, "tcp 127.0.0.1:%u %32s", &p, hex) != 2 || p == 0 || p > 65535
        || strlen(hex) != 2 * SECRET_SIZE) {
        LOG_WARN("the control file %ls is not \"tcp 127.0.0.1:PORT SECRET\"",
                 socksify_cfg.control_file);
        return WSAECONNREFUSED;
    }
    for (int i = 0; i < SECRET_SIZE; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return WSAECONNREFUSED;
        secret[i] = (uint8_t)(hi << 4 | lo);
    }
    *port = (uint16_t)p;
    return 0;
}

/* Wait until s is writable (write) or readable; 0, WSAETIMEDOUT or a WSA error. */
static int wait_socket(SOCKET s, int write, ULONGLONG deadline)
{
    for (;;) {
        fd_set fds, errs;
        struct timeval tv;
        ULONGLONG now = GetTickCount64();
        int r;

        if (now >= deadline)
            return WSAETIMEDOUT;
        tv.tv_sec = (long)((deadline - now) / 1000);
        tv.tv_usec = (long)((deadline - now) % 1000 * 1000);
        FD_ZERO(&fds);
        FD_ZERO(&errs);
        FD_SET(s, &fds);
        FD_SET(s, &errs);
        r = select(0, write ? NULL : &fds, write ? &fds : NULL, &errs, &tv);
        if (r == SOCKET_ERROR)
            return WSAGetLastError();
        if (r > 0) {
            if (FD_ISSET(s, &errs)) {
                int err = 0, len = sizeof err;
                getsockopt(s, SOL_SOCKET, SO_ERROR, (char *)&err, &len);
                return err != 0 ? err : WSAECONNREFUSED;
            }
            return 0;
        }
    }
}

static int send_all(SOCKET s, const uint8_t *buf, size_t len, ULONGLONG deadline)
{
    while (len > 0) {
        int n = send(s, (const char *)buf, (int)len, 0);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (WSAGetLastError() == WSAEWOULDBLOCK) {
            int r = wait_socket(s, 1, deadline);
            if (r != 0)
                return r;
        } else {
            return WSAGetLastError();
        }
    }
    return 0;
}

static int recv_all(SOCKET s, uint8_t *buf, size_t len, ULONGLONG deadline)
{
    while (len > 0) {
        int n = recv(s, (char *)buf, (int)len, 0);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n == 0) {
            return WSAECONNRESET;
        } else if (WSAGetLastError() == WSAEWOULDBLOCK) {
            int r = wait_socket(s, 0, deadline);
            if (r != 0)
                return r;
        } else {
            return WSAGetLastError();
        }
    }
    return 0;
}

/* The handshake (socksify_tcpauth.h): 0 once both sides proved they hold the key;
 * NOT_THE_DAEMON, or a WSA error of the socket. */
static int prove(SOCKET s, const uint8_t key[SECRET_SIZE], ULONGLONG deadline)
{
    uint8_t nc[SOCKSIFY_TCPAUTH_NONCE_SIZE], hello[SOCKSIFY_TCPAUTH_HELLO_SIZE];
    uint8_t answer[SOCKSIFY_TCPAUTH_ANSWER_SIZE], proof[SOCKSIFY_TCPAUTH_PROOF_SIZE];
    int r;

    if (socksify_tcpauth_nonce(nc) != 0)
        return WSAECONNREFUSED;
    socksify_tcpauth_hello(nc, hello);
    if ((r = send_all(s, hello, sizeof hello, deadline)) != 0)
        return r;
    if ((r = recv_all(s, answer, sizeof answer, deadline)) != 0)
        return r == WSAECONNRESET ? NOT_THE_DAEMON : r;
    if (socksify_tcpauth_check_answer(key, nc, answer, proof) != 0)
        return NOT_THE_DAEMON;
    r = send_all(s, proof, sizeof proof, deadline);
    SecureZeroMemory(proof, sizeof proof);
    return r;
}

static int exchange(SOCKET s, uint16_t port, const uint8_t secret[SECRET_SIZE],
                    const uint8_t *request, size_t len, uint8_t *reply, size_t replymax,
                    ULONGLONG deadline)
{
    struct sockaddr_in sin;
    u_long nonblocking = 1;
    size_t body_len;
    int r;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ioctlsocket(s, FIONBIO, &nonblocking);
    if (real_connect(s, (const struct sockaddr *)&sin, sizeof sin) == SOCKET_ERROR) {
        r = WSAGetLastError();
        if (r != WSAEWOULDBLOCK)
            return r;
        if ((r = wait_socket(s, 1, deadline)) != 0)
            return r;
    }
    if ((r = prove(s, secret, deadline)) != 0)
        return r;
    if ((r = send_all(s, request, len, deadline)) != 0
        || (r = recv_all(s, reply, SOCKSIFY_REPLY_SIZE, deadline)) != 0)
        return r;
    if (replymax <= SOCKSIFY_REPLY_SIZE || reply[SOCKSIFY_REP_OFF_VERDICT]
                                                  != SOCKSIFY_VERDICT_NAME)
        return 0;
    body_len = (size_t)reply[SOCKSIFY_NAME_OFF_BODY_LEN] << 8
               | reply[SOCKSIFY_NAME_OFF_BODY_LEN + 1];
    if (body_len > replymax - SOCKSIFY_REPLY_SIZE)
        return WSAECONNREFUSED;
    if ((r = recv_all(s, reply + SOCKSIFY_REPLY_SIZE, body_len, deadline)) != 0)
        return r;
    return -(int)body_len;  /* (negative: a body followed) */
}

int socksify_control_send(const uint8_t *request, size_t len, uint8_t *reply,
                          size_t replymax)
{
    uint8_t secret[SECRET_SIZE];
    uint16_t port;
    unsigned op = len > SOCKSIFY_REQ_OFF_OP ? request[SOCKSIFY_REQ_OFF_OP] : 0;
    int timeout = socksify_cfg.timeout_ms, r;
    SOCKET s;
    DWORD saved = GetLastError();
    int saved_wsa = WSAGetLastError();

    if (len < SOCKSIFY_REQUEST_SIZE || replymax < SOCKSIFY_REPLY_SIZE)
        return -WSAEINVAL;
    if (op != SOCKSIFY_OP_CONNECT && timeout > QUICK_TIMEOUT_MS)
        timeout = QUICK_TIMEOUT_MS;
    if ((r = read_control_file(&port, secret)) != 0)
        return -r;
    InitOnceExecuteOnce(&wsa_once, wsa_start, NULL, NULL);
    s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET) {
        r = WSAGetLastError();
        LOG_WARN("cannot create the control socket: error %d", r);
        return -r;
    }
    r = exchange(s, port, secret, request, len, reply, replymax,
                 GetTickCount64() + (ULONGLONG)timeout);
    closesocket(s);
    SecureZeroMemory(secret, sizeof secret);
    SetLastError(saved);
    WSASetLastError(saved_wsa);
    if (r == NOT_THE_DAEMON) {
        LOG_WARN("the listener on 127.0.0.1:%u (from %ls) did not prove it is the "
                 "socksify daemon (a stale control file?): refused", (unsigned)port,
                 socksify_cfg.control_file);
        return -WSAECONNREFUSED;
    }
    if (r > 0) {
        LOG_WARN("no reply from the socksify daemon at 127.0.0.1:%u: error %d",
                 (unsigned)port, r);
        return r == WSAETIMEDOUT ? -WSAETIMEDOUT : -WSAECONNREFUSED;
    }
    return SOCKSIFY_REPLY_SIZE - r;
}

int socksify_code_to_wsa(unsigned code)
{
    switch (code) {
    case SOCKSIFY_CODE_CONNREFUSED: return WSAECONNREFUSED;
    case SOCKSIFY_CODE_TIMEDOUT:    return WSAETIMEDOUT;
    case SOCKSIFY_CODE_ACCES:       return WSAEACCES;
    case SOCKSIFY_CODE_NETUNREACH:  return WSAENETUNREACH;
    case SOCKSIFY_CODE_HOSTUNREACH: return WSAEHOSTUNREACH;
    case SOCKSIFY_CODE_CONNRESET:   return WSAECONNRESET;
    case SOCKSIFY_CODE_AFNOSUPPORT: return WSAEAFNOSUPPORT;
    default:                        return WSAECONNREFUSED;  /* PROTO, unknown */
    }
}
