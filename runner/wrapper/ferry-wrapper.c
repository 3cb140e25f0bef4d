/*
 * ferry-wrapper: runs a job's argv inside the job's own container, where Ferry cannot change
 * the image. It is built static, so it needs nothing from the image (no shell, no libc). On
 * Fargate it is handed to the job container through a shared volume; on the local Docker
 * backend it is bind-mounted read-only at the same path.
 *
 *   ferry-wrapper --init DIR [STEPS]
 *   ferry-wrapper --io DIR [--timeout SECONDS [--timeout-from FILE]] [--grace SECONDS] [--workdir PATH]
 *                 -- PROGRAM [ARG...]
 *   ferry-wrapper --spool DIR --stdout-keep HEAD:TAIL --stderr-keep HEAD:TAIL
 *                 [--timeout SECONDS] [--grace SECONDS] [--workdir PATH] -- PROGRAM [ARG...]
 *
 * --init (run by the task's init container, from Ferry's runner image) copies the wrapper
 * to DIR/bin/ferry-wrapper and makes the FIFOs DIR/io/stdout and DIR/io/stderr, open to
 * any user, since the job's image may run as one. A job of STEPS steps (each its own
 * container, run one after another) gets the same for step K >= 2 in DIR/io/step-K.
 *
 * --timeout-from FILE (with --io) makes the timeout count from the time in FILE rather than
 * from this step's start: the first step to start writes it there, and each later step gets
 * what is left. A step that starts with no time left does not run; exit.json says it timed out.
 *
 * Where the output goes:
 * - with --io (Fargate), stdout and stderr of the job go to DIR/stdout and DIR/stderr (FIFOs
 *   the publisher reads; opening them waits until the publisher is there, so nothing is lost);
 * - with --spool (local Docker), the wrapper reads the job's stdout and stderr from pipes and
 *   keeps them itself, so no reader outside the container can slow or lose them: the first
 *   HEAD bytes and the last TAIL bytes of each stream, and the count of all bytes, in
 *   DIR/stdout.spool and DIR/stderr.spool (layout below). A server that restarts while the
 *   job runs finds everything there.
 *
 * In both modes:
 * - the program is found on the job's PATH, as the image's own entry point would be;
 * - with --workdir it runs in PATH, made first when missing (as `docker run -w` does); when
 *   the directory cannot be made or entered, the job does not start and exit.json says why;
 * - after SECONDS the job gets SIGTERM, then SIGKILL after the grace period;
 * - a SIGTERM or SIGINT sent to the wrapper (ECS StopTask, docker stop) is passed on to the
 *   job; one that comes before the job has started (while the FIFOs wait for the publisher)
 *   means it never starts, and exit.json says so;
 * - when the job ends, DIR/exit.json records {"exitCode", "signal", "timedOut",
 *   "stopped" (a stop was passed on), "startError"} (written to a temporary file, then renamed), and the wrapper exits
 *   with the job's code (128 + signal when it was killed).
 * As PID 1 of the container it also reaps orphans, so none linger as zombies.
 *
 * A spool file: a 64-byte header, then HEAD bytes for the head, then a ring of TAIL + CHUNK
 * bytes for the tail. Header fields are little-endian 64-bit: at 0 the magic "FERRYSP1", at 8
 * HEAD, at 16 TAIL, at 24 the ring's size, at 32 the count of bytes committed. Byte N of the
 * stream, once committed, is at 64 + N when N < HEAD, else at 64 + HEAD + (N - HEAD) % ring.
 * Each chunk read from the job (at most CHUNK bytes) is written first and counted after, and
 * the ring is CHUNK larger than TAIL: a chunk being written only ever overwrites bytes older
 * than the last TAIL committed ones, so those are always intact, even for a reader that looks
 * while the job writes, or after the wrapper was killed mid-write.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_alarm = 0;
static volatile sig_atomic_t got_stop = 0;

static void on_alarm(int sig) { (void)sig; got_alarm = 1; }
static void on_stop(int sig) { got_stop = sig; }

static void die(const char *what) {
  fprintf(stderr, "ferry-wrapper: %s: %s\n", what, strerror(errno));
  exit(125);
}

static void usage(void) {
  fprintf(stderr,
          "usage: ferry-wrapper --init DIR [STEPS]\n"
          "       ferry-wrapper --io DIR [--timeout SECONDS [--timeout-from FILE]] [--grace SECONDS] [--workdir PATH]\n"
          "                     -- PROGRAM [ARG...]\n"
          "       ferry-wrapper --spool DIR --stdout-keep HEAD:TAIL --stderr-keep HEAD:TAIL [--append] [--timeout SECONDS]\n"
          "                     [--grace SECONDS] [--workdir PATH] -- PROGRAM [ARG...]\n");
  exit(125);
}

static const char *signal_name(int sig) {
  switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    default: return "SIGNAL";
  }
}

/* JSON string escaping for the start error message. */
static void write_json_string(FILE *out, const char *text) {
  fputc('"', out);
  for (const char *p = text; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
    else if (c < 0x20) fprintf(out, "\\u%04x", c);
    else fputc(c, out);
  }
  fputc('"', out);
}

static void write_exit(const char *dir, int exit_code, int sig, int timed_out, int stopped, const char *start_error) {
  char tmp[4096], final[4096];
  snprintf(tmp, sizeof tmp, "%s/exit.json.tmp", dir);
  snprintf(final, sizeof final, "%s/exit.json", dir);
  FILE *out = fopen(tmp, "w");
  if (!out) die("cannot write exit.json");
  if (sig) fprintf(out, "{\"exitCode\":%d,\"signal\":\"%s\",", 128 + sig, signal_name(sig));
  else if (exit_code < 0) fputs("{\"exitCode\":null,\"signal\":null,", out);
  else fprintf(out, "{\"exitCode\":%d,\"signal\":null,", exit_code);
  fprintf(out, "\"timedOut\":%s,\"stopped\":%s,\"startError\":", timed_out ? "true" : "false", stopped ? "true" : "false");
  if (start_error) write_json_string(out, start_error);
  else fputs("null", out);
  fputs("}\n", out);
  if (fclose(out) != 0) die("cannot write exit.json");
  if (rename(tmp, final) != 0) die("cannot publish exit.json");
}

/* Opens an output; -1 when a stop came while it waited (the job is then not started). */
static int open_output(const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  for (;;) {
    /* On a FIFO this waits for the reader; anywhere else it makes a plain file. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) return fd;
    if (errno != EINTR) die(path);
    if (got_stop) return -1;
  }
}

/* A stop (StopTask) before the job started: it never will; exit.json says so. */
static int stopped_before_start(const char *io, int out, int err) {
  if (out >= 0) close(out);
  if (err >= 0) close(err);
  write_exit(io, 0, SIGTERM, 0, 1, "the task was stopped before the job started");
  return 128 + SIGTERM;
}

static void copy_self(const char *target) {
  int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (in < 0) die("/proc/self/exe");
  char tmp[4096 + sizeof ".tmp"];
  snprintf(tmp, sizeof tmp, "%s.tmp", target);
  int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  if (out < 0) die(tmp);
  char buffer[65536];
  ssize_t n;
  while ((n = read(in, buffer, sizeof buffer)) > 0) {
    if (write(out, buffer, (size_t)n) != n) die(tmp);
  }
  if (n < 0) die("/proc/self/exe");
  if (fchmod(out, 0755) != 0 || close(out) != 0) die(tmp);
  close(in);
  if (rename(tmp, target) != 0) die(target);
}

static void make_dir(const char *path) {
  if (mkdir(path, 0777) != 0 && errno != EEXIST) die(path);
  if (chmod(path, 0777) != 0) die(path);
}

static void make_fifo(const char *path) {
  unlink(path);
  if (mkfifo(path, 0666) != 0) die(path);
  if (chmod(path, 0666) != 0) die(path);
}

/* One step's io directory: its two FIFOs, and no exit record yet. */
static void make_io(const char *io) {
  char path[4096];
  make_dir(io);
  snprintf(path, sizeof path, "%s/stdout", io);
  make_fifo(path);
  snprintf(path, sizeof path, "%s/stderr", io);
  make_fifo(path);
  snprintf(path, sizeof path, "%s/exit.json", io);
  unlink(path);
}

static int init(const char *dir, const char *steps_text) {
  char path[4096];
  char *end = NULL;
  long steps = steps_text ? strtol(steps_text, &end, 10) : 1;
  if (steps_text && (end == steps_text || *end != '\0' || steps < 1 || steps > 64)) usage();
  make_dir(dir);
  snprintf(path, sizeof path, "%s/bin", dir);
  make_dir(path);
  snprintf(path, sizeof path, "%s/bin/ferry-wrapper", dir);
  copy_self(path);
  snprintf(path, sizeof path, "%s/io", dir);
  make_io(path);
  for (long k = 2; k <= steps; k++) {
    snprintf(path, sizeof path, "%s/io/step-%ld", dir, k);
    make_io(path);
  }
  snprintf(path, sizeof path, "%s/io/started", dir);
  unlink(path);
  return 0;
}

static long long now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/*
 * When the job's time started, in milliseconds since the epoch: read from FILE, or now, written
 * there by the first step to get here (created exclusively, so two can never both be first).
 */
static long long started_at(const char *file) {
  long long now = now_ms();
  /* A name of its own: every step's wrapper is PID 1 of its container, and steps may run as other users. */
  char tmp[4096 + sizeof ".XXXXXX"];
  snprintf(tmp, sizeof tmp, "%s.XXXXXX", file);
  int fd = mkstemp(tmp);
  if (fd < 0) die(tmp);
  if (dprintf(fd, "%lld\n", now) < 0 || fchmod(fd, 0644) != 0 || close(fd) != 0) die(tmp);
  /* link() fails with EEXIST when another step was first: its time counts, not ours. */
  int first = link(tmp, file) == 0;
  int link_errno = errno;
  unlink(tmp);
  if (first) return now;
  if (link_errno != EEXIST) {
    errno = link_errno;
    die(file);
  }
  FILE *in = fopen(file, "r");
  long long recorded = 0;
  if (!in || fscanf(in, "%lld", &recorded) != 1) die(file);
  fclose(in);
  return recorded;
}

/* mkdir -p: each missing directory of an absolute path, as Docker makes a missing WORKDIR. */
static int make_path(const char *path) {
  char partial[4096];
  size_t length = strlen(path);
  if (length == 0 || length >= sizeof partial) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(partial, path, length + 1);
  for (char *p = partial + 1; ; p++) {
    if (*p == '/' || *p == '\0') {
      char kept = *p;
      *p = '\0';
      if (mkdir(partial, 0755) != 0 && errno != EEXIST) return -1;
      *p = kept;
      if (kept == '\0') return 0;
    }
  }
}


/* Blocks the signals the wrapper acts on (they are taken synchronously), keeping the mask it had. */
static void block_watched(sigset_t *watched, sigset_t *previous) {
  sigemptyset(watched);
  sigaddset(watched, SIGTERM);
  sigaddset(watched, SIGINT);
  sigaddset(watched, SIGALRM);
  sigaddset(watched, SIGCHLD);
  sigprocmask(SIG_BLOCK, watched, previous);
}

/*
 * Starts the job on its own with `out` and `err` as its stdout and stderr, the signal mask it
 * had before the wrapper blocked any, and default actions. A pipe closed on exec tells whether
 * exec worked; if not, `start_error` says why (else it is empty) and the job exits 127 or 126.
 */
static pid_t start_job(char **job, int out, int err, const sigset_t *previous, int niceness, char *start_error,
                       size_t size) {
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) die("pipe");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, previous, NULL);
    if (niceness != 0) (void)!nice(niceness);
    if (dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0) _exit(125);
    execvp(job[0], job);
    int code = errno;
    (void)!write(report[1], &code, sizeof code);
    _exit(code == ENOENT ? 127 : 126);
  }
  close(report[1]);
  int exec_errno = 0;
  ssize_t n = read(report[0], &exec_errno, sizeof exec_errno);
  close(report[0]);
  start_error[0] = '\0';
  if (n == (ssize_t)sizeof exec_errno) snprintf(start_error, size, "cannot run %s: %s", job[0], strerror(exec_errno));
  return child;
}

/* The job as the wrapper watches it, and what it did to it. */
struct job_run {
  pid_t child;
  long grace;
  int status;
  int ended;
  int timed_out;
  int killing;
  int forwarded;
};

/*
 * One signal taken by the wrapper: SIGCHLD reaps the job (and orphans it left behind, so none
 * linger as zombies); SIGALRM is the timeout, SIGTERM first and SIGKILL after the grace period;
 * SIGTERM or SIGINT (a stop) is passed on to the job, once.
 */
static void on_signal(struct job_run *run, int sig) {
  if (sig == SIGCHLD) {
    pid_t done;
    int reaped;
    while ((done = waitpid(-1, &reaped, WNOHANG)) > 0) {
      if (done == run->child) {
        run->status = reaped;
        run->ended = 1;
      }
    }
  } else if (sig == SIGALRM) {
    if (!run->killing) {
      run->timed_out = 1;
      run->killing = 1;
      kill(run->child, SIGTERM);
      alarm((unsigned)(run->grace > 0 ? run->grace : 1));
    } else {
      kill(run->child, SIGKILL);
    }
  } else if (!run->forwarded) {
    run->forwarded = 1;
    kill(run->child, sig);
  }
}

/* Records how the job ended in exit.json and gives the wrapper's own exit code. */
static int job_ended(const char *dir, const struct job_run *run, const char *start_error) {
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
  const char *error = start_error[0] ? start_error : NULL;
  if (WIFSIGNALED(run->status)) {
    write_exit(dir, 0, WTERMSIG(run->status), run->timed_out, run->forwarded, error);
    return 128 + WTERMSIG(run->status);
  }
  int code = WIFEXITED(run->status) ? WEXITSTATUS(run->status) : 125;
  write_exit(dir, code, 0, run->timed_out, run->forwarded, error);
  return code;
}

/* ---- spool mode: the wrapper keeps the job's output itself ---- */

#define SPOOL_HEADER 64
/* How much lower than the wrapper's own the job's scheduling priority is in spool mode. */
#define JOB_NICENESS 10
#define CHUNK 65536

struct spool {
  int fd;
  uint64_t head_limit;
  uint64_t tail_limit;
  uint64_t ring;
  uint64_t total;
};

static void put_u64(unsigned char *at, uint64_t value) {
  for (int i = 0; i < 8; i++) at[i] = (unsigned char)(value >> (8 * i));
}

static void pwrite_all(int fd, const void *data, size_t length, uint64_t offset) {
  const char *p = data;
  while (length > 0) {
    ssize_t n = pwrite(fd, p, length, (off_t)offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("cannot write the output spool");
    }
    p += n;
    length -= (size_t)n;
    offset += (uint64_t)n;
  }
}

static uint64_t get_u64(const unsigned char *at) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; i--) value = (value << 8) | at[i];
  return value;
}

/*
 * Opens DIR/NAME.spool. With `append` (a later step of the same job), the stream goes on after
 * what an earlier wrapper committed there, when that file was kept with the same limits;
 * otherwise it starts empty.
 */
static void spool_open(struct spool *s, const char *dir, const char *name, uint64_t head, uint64_t tail,
                       int append) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.spool", dir, name);
  s->fd = open(path, O_RDWR | O_CREAT | (append ? 0 : O_TRUNC) | O_CLOEXEC, 0644);
  if (s->fd < 0) die(path);
  s->head_limit = head;
  s->tail_limit = tail;
  s->ring = tail > 0 ? tail + CHUNK : 0;
  s->total = 0;
  if (append) {
    unsigned char kept[SPOOL_HEADER];
    if (pread(s->fd, kept, sizeof kept, 0) == (ssize_t)sizeof kept && memcmp(kept, "FERRYSP1", 8) == 0 &&
        get_u64(kept + 8) == head && get_u64(kept + 16) == tail && get_u64(kept + 24) == s->ring) {
      s->total = get_u64(kept + 32);
      return;
    }
    if (ftruncate(s->fd, 0) != 0) die(path);
  }
  unsigned char header[SPOOL_HEADER] = {0};
  memcpy(header, "FERRYSP1", 8);
  put_u64(header + 8, head);
  put_u64(header + 16, tail);
  put_u64(header + 24, s->ring);
  pwrite_all(s->fd, header, sizeof header, 0);
}

/* Keeps a chunk (at most CHUNK bytes): head bytes in place, the rest in the ring; then counts it. */
static void spool_write(struct spool *s, const char *data, size_t length) {
  uint64_t position = s->total;
  size_t left = length;
  if (position < s->head_limit) {
    uint64_t room = s->head_limit - position;
    size_t part = left < room ? left : (size_t)room;
    pwrite_all(s->fd, data, part, SPOOL_HEADER + position);
    data += part;
    left -= part;
    position += part;
  }
  if (left > 0 && s->ring > 0) {
    uint64_t base = SPOOL_HEADER + s->head_limit;
    uint64_t at = (position - s->head_limit) % s->ring;
    size_t first = left;
    if (at + first > s->ring) first = (size_t)(s->ring - at);
    pwrite_all(s->fd, data, first, base + at);
    if (first < left) pwrite_all(s->fd, data + first, left - first, base);
  }
  s->total += length;
  unsigned char count[8];
  put_u64(count, s->total);
  pwrite_all(s->fd, count, sizeof count, 32);
}

/* The wrapper's own message on the job's stderr, as `ferry-wrapper: TEXT` and a newline. */
static void spool_line(struct spool *s, const char *text) {
  char line[4400];
  int length = snprintf(line, sizeof line, "ferry-wrapper: %s\n", text);
  if (length < 0) return;
  spool_write(s, line, (size_t)length < sizeof line ? (size_t)length : sizeof line - 1);
}

static void parse_keep(const char *text, uint64_t *head, uint64_t *tail) {
  char *end = NULL;
  errno = 0;
  unsigned long long h = strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != ':') usage();
  const char *rest = end + 1;
  unsigned long long t = strtoull(rest, &end, 10);
  if (errno != 0 || end == rest || *end != '\0') usage();
  *head = h;
  *tail = t;
}

/* Reads what a pipe holds into the spool; 0 at end of file or when nothing more is there now. */
static int pump(int fd, struct spool *s, char *buffer) {
  for (;;) {
    ssize_t n = read(fd, buffer, CHUNK);
    if (n > 0) {
      spool_write(s, buffer, (size_t)n);
      return 1;
    }
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    die("cannot read the job's output");
  }
}

static int run_spooled(const char *dir, uint64_t keep[2][2], int append, const char *workdir, long timeout,
                       long grace, char **job) {
  /* Every signal the wrapper acts on is taken through a signalfd, beside the output pipes. */
  sigset_t watched, previous;
  block_watched(&watched, &previous);
  int signals = signalfd(-1, &watched, SFD_CLOEXEC);
  if (signals < 0) die("signalfd");

  struct spool spools[2];
  spool_open(&spools[0], dir, "stdout", keep[0][0], keep[0][1], append);
  spool_open(&spools[1], dir, "stderr", keep[1][0], keep[1][1], append);
  static char buffer[CHUNK];

  if (workdir && (make_path(workdir) != 0 || chdir(workdir) != 0)) {
    char start_error[4300];
    snprintf(start_error, sizeof start_error, "cannot enter the working directory %s: %s", workdir, strerror(errno));
    spool_line(&spools[1], start_error);
    write_exit(dir, 125, 0, 0, 0, start_error);
    return 125;
  }

  int pipes[2][2];
  if (pipe2(pipes[0], O_CLOEXEC) != 0 || pipe2(pipes[1], O_CLOEXEC) != 0) die("pipe");
  char start_error[4300];
  /*
   * The job shares its container's CPU with the wrapper: it runs at a lower priority, so that
   * however many processes it starts (a fork bomb, a parallel build) the wrapper still gets to
   * read what they print. Niceness only weighs within the container's own CPU share.
   */
  pid_t child = start_job(job, pipes[0][1], pipes[1][1], &previous, JOB_NICENESS, start_error, sizeof start_error);
  close(pipes[0][1]);
  close(pipes[1][1]);
  if (start_error[0]) spool_line(&spools[1], start_error);

  if (timeout > 0) alarm((unsigned)timeout);

  struct pollfd polled[3] = {
    {.fd = pipes[0][0], .events = POLLIN},
    {.fd = pipes[1][0], .events = POLLIN},
    {.fd = signals, .events = POLLIN},
  };
  struct job_run run = {.child = child, .grace = grace};
  while (!run.ended) {
    if (poll(polled, 3, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    for (int i = 0; i < 2; i++) {
      if (polled[i].fd < 0 || !(polled[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (!pump(polled[i].fd, &spools[i], buffer)) {
        close(polled[i].fd);
        polled[i].fd = -1;
      }
    }
    struct signalfd_siginfo info;
    if ((polled[2].revents & POLLIN) && read(signals, &info, sizeof info) == (ssize_t)sizeof info)
      on_signal(&run, (int)info.ssi_signo);
  }
  /*
   * The job is gone: take what its pipes still hold, without waiting for processes it left
   * behind that keep them open (they end with the container, as when the job was PID 1).
   */
  for (int i = 0; i < 2; i++) {
    if (polled[i].fd < 0) continue;
    fcntl(polled[i].fd, F_SETFL, O_NONBLOCK);
    while (pump(polled[i].fd, &spools[i], buffer)) {}
    close(polled[i].fd);
  }
  return job_ended(dir, &run, start_error);
}

int main(int argc, char **argv) {
  if ((argc == 3 || argc == 4) && strcmp(argv[1], "--init") == 0) return init(argv[2], argc == 4 ? argv[3] : NULL);
  const char *io = NULL, *spool = NULL, *workdir = NULL, *timeout_from = NULL;
  uint64_t keep[2][2] = {{0, 0}, {0, 0}};
  int kept = 0, append = 0;
  long timeout = 0, grace = 10;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (strcmp(argv[i], "--append") == 0) { append = 1; continue; }
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--io") == 0) io = argv[++i];
    else if (strcmp(argv[i], "--timeout") == 0) timeout = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--grace") == 0) grace = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--workdir") == 0) workdir = argv[++i];
    else if (strcmp(argv[i], "--timeout-from") == 0) timeout_from = argv[++i];
    else if (strcmp(argv[i], "--spool") == 0) spool = argv[++i];
    else if (strcmp(argv[i], "--stdout-keep") == 0) { parse_keep(argv[++i], &keep[0][0], &keep[0][1]); kept |= 1; }
    else if (strcmp(argv[i], "--stderr-keep") == 0) { parse_keep(argv[++i], &keep[1][0], &keep[1][1]); kept |= 2; }
    else usage();
  }
  if (i >= argc || (io == NULL) == (spool == NULL) || (append && io != NULL)) usage();
  if (timeout_from && (io == NULL || timeout <= 0)) usage();
  char **job = &argv[i];
  if (spool) {
    if (kept != 3) usage();
    return run_spooled(spool, keep, append, workdir, timeout, grace, job);
  }

  /*
   * As PID 1 the wrapper ignores any signal it has no handler for, so the handlers come
   * first: a StopTask that arrives while the FIFOs are still being opened must not be lost
   * (ECS would otherwise wait out the stop timeout and SIGKILL the task).
   */
  struct sigaction stop_action = {0};
  stop_action.sa_handler = on_stop;
  sigaction(SIGTERM, &stop_action, NULL);
  sigaction(SIGINT, &stop_action, NULL);
  struct sigaction alarm_action = {0};
  alarm_action.sa_handler = on_alarm;
  sigaction(SIGALRM, &alarm_action, NULL);

  int out = open_output(io, "stdout");
  if (out < 0) return stopped_before_start(io, -1, -1);
  int err = open_output(io, "stderr");
  if (err < 0) return stopped_before_start(io, out, -1);

  if (workdir && (make_path(workdir) != 0 || chdir(workdir) != 0)) {
    char start_error[4300];
    snprintf(start_error, sizeof start_error, "cannot enter the working directory %s: %s", workdir, strerror(errno));
    dprintf(err, "ferry-wrapper: %s\n", start_error);
    close(out);
    close(err);
    write_exit(io, 125, 0, 0, 0, start_error);
    return 125;
  }

  /*
   * From here the signals are blocked and taken with sigwaitinfo, so none can fall between
   * a check and a wait: a stop that came before the fork ends things before the job starts,
   * one that comes after is passed on to the job.
   */
  sigset_t watched, previous;
  block_watched(&watched, &previous);
  if (got_stop) return stopped_before_start(io, out, err);

  /* What is left of the job's time: all of it, unless earlier steps used some. */
  long long left_ms = (long long)timeout * 1000;
  if (timeout_from) left_ms -= now_ms() - started_at(timeout_from);
  if (timeout > 0 && left_ms <= 0) {
    dprintf(err, "ferry-wrapper: the job's timeout of %lds ran out before this step started\n", timeout);
    close(out);
    close(err);
    write_exit(io, -1, 0, 1, 0, NULL);
    return 124;
  }

  char start_error[4300];
  pid_t child = start_job(job, out, err, &previous, 0, start_error, sizeof start_error);
  if (start_error[0]) dprintf(err, "ferry-wrapper: %s\n", start_error);
  close(out);
  close(err);

  if (timeout > 0) {
    struct itimerval timer = {.it_value = {.tv_sec = left_ms / 1000, .tv_usec = (left_ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &timer, NULL);
  }

  struct job_run run = {.child = child, .grace = grace};
  while (!run.ended) {
    siginfo_t info;
    int sig = sigwaitinfo(&watched, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      die("sigwaitinfo");
    }
    on_signal(&run, sig);
  }
  return job_ended(io, &run, start_error);
}
