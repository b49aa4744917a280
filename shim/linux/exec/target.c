/* Will the program an exec starts load the shim? The loader ignores LD_PRELOAD for
 * setuid/setgid programs and those with file capabilities, and a statically linked
 * program, or one for another architecture, never loads it: such a child would connect
 * and resolve directly, so the exec hooks refuse it (EPERM) unless
 * SOCKSIFY_ALLOW_UNPROTECTED=1. The same rules as daemon/socksify/programs.py, except
 * Go programs (dynamically linked ones pass here). Only syscalls and stack buffers: this
 * runs between vfork()/fork() and exec. */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "config.h"
#include "exec.h"
#include "log.h"

#define MAX_SCRIPT_DEPTH 4   /* as programs.py; the kernel allows a few more */
#define SCRIPT_HEAD      256 /* the kernel's BINPRM_BUF_SIZE: the #! line it reads */
#define MAX_GROUPS       4096
#define PHDR_CHUNK       32

/* Written once by socksify_targets_capture(), read-only afterwards. */
static struct {
    int off;                       /* allowed, or a setuid process: no checks */
    unsigned char elf_class, elf_data;
    uint16_t elf_machine;          /* this library's, from its own ELF header */
    int have_loader;
    dev_t loader_dev;              /* the dynamic loader, which honours LD_PRELOAD */
    ino_t loader_ino;              /* when run as a program: `ld.so PROGRAM`, ldd */
} targets;

void socksify_targets_capture(void)
{
    const char *allow = socksify_getenv("SOCKSIFY_ALLOW_UNPROTECTED");
    Dl_info info;
    struct stat st;
    unsigned long base = getauxval(AT_BASE);

    targets.off = getauxval(AT_SECURE) != 0 || (allow != NULL && strcmp(allow, "1") == 0);
    if (dladdr((void *)&socksify_targets_capture, &info) != 0 && info.dli_fbase != NULL) {
        const unsigned char *ident = info.dli_fbase;
        targets.elf_class = ident[EI_CLASS];
        targets.elf_data = ident[EI_DATA];
        memcpy(&targets.elf_machine, ident + offsetof(Elf64_Ehdr, e_machine),
               sizeof targets.elf_machine);  /* the same offset in Elf32_Ehdr */
    }
    if (base != 0 && dladdr((void *)base, &info) != 0 && info.dli_fname != NULL
        && stat(info.dli_fname, &st) == 0) {
        targets.have_loader = 1;
        targets.loader_dev = st.st_dev;
        targets.loader_ino = st.st_ino;
    }
}

static int refuse(const char *name, const char *what)
{
    LOG_WARN("refusing to exec %s: %s do not load the socksify shim and would run "
             "unprotected", name, what);
    return -EPERM;
}

static int group_is_ours(gid_t gid)
{
    int n;

    if (gid == getegid())
        return 1;
    n = getgroups(0, NULL);
    if (n <= 0 || n > MAX_GROUPS)
        return 0;
    {
        gid_t groups[n];
        n = getgroups(n, groups);
        for (int i = 0; i < n; i++)
            if (groups[i] == gid)
                return 1;
    }
    return 0;
}

/* setuid, setgid, file capabilities: the loader would run the program in secure mode.
 * has_caps is 1 if the file has a security.capability attribute. */
static int check_privileges(const char *name, const struct stat *st, int has_caps)
{
    if ((st->st_mode & S_ISUID) && st->st_uid != geteuid())
        return refuse(name, "setuid programs");
    if ((st->st_mode & S_ISGID) && !group_is_ours(st->st_gid))
        return refuse(name, "setgid programs");
    if (has_caps && geteuid() != 0)
        return refuse(name, "programs with file capabilities");
    return 0;
}

static int check_path(const char *path, int depth);

/* A #! script: its interpreter is what the kernel runs (without our hooks). */
static int check_script(const char *name, const char *head, size_t len, int depth)
{
    char interp[SCRIPT_HEAD];
    size_t i = 2, n = 0;

    while (i < len && (head[i] == ' ' || head[i] == '\t'))
        i++;
    while (i < len && head[i] != ' ' && head[i] != '\t' && head[i] != '\n'
           && head[i] != '\0')
        interp[n++] = head[i++];
    interp[n] = '\0';
    if (n == 0 || depth >= MAX_SCRIPT_DEPTH)
        return 0;
    LOG_DEBUG("%s: a script for %s", name, interp);
    return check_path(interp, depth + 1);
}

/* A statically linked program has no PT_INTERP (nor does the loader itself, which
 * loads the shim when run as a program). 1: has one; 0: has none; -1: unreadable. */
static int has_interp(int fd, uint64_t phoff, unsigned phentsize, unsigned phnum)
{
    unsigned char chunk[PHDR_CHUNK * sizeof(Elf64_Phdr)];
    unsigned per = sizeof chunk / phentsize;

    for (unsigned i = 0; i < phnum; i += per) {
        unsigned count = phnum - i < per ? phnum - i : per;
        ssize_t len = pread(fd, chunk, (size_t)count * phentsize,
                            (off_t)(phoff + (uint64_t)i * phentsize));
        if (len != (ssize_t)((size_t)count * phentsize))
            return -1;
        for (unsigned j = 0; j < count; j++) {
            uint32_t type;
            memcpy(&type, chunk + (size_t)j * phentsize, sizeof type);  /* p_type first */
            if (type == PT_INTERP)
                return 1;
        }
    }
    return 0;
}

static int check_elf(const char *name, int fd, const unsigned char *head, size_t len,
                     const struct stat *st)
{
    uint64_t phoff;
    uint16_t machine;
    unsigned phentsize, phnum, type;

    if (len < sizeof(Elf64_Ehdr)
        || (head[EI_CLASS] != ELFCLASS32 && head[EI_CLASS] != ELFCLASS64))
        return 0;  /* Elf64_Ehdr is the bigger header: a program's file has it all */
    memcpy(&machine, head + offsetof(Elf64_Ehdr, e_machine), sizeof machine);
    if (targets.elf_class != 0
        && (head[EI_CLASS] != targets.elf_class || head[EI_DATA] != targets.elf_data
            || machine != targets.elf_machine))
        return refuse(name, "programs for another architecture");
    if (head[EI_CLASS] == ELFCLASS64) {
        Elf64_Ehdr eh;
        memcpy(&eh, head, sizeof eh);
        type = eh.e_type, phoff = eh.e_phoff, phentsize = eh.e_phentsize;
        phnum = eh.e_phnum;
        if (phentsize < sizeof(Elf64_Phdr))
            return 0;
    } else {
        Elf32_Ehdr eh;
        memcpy(&eh, head, sizeof eh);
        type = eh.e_type, phoff = eh.e_phoff, phentsize = eh.e_phentsize;
        phnum = eh.e_phnum;
        if (phentsize < sizeof(Elf32_Phdr))
            return 0;
    }
    if ((type != ET_EXEC && type != ET_DYN) || phnum == PN_XNUM
        || phentsize > PHDR_CHUNK * sizeof(Elf64_Phdr))
        return 0;  /* not a program exec runs, or an exotic header: exec decides */
    if (has_interp(fd, phoff, phentsize, phnum) != 0)
        return 0;
    if (targets.have_loader && st->st_dev == targets.loader_dev
        && st->st_ino == targets.loader_ino)
        return 0;
    return refuse(name, "statically linked programs");
}

/* The checks on an open file: its privileges, then its contents. */
static int check_open(const char *name, int fd, const struct stat *st, int has_caps,
                      int depth)
{
    unsigned char head[SCRIPT_HEAD];
    ssize_t len;
    int r;

    if ((r = check_privileges(name, st, has_caps)) < 0 || fd < 0)
        return r;
    len = pread(fd, head, sizeof head, 0);
    if (len < 4)
        return 0;
    if (head[0] == '#' && head[1] == '!')
        return check_script(name, (const char *)head, (size_t)len, depth);
    if (memcmp(head, ELFMAG, SELFMAG) == 0)
        return check_elf(name, fd, head, (size_t)len, st);
    return 0;
}

static int check_path(const char *path, int depth)
{
    struct stat st;
    int fd, r, has_caps;

    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    has_caps = getxattr(path, "security.capability", NULL, 0) >= 0;
    /* O_NONBLOCK: never wait on a file swapped for a FIFO; it may be unreadable (an
     * execute-only program): then only its privileges are checked. */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    r = check_open(path, fd, &st, has_caps, depth);
    if (fd >= 0)
        close(fd);
    return r;
}

int socksify_exec_check(const char *path)
{
    if (targets.off || path == NULL)
        return 0;
    return check_path(path, 0);
}

int socksify_exec_check_fd(int fd)
{
    char proc[32];
    struct stat st;
    int flags, readable = -1, r;

    if (targets.off || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    /* An O_PATH descriptor cannot be read: its file is opened again for reading. */
    flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_PATH))
        readable = open(proc, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    r = check_open(proc, readable >= 0 ? readable : fd, &st,
                   getxattr(proc, "security.capability", NULL, 0) >= 0, 0);
    if (readable >= 0)
        close(readable);
    return r;
}

int socksify_exec_check_at(int dirfd, const char *path, int flags)
{
    int fd, r;

    if (targets.off || path == NULL)
        return 0;
    if (path[0] == '\0' && (flags & AT_EMPTY_PATH))
        return socksify_exec_check_fd(dirfd);
    if (path[0] == '/')
        return check_path(path, 0);
    /* O_PATH opens an execute-only program too; socksify_exec_check_fd() reads it
     * through /proc/self/fd where it may. */
    fd = openat(dirfd, path, O_PATH | O_CLOEXEC
                | (flags & AT_SYMLINK_NOFOLLOW ? O_NOFOLLOW : 0));
    if (fd < 0)
        return 0;  /* exec says what is wrong with it */
    r = socksify_exec_check_fd(fd);
    close(fd);
    return r;
}

int socksify_exec_check_search(const char *file)
{
    const char *dirs = getenv("PATH");
    char path[PATH_MAX];
    size_t file_len;

    if (targets.off || file == NULL || file[0] == '\0')
        return 0;
    if (strchr(file, '/') != NULL)
        return check_path(file, 0);
    if (dirs == NULL)
        dirs = "/bin:/usr/bin";
    file_len = strlen(file);
    for (;;) {
        size_t len = strcspn(dirs, ":");
        struct stat st;

        /* An empty element is the current directory, as for execvp(). */
        if (len + 1 + file_len < sizeof path) {
            memcpy(path, len > 0 ? dirs : ".", len > 0 ? len : 1);
            path[len > 0 ? len : 1] = '/';
            memcpy(path + (len > 0 ? len : 1) + 1, file, file_len + 1);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)
                && faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0)
                return check_path(path, 0);
        }
        if (dirs[len] == '\0')
            return 0;
        dirs += len + 1;
    }
}
