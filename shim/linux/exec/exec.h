/* What the exec hooks (this folder, one file per entry point or pair of them) share:
 * the shim's variables captured at initialisation, the child's environment rebuilt on
 * the stack, the check that a target will load the shim, and the bodies of execve() and
 * execvpe() that the v and l forms call. All of it is safe between vfork()/fork() and
 * exec: no malloc, no locks. */
#ifndef SOCKSIFY_EXEC_H
#define SOCKSIFY_EXEC_H

#include <stdarg.h>

/* Capture the shim's path and the SOCKSIFY_* variables the process started with, for
 * its children (called once by the initialisation; read-only afterwards). */
void socksify_children_capture(void);

/* Capture what the target checks compare with: SOCKSIFY_ALLOW_UNPROTECTED, this
 * library's ELF class and machine, the dynamic loader's file (called once by the
 * initialisation; read-only afterwards). */
void socksify_targets_capture(void);

/* Called with the environment a child gets; returns 0 or -errno. */
typedef int (*socksify_exec_fn)(void *ctx, char *const envp[]);

/* Call fn(ctx, env) with env a copy of envp (NULL: empty) that has the shim in
 * LD_PRELOAD and the captured SOCKSIFY_* variables (common/env.h, socksify_env_merge()),
 * built on the stack. Returns fn's result, or -E2BIG (logged) if the environment is too
 * big to copy there. In a setuid/setgid process (nothing captured) envp is passed as is. */
int socksify_exec_with_env(char *const envp[], socksify_exec_fn fn, void *ctx);

/* 0 if the program at path (for the exec family) may run: -EPERM, logged as a warning,
 * if it would not load the shim: setuid to another user, setgid to a group not ours,
 * with file capabilities (unless we are root), statically linked, built for another
 * architecture, or a #! script whose interpreter is one of those. What cannot be read
 * passes (exec itself says what is wrong with it). Always 0 with
 * SOCKSIFY_ALLOW_UNPROTECTED=1, and in a setuid/setgid process. */
int socksify_exec_check(const char *path);

/* As socksify_exec_check(), for fexecve()'s file descriptor. */
int socksify_exec_check_fd(int fd);

/* As socksify_exec_check(), for execveat()'s (dirfd, path, flags): path itself if
 * absolute, dirfd itself for an empty path with AT_EMPTY_PATH, else path relative to
 * dirfd (AT_FDCWD: the working directory), not followed if it is a symbolic link and
 * flags has AT_SYMLINK_NOFOLLOW (exec then fails with ELOOP). */
int socksify_exec_check_at(int dirfd, const char *path, int flags);

/* As socksify_exec_check(), for the program execvp() would run for file: file itself if
 * it has a '/', else the first executable regular file named file in a $PATH directory
 * (default "/bin:/usr/bin", as glibc's). */
int socksify_exec_check_search(const char *file);

/* execve()'s logic, shared by execve(), execv(), execl() and execle(): the program at
 * path must load the shim (socksify_exec_check()), and envp gets the shim's variables
 * back (socksify_exec_with_env()) before libc's execve() runs it. Returns -errno (exec
 * returns only when it fails). */
int socksify_exec_path(const char *path, char *const argv[], char *const envp[]);

/* execvpe()'s logic, shared by execvpe(), execvp() and execlp(): as
 * socksify_exec_path() for the program the $PATH search for file finds
 * (socksify_exec_check_search()), then libc's execvpe() searches and runs it. */
int socksify_exec_search(const char *file, char *const argv[], char *const envp[]);

/* One of the two above. */
typedef int (*socksify_exec_body)(const char *path, char *const argv[], char *const envp[]);

/* The list forms, execl(), execle() and execlp(): argv is arg and the arguments that
 * follow it (ap, at the second) up to their NULL, built on the stack; envp is the
 * pointer after that NULL when with_envp (execle()), else environ. Returns
 * body(path, argv, envp), or -E2BIG for INT_MAX arguments or more (as glibc). ap is
 * consumed. */
int socksify_exec_list(socksify_exec_body body, const char *path, const char *arg,
                       va_list ap, int with_envp);

#endif
