/* The dlsym() and dlvsym() hooks: a program that looks up a hooked function past the
 * shim -- dlsym(dlopen("libc.so.6"), "connect") searches libc, not the shim, and
 * dlvsym(RTLD_NEXT or RTLD_DEFAULT, "connect", "GLIBC_2.2.5") skips the shim's
 * unversioned hooks -- gets the shim's hook instead of libc's function.
 *
 * RTLD_NEXT and RTLD_DEFAULT lookups depend on the caller's address (glibc reads the
 * return address), so a C wrapper that calls the real dlsym() would make every lookup
 * relative to the shim. Each hook is therefore a small x86-64 stub: it asks
 * socksify_dl_substitute() (which looks the name up from the shim's place, as the
 * shim's own hooks did at initialisation) whether the answer would be the very function
 * a hook of the shim forwards to; if so it returns that hook, else it jumps to the real
 * dlsym()/dlvsym() with the program's registers and return address untouched, so every
 * other lookup is answered exactly as without the shim (another preloaded library's
 * RTLD_NEXT, a library loaded RTLD_LOCAL, dlerror()).
 *
 * The real dlsym() and dlvsym() are found without calling dlsym(): in the dynamic
 * symbol table of libc (or libdl before glibc 2.34), reached through dl_iterate_phdr().
 * Other architectures get no dlsym/dlvsym hooks (README "Limits today"). */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dlsym.h"

/* glibc's own name for write(): no hook of the shim's sits on it, and it needs no
 * lookup (the real-function table is not filled yet when this is called). */
extern ssize_t __write(int fd, const void *buf, size_t len);

void socksify_stderr(const void *buf, size_t len)
{
    (void)!__write(STDERR_FILENO, buf, len);
}

#if defined(__x86_64__)

typedef void *(*dlsym_fn)(void *handle, const char *name);
typedef void *(*dlvsym_fn)(void *handle, const char *name, const char *version);

/* Read by the stubs below; written once under dl_once. */
__attribute__((visibility("hidden"))) dlsym_fn socksify_libc_dlsym;
__attribute__((visibility("hidden"))) dlvsym_fn socksify_libc_dlvsym;
static pthread_once_t dl_once = PTHREAD_ONCE_INIT;
static struct link_map *self_map;  /* this library: its hooks, its place in the list */

/* A defined function `name` in the dynamic symbol table of the object loaded at base
 * with dynamic section dyn, or NULL. */
static void *elf_lookup(uintptr_t base, const ElfW(Dyn) *dyn, const char *name)
{
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const uint32_t *gnu = NULL, *sysv = NULL;
    uint32_t h = 5381, first, count;

    for (; dyn != NULL && dyn->d_tag != DT_NULL; dyn++) {
        /* The loader relocates these in place on x86-64; an unrelocated one is
         * smaller than the load address. */
        uintptr_t p = dyn->d_un.d_ptr < base ? base + dyn->d_un.d_ptr : dyn->d_un.d_ptr;
        switch (dyn->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *)p; break;
        case DT_STRTAB: strtab = (const char *)p; break;
        case DT_GNU_HASH: gnu = (const uint32_t *)p; break;
        case DT_HASH: sysv = (const uint32_t *)p; break;
        }
    }
    if (symtab == NULL || strtab == NULL)
        return NULL;
    if (gnu != NULL) {
        /* nbuckets, symoffset, bloom size (words), bloom shift, bloom, buckets, chains */
        const uint32_t *buckets = (const uint32_t *)((const ElfW(Addr) *)(gnu + 4) + gnu[2]);
        const uint32_t *chains = buckets + gnu[0];

        for (const char *c = name; *c != '\0'; c++)
            h = h * 33 + (unsigned char)*c;
        first = buckets[h % gnu[0]];
        if (first < gnu[1])
            return NULL;
        for (uint32_t i = first;; i++) {
            uint32_t hi = chains[i - gnu[1]];
            if ((hi | 1) == (h | 1) && strcmp(strtab + symtab[i].st_name, name) == 0
                && symtab[i].st_shndx != SHN_UNDEF
                && ELF64_ST_TYPE(symtab[i].st_info) == STT_FUNC)
                return (void *)(base + symtab[i].st_value);
            if (hi & 1)
                return NULL;
        }
    }
    count = sysv != NULL ? sysv[1] : 0;  /* nchain: the number of symbols */
    for (uint32_t i = 0; i < count; i++)
        if (strcmp(strtab + symtab[i].st_name, name) == 0 && symtab[i].st_shndx != SHN_UNDEF
            && ELF64_ST_TYPE(symtab[i].st_info) == STT_FUNC)
            return (void *)(base + symtab[i].st_value);
    return NULL;
}

static int find_dl_functions(struct dl_phdr_info *info, size_t size, void *data)
{
    const char *base = strrchr(info->dlpi_name, '/');
    const ElfW(Dyn) *dyn = NULL;

    (void)size;
    (void)data;

    base = base != NULL ? base + 1 : info->dlpi_name;
    if (strncmp(base, "libc.so.", 8) != 0 && strncmp(base, "libdl.so.", 9) != 0)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (socksify_libc_dlsym == NULL)
        socksify_libc_dlsym = (dlsym_fn)elf_lookup(info->dlpi_addr, dyn, "dlsym");
    if (socksify_libc_dlvsym == NULL)
        socksify_libc_dlvsym = (dlvsym_fn)elf_lookup(info->dlpi_addr, dyn, "dlvsym");
    return socksify_libc_dlsym != NULL && socksify_libc_dlvsym != NULL;
}

static void find_once(void)
{
    static const char msg[] = "socksify: cannot find libc's dlsym/dlvsym\n";
    Dl_info info;

    dl_iterate_phdr(find_dl_functions, NULL);
    if (socksify_libc_dlsym == NULL || socksify_libc_dlvsym == NULL) {
        socksify_stderr(msg, sizeof msg - 1);
        abort();
    }
    if (dladdr1((void *)&find_once, &info, (void **)&self_map, RTLD_DL_LINKMAP) == 0)
        self_map = NULL;  /* then no lookup is answered with a hook */
}

void *socksify_real_dlsym(void *handle, const char *name)
{
    pthread_once(&dl_once, find_once);
    return socksify_libc_dlsym(handle, name);
}

/* 1 if the object at map comes after the shim in the loader's list of objects (a
 * preloaded library after it, a dependency, a library loaded later), or is unknown
 * (NULL); 0 if it comes before (the program, a library preloaded first). */
static int after_shim(const struct link_map *map)
{
    const struct link_map *l;

    if (map == NULL || self_map == NULL)
        return 1;
    for (l = self_map->l_next; l != NULL; l = l->l_next)
        if (l == map)
            return 1;
    return 0;
}

/* Called by the stubs with the caller's return address: the shim's hook for name, or
 * NULL to let the stub make the real lookup for the caller. The hook is given when the
 * lookup (handle, name, version) made from the shim's place finds the very function
 * that hook forwards to (what dlsym(RTLD_NEXT, name) gives the shim), except
 *  - to a caller after the shim that defines name itself (or an unknown one): it may be
 *    a wrapper the shim's hook leads to, and would call the shim and itself forever;
 *  - for an unversioned RTLD_NEXT or RTLD_DEFAULT lookup from a caller before the shim:
 *    the real lookup passes the shim's hook (or a wrapper before it) anyway. */
__attribute__((visibility("hidden"), used))
void *socksify_dl_substitute(void *handle, const char *name, const char *version,
                             void *caller)
{
    struct link_map *caller_map = NULL;
    Dl_info info;
    void *hook, *found, *next, *result = NULL;
    int saved_errno = errno, after;

    pthread_once(&dl_once, find_once);
    if (self_map == NULL || name == NULL)
        return NULL;
    hook = elf_lookup(self_map->l_addr, self_map->l_ld, name);
    if (hook == NULL)
        goto out;  /* not one of the shim's functions */
    if (dladdr1(caller, &info, (void **)&caller_map, RTLD_DL_LINKMAP) == 0)
        caller_map = NULL;
    after = after_shim(caller_map);
    if (after && (caller_map == NULL
                  || elf_lookup(caller_map->l_addr, caller_map->l_ld, name) != NULL))
        goto out;
    if (!after && version == NULL && (handle == RTLD_NEXT || handle == RTLD_DEFAULT))
        goto out;
    found = version != NULL ? socksify_libc_dlvsym(handle, name, version)
                            : socksify_libc_dlsym(handle, name);
    next = socksify_libc_dlsym(RTLD_NEXT, name);
    if (found != NULL && found == next && found != hook)
        result = hook;
out:
    errno = saved_errno;
    return result;
}

/* dlsym(handle, name) and dlvsym(handle, name, version): keep the arguments, ask
 * socksify_dl_substitute(), then return its hook or jump to the real function. */
__asm__(
    ".text\n"
    ".globl dlsym\n"
    ".type dlsym, @function\n"
    "dlsym:\n"
    "    endbr64\n"
    "    push %rdi\n"
    "    push %rsi\n"
    "    sub $8, %rsp\n"                 /* 16-byte alignment for the call */
    "    xor %edx, %edx\n"               /* version NULL */
    "    mov 24(%rsp), %rcx\n"           /* the caller's return address */
    "    call socksify_dl_substitute\n"
    "    add $8, %rsp\n"
    "    pop %rsi\n"
    "    pop %rdi\n"
    "    test %rax, %rax\n"
    "    jz 1f\n"
    "    ret\n"
    "1:  jmp *socksify_libc_dlsym(%rip)\n"
    ".size dlsym, .-dlsym\n"
    ".globl dlvsym\n"
    ".type dlvsym, @function\n"
    "dlvsym:\n"
    "    endbr64\n"
    "    push %rdi\n"
    "    push %rsi\n"
    "    push %rdx\n"
    "    mov 24(%rsp), %rcx\n"           /* the caller's return address */
    "    call socksify_dl_substitute\n"
    "    pop %rdx\n"
    "    pop %rsi\n"
    "    pop %rdi\n"
    "    test %rax, %rax\n"
    "    jz 2f\n"
    "    ret\n"
    "2:  jmp *socksify_libc_dlvsym(%rip)\n"
    ".size dlvsym, .-dlvsym\n");

#else  /* no stubs: the real dlsym() is libc's, as before */

void *socksify_real_dlsym(void *handle, const char *name)
{
    return dlsym(handle, name);
}

#endif
