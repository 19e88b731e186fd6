/*
 * firebuild's init, compiled: PID 1 of every VM firebuild boots when a C compiler was there at build
 * time (scripts/build-init.sh); otherwise guest/firebuild-init.sh does the same job. Under software
 * emulation every fork and exec of a shell costs milliseconds, so this does the setup with system calls
 * and starts the command with one fork.
 *
 * It reads the run configuration from the config disk (/dev/vdb, ext4, read-only): run.nul (KEY\0VALUE\0
 * pairs: FB_HOSTNAME FB_NET FB_IP FB_GW FB_DNS FB_USER FB_WORKDIR FB_STOPSIGNAL FB_SSH_USER FB_INIT
 * FB_HALT FB_BUILD), argv.nul (the command), env.nul (the environment), env.sh (installed as
 * /etc/profile.d/run-env.sh, 0600), authorized_keys, and a build step's secrets (secrets.nul: per secret
 * its number, target, octal mode, uid, gid and environment variable; the value in secrets/<number>),
 * and its ssh agents (ssh.nul: per agent its channel, target, octal mode, uid and gid; see setup_ssh_agent).
 * A build step's command never sees the config disk: it is unmounted before the command starts.
 * It prints, on the console:
 *   FIREBUILD-START pid=<n> init-began=<s> uptime=<s>   once the command runs
 *   FIREBUILD-EXIT code=<n>                            when it has ended, before powering off
 * Stop: SIGTERM/SIGINT to this init (Firecracker's Ctrl-Alt-Del arrives as SIGINT, see ctrl-alt-del
 * below) or the line FIREBUILD-STOP on the console (QEMU) forwards the image's STOPSIGNAL to the command.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <net/route.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CONFIG "/.firebuild/config"
#define BUSYBOX "/.firebuild/bin/busybox"

static char **kv;   /* run.nul: key, value, key, value, ..., NULL */
static char **cmd;  /* argv.nul */
static char **envp; /* env.nul, plus the secrets' variables and HOME when missing */
static char **secrets; /* secrets.nul: number, target, mode, uid, gid, env; ...; NULL */
#define SECRET_STAGE "/dev/.firebuild-secrets"
static char **sshagents; /* ssh.nul: channel, target, mode, uid, gid; ...; NULL */
#define SSH_STAGE "/dev/.firebuild-ssh"
#define SSH_FRAME_MAX (256 * 1024)
#define SSH_VSOCK_PORT 7300 /* + the channel: src/guest/run-config.ts SSH_VSOCK_PORT */
#define SSH_MAX_CLIENTS 32
static char **mounts; /* mounts.nul: kind, device, source, target, ro|rw, size|file; ...; NULL */
#define MOUNT_STAGE "/dev/.firebuild-mounts"

static void say(const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof buf - 1) n = sizeof buf - 1;
  if (write(1, buf, n) < 0) { /* nothing to do */ }
}

static void halt_vm(void) {
  sync();
  const char *h = NULL;
  for (char **p = kv; p && p[0] && p[1]; p += 2) if (!strcmp(p[0], "FB_HALT")) h = p[1];
  reboot(h && !strcmp(h, "reboot") ? RB_AUTOBOOT : RB_POWER_OFF);
  reboot(RB_AUTOBOOT);
  for (;;) pause();
}

static void finish(int code) {
  say("FIREBUILD-EXIT code=%d\n", code);
  halt_vm();
}

static char *slurp(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  for (;;) {
    if (n == cap) buf = realloc(buf, (cap *= 2) + 1);
    ssize_t r = read(fd, buf + n, cap - n);
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

/* A NUL-separated file as a NULL-terminated array (extra: free slots left at the end). */
static char **nul_list(const char *path, int extra) {
  size_t len = 0;
  char *buf = slurp(path, &len);
  if (!buf) return NULL;
  size_t count = 0;
  for (size_t i = 0; i < len; i++) if (!buf[i]) count++;
  char **out = calloc(count + 1 + extra, sizeof *out);
  size_t k = 0, start = 0;
  for (size_t i = 0; i < len; i++) if (!buf[i]) { out[k++] = buf + start; start = i + 1; }
  return out;
}

static const char *get(const char *key) {
  for (char **p = kv; p && p[0] && p[1]; p += 2) if (!strcmp(p[0], key)) return p[1];
  return "";
}

static const char *env_get(const char *key) {
  size_t n = strlen(key);
  for (char **e = envp; e && *e; e++) if (!strncmp(*e, key, n) && (*e)[n] == '=') return *e + n + 1;
  return NULL;
}

static void mnt(const char *type, const char *dir, const char *opts, const char *probe) {
  if (probe && access(probe, F_OK) == 0) return; /* an initrd already moved it here */
  mkdir(dir, 0755);
  mount(type, dir, type, MS_NOSUID | (strcmp(type, "devtmpfs") ? MS_NODEV : 0), opts);
}

static void write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return;
  if (write(fd, text, strlen(text)) < 0) { /* best effort, as the shell init */ }
  fchmod(fd, mode);
  close(fd);
}

static int ifreq_sock(void) { return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); }

static void if_up(const char *name) {
  int s = ifreq_sock();
  struct ifreq ifr = {0};
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  close(s);
}

static void set_sin(struct sockaddr *sa, in_addr_t a) {
  struct sockaddr_in *sin = (struct sockaddr_in *)sa;
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = a;
}

/* eth0 gets ip/prefix and a default route through gw (static networking from the host's plan). */
static void net_static(const char *cidr, const char *gw) {
  char ip[64] = {0};
  strncpy(ip, cidr, sizeof ip - 1);
  int prefix = 32;
  char *slash = strchr(ip, '/');
  if (slash) { *slash = 0; prefix = atoi(slash + 1); }
  int s = ifreq_sock();
  struct ifreq ifr = {0};
  strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
  set_sin(&ifr.ifr_addr, inet_addr(ip));
  if (ioctl(s, SIOCSIFADDR, &ifr) < 0) say("firebuild-init: cannot set %s on eth0: %s\n", ip, strerror(errno));
  set_sin(&ifr.ifr_netmask, prefix ? htonl(0xffffffffu << (32 - prefix)) : 0);
  ioctl(s, SIOCSIFNETMASK, &ifr);
  if_up("eth0");
  if (gw && *gw) {
    struct rtentry rt = {0};
    set_sin(&rt.rt_dst, 0);
    set_sin(&rt.rt_genmask, 0);
    set_sin(&rt.rt_gateway, inet_addr(gw));
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = "eth0";
    if (ioctl(s, SIOCADDRT, &rt) < 0) say("firebuild-init: cannot add the default route via %s: %s\n", gw, strerror(errno));
  }
  close(s);
}

static pid_t spawn_wait(char *const argv[], int wait_it) {
  pid_t p = fork();
  if (p == 0) {
    int fd = open("/dev/null", O_RDWR);
    dup2(fd, 0);
    execve(argv[0], argv, envp);
    _exit(127);
  }
  if (wait_it && p > 0) waitpid(p, NULL, 0);
  return p;
}

struct user { char name[256]; uid_t uid; gid_t gid; char home[1024]; int found; };

/* /etc/passwd lookup by name, or by number (the first user with that uid). */
static struct user lookup_user(const char *spec) {
  struct user u = {0};
  int numeric = *spec && strspn(spec, "0123456789") == strlen(spec);
  char *text = slurp("/etc/passwd", NULL);
  if (text) {
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
      char *f[7] = {0};
      int k = 0;
      for (char *c = line; k < 7; k++) {
        f[k] = c;
        char *colon = strchr(c, ':');
        if (!colon) break;
        *colon = 0;
        c = colon + 1;
      }
      if (!f[0] || !f[2] || !f[3]) continue;
      if (numeric ? strcmp(f[2], spec) : strcmp(f[0], spec)) continue;
      strncpy(u.name, f[0], sizeof u.name - 1);
      u.uid = (uid_t)strtoul(f[2], NULL, 10);
      u.gid = (gid_t)strtoul(f[3], NULL, 10);
      if (f[5]) strncpy(u.home, f[5], sizeof u.home - 1);
      u.found = 1;
      break;
    }
    free(text);
  }
  if (!u.found && numeric) { /* a uid with no passwd entry: Docker runs it with gid 0 */
    u.uid = (uid_t)strtoul(spec, NULL, 10);
    u.gid = 0;
    strcpy(u.home, "/");
    u.found = -1;
  }
  return u;
}

/* Supplementary groups: the groups of /etc/group that list the user. */
static int user_groups(const char *name, gid_t primary, gid_t *out, int max) {
  int n = 0;
  out[n++] = primary;
  char *text = slurp("/etc/group", NULL);
  if (!text || !*name) { free(text); return n; }
  for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n")) {
    char *name_end = strchr(line, ':');
    if (!name_end) continue;
    char *pw = name_end + 1, *gid_s = strchr(pw, ':');
    if (!gid_s) continue;
    char *members = strchr(gid_s + 1, ':');
    if (!members) continue;
    *members++ = 0;
    gid_t g = (gid_t)strtoul(gid_s + 1, NULL, 10);
    for (char *m = strtok_r(members, ",", &members); m; m = strtok_r(NULL, ",", &members)) {
      if (!strcmp(m, name) && g != primary) { out[n++] = g; break; }
    }
  }
  free(text);
  return n;
}

/* As execvp: a name without '/' is looked up in the image's PATH. */
static char *resolve(const char *name) {
  if (strchr(name, '/')) return access(name, X_OK) == 0 ? strdup(name) : NULL;
  const char *path = env_get("PATH");
  if (!path) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  char *copy = strdup(path), *save = NULL;
  static char buf[4096];
  for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    snprintf(buf, sizeof buf, "%s/%s", *d ? d : ".", name);
    struct stat st;
    if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0) { free(copy); return strdup(buf); }
  }
  free(copy);
  return NULL;
}

static int signal_number(const char *s) {
  static const struct { const char *n; int v; } names[] = {
    {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
    {"TERM", SIGTERM}, {"STOP", SIGSTOP}, {"CONT", SIGCONT}, {"PWR", SIGPWR}, {"WINCH", SIGWINCH}, {"ABRT", SIGABRT},
    {"ALRM", SIGALRM}, {"TRAP", SIGTRAP}, {"SYS", SIGSYS}, {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
  };
  if (!s || !*s) return SIGTERM;
  if (!strncmp(s, "SIG", 3)) s += 3;
  if (isdigit((unsigned char)*s)) return atoi(s);
  if (!strncmp(s, "RTMIN+", 6)) return SIGRTMIN + atoi(s + 6);
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) if (!strcmp(names[i].n, s)) return names[i].v;
  return SIGTERM;
}

static void install_ssh_key(const char *user) {
  struct user u = lookup_user(user);
  if (u.found != 1 || !*u.home) return;
  char *keys = slurp(CONFIG "/authorized_keys", NULL);
  if (!keys) return;
  char dir[1100], file[1200];
  snprintf(dir, sizeof dir, "%s/.ssh", u.home);
  snprintf(file, sizeof file, "%s/authorized_keys", dir);
  mkdir(dir, 0700);
  chmod(dir, 0700);
  write_file(file, keys, 0600);
  chown(dir, u.uid, u.gid);
  chown(file, u.uid, u.gid);
  free(keys);
  const char *sshd = access("/usr/sbin/sshd", X_OK) == 0 ? "/usr/sbin/sshd" : access("/usr/bin/sshd", X_OK) == 0 ? "/usr/bin/sshd" : NULL;
  if (!sshd) return;
  if (access("/usr/bin/ssh-keygen", X_OK) == 0) {
    char *kg[] = {"/usr/bin/ssh-keygen", "-A", NULL};
    spawn_wait(kg, 1);
  }
  mkdir("/run/sshd", 0755);
  char *sd[] = {(char *)sshd, NULL};
  spawn_wait(sd, 1); /* sshd daemonizes */
}

/* Set NAME=value in envp (replacing NAME's entry): the slots were reserved when env.nul was read. */
static void env_put(char *entry) {
  size_t n = strcspn(entry, "=") + 1, k = 0;
  for (; envp[k]; k++) if (!strncmp(envp[k], entry, n)) { envp[k] = entry; return; }
  envp[k] = entry;
  envp[k + 1] = NULL;
}

/* mkdir -p of the directories above `path` (0755). */
static void mkdir_parents(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; (p = strchr(p, '/')); p++) {
    *p = 0;
    mkdir(buf, 0755);
    *p = '/';
  }
}

static void secret_fail(const char *what, const char *target) {
  say("firebuild-init: cannot %s the secret at %s: %s\n", what, target, strerror(errno));
  finish(125);
}

/*
 * RUN --mount=type=secret: every value goes on a tmpfs of its own (mode, uid and gid as asked), which is
 * then made read-only and bound at each target (a missing mount point is made, as a last resort: the host
 * made those in the image); a variable gets the value in the command's environment. The staging mount is
 * detached afterwards, so only the targets show the values.
 */
static void setup_secrets(void) {
  if (!secrets || !secrets[0]) return;
  int staged = 0;
  for (char **s = secrets; s[0] && s[1] && s[2] && s[3] && s[4] && s[5]; s += 6) if (*s[1]) staged = 1;
  if (staged) {
    mkdir(SECRET_STAGE, 0700);
    if (mount("tmpfs", SECRET_STAGE, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") < 0) secret_fail("stage", SECRET_STAGE);
  }
  for (char **s = secrets; s[0] && s[1] && s[2] && s[3] && s[4] && s[5]; s += 6) {
    char src[512], dst[512];
    size_t len = 0;
    snprintf(src, sizeof src, CONFIG "/secrets/%s", s[0]);
    char *value = slurp(src, &len);
    if (!value) secret_fail("read", src);
    if (*s[1]) {
      snprintf(dst, sizeof dst, SECRET_STAGE "/%s", s[0]);
      int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0) secret_fail("stage", s[1]);
      for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, value + off, len - off);
        if (w <= 0) secret_fail("stage", s[1]);
        off += (size_t)w;
      }
      if (fchown(fd, (uid_t)strtoul(s[3], NULL, 10), (gid_t)strtoul(s[4], NULL, 10)) < 0 || fchmod(fd, (mode_t)strtoul(s[2], NULL, 8)) < 0) secret_fail("stage", s[1]);
      close(fd);
    }
    if (*s[5]) {
      size_t n = strlen(s[5]);
      char *entry = malloc(n + 1 + len + 1);
      memcpy(entry, s[5], n);
      entry[n] = '=';
      memcpy(entry + n + 1, value, len);
      entry[n + 1 + len] = 0;
      env_put(entry);
    }
    memset(value, 0, len);
    free(value);
  }
  if (!staged) return;
  if (mount(NULL, SECRET_STAGE, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") < 0) secret_fail("seal", SECRET_STAGE);
  for (char **s = secrets; s[0] && s[1] && s[2] && s[3] && s[4] && s[5]; s += 6) {
    if (!*s[1]) continue;
    char src[512];
    snprintf(src, sizeof src, SECRET_STAGE "/%s", s[0]);
    struct stat st;
    if (lstat(s[1], &st) < 0) {
      mkdir_parents(s[1]);
      int fd = open(s[1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd >= 0) close(fd);
    }
    if (mount(src, s[1], NULL, MS_BIND, NULL) < 0) secret_fail("mount", s[1]);
    if (mount(NULL, s[1], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) secret_fail("seal", s[1]);
  }
  umount2(SECRET_STAGE, MNT_DETACH);
  rmdir(SECRET_STAGE);
}

/* ---- RUN --mount=type=ssh ------------------------------------------------------------------------ */

static int read_full(int fd, void *buf, size_t n) {
  for (size_t off = 0; off < n;) {
    ssize_t r = read(fd, (char *)buf + off, n - off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    off += (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
  for (size_t off = 0; off < n;) {
    ssize_t w = write(fd, (const char *)buf + off, n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    off += (size_t)w;
  }
  return 0;
}

/*
 * The channel to the host's relay for agent `n`: the virtio-serial port named firebuild.ssh.<n> (QEMU; found
 * by its name in /sys/class/virtio-ports, as no udev makes the /dev/virtio-ports links here), else a vsock
 * connection to the host (CID 2) on port SSH_VSOCK_PORT + n (Firecracker).
 */
static int ssh_channel(const char *n) {
  char want[64], path[300];
  snprintf(want, sizeof want, "firebuild.ssh.%s\n", n);
  DIR *d = opendir("/sys/class/virtio-ports");
  for (struct dirent *e; d && (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
    char *name = slurp(path, NULL);
    int match = name && !strcmp(name, want);
    free(name);
    if (!match) continue;
    closedir(d);
    snprintf(path, sizeof path, "/dev/%s", e->d_name);
    return open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
  }
  if (d) closedir(d);
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = SSH_VSOCK_PORT + (unsigned)atoi(n)};
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
  return fd;
}

/*
 * One client's request: a whole frame (uint32 length, big-endian, at most SSH_FRAME_MAX, then the body)
 * goes down the channel, one whole frame comes back and goes to the client. -1 drops the client; a
 * channel that fails or answers out of bounds ends the relay (it cannot be in step with the host again).
 */
static int ssh_relay_one(int c, int chan, unsigned char *buf) {
  if (read_full(c, buf, 4) < 0) return -1;
  uint32_t len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
  if (len == 0 || len > SSH_FRAME_MAX || read_full(c, buf + 4, len) < 0) return -1;
  if (write_full(chan, buf, 4 + len) < 0 || read_full(chan, buf, 4) < 0) _exit(1);
  len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
  if (len == 0 || len > SSH_FRAME_MAX || read_full(chan, buf + 4, len) < 0) _exit(1);
  return write_full(c, buf, 4 + len);
}

/* The agent's relay process: the clients take turns on the one channel, a whole request and answer at a time. */
static void ssh_relay(int lfd, int chan) {
  struct pollfd p[1 + SSH_MAX_CLIENTS];
  int n = 0;
  unsigned char *buf = malloc(4 + SSH_FRAME_MAX);
  if (!buf) _exit(1);
  p[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
  for (;;) {
    if (poll(p, 1 + n, -1) < 0) { if (errno == EINTR) continue; _exit(1); }
    for (int i = 1; i <= n; i++) {
      if (!p[i].revents) continue;
      if ((p[i].revents & POLLIN) && ssh_relay_one(p[i].fd, chan, buf) == 0) continue;
      close(p[i].fd);
      p[i--] = p[n--];
    }
    if (p[0].revents & POLLIN) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) continue;
      if (n == SSH_MAX_CLIENTS) { close(c); continue; }
      /* A client that stops mid-frame holds the others up for this long at most. */
      struct timeval tv = {.tv_sec = 30};
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      p[++n] = (struct pollfd){.fd = c, .events = POLLIN};
    }
  }
}

static void ssh_fail(const char *what, const char *target) {
  say("firebuild-init: cannot %s the ssh agent socket at %s: %s\n", what, target, strerror(errno));
  finish(125);
}

/*
 * RUN --mount=type=ssh: per agent, a unix socket made on a tmpfs of its own (mode, uid and gid as asked)
 * and bound at the target (the host made the mount point in the image; as a last resort it is made here),
 * served by a relay process that passes whole agent messages to the host over the agent's channel. The
 * staging mount is detached afterwards: the target is the socket's only name.
 */
static void setup_ssh_agent(void) {
  if (!sshagents || !sshagents[0]) return;
  mkdir(SSH_STAGE, 0700);
  if (mount("tmpfs", SSH_STAGE, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") < 0) ssh_fail("stage", SSH_STAGE);
  for (char **s = sshagents; s[0] && s[1] && s[2] && s[3] && s[4]; s += 5) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, SSH_STAGE "/%s", s[0]);
    int chan = ssh_channel(s[0]);
    if (chan < 0) ssh_fail("reach the host for", s[1]);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 16) < 0) ssh_fail("make", s[1]);
    if (chown(a.sun_path, (uid_t)strtoul(s[3], NULL, 10), (gid_t)strtoul(s[4], NULL, 10)) < 0 || chmod(a.sun_path, (mode_t)strtoul(s[2], NULL, 8)) < 0) ssh_fail("stage", s[1]);
    struct stat st;
    if (lstat(s[1], &st) < 0) {
      mkdir_parents(s[1]);
      int fd = open(s[1], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd >= 0) close(fd);
    }
    if (mount(a.sun_path, s[1], NULL, MS_BIND, NULL) < 0) ssh_fail("mount", s[1]);
    pid_t p = fork();
    if (p == 0) {
      setsid();
      ssh_relay(lfd, chan);
      _exit(0);
    }
    if (p < 0) ssh_fail("serve", s[1]);
    close(lfd);
    close(chan);
  }
  umount2(SSH_STAGE, MNT_DETACH);
  rmdir(SSH_STAGE);
}

static void mount_fail(const char *what, const char *target) {
  say("firebuild-init: cannot %s the mount at %s: %s\n", what, target, strerror(errno));
  finish(125);
}

/* A missing mount point, as a last resort (the host made those in the image): a directory, or a file. */
static void mount_target(const char *target, int file) {
  struct stat st;
  if (lstat(target, &st) == 0) return;
  mkdir_parents(target);
  if (!file) { mkdir(target, 0755); return; }
  int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd >= 0) close(fd);
}

/*
 * RUN --mount=type=cache|bind|tmpfs: an ext4 drive (a cache volume, a stage's or the context's file
 * system) is mounted on a private staging directory and its source subpath bound at the target (sealed
 * read-only when asked); a tmpfs is mounted at its target. The staging mounts are detached afterwards,
 * so only the targets show them. Runs before setup_secrets: a secret may go inside a mount.
 */
static void setup_mounts(void) {
  if (!mounts || !mounts[0]) return;
  int staged = 0, i = 0;
  for (char **m = mounts; m[0] && m[1] && m[2] && m[3] && m[4] && m[5]; m += 6) if (!strcmp(m[0], "ext4")) staged = 1;
  if (staged) {
    mkdir(MOUNT_STAGE, 0700);
    if (mount("tmpfs", MOUNT_STAGE, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") < 0) mount_fail("stage", MOUNT_STAGE);
  }
  for (char **m = mounts; m[0] && m[1] && m[2] && m[3] && m[4] && m[5]; m += 6, i++) {
    int ro = !strcmp(m[4], "ro"), file = !strcmp(m[5], "file");
    mount_target(m[3], file);
    if (!strcmp(m[0], "tmpfs")) {
      char opts[64];
      unsigned long long size = strtoull(m[5], NULL, 10);
      if (size) snprintf(opts, sizeof opts, "mode=1777,size=%llu", size);
      else snprintf(opts, sizeof opts, "mode=1777");
      if (mount("tmpfs", m[3], "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) mount_fail("mount", m[3]);
      continue;
    }
    char stage[128], dev[64], src[4200];
    snprintf(stage, sizeof stage, MOUNT_STAGE "/%d", i);
    snprintf(dev, sizeof dev, "/dev/%s", m[1]);
    mkdir(stage, 0700);
    /* Read-only: no journal replay (the device itself is read-only). */
    if (mount(dev, stage, "ext4", ro ? MS_RDONLY : 0, ro ? "noload" : NULL) < 0) mount_fail("attach", m[3]);
    snprintf(src, sizeof src, "%s%s", stage, strcmp(m[2], "/") ? m[2] : "");
    if (mount(src, m[3], NULL, MS_BIND, NULL) < 0) mount_fail("mount", m[3]);
    if (ro && mount(NULL, m[3], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0) mount_fail("seal", m[3]);
  }
  if (!staged) return;
  umount2(MOUNT_STAGE, MNT_DETACH);
  rmdir(MOUNT_STAGE);
}

/*
 * A build step writes to the image's own /run and /tmp, as a Dockerfile's RUN does: an initrd (distribution
 * kernels) has moved its tmpfs onto /run; that one is detached (lazily: nothing of the build uses it).
 */
static void build_run_dirs(void) {
  struct stat root, st;
  if (stat("/", &root) < 0) return;
  const char *dirs[] = {"/run", "/tmp"};
  for (size_t i = 0; i < 2; i++) if (stat(dirs[i], &st) == 0 && st.st_dev != root.st_dev) umount2(dirs[i], MNT_DETACH);
}

static void write_all(int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    buf += w;
    n -= (size_t)w;
  }
}

/* A build step's output relay: the command's pipe (stdout and stderr) to the console, until every writer is gone. */
static pid_t start_relay(int rd, int wr, const sigset_t *old) {
  pid_t p = fork();
  if (p == 0) {
    sigprocmask(SIG_SETMASK, old, NULL);
    close(wr);
    char buf[4096];
    for (;;) {
      ssize_t r = read(rd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      write_all(1, buf, (size_t)r);
    }
    _exit(0);
  }
  close(rd);
  close(wr);
  return p;
}

static double uptime(void) {
  char *t = slurp("/proc/uptime", NULL);
  double v = t ? atof(t) : -1;
  free(t);
  return v;
}

int main(void) {
  mnt("proc", "/proc", NULL, "/proc/uptime");
  double began = uptime();
  mnt("sysfs", "/sys", NULL, "/sys/kernel");
  mnt("devtmpfs", "/dev", NULL, "/dev/vda");
  int con = open("/dev/console", O_RDWR);
  if (con >= 0) { dup2(con, 0); dup2(con, 1); dup2(con, 2); if (con > 2) close(con); }
  mkdir("/dev/pts", 0755);
  mkdir("/dev/shm", 01777);
  mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
  mkdir(CONFIG, 0755);
  if (mount("/dev/vdb", CONFIG, "ext4", MS_RDONLY, NULL) < 0) {
    say("firebuild-init: no config disk at /dev/vdb\n");
    finish(125);
  }
  kv = nul_list(CONFIG "/run.nul", 0);
  cmd = nul_list(CONFIG "/argv.nul", 0);
  secrets = nul_list(CONFIG "/secrets.nul", 0);
  sshagents = nul_list(CONFIG "/ssh.nul", 0);
  mounts = nul_list(CONFIG "/mounts.nul", 0);
  int nsecrets = 0;
  for (char **s = secrets; s && s[0]; s++) nsecrets++;
  envp = nul_list(CONFIG "/env.nul", 2 + nsecrets / 6);
  if (!kv || !envp) { say("firebuild-init: unreadable run configuration\n"); finish(125); }
  /* A build step (FB_BUILD=1) writes to the image's own /tmp and /run, as a Dockerfile's RUN does. */
  int build = !strcmp(get("FB_BUILD"), "1");
  if (build) build_run_dirs();
  if (!build) {
    mnt("tmpfs", "/run", "mode=755", NULL);
    mnt("tmpfs", "/tmp", "mode=1777", NULL);
    chmod("/tmp", 01777);
  }
  /* Ctrl-Alt-Del (Firecracker's SendCtrlAltDel) becomes SIGINT to this init instead of an instant reboot. */
  write_file("/proc/sys/kernel/ctrl-alt-del", "0\n", 0644);

  const char *host = get("FB_HOSTNAME");
  sethostname(host, strlen(host));
  char text[4096];
  snprintf(text, sizeof text, "%s\n", host);
  write_file("/etc/hostname", text, 0644);
  snprintf(text, sizeof text, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t%s\n", host);
  write_file("/etc/hosts", text, 0644);

  if_up("lo");
  const char *netmode = get("FB_NET");
  if (access("/sys/class/net/eth0", F_OK) == 0) {
    if (!strcmp(netmode, "static")) net_static(get("FB_IP"), get("FB_GW"));
    else if (!strcmp(netmode, "dhcp")) {
      if_up("eth0");
      char *dh[] = {BUSYBOX, "udhcpc", "-i", "eth0", "-q", "-n", "-t", "10", "-s", "/.firebuild/udhcpc.sh", NULL};
      spawn_wait(dh, 1);
    }
  }
  const char *dns = get("FB_DNS");
  if (*dns) {
    char out[1024] = "", copy[512], *save = NULL;
    strncpy(copy, dns, sizeof copy - 1);
    for (char *ns = strtok_r(copy, " ", &save); ns; ns = strtok_r(NULL, " ", &save)) {
      strncat(out, "nameserver ", sizeof out - strlen(out) - 1);
      strncat(out, ns, sizeof out - strlen(out) - 1);
      strncat(out, "\n", sizeof out - strlen(out) - 1);
    }
    write_file("/etc/resolv.conf", out, 0644);
  }

  /* The environment: image ENV, then --env-file files in order, then --env (merged by the host). */
  char *envsh = build ? NULL : slurp(CONFIG "/env.sh", NULL);
  if (envsh) { mkdir("/etc/profile.d", 0755); write_file("/etc/profile.d/run-env.sh", envsh, 0600); free(envsh); }

  if (*get("FB_SSH_USER")) install_ssh_key(get("FB_SSH_USER"));

  if (!strcmp(get("FB_INIT"), "image")) {
    const char *inits[] = {"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd"};
    for (size_t i = 0; i < 3; i++) {
      if (access(inits[i], X_OK) == 0) {
        say("FIREBUILD-START pid=1 init=%s\n", inits[i]);
        char *a[] = {(char *)inits[i], NULL};
        execve(inits[i], a, envp);
      }
    }
    say("firebuild-init: --init=image but the image has no /sbin/init\n");
    finish(127);
  }

  /* USER: name or number, with an optional group; the user's supplementary groups from /etc/group. */
  char userspec[512] = {0};
  strncpy(userspec, get("FB_USER"), sizeof userspec - 1);
  char *groupspec = strchr(userspec, ':');
  if (groupspec) *groupspec++ = 0;
  struct user u = {.name = "root", .uid = 0, .gid = 0, .home = "/root", .found = 1};
  if (*userspec) {
    u = lookup_user(userspec);
    if (!u.found) {
      say("firebuild-init: user %s not found in /etc/passwd\n", userspec);
      finish(126);
    }
  }
  gid_t groups[64];
  int ngroups = user_groups(u.found == 1 ? u.name : "", u.gid, groups, 64);
  if (groupspec && *groupspec) {
    char *end;
    unsigned long g = strtoul(groupspec, &end, 10);
    if (*end) {
      struct group *gr = NULL; /* no NSS in a static init: read /etc/group by hand */
      (void)gr;
      char *gt = slurp("/etc/group", NULL);
      int ok = 0;
      for (char *line = gt ? strtok(gt, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        char *c1 = strchr(line, ':');
        if (!c1) continue;
        *c1 = 0;
        if (strcmp(line, groupspec)) continue;
        char *c2 = strchr(c1 + 1, ':');
        if (c2) { g = strtoul(c2 + 1, NULL, 10); ok = 1; }
        break;
      }
      free(gt);
      if (!ok) { say("firebuild-init: group %s not found in /etc/group\n", groupspec); finish(126); }
    }
    u.gid = (gid_t)g;
    groups[0] = u.gid;
    ngroups = 1;
  }
  setup_mounts();
  setup_secrets();
  setup_ssh_agent();
  if (!env_get("HOME")) {
    size_t n = 0;
    while (envp[n]) n++;
    static char home[1100];
    snprintf(home, sizeof home, "HOME=%s", *u.home ? u.home : "/");
    envp[n] = home;
    envp[n + 1] = NULL;
  }

  if (!cmd || !cmd[0]) { say("firebuild-init: no command\n"); finish(127); }
  char *prog = resolve(cmd[0]);
  if (!prog) {
    say("firebuild-init: %s: executable file not found in $PATH (%s)\n", cmd[0], env_get("PATH") ? env_get("PATH") : "");
    finish(127);
  }
  const char *workdir = get("FB_WORKDIR");
  int stopsig = signal_number(get("FB_STOPSIGNAL"));
  /* Everything is read: a build step's command never sees the config disk (nor its secrets' files). */
  if (build) umount2(CONFIG, MNT_DETACH);

  sigset_t all, old;
  sigemptyset(&all);
  sigaddset(&all, SIGCHLD);
  sigaddset(&all, SIGTERM);
  sigaddset(&all, SIGINT);
  sigprocmask(SIG_BLOCK, &all, &old);

  /* A build step's command writes to a pipe, as under Docker (no terminal: no progress bars); relayed to the console. */
  int outp[2] = {-1, -1};
  if (build && pipe2(outp, O_CLOEXEC) < 0) outp[0] = outp[1] = -1;
  pid_t child = fork();
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    setsid();
    int nul = open("/dev/null", O_RDONLY);
    dup2(nul, 0);
    if (outp[1] >= 0) { dup2(outp[1], 1); dup2(outp[1], 2); }
    if (chdir(*workdir ? workdir : "/") < 0) { if (chdir("/") < 0) _exit(126); }
    if (setgroups((size_t)ngroups, groups) < 0 || setgid(u.gid) < 0 || setuid(u.uid) < 0) {
      say("firebuild-init: cannot become user %s: %s\n", userspec, strerror(errno));
      _exit(126);
    }
    /* The workdir again as the user, as `cd` would have done after su. */
    if (*workdir && chdir(workdir) < 0) { /* stay where we are */ }
    execve(prog, cmd, envp);
    say("firebuild-init: cannot run %s: %s\n", prog, strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  say("FIREBUILD-START pid=%d init-began=%.2f uptime=%.2f\n", child, began, uptime());
  pid_t relay = outp[0] >= 0 ? start_relay(outp[0], outp[1], &old) : -1;

  /* QEMU's graceful stop: the host writes FIREBUILD-STOP to the console; this reader turns it into SIGINT. */
  pid_t reader = fork();
  if (reader == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    char line[256];
    size_t n = 0;
    char ch;
    while (read(0, &ch, 1) == 1) {
      if (ch == '\n' || ch == '\r' || n == sizeof line - 1) {
        line[n] = 0;
        if (strstr(line, "FIREBUILD-STOP")) { kill(1, SIGINT); _exit(0); }
        n = 0;
      } else line[n++] = ch;
    }
    _exit(0);
  }

  int code = 0;
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&all, &si);
    if (sig == SIGTERM || sig == SIGINT) { kill(child, stopsig); continue; }
    if (sig != SIGCHLD) continue;
    int status, done = 0;
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
      if (p == child) { code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); done = 1; }
      if (p == relay) relay = -1;
    }
    if (done) break;
  }
  /* The relay ends when every writer has gone; a daemon the command left holding the pipe gets 2 s. */
  for (struct timespec ts = {2, 0}; relay > 0;) {
    if (waitpid(relay, NULL, WNOHANG) == relay) break;
    siginfo_t si;
    if (sigtimedwait(&all, &si, &ts) < 0 && errno == EAGAIN) { kill(relay, SIGKILL); waitpid(relay, NULL, 0); break; }
  }
  kill(reader, SIGKILL);
  finish(code);
  return 0;
}
