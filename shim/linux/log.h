/* One-line log messages on stderr: "socksify[pid] LEVEL func file:line: message".
 * Each message is formatted into a stack buffer and written with a single write(2), so
 * logging takes no stdio lock and is safe in hooks; errno is preserved. */
#ifndef SOCKSIFY_LOG_H
#define SOCKSIFY_LOG_H

#define SOCKSIFY_LOG_SILENT 0
#define SOCKSIFY_LOG_WARN   1
#define SOCKSIFY_LOG_INFO   2
#define SOCKSIFY_LOG_DEBUG  3

void socksify_log(int level, const char *func, const char *file, int line,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Log messages up to level (SOCKSIFY_LOG_*) from now on; SOCKSIFY_LOG_WARN before. */
void socksify_log_set_level(int level);

/* The English description of an errno value, without locale or static buffers. */
const char *socksify_strerror(int err);

#define SOCKSIFY_LOG_AT(level, ...) \
    socksify_log((level), __func__, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_WARN(...)  SOCKSIFY_LOG_AT(SOCKSIFY_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...)  SOCKSIFY_LOG_AT(SOCKSIFY_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) SOCKSIFY_LOG_AT(SOCKSIFY_LOG_DEBUG, __VA_ARGS__)

#endif
