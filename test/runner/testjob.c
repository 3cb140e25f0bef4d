/*
 * A job image's only file, for proving the Fargate task anatomy: a static program with
 * no shell beside it. It acts out its arguments in order:
 *   out N      write N bytes to stdout, byte i being (i % 256)
 *   line TEXT  write TEXT and a newline to stdout
 *   err TEXT   write TEXT and a newline to stderr
 *   sleep S    sleep S seconds
 *   exit C     exit with code C
 *   pwd -      write the working directory and a newline to stdout
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void write_all(int fd, const unsigned char *data, size_t length) {
  while (length > 0) {
    ssize_t n = write(fd, data, length);
    if (n <= 0) exit(120);
    data += n;
    length -= (size_t)n;
  }
}

int main(int argc, char **argv) {
  unsigned char block[65536];
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *action = argv[i], *value = argv[i + 1];
    if (strcmp(action, "out") == 0) {
      long long left = atoll(value), position = 0;
      while (left > 0) {
        size_t n = left < (long long)sizeof block ? (size_t)left : sizeof block;
        for (size_t j = 0; j < n; j++) block[j] = (unsigned char)((position + (long long)j) % 256);
        write_all(1, block, n);
        position += (long long)n;
        left -= (long long)n;
      }
    } else if (strcmp(action, "line") == 0 || strcmp(action, "err") == 0) {
      int fd = action[0] == 'l' ? 1 : 2;
      write_all(fd, (const unsigned char *)value, strlen(value));
      write_all(fd, (const unsigned char *)"\n", 1);
    } else if (strcmp(action, "sleep") == 0) {
      sleep((unsigned)atoi(value));
    } else if (strcmp(action, "pwd") == 0) {
      char here[4096];
      if (getcwd(here, sizeof here) == NULL) exit(121);
      write_all(1, (const unsigned char *)here, strlen(here));
      write_all(1, (const unsigned char *)"\n", 1);
    } else if (strcmp(action, "exit") == 0) {
      return atoi(value);
    }
  }
  return 0;
}
