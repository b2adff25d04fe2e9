/*
 * bench_client: the compiled client of scripts/bench (so the client is not the bottleneck).
 *
 * Usage:
 *   bench_client MODE [options]
 *
 * Timed modes (each op timed with clock_gettime(CLOCK_MONOTONIC)):
 *   read     -p PATH | -d DIR -k PREFIX -m K   open(O_RDONLY) + read until EOF + close; with -m,
 *            -n N [-w W] [-s SIZE] [-a FIRST]  op i reads key ((FIRST + i) * 1000003) % K of the set
 *                                              (a different key each op while N < K)
 *            [-t STRIDE]                       the set is keys 0, STRIDE, 2*STRIDE, ... (K of them)
 *   stat     -p PATH | -d DIR -k PREFIX -m K   stat()
 *   miss     -d DIR  -n N [-w W] -k PREFIX      open() of missing keys, expects ENOENT
 *   publish  -d DIR  -n N [-w W] -k PREFIX -s SIZE
 *                                               open(O_WRONLY|O_CREAT|O_TRUNC) + write SIZE + close,
 *                                               a new key each time
 *   publish_rename -d DIR -n N [-w W] -k PREFIX -s SIZE
 *                                               write DIR/.tmp-KEY + close + rename to DIR/KEY
 *   ls       -d DIR  -n N [-w W] [-e EXPECTED]  open + getdents64 loop + close, counting entries
 *                                               (like `ls -f`, no stat); fails if count != EXPECTED
 *   du       -d DIR  -n N [-w W] [-e EXPECTED]  getdents64 loop + fstatat(AT_SYMLINK_NOFOLLOW) of
 *                                               every entry, summing st_blocks (what `du -s` does)
 *   Any timed mode takes -j J: J processes (fork) run the N ops each at once, started together
 *   after their warm-up (a barrier); miss/publish give each its own key prefix, keyset reads
 *   start at different offsets. The JSON then has "procs" and "wall_s" (barrier to last exit).
 * Untimed:
 *   populate -d DIR -k PREFIX -s SIZE -a FIRST -b END
 *                                               create the keys FIRST..END-1 of PREFIX
 *   mark     -p PATH                            one stat() of PATH (used as a marker in logs)
 *   key      -k PREFIX -a I                     print the key name (for cross-checking)
 *
 * Keys: key(PREFIX, i) is 64 lowercase hex digits (the shape of a sha256 key, the way services
 * name entries), derived from FNV-1a(PREFIX) and i with splitmix64; scripts/bench_py.py and
 * scripts/bench compute the same names. Warm-up ops use indexes past N so they never collide
 * with timed ones; publish adds -a FIRST to the index (default 0).
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *mode, *path, *dir, *prefix = "k", *outfile;
static long n = 1000, warm = 10, size = 10240, expected = -1, first = 0, end = 0, setsize = 0,
            procs = 1, proc_idx = 0, stride = 1;
static char *buf, *dbuf;
static size_t bufsz = 1 << 20;
static uint64_t prefix_hash;

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *p) {
    fprintf(stderr, "bench_client %s: %s %s: %s\n", mode, what, p ? p : "", strerror(errno));
    exit(1);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 64 hex digits + NUL */
static void keyname(char out[65], uint64_t ph, long i) {
    uint64_t x = ph ^ ((uint64_t)i * 0xd6e8feb86659fd93ull);
    for (int w = 0; w < 4; w++) snprintf(out + 16 * w, 17, "%016llx", (unsigned long long)splitmix(&x));
}

static void keypath(char *out, size_t outsz, const char *d, long i) {
    char k[65];
    keyname(k, prefix_hash, i);
    snprintf(out, outsz, "%s/%s", d, k);
}

/* ---- the operations; each returns 0 or exits on failure ---- */

static const char *op_path(long i, char *p, size_t psz) {
    if (!setsize) return path;
    long j = (long)(((uint64_t)(i + first + proc_idx * 7919) * 1000003ull) % (uint64_t)setsize);
    keypath(p, psz, dir, j * stride);
    return p;
}

static void op_read(long i) {
    char pb[4096];
    const char *p = op_path(i, pb, sizeof pb);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open", p);
    long total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, bufsz);
        if (r < 0) die("read", p);
        if (r == 0) break;
        total += r;
    }
    if (close(fd) < 0) die("close", p);
    if (size >= 0 && total != size) {
        fprintf(stderr, "bench_client read: %s: got %ld bytes, expected %ld\n", p, total, size);
        exit(1);
    }
}

static void op_stat(long i) {
    char pb[4096];
    const char *p = op_path(i, pb, sizeof pb);
    struct stat st;
    if (stat(p, &st) < 0) die("stat", p);
}

static void op_miss(long i) {
    char p[4096];
    keypath(p, sizeof p, dir, i);
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
    keypath(p, sizeof p, dir, first + i);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die("open", p);
    write_all(fd, p);
    if (close(fd) < 0) die("close", p);
}

static void op_publish_rename(long i) {
    char p[4096], t[4096], k[65];
    keyname(k, prefix_hash, first + i);
    snprintf(p, sizeof p, "%s/%s", dir, k);
    snprintf(t, sizeof t, "%s/.tmp-%s", dir, k);
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
static long long last_blocks;

static void walk_dir(int do_stat) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) die("open", dir);
    long count = 0;
    long long blocks = 0;
    for (;;) {
        long nread = syscall(SYS_getdents64, fd, dbuf, (size_t)(1 << 20));
        if (nread < 0) die("getdents64", dir);
        if (nread == 0) break;
        for (long bpos = 0; bpos < nread;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(dbuf + bpos);
            bpos += d->d_reclen;
            if (d->d_name[0] == '.' &&
                (d->d_name[1] == 0 || (d->d_name[1] == '.' && d->d_name[2] == 0)))
                continue;
            count++;
            if (do_stat) {
                struct stat st;
                if (fstatat(fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) die("fstatat", d->d_name);
                blocks += st.st_blocks;
            }
        }
    }
    if (close(fd) < 0) die("close", dir);
    last_count = count;
    last_blocks = blocks;
    if (expected >= 0 && count != expected) {
        fprintf(stderr, "bench_client %s: %s: %ld entries, expected %ld\n", mode, dir, count, expected);
        exit(1);
    }
}

static void op_ls(long i) {
    (void)i;
    walk_dir(0);
}

static void op_du(long i) {
    (void)i;
    walk_dir(1);
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
    fprintf(stderr, "usage: bench_client read|stat|miss|publish|publish_rename|ls|du|populate|mark|key "
                    "[-p PATH] [-d DIR] [-n N] [-w W] [-k PREFIX] [-s SIZE] [-e EXPECTED] "
                    "[-a FIRST] [-b END] [-m SETSIZE] [-t STRIDE] [-j PROCS] [-o SAMPLES]\n");
    exit(2);
}

static void write_samples(const char *f_name, const uint64_t *s, long cnt) {
    FILE *f = fopen(f_name, "w");
    if (!f) die("fopen", f_name);
    for (long i = 0; i < cnt; i++) fprintf(f, "%llu\n", (unsigned long long)s[i]);
    if (fclose(f) != 0) die("fclose", f_name);
}

/* run warm-up + N timed ops into s[]; with a barrier fd, wait on it between the two */
static void run_ops(void (*op)(long), uint64_t *s, int ready_fd, int go_fd) {
    for (long i = 0; i < warm; i++) op(n + i); /* warm-up indexes never collide with timed ones */
    if (ready_fd >= 0) {
        char c = 1, d;
        if (write(ready_fd, &c, 1) != 1) die("write", "barrier");
        close(ready_fd);
        while (read(go_fd, &d, 1) > 0) {
        }
        close(go_fd);
    }
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        op(i);
        s[i] = now_ns() - t0;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    mode = argv[1];
    int c;
    optind = 2;
    while ((c = getopt(argc, argv, "p:d:n:w:k:s:e:a:b:m:t:j:o:")) != -1) {
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
        case 'm': setsize = atol(optarg); break;
        case 't': stride = atol(optarg); break;
        case 'j': procs = atol(optarg); break;
        case 'o': outfile = optarg; break;
        default: usage();
        }
    }
    prefix_hash = fnv1a(prefix);
    if ((size_t)size + 1 > bufsz) bufsz = (size_t)size + 1;
    buf = malloc(bufsz);
    dbuf = malloc(1 << 20);
    if (!buf || !dbuf) die("malloc", NULL);
    for (size_t j = 0; j < bufsz; j++) buf[j] = (char)('a' + j % 26);

    if (!strcmp(mode, "key")) {
        char k[65];
        keyname(k, prefix_hash, first);
        printf("%s\n", k);
        return 0;
    }
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
            keypath(p, sizeof p, dir, i);
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
    if (!strcmp(mode, "read")) { if (!path && !(dir && setsize > 0)) usage(); op = op_read; }
    else if (!strcmp(mode, "stat")) { if (!path && !(dir && setsize > 0)) usage(); op = op_stat; }
    else if (!strcmp(mode, "miss")) { if (!dir) usage(); op = op_miss; }
    else if (!strcmp(mode, "publish")) { if (!dir) usage(); op = op_publish; }
    else if (!strcmp(mode, "publish_rename")) { if (!dir) usage(); op = op_publish_rename; }
    else if (!strcmp(mode, "ls")) { if (!dir) usage(); op = op_ls; }
    else if (!strcmp(mode, "du")) { if (!dir) usage(); op = op_du; }
    else usage();
    if (n < 1 || procs < 1) usage();

    long total = n * procs;
    uint64_t *s = malloc(sizeof(uint64_t) * (size_t)total);
    if (!s) die("malloc", NULL);
    double wall_s = 0;
    if (procs == 1) {
        run_ops(op, s, -1, -1);
    } else {
        if (!outfile) usage();
        int ready[2], go[2];
        if (pipe(ready) < 0 || pipe(go) < 0) die("pipe", NULL);
        pid_t *kids = calloc((size_t)procs, sizeof(pid_t));
        char base_prefix[1024];
        snprintf(base_prefix, sizeof base_prefix, "%s", prefix);
        for (long j = 0; j < procs; j++) {
            pid_t pid = fork();
            if (pid < 0) die("fork", NULL);
            if (pid == 0) {
                close(ready[0]);
                close(go[1]);
                char pre[1100];
                snprintf(pre, sizeof pre, "%sj%ld-", base_prefix, j);
                prefix = pre;
                prefix_hash = fnv1a(prefix);
                if (setsize) prefix_hash = fnv1a(base_prefix); /* the same key set, other offsets */
                proc_idx = j;
                run_ops(op, s, ready[1], go[0]);
                char f[4096];
                snprintf(f, sizeof f, "%s.%ld", outfile, j);
                write_samples(f, s, n);
                _exit(0);
            }
            kids[j] = pid;
        }
        close(ready[1]);
        close(go[0]);
        char ch;
        long got = 0;
        while (got < procs && read(ready[0], &ch, 1) == 1) got++;
        if (got < procs) {
            fprintf(stderr, "bench_client %s: a worker failed during its warm-up\n", mode);
            close(go[1]);
            for (long j = 0; j < procs; j++) waitpid(kids[j], NULL, 0);
            return 1;
        }
        uint64_t t0 = now_ns();
        close(go[1]);
        int failed = 0;
        for (long j = 0; j < procs; j++) {
            int st;
            if (waitpid(kids[j], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
        }
        wall_s = (now_ns() - t0) / 1e9;
        if (failed) {
            fprintf(stderr, "bench_client %s: a worker failed\n", mode);
            return 1;
        }
        for (long j = 0; j < procs; j++) {
            char f[4096];
            snprintf(f, sizeof f, "%s.%ld", outfile, j);
            FILE *fp = fopen(f, "r");
            if (!fp) die("fopen", f);
            for (long i = 0; i < n; i++) {
                unsigned long long v;
                if (fscanf(fp, "%llu", &v) != 1) die("fscanf", f);
                s[j * n + i] = v;
            }
            fclose(fp);
            unlink(f);
        }
    }
    if (outfile) write_samples(outfile, s, total);
    double sum = 0;
    for (long i = 0; i < total; i++) sum += s[i];
    qsort(s, (size_t)total, sizeof *s, cmp_u64);
    printf("{\"mode\":\"%s\",\"n\":%ld,\"median_us\":%.3f,\"p99_us\":%.3f,\"mean_us\":%.3f,"
           "\"min_us\":%.3f,\"max_us\":%.3f",
           mode, total, pct(s, total, 0.5), pct(s, total, 0.99), sum / total / 1000.0, s[0] / 1000.0,
           s[total - 1] / 1000.0);
    if (procs > 1) printf(",\"procs\":%ld,\"wall_s\":%.6f", procs, wall_s);
    if (op == op_ls || op == op_du) printf(",\"entries\":%ld", last_count);
    if (op == op_du) printf(",\"blocks\":%lld", last_blocks);
    printf("}\n");
    return 0;
}
