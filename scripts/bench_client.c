/*
 * bench_client: the compiled client of scripts/bench (so the client is not the bottleneck).
 *
 * Usage:
 *   bench_client MODE [options]
 *
 * Timed modes (each op timed with clock_gettime(CLOCK_MONOTONIC)):
 *   read     -p PATH -n N [-w W] [-s SIZE]      open(O_RDONLY) + read until EOF + close
 *   stat     -p PATH -n N [-w W]                stat()
 *   miss     -d DIR  -n N [-w W] -k PREFIX      open(DIR/PREFIX<i>) of missing keys, expects ENOENT
 *   publish  -d DIR  -n N [-w W] -k PREFIX -s SIZE
 *                                               open(O_WRONLY|O_CREAT|O_TRUNC) + write SIZE + close,
 *                                               a new key DIR/PREFIX<i> each time
 *   publish_rename -d DIR -n N [-w W] -k PREFIX -s SIZE
 *                                               write DIR/.tmp-PREFIX<i> + close + rename to DIR/PREFIX<i>
 *   ls       -d DIR  -n N [-w W] [-e EXPECTED]  open + getdents64 loop + close, counting entries
 *                                               (like `ls -f`, no stat); fails if count != EXPECTED
 * Untimed:
 *   populate -d DIR -k PREFIX -s SIZE -a FIRST -b END
 *                                               create DIR/PREFIX<i> for i in [FIRST, END)
 *   mark     -p PATH                            one stat() of PATH (used as a marker in logs)
 *
 * Keys are PREFIX followed by the decimal index (warm-up iterations use indexes past N so they
 * never collide with timed ones; publish uses -a FIRST as the first index, default 0).
 *
 * Output: one JSON object on stdout:
 *   {"mode":..., "n":..., "median_us":..., "p99_us":..., "mean_us":..., "min_us":..., "max_us":...}
 * With -o FILE the raw per-op samples (nanoseconds, one per line) are written to FILE so the
 * caller can merge interleaved rounds.
 * Exit status: 0 ok, 1 an op failed (message on stderr), 2 usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static const char *mode, *path, *dir, *prefix = "k", *outfile;
static long n = 1000, warm = 10, size = 10240, expected = -1, first = 0, end = 0;
static char *buf;
static size_t bufsz = 1 << 20;

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *p) {
    fprintf(stderr, "bench_client %s: %s %s: %s\n", mode, what, p ? p : "", strerror(errno));
    exit(1);
}

static void keypath(char *out, size_t outsz, const char *d, const char *pre, long i) {
    snprintf(out, outsz, "%s/%s%ld", d, pre, i);
}

/* ---- the operations; each returns 0 or exits on failure ---- */

static void op_read(long i) {
    (void)i;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open", path);
    long total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, bufsz);
        if (r < 0) die("read", path);
        if (r == 0) break;
        total += r;
    }
    if (close(fd) < 0) die("close", path);
    if (size >= 0 && total != size) {
        fprintf(stderr, "bench_client read: %s: got %ld bytes, expected %ld\n", path, total, size);
        exit(1);
    }
}

static void op_stat(long i) {
    (void)i;
    struct stat st;
    if (stat(path, &st) < 0) die("stat", path);
}

static void op_miss(long i) {
    char p[4096];
    keypath(p, sizeof p, dir, prefix, i);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fprintf(stderr, "bench_client miss: %s unexpectedly exists\n", p);
        exit(1);
    }
    if (errno != ENOENT) die("open (expected ENOENT)", p);
}

static void write_all(int fd, const char *p) {
    long off = 0;
    while (off < size) {
        ssize_t w = write(fd, buf + off, (size_t)(size - off));
        if (w < 0) die("write", p);
        off += w;
    }
}

static void op_publish(long i) {
    char p[4096];
    keypath(p, sizeof p, dir, prefix, first + i);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die("open", p);
    write_all(fd, p);
    if (close(fd) < 0) die("close", p);
}

static void op_publish_rename(long i) {
    char p[4096], t[4096];
    keypath(p, sizeof p, dir, prefix, first + i);
    snprintf(t, sizeof t, "%s/.tmp-%s%ld", dir, prefix, first + i);
    int fd = open(t, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die("open", t);
    write_all(fd, t);
    if (close(fd) < 0) die("close", t);
    if (rename(t, p) < 0) die("rename", p);
}

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static long last_count;

static void op_ls(long i) {
    (void)i;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) die("open", dir);
    long count = 0;
    for (;;) {
        long nread = syscall(SYS_getdents64, fd, buf, bufsz);
        if (nread < 0) die("getdents64", dir);
        if (nread == 0) break;
        for (long bpos = 0; bpos < nread;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + bpos);
            if (!(d->d_name[0] == '.' &&
                  (d->d_name[1] == 0 || (d->d_name[1] == '.' && d->d_name[2] == 0))))
                count++;
            bpos += d->d_reclen;
        }
    }
    if (close(fd) < 0) die("close", dir);
    last_count = count;
    if (expected >= 0 && count != expected) {
        fprintf(stderr, "bench_client ls: %s: %ld entries, expected %ld\n", dir, count, expected);
        exit(1);
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile on a sorted array */
static double pct(const uint64_t *s, long cnt, double q) {
    long rank = (long)(q * cnt + 0.999999999);
    if (rank < 1) rank = 1;
    if (rank > cnt) rank = cnt;
    return s[rank - 1] / 1000.0;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_client read|stat|miss|publish|publish_rename|ls|populate|mark "
                    "[-p PATH] [-d DIR] [-n N] [-w W] [-k PREFIX] [-s SIZE] [-e EXPECTED] "
                    "[-a FIRST] [-b END] [-o SAMPLES]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    mode = argv[1];
    int c;
    optind = 2;
    while ((c = getopt(argc, argv, "p:d:n:w:k:s:e:a:b:o:")) != -1) {
        switch (c) {
        case 'p': path = optarg; break;
        case 'd': dir = optarg; break;
        case 'n': n = atol(optarg); break;
        case 'w': warm = atol(optarg); break;
        case 'k': prefix = optarg; break;
        case 's': size = atol(optarg); break;
        case 'e': expected = atol(optarg); break;
        case 'a': first = atol(optarg); break;
        case 'b': end = atol(optarg); break;
        case 'o': outfile = optarg; break;
        default: usage();
        }
    }
    if ((size_t)size + 1 > bufsz) bufsz = (size_t)size + 1;
    buf = malloc(bufsz);
    if (!buf) die("malloc", NULL);
    for (size_t j = 0; j < bufsz; j++) buf[j] = (char)('a' + j % 26);

    if (!strcmp(mode, "mark")) {
        struct stat st;
        if (!path) usage();
        (void)stat(path, &st); /* ENOENT expected; only the request matters */
        return 0;
    }
    if (!strcmp(mode, "populate")) {
        if (!dir) usage();
        uint64_t t0 = now_ns();
        for (long i = first; i < end; i++) {
            char p[4096];
            keypath(p, sizeof p, dir, prefix, i);
            int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0) die("open", p);
            write_all(fd, p);
            if (close(fd) < 0) die("close", p);
        }
        double secs = (now_ns() - t0) / 1e9;
        printf("{\"mode\":\"populate\",\"n\":%ld,\"seconds\":%.3f}\n", end - first, secs);
        return 0;
    }

    void (*op)(long) = NULL;
    if (!strcmp(mode, "read")) { if (!path) usage(); op = op_read; }
    else if (!strcmp(mode, "stat")) { if (!path) usage(); op = op_stat; }
    else if (!strcmp(mode, "miss")) { if (!dir) usage(); op = op_miss; }
    else if (!strcmp(mode, "publish")) { if (!dir) usage(); op = op_publish; }
    else if (!strcmp(mode, "publish_rename")) { if (!dir) usage(); op = op_publish_rename; }
    else if (!strcmp(mode, "ls")) { if (!dir) usage(); op = op_ls; }
    else usage();
    if (n < 1) usage();

    for (long i = 0; i < warm; i++) op(n + i); /* warm-up indexes never collide with timed ones */

    uint64_t *s = malloc(sizeof(uint64_t) * (size_t)n);
    if (!s) die("malloc", NULL);
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        op(i);
        s[i] = now_ns() - t0;
    }
    if (outfile) {
        FILE *f = fopen(outfile, "w");
        if (!f) die("fopen", outfile);
        for (long i = 0; i < n; i++) fprintf(f, "%llu\n", (unsigned long long)s[i]);
        if (fclose(f) != 0) die("fclose", outfile);
    }
    double sum = 0;
    for (long i = 0; i < n; i++) sum += s[i];
    qsort(s, (size_t)n, sizeof *s, cmp_u64);
    printf("{\"mode\":\"%s\",\"n\":%ld,\"median_us\":%.3f,\"p99_us\":%.3f,\"mean_us\":%.3f,"
           "\"min_us\":%.3f,\"max_us\":%.3f",
           mode, n, pct(s, n, 0.5), pct(s, n, 0.99), sum / n / 1000.0, s[0] / 1000.0,
           s[n - 1] / 1000.0);
    if (op == op_ls) printf(",\"entries\":%ld", last_count);
    printf("}\n");
    return 0;
}
