/*
 * ferry-wrapper: runs a job's argv inside the job's own container on Fargate, where Ferry
 * cannot change the image. It is built static, so it needs nothing from the image (no
 * shell, no libc), and is handed to the job container through a shared volume.
 *
 *   ferry-wrapper --init DIR
 *   ferry-wrapper --io DIR [--timeout SECONDS] [--grace SECONDS] [--workdir PATH] -- PROGRAM [ARG...]
 *
 * --init (run by the task's init container, from Ferry's runner image) copies the wrapper
 * to DIR/bin/ferry-wrapper and makes the FIFOs DIR/io/stdout and DIR/io/stderr, open to
 * any user, since the job's image may run as one.
 *
 * - stdout and stderr of the job go to DIR/stdout and DIR/stderr (FIFOs the publisher
 *   reads; opening them waits until the publisher is there, so nothing is lost);
 * - the program is found on the job's PATH, as the image's own entry point would be;
 * - with --workdir it runs in PATH, made first when missing (as `docker run -w` does); when
 *   the directory cannot be made or entered, the job does not start and exit.json says why;
 * - after SECONDS the job gets SIGTERM, then SIGKILL after the grace period;
 * - a SIGTERM or SIGINT sent to the wrapper (ECS StopTask) is passed on to the job; one that
 *   comes before the job has started (while the FIFOs wait for the publisher) means it never
 *   starts, and exit.json says so;
 * - when the job ends, DIR/exit.json records {"exitCode", "signal", "timedOut",
 *   "stopped" (a stop was passed on), "startError"} (written to a temporary file, then renamed), and the wrapper exits
 *   with the job's code (128 + signal when it was killed).
 * As PID 1 of the container it also reaps orphans, so none linger as zombies.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
  fprintf(stderr, "usage: ferry-wrapper --io DIR [--timeout SECONDS] [--grace SECONDS] [--workdir PATH] -- PROGRAM [ARG...]\n");
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

static int init(const char *dir) {
  char path[4096];
  make_dir(dir);
  snprintf(path, sizeof path, "%s/bin", dir);
  make_dir(path);
  snprintf(path, sizeof path, "%s/bin/ferry-wrapper", dir);
  copy_self(path);
  snprintf(path, sizeof path, "%s/io", dir);
  make_dir(path);
  snprintf(path, sizeof path, "%s/io/stdout", dir);
  make_fifo(path);
  snprintf(path, sizeof path, "%s/io/stderr", dir);
  make_fifo(path);
  snprintf(path, sizeof path, "%s/io/exit.json", dir);
  unlink(path);
  return 0;
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

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--init") == 0) return init(argv[2]);
  const char *io = NULL, *workdir = NULL;
  long timeout = 0, grace = 10;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--io") == 0) io = argv[++i];
    else if (strcmp(argv[i], "--timeout") == 0) timeout = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--grace") == 0) grace = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--workdir") == 0) workdir = argv[++i];
    else usage();
  }
  if (!io || i >= argc) usage();
  char **job = &argv[i];

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
  sigemptyset(&watched);
  sigaddset(&watched, SIGTERM);
  sigaddset(&watched, SIGINT);
  sigaddset(&watched, SIGALRM);
  sigaddset(&watched, SIGCHLD);
  sigprocmask(SIG_BLOCK, &watched, &previous);
  if (got_stop) return stopped_before_start(io, out, err);

  /* A pipe closed on exec tells the parent whether exec worked, and if not, why. */
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) die("pipe");

  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    close(report[0]);
    if (dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0) _exit(125);
    signal(SIGPIPE, SIG_DFL);
    execvp(job[0], job);
    int code = errno;
    (void)!write(report[1], &code, sizeof code);
    _exit(code == ENOENT ? 127 : 126);
  }
  close(report[1]);
  int exec_errno = 0;
  ssize_t n = read(report[0], &exec_errno, sizeof exec_errno);
  close(report[0]);
  char start_error[4300] = {0};
  if (n == (ssize_t)sizeof exec_errno) {
    snprintf(start_error, sizeof start_error, "cannot run %s: %s", job[0], strerror(exec_errno));
    dprintf(err, "ferry-wrapper: %s\n", start_error);
  }
  close(out);
  close(err);

  if (timeout > 0) alarm((unsigned)timeout);

  int timed_out = 0, killing = 0, forwarded = 0, status = 0, ended = 0;
  while (!ended) {
    siginfo_t info;
    int sig = sigwaitinfo(&watched, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      die("sigwaitinfo");
    }
    if (sig == SIGCHLD) {
      /* The job, or orphans it left behind (reaped so none linger as zombies). */
      pid_t done;
      int reaped;
      while ((done = waitpid(-1, &reaped, WNOHANG)) > 0) {
        if (done == child) {
          status = reaped;
          ended = 1;
        }
      }
    } else if (sig == SIGALRM) {
      if (!killing) {
        timed_out = 1;
        killing = 1;
        kill(child, SIGTERM);
        alarm((unsigned)(grace > 0 ? grace : 1));
      } else {
        kill(child, SIGKILL);
      }
    } else if (!forwarded) {
      forwarded = 1;
      kill(child, sig);
    }
  }
  /* Reap whatever else is left without waiting for it. */
  while (waitpid(-1, NULL, WNOHANG) > 0) {}

  if (WIFSIGNALED(status)) {
    write_exit(io, 0, WTERMSIG(status), timed_out, forwarded, start_error[0] ? start_error : NULL);
    return 128 + WTERMSIG(status);
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 125;
  write_exit(io, code, 0, timed_out, forwarded, start_error[0] ? start_error : NULL);
  return code;
}
