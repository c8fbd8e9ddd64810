/* Shared by the hand-written io_uring floors (uring_echo.c, uring_http.c): one ring with
 * SINGLE_ISSUER + DEFER_TASKRUN, a provided buffer ring of NBUF buffers of BUFSZ bytes, multishot
 * receives into it, and a loopback listener. Each program defines its own user_data layout. */
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

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;

static struct io_uring_sqe *sqe_get(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) { io_uring_submit(&ring); s = io_uring_get_sqe(&ring); }
    if (!s) { fprintf(stderr, "SQ full\n"); exit(1); }
    return s;
}

static void arm_recv(int fd, unsigned long long ud) {
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    io_uring_sqe_set_data64(s, ud);
}

static void arm_accept(int lfd, unsigned long long ud) {
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, 0);
    io_uring_sqe_set_data64(s, ud);
}

static void give_back(int bid) {
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, bid, io_uring_buf_ring_mask(NBUF), 0);
    io_uring_buf_ring_advance(br, 1);
}

/* Sets up the ring and its buffers, listens on 127.0.0.1:port (TCP_NODELAY on the listener when
 * asked, inherited by accepted sockets) and prints "<name> listening on ...". Returns the
 * listening socket; exits on failure. */
static int floor_setup(int port, int backlog, int nodelay, const char *name) {
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    if (io_uring_queue_init_params(4096, &ring, &p) < 0) { perror("io_uring_queue_init"); exit(1); }
    br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    bufs = malloc((size_t)NBUF * BUFSZ);
    struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = BGID };
    if (io_uring_register_buf_ring(&ring, &reg, 0)) { fprintf(stderr, "register_buf_ring failed\n"); exit(1); }
    io_uring_buf_ring_init(br);
    for (int i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, i, io_uring_buf_ring_mask(NBUF), i);
    io_uring_buf_ring_advance(br, NBUF);

    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (nodelay) setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, backlog)) { perror("bind/listen"); exit(1); }
    printf("%s listening on 127.0.0.1:%d\n", name, port);
    fflush(stdout);
    return lfd;
}
