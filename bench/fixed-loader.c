/*
 * The benchmark's comparator: the least an initramfs can do to bring up a
 * root. PID 1 that finit_modules a fixed list in dependency order on N
 * threads (no discovery, no index, no uevents), then mounts the root
 * read-only and execs its init. Kestrel's streaming discovery and its
 * frozen plan are measured against it (`kestrel bench --reference`).
 *
 * /fixed/list: one module per line, `PATH[ DEP,DEP...]`, DEP = the line
 * number (from 0) of a module that must be live first; lines come in
 * dependency order. Kernel command line: root=/dev/NAME, rootfstype=
 * (default ext4), init= (default /sbin/init), fixed.threads=N (default:
 * the CPUs). A load that fails (ENODEV for a CPU feature, EEXIST) is not
 * an error, as with modprobe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_MODULES 256
#define MAX_DEPS 16

struct module {
    char path[512];
    int deps[MAX_DEPS];
    int ndeps;
    int state; /* 0 waiting, 1 running, 2 done */
};

static struct module mods[MAX_MODULES];
static int nmods, ndone;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static void record(const char *kind_and_fields) {
    struct timespec t;
    clock_gettime(CLOCK_BOOTTIME, &t);
    char line[256];
    int n = snprintf(line, sizeof line, "@kestrel %lld.%09ld %s\n", (long long)t.tv_sec, t.tv_nsec,
                     kind_and_fields);
    if (n > 0)
        (void)write(1, line, (size_t)n);
}

static void die(const char *what) {
    char msg[200];
    snprintf(msg, sizeof msg, "fixed-loader: %s: %s\n", what, strerror(errno));
    (void)write(2, msg, strlen(msg));
    reboot(RB_POWER_OFF);
    for (;;)
        pause();
}

static int ready(int i) {
    if (mods[i].state != 0)
        return 0;
    for (int d = 0; d < mods[i].ndeps; d++)
        if (mods[mods[i].deps[d]].state != 2)
            return 0;
    return 1;
}

static void *worker(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    while (ndone < nmods) {
        int pick = -1;
        for (int i = 0; i < nmods && pick < 0; i++)
            if (ready(i))
                pick = i;
        if (pick < 0) {
            pthread_cond_wait(&wake, &lock);
            continue;
        }
        mods[pick].state = 1;
        pthread_mutex_unlock(&lock);
        int fd = open(mods[pick].path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            syscall(SYS_finit_module, fd, "", 0);
            close(fd);
        }
        pthread_mutex_lock(&lock);
        mods[pick].state = 2;
        ndone++;
        pthread_cond_broadcast(&wake);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void read_list(void) {
    FILE *f = fopen("/fixed/list", "r");
    if (!f)
        die("open /fixed/list");
    char line[1024];
    while (nmods < MAX_MODULES && fgets(line, sizeof line, f)) {
        struct module *m = &mods[nmods];
        char *deps = strchr(line, ' ');
        line[strcspn(line, "\n")] = 0;
        if (deps)
            *deps++ = 0;
        snprintf(m->path, sizeof m->path, "%.511s", line);
        for (char *d = deps ? strtok(deps, ",") : NULL; d && m->ndeps < MAX_DEPS; d = strtok(NULL, ","))
            m->deps[m->ndeps++] = atoi(d);
        nmods++;
    }
    fclose(f);
}

/* The value of `key=` on the kernel command line, or `fallback`. */
static const char *param(const char *cmdline, const char *key, const char *fallback, char *out, size_t len) {
    size_t klen = strlen(key);
    for (const char *p = cmdline; (p = strstr(p, key)) != NULL; p += klen) {
        if ((p == cmdline || p[-1] == ' ') && p[klen] == '=') {
            snprintf(out, len, "%.*s", (int)strcspn(p + klen + 1, " \n"), p + klen + 1);
            return out;
        }
    }
    return fallback;
}

int main(void) {
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    record("init_start version=fixed-loader");
    char cmdline[4096] = {0};
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) {
        (void)read(fd, cmdline, sizeof cmdline - 1);
        close(fd);
    }
    char root[256], fstype[64], init[256], threads_s[16];
    const char *root_dev = param(cmdline, "root", NULL, root, sizeof root);
    const char *type = param(cmdline, "rootfstype", "ext4", fstype, sizeof fstype);
    const char *init_path = param(cmdline, "init", "/sbin/init", init, sizeof init);
    const char *t = param(cmdline, "fixed.threads", NULL, threads_s, sizeof threads_s);
    cpu_set_t cpus;
    int threads = t ? atoi(t) : (sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1);
    if (threads < 1)
        threads = 1;
    read_list();
    pthread_t tids[64];
    int started = 0;
    for (; started < threads - 1 && started < 64; started++)
        pthread_create(&tids[started], NULL, worker, NULL);
    worker(NULL);
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    if (!root_dev)
        die("no root= on the command line");
    struct stat st;
    for (int waited = 0; stat(root_dev, &st) != 0; waited++) {
        if (waited > 10000)
            die(root_dev);
        usleep(1000);
    }
    mkdir("/sysroot", 0755);
    if (mount(root_dev, "/sysroot", type, MS_RDONLY, NULL) != 0)
        die("mount the root");
    record("ready");
    mount("/dev", "/sysroot/dev", NULL, MS_MOVE, NULL);
    mount("/proc", "/sysroot/proc", NULL, MS_MOVE, NULL);
    mount("/sys", "/sysroot/sys", NULL, MS_MOVE, NULL);
    if (chdir("/sysroot") != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0)
        die("switch to the root");
    char *argv[] = {(char *)init_path, NULL};
    execv(init_path, argv);
    die(init_path);
}
