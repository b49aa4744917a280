/* The least launcher: runs COMMAND ARGS... with the DLL injected (CreateProcess
 * suspended, CreateRemoteThread on LoadLibraryA, resume) and exits with its exit code;
 * 120 if it cannot be started, 121 if the DLL does not load. For tests whose daemon is
 * a script that speaks only the CONNECT request (test_wine_carry_edges.py), where the
 * real launcher's session cannot be opened. Takes DLL COMMAND [ARGS...]. */
#include <windows.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    char cmd[8192] = "";
    size_t len = strlen(argv[1] != NULL ? argv[1] : "") + 1;
    DWORD rc = 0, loaded = 0;
    HANDLE thread;
    void *mem;

    if (argc < 3) {
        fprintf(stderr, "usage: inject DLL COMMAND [ARGS...]\n");
        return 64;
    }
    for (int i = 2; i < argc; i++) {
        if (strlen(cmd) + strlen(argv[i]) + 4 >= sizeof cmd)
            return 64;
        strcat(cmd, "\"");
        strcat(cmd, argv[i]);
        strcat(cmd, "\" ");
    }
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    if (!CreateProcessA(NULL, cmd, NULL, NULL, TRUE, CREATE_SUSPENDED, NULL, NULL, &si,
                        &pi))
        return 120;
    mem = VirtualAllocEx(pi.hProcess, NULL, len, MEM_COMMIT, PAGE_READWRITE);
    if (mem == NULL || !WriteProcessMemory(pi.hProcess, mem, argv[1], len, NULL)) {
        TerminateProcess(pi.hProcess, 1);
        return 121;
    }
    thread = CreateRemoteThread(pi.hProcess, NULL, 0, (LPTHREAD_START_ROUTINE)(void *)
                                GetProcAddress(GetModuleHandleA("kernel32.dll"),
                                               "LoadLibraryA"), mem, 0, NULL);
    if (thread == NULL || WaitForSingleObject(thread, 30000) != WAIT_OBJECT_0
        || !GetExitCodeThread(thread, &loaded) || loaded == 0) {
        TerminateProcess(pi.hProcess, 1);
        return 121;
    }
    ResumeThread(pi.hThread);
    WaitForSingleObject(pi.hProcess, INFINITE);
    GetExitCodeProcess(pi.hProcess, &rc);
    return (int)rc;
}
