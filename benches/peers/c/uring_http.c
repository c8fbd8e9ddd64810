/* Minimal hand-written io_uring HTTP responder: the floor for server CPU per request on
 * /plaintext. The ring setup of uring_floor.h, shared with uring_echo.c (SINGLE_ISSUER +
 * DEFER_TASKRUN, multishot accept, multishot recv into a provided buffer ring); each request
 * found in a receive (counted by its blank line) is answered with one canned keep-alive response
 * from a static buffer: no parsing, no routing, no Date refresh, no framework. A request split
 * across receives would be miscounted; wrk's small GETs never are. Not a server: a lower bound
 * to measure against. Usage: uring_http [PORT [BODY_BYTES]] (default body: "Hello, World!"; a larger
 * one stands in for a cached file of that size). Build: gcc -O2 -o uring_http uring_http.c -luring */
#include "uring_floor.h"

#define MAXPIPE 64
enum { ACCEPT = 1, RECV = 2, SEND = 3 };
#define UD(kind, fd) (((unsigned long long)(kind) << 56) | (unsigned)(fd))

#define MAXBODY (64 * 1024)
static char RESP[256 + MAXBODY];
static size_t RLEN;
static char *many;

/* Requests in a receive: occurrences of the blank line that ends a head. */
static int requests(const char *p, int n) {
    int k = 0;
    for (int i = 0; i + 3 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') { k++; i += 3; }
    return k;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8203;
    int body = argc > 2 ? atoi(argv[2]) : 0;
    if (body < 0 || body > MAXBODY) {
        fprintf(stderr, "uring_http: BODY_BYTES must be 0..%d\n", MAXBODY);
        return 2;
    }
    RLEN = (size_t)snprintf(RESP, 256, "HTTP/1.1 200 OK\r\nServer: c\r\nContent-Type: text/plain\r\n"
                            "Date: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: %d\r\n\r\n", body ? body : 13);
    if (body) memset(RESP + RLEN, 'x', (size_t)body), RLEN += (size_t)body;
    else memcpy(RESP + RLEN, "Hello, World!", 13), RLEN += 13;
    many = malloc(MAXPIPE * RLEN);
    if (!many) return 1;
    for (int i = 0; i < MAXPIPE; i++) memcpy(many + i * RLEN, RESP, RLEN);
    int lfd = floor_setup(port, 4096, 1, "c io_uring http");
    arm_accept(lfd, UD(ACCEPT, lfd));

    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            n++;
            unsigned long long ud = cqe->user_data;
            int kind = ud >> 56, fd = (int)(ud & 0xffffffff), res = cqe->res;
            if (kind == ACCEPT) {
                if (res >= 0) arm_recv(res, UD(RECV, res));
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(lfd, UD(ACCEPT, lfd));
            } else if (kind == RECV) {
                if (res > 0) {
                    int b = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                    int k = requests(bufs + (size_t)b * BUFSZ, res);
                    give_back(b);
                    while (k > 0) {
                        int m = k < MAXPIPE ? k : MAXPIPE;
                        struct io_uring_sqe *s = sqe_get();
                        io_uring_prep_send(s, fd, many, (size_t)m * RLEN, MSG_NOSIGNAL);
                        io_uring_sqe_set_data64(s, UD(SEND, fd));
                        k -= m;
                    }
                    if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(fd, UD(RECV, fd));
                } else if (res == -ENOBUFS) {
                    arm_recv(fd, UD(RECV, fd));
                } else if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    close(fd);
                }
            } /* SEND: nothing to do (static bytes; a short send would cut a response, which
                 64 connections of small responses never cause) */
        }
        io_uring_cq_advance(&ring, n);
    }
}
