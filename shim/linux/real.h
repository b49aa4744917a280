/* The real functions: every libc (and libresolv) function the shim forwards to, with
 * its type, in one table. real.c fills it once, from the shim's initialisation
 * (socksify_init(), init.h): dlsym(RTLD_NEXT) of each name. Hook files read it; none
 * owns a pointer of its own. */
#ifndef SOCKSIFY_REAL_H
#define SOCKSIFY_REAL_H

#include <netdb.h>
#include <resolv.h>
#include <spawn.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

struct iovec;
struct timespec;
struct mmsghdr;  /* <sys/socket.h> declares it only with _GNU_SOURCE (connect.c has not) */

struct socksify_real {
    /* Required: initialisation aborts with a message if one is missing. */
    int (*connect)(int fd, const struct sockaddr *addr, socklen_t len);
    int (*getpeername)(int fd, struct sockaddr *addr, socklen_t *len);
    ssize_t (*sendto)(int fd, const void *buf, size_t len, int flags,
                      const struct sockaddr *addr, socklen_t addrlen);
    ssize_t (*sendmsg)(int fd, const struct msghdr *msg, int flags);
    int (*sendmmsg)(int fd, struct mmsghdr *vec, unsigned vlen, int flags);
    /* The calls that read and write carried sockets (carry.h); they are called for
     * every descriptor, possibly before the initialisation: SOCKSIFY_REAL_HOT(). */
    ssize_t (*recvfrom)(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                        socklen_t *addrlen);
    ssize_t (*recvmsg)(int fd, struct msghdr *msg, int flags);
    int (*recvmmsg)(int fd, struct mmsghdr *vec, unsigned vlen, int flags,
                    struct timespec *timeout);
    ssize_t (*recv)(int fd, void *buf, size_t len, int flags);
    ssize_t (*read)(int fd, void *buf, size_t len);
    ssize_t (*send)(int fd, const void *buf, size_t len, int flags);
    ssize_t (*write)(int fd, const void *buf, size_t len);
    ssize_t (*readv)(int fd, const struct iovec *iov, int iovcnt);
    ssize_t (*writev)(int fd, const struct iovec *iov, int iovcnt);
    ssize_t (*preadv2)(int fd, const struct iovec *iov, int iovcnt, off_t offset,
                       int flags);
    ssize_t (*pwritev2)(int fd, const struct iovec *iov, int iovcnt, off_t offset,
                        int flags);
    ssize_t (*preadv64v2)(int fd, const struct iovec *iov, int iovcnt, __off64_t offset,
                          int flags);
    ssize_t (*pwritev64v2)(int fd, const struct iovec *iov, int iovcnt, __off64_t offset,
                           int flags);
    ssize_t (*read_chk)(int fd, void *buf, size_t len, size_t buflen);
    ssize_t (*recv_chk)(int fd, void *buf, size_t len, size_t buflen, int flags);
    ssize_t (*recvfrom_chk)(int fd, void *buf, size_t len, size_t buflen, int flags,
                            struct sockaddr *addr, socklen_t *addrlen);
    long (*syscall)(long number, ...);
    /* The calls that copy a descriptor (a carried socket's copy is carried too:
     * carried.h); HOT as well, for the same reason. */
    int (*dup)(int fd);
    int (*dup2)(int fd, int newfd);
    int (*dup3)(int fd, int newfd, int flags);
    int (*fcntl)(int fd, int cmd, ...);
    int (*fcntl64)(int fd, int cmd, ...);
    /* close(): a handed-off socket's last copy tells the daemon first (unwrap.h) */
    int (*close)(int fd);
    int (*getaddrinfo)(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);
    int (*getnameinfo)(const struct sockaddr *sa, socklen_t salen, char *host,
                       socklen_t hostlen, char *serv, socklen_t servlen, int flags);
    struct hostent *(*gethostbyname)(const char *name);
    struct hostent *(*gethostbyname2)(const char *name, int af);
    int (*gethostbyname_r)(const char *name, struct hostent *ret, char *buf, size_t buflen,
                           struct hostent **result, int *h_errnop);
    int (*gethostbyname2_r)(const char *name, int af, struct hostent *ret, char *buf,
                            size_t buflen, struct hostent **result, int *h_errnop);
    struct hostent *(*gethostbyaddr)(const void *addr, socklen_t len, int type);
    int (*gethostbyaddr_r)(const void *addr, socklen_t len, int type, struct hostent *ret,
                           char *buf, size_t buflen, struct hostent **result,
                           int *h_errnop);
    int (*execve)(const char *path, char *const argv[], char *const envp[]);
    int (*execvpe)(const char *file, char *const argv[], char *const envp[]);
    int (*fexecve)(int fd, char *const argv[], char *const envp[]);
    int (*posix_spawn)(pid_t *pid, const char *path,
                       const posix_spawn_file_actions_t *actions,
                       const posix_spawnattr_t *attr, char *const argv[],
                       char *const envp[]);
    int (*posix_spawnp)(pid_t *pid, const char *file,
                        const posix_spawn_file_actions_t *actions,
                        const posix_spawnattr_t *attr, char *const argv[],
                        char *const envp[]);

    /* Optional: NULL when this libc lacks it; read them with SOCKSIFY_REAL_OPTIONAL().
     * execveat() came with glibc 2.34 (its hook then fails with ENOSYS, as the kernel
     * does for a call it does not know); the res_* functions live in libresolv before
     * glibc 2.34, under their __res_* names, and may be loaded later by dlopen() or not
     * at all (their hooks then fail with ENOSYS, dnsgate.h). */
    int (*execveat)(int dirfd, const char *path, char *const argv[], char *const envp[],
                    int flags);
    int (*close_range)(unsigned int fd, unsigned int max_fd, int flags);  /* glibc 2.34 */
    int (*res_query)(const char *name, int class, int type, unsigned char *answer,
                     int anslen);
    int (*res_nquery)(res_state statp, const char *name, int class, int type,
                      unsigned char *answer, int anslen);
    int (*res_search)(const char *name, int class, int type, unsigned char *answer,
                      int anslen);
    int (*res_nsearch)(res_state statp, const char *name, int class, int type,
                       unsigned char *answer, int anslen);
    int (*res_querydomain)(const char *name, const char *domain, int class, int type,
                           unsigned char *answer, int anslen);
    int (*res_nquerydomain)(res_state statp, const char *name, const char *domain,
                            int class, int type, unsigned char *answer, int anslen);
    int (*res_send)(const unsigned char *msg, int msglen, unsigned char *answer,
                    int anslen);
    int (*res_nsend)(res_state statp, const unsigned char *msg, int msglen,
                     unsigned char *answer, int anslen);
};

/* The table. The required entries are set before any hook runs (every hook calls
 * socksify_init() first) and read-only afterwards. */
extern struct socksify_real socksify_real;

/* Fill the table (called once, by the initialisation). */
void socksify_real_resolve(void);

/* The optional entry at offset (offsetof(struct socksify_real, member)), or NULL. A
 * libresolv one still NULL is looked up again (libresolv loaded after start-up); the
 * others are only read, so the exec hooks may use it between vfork() and exec. Safe
 * from any thread. */
void *socksify_real_optional(size_t offset);

/* A HOT entry (the read/write family above): the table's, or looked up now when a
 * hook runs before the initialisation (another library's constructor reading a file). */
#define SOCKSIFY_REAL_HOT(member) SOCKSIFY_REAL_OPTIONAL(member)

#define SOCKSIFY_REAL_OPTIONAL(member)                          \
    ((__typeof__(socksify_real.member))socksify_real_optional(  \
        offsetof(struct socksify_real, member)))

#endif
