/*
 * paced_floor: the least CPU a client can spend per request at realistic pacing on this machine.
 *
 * The paced suite (bench/run.sh --only paced) compares cicada's CPU per request at about 500 req/s with its own
 * saturated figure. At that rate most of the cost is the kernel's: every request's send wakes a sleeping server on
 * the sender's CPU, and every response wakes the client. This program measures that floor: one thread, one epoll
 * loop, no allocation after start-up, a connection per user, the same mix of paths as `paced_mix`, and the same
 * 0.5-1.5 s think times ending on the same 32 ms grid of wake-ups, so that a batch of users wakes together as in
 * cicada. It keeps no statistics beyond counts. Its CPU per request is what the kernel asks of any client at this
 * pacing; what cicada spends over it is cicada's own.
 *
 *   paced_floor HOST PORT USERS SECONDS
 *
 * Prints `requests N failures M seconds S` at the end, S being the time from the first connection to the end of
 * the run. Only for 127.0.0.0/8 targets (the bench's nginx). Built and run by bench/run.sh (`gcc -O2`).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GRID_MS 32
#define SLOTS 64 /* think times reach 1.5 s = 47 grid steps ahead, so 64 slots never wrap onto a busy one */
#define BUF 4096

struct user {
    int fd;
    int next;      /* next user in the same wake-up slot, or -1 */
    size_t filled; /* bytes of the response read so far */
    char buf[BUF];
};

static struct user *users;
static int slot_head[SLOTS];
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A think time of 500-1500 ms from `now`, rounded to the nearest grid point, as cicada's `between(0.5, 1.5)`. */
static int64_t think_until(int64_t now) {
    int64_t end = now + 500 + (int64_t)(next_random() % 1001);
    return (end + GRID_MS / 2) / GRID_MS * GRID_MS;
}

static void schedule(int id, int64_t at) {
    int slot = (int)((at / GRID_MS) % SLOTS);
    users[id].next = slot_head[slot];
    slot_head[slot] = id;
}

static int send_request(int id) {
    char req[128];
    int len;
    uint64_t pick = next_random() % 5; /* "/" 1, "/items/[id]" 3, "/slow" 1, as paced_mix */
    if (pick == 0)
        len = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    else if (pick == 4)
        len = snprintf(req, sizeof req, "GET /slow?ms=50 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    else
        len = snprintf(req, sizeof req, "GET /items/%u HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                       (unsigned)(next_random() % 10000) + 1);
    users[id].filled = 0;
    return send(users[id].fd, req, (size_t)len, MSG_NOSIGNAL) == len ? 0 : -1;
}

/* 1 when the buffer holds a whole response (head plus Content-Length bytes), 0 when more is due, -1 if malformed. */
static int response_complete(struct user *u) {
    char *end = memmem(u->buf, u->filled, "\r\n\r\n", 4);
    if (!end)
        return u->filled == BUF ? -1 : 0;
    size_t head = (size_t)(end - u->buf) + 4;
    char *cl = memmem(u->buf, head, "Content-Length: ", 16);
    size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
    return u->filled >= head + body ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: paced_floor HOST PORT USERS SECONDS\n");
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "paced_floor: HOST must be a 127.0.0.0/8 address\n");
        return 2;
    }
    int n = atoi(argv[3]);
    int64_t deadline = now_ms() + 1000 * (int64_t)atoi(argv[4]);
    users = calloc((size_t)n, sizeof *users);
    int ep = epoll_create1(0);
    if (!users || ep < 0)
        return 1;
    for (int s = 0; s < SLOTS; s++)
        slot_head[s] = -1;
    int64_t start = now_ms();
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            perror("paced_floor: connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        users[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        /* Users start spread over the first second, as a spawn rate of 1,000/s would. */
        schedule(i, (start + (int64_t)i * 1000 / n + GRID_MS / 2) / GRID_MS * GRID_MS);
    }
    uint64_t requests = 0, failures = 0;
    int64_t tick = start / GRID_MS * GRID_MS;
    struct epoll_event events[256];
    for (;;) {
        int64_t now = now_ms();
        if (now >= deadline)
            break;
        while (tick <= now) {
            int slot = (int)((tick / GRID_MS) % SLOTS);
            int id = slot_head[slot];
            slot_head[slot] = -1;
            for (; id >= 0;) {
                int next = users[id].next;
                if (send_request(id) != 0) {
                    failures++;
                    schedule(id, think_until(now));
                }
                id = next;
            }
            tick += GRID_MS;
        }
        int wait = (int)(tick - now_ms());
        int ready = epoll_wait(ep, events, 256, wait < 0 ? 0 : wait);
        for (int e = 0; e < ready; e++) {
            int id = (int)events[e].data.u32;
            struct user *u = &users[id];
            ssize_t got = recv(u->fd, u->buf + u->filled, BUF - u->filled, 0);
            if (got <= 0) {
                fprintf(stderr, "paced_floor: connection %d closed\n", id);
                return 1;
            }
            u->filled += (size_t)got;
            int done = response_complete(u);
            if (done != 0) {
                if (done < 0)
                    failures++;
                else
                    requests++;
                schedule(id, think_until(now_ms()));
            }
        }
    }
    printf("requests %llu failures %llu seconds %.3f\n", (unsigned long long)requests, (unsigned long long)failures,
           (double)(now_ms() - start) / 1000.0);
    return 0;
}
