/*
 * The benchmark's yardsticks' init. As /init it is the floor: a no-op
 * init that powers off at once (`kestrel bench --floor`), saying when it
 * started (its kernel phase is then measured as a run's). As a root's
 * /sbin/init it marks "the root's init started" (`kestrel bench
 * --reference`): one record line on the console with the guest's
 * CLOCK_BOOTTIME, in Kestrel's wire format, then power off.
 */
#include <stdio.h>
#include <string.h>
#include <sys/reboot.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argc;
    struct timespec t;
    clock_gettime(CLOCK_BOOTTIME, &t);
    char line[128];
    int n = strstr(argv[0], "sbin/init") != NULL
                ? snprintf(line, sizeof line, "@kestrel %lld.%09ld fact name=root_init value=started\n",
                           (long long)t.tv_sec, t.tv_nsec)
                : snprintf(line, sizeof line, "@kestrel %lld.%09ld init_start version=floor\n",
                           (long long)t.tv_sec, t.tv_nsec);
    if (n > 0)
        (void)write(1, line, (size_t)n);
    reboot(RB_POWER_OFF);
    for (;;)
        pause();
}
