"""The `boocode` command: a thin client over the REST/WebSocket API plus a few local admin commands.

Exit codes (scripts may rely on them):
    0  success
    1  the server failed (5xx) or an unexpected error
    2  usage error (bad flags or arguments)
    3  not authenticated or not allowed (401/403)
    4  not found (404)
    5  rejected input or conflicting state (400/409/413/415/422)
    6  cannot reach the server or a service
"""

EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_REJECTED = 5
EXIT_UNREACHABLE = 6
