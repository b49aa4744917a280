/* Starts blocking.exe (beside this program) with the same arguments through
 * CreateProcessW (SPAWN=A: CreateProcessA; SPAWN=env: with an environment block
 * that lacks the SOCKSIFY_* variables; SPAWN=32: tiny32.exe, a 32-bit program, through
 * CreateProcessW) and exits with the child's exit code. */
#include "client.h"

int main(int argc, char **argv)
{
    const char *how = getenv("SPAWN");
    char exe[MAX_PATH], cmd[2048], *slash;
    wchar_t wcmd[2048];
    STARTUPINFOW si;
    STARTUPINFOA sia;
    PROCESS_INFORMATION pi;
    DWORD code = 1;
    BOOL ok;

    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT MARKER [GOFILE]\n", argv[0]);
        return 64;
    }
    GetModuleFileNameA(NULL, exe, sizeof exe);
    slash = strrchr(exe, '\\');
    strcpy(slash != NULL ? slash + 1 : exe,
           how != NULL && strcmp(how, "32") == 0 ? "tiny32.exe" : "blocking.exe");
    snprintf(cmd, sizeof cmd, "\"%s\" %s %s %s %s", exe, argv[1], argv[2], argv[3],
             argc > 4 ? argv[4] : "");
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    memset(&sia, 0, sizeof sia);
    sia.cb = sizeof sia;
    if (how != NULL && strcmp(how, "A") == 0) {
        ok = CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &sia, &pi);
    } else if (how != NULL && strcmp(how, "env") == 0) {
        static const wchar_t env[] = L"SYSTEMROOT=C:\\windows\0PATH=C:\\windows\\system32\0";
        MultiByteToWideChar(CP_ACP, 0, cmd, -1, wcmd, 2048);
        ok = CreateProcessW(NULL, wcmd, NULL, NULL, TRUE, CREATE_UNICODE_ENVIRONMENT,
                            (LPVOID)env, NULL, &si, &pi);
    } else {
        MultiByteToWideChar(CP_ACP, 0, cmd, -1, wcmd, 2048);
        ok = CreateProcessW(NULL, wcmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi);
    }
    if (!ok)
        return fail((int)GetLastError(), "CreateProcess");
    printf("CHILD %lu\n", pi.dwProcessId);
    fflush(stdout);
    WaitForSingleObject(pi.hProcess, INFINITE);
    GetExitCodeProcess(pi.hProcess, &code);
    return (int)code;
}
