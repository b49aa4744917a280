/* A 32-bit program (built with i686-w64-mingw32-gcc; the other clients are 64-bit)
 * that socksify must refuse to run: its DLL is 64-bit only, so this program would run
 * unprotected. It takes HOST PORT MARKER [RANFILE]. If it runs at all it creates
 * RANFILE (when given), connects straight to HOST:PORT (the test's witness, which
 * counts connections), sends MARKER and prints
 *     RESULT ok 0 ran
 * Each of these is a side effect the tests check is absent. */
#include "client.h"

int main(int argc, char **argv)
{
    struct sockaddr_in sin;
    WSADATA wsa;
    SOCKET s;
    HANDLE f;

    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT MARKER [RANFILE]\n", argv[0]);
        return 64;
    }
    if (argc > 4) {
        f = CreateFileA(argv[4], GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                        FILE_ATTRIBUTE_NORMAL, NULL);
        if (f != INVALID_HANDLE_VALUE)
            CloseHandle(f);
    }
    WSAStartup(MAKEWORD(2, 2), &wsa);
    sin = target(argv[1], argv[2]);
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (connect(s, (struct sockaddr *)&sin, sizeof sin) != 0)
        return fail(WSAGetLastError(), "connect");
    send(s, argv[3], (int)strlen(argv[3]), 0);
    closesocket(s);
    printf("RESULT ok 0 ran\n");
    fflush(stdout);
    return 0;
}
