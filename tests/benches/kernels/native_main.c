/*
 * Native runner for the benchmark kernels: `native KERNEL ITERATIONS` runs one kernel once and
 * prints "<checksum> <nanoseconds>" (CLOCK_MONOTONIC around the call only, so process start-up and,
 * under qemu-user, loading are not counted).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

unsigned kernel_checksum(unsigned iterations);
unsigned kernel_mix(unsigned iterations);
unsigned kernel_ring(unsigned iterations);

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    unsigned (*kernel)(unsigned);
    unsigned long long start, end;
    unsigned iterations, result;

    if (argc != 3) {
        fprintf(stderr, "usage: %s checksum|mix|ring ITERATIONS\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "checksum") == 0)
        kernel = kernel_checksum;
    else if (strcmp(argv[1], "mix") == 0)
        kernel = kernel_mix;
    else if (strcmp(argv[1], "ring") == 0)
        kernel = kernel_ring;
    else {
        fprintf(stderr, "unknown kernel %s\n", argv[1]);
        return 2;
    }
    iterations = (unsigned)strtoul(argv[2], NULL, 10);
    start = now_ns();
    result = kernel(iterations);
    end = now_ns();
    printf("%u %llu\n", result, end - start);
    return 0;
}
