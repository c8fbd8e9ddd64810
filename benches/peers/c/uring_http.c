/* Minimal hand-written io_uring HTTP responder: the floor for server CPU per request on
 * /plaintext. The same ring setup as uring_echo.c (SINGLE_ISSUER + DEFER_TASKRUN, multishot
 * accept, multishot recv into a provided buffer ring); each request found in a receive (counted
 * by its blank line) is answered with one canned keep-alive response from a static buffer: no
 * parsing, no routing, no Date refresh, no framework. A request split across receives would be
 * miscounted; wrk's small GETs never are. Not a server: a lower bound to measure against.
 * Build: gcc -O2 -o uring_http uring_http.c -luring */
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NBUF 4096
#define BUFSZ 4096
#define BGID 0
#define MAXPIPE 64
enum { ACCEPT = 1, RECV = 2, SEND = 3 };
#define UD(kind, fd) (((unsigned long long)(kind) << 56) | (unsigned)(fd))

static const char RESP[] = "HTTP/1.1 200 OK\r\nServer: c\r\nContent-Type: text/plain\r\n"
                           "Date: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 13\r\n\r\nHello, World!";
#define RLEN (sizeof RESP - 1)
static char many[MAXPIPE * RLEN];

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;

static struct io_uring_sqe *sqe_get(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) { io_uring_submit(&ring); s = io_uring_get_sqe(&ring); }
    if (!s) { fprintf(stderr, "SQ full\n"); exit(1); }
    return s;
}

static void arm_recv(int fd) {
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    io_uring_sqe_set_data64(s, UD(RECV, fd));
}

static void give_back(int bid) {
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, bid, io_uring_buf_ring_mask(NBUF), 0);
    io_uring_buf_ring_advance(br, 1);
}

/* Requests in a receive: occurrences of the blank line that ends a head. */
static int requests(const char *p, int n) {
    int k = 0;
    for (int i = 0; i + 3 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') { k++; i += 3; }
    return k;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8203;
    for (int i = 0; i < MAXPIPE; i++) memcpy(many + i * RLEN, RESP, RLEN);
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    if (io_uring_queue_init_params(4096, &ring, &p) < 0) { perror("io_uring_queue_init"); return 1; }
    br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    bufs = malloc((size_t)NBUF * BUFSZ);
    struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = BGID };
    if (io_uring_register_buf_ring(&ring, &reg, 0)) { fprintf(stderr, "register_buf_ring failed\n"); return 1; }
    io_uring_buf_ring_init(br);
    for (int i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, i, io_uring_buf_ring_mask(NBUF), i);
    io_uring_buf_ring_advance(br, NBUF);

    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* inherited by accepted sockets */
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 4096)) { perror("bind/listen"); return 1; }
    printf("c io_uring http listening on 127.0.0.1:%d\n", port);
    fflush(stdout);
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, 0);
    io_uring_sqe_set_data64(s, UD(ACCEPT, lfd));

    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            n++;
            unsigned long long ud = cqe->user_data;
            int kind = ud >> 56, fd = (int)(ud & 0xffffffff), res = cqe->res;
            if (kind == ACCEPT) {
                if (res >= 0) arm_recv(res);
                if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    s = sqe_get();
                    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, 0);
                    io_uring_sqe_set_data64(s, UD(ACCEPT, lfd));
                }
            } else if (kind == RECV) {
                if (res > 0) {
                    int b = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                    int k = requests(bufs + (size_t)b * BUFSZ, res);
                    give_back(b);
                    while (k > 0) {
                        int m = k < MAXPIPE ? k : MAXPIPE;
                        s = sqe_get();
                        io_uring_prep_send(s, fd, many, (size_t)m * RLEN, MSG_NOSIGNAL);
                        io_uring_sqe_set_data64(s, UD(SEND, fd));
                        k -= m;
                    }
                    if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(fd);
                } else if (res == -ENOBUFS) {
                    arm_recv(fd);
                } else if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    close(fd);
                }
            } /* SEND: nothing to do (static bytes; a short send would cut a response, which
                 64 connections of small responses never cause) */
        }
        io_uring_cq_advance(&ring, n);
    }
}
