/* Minimal hand-written io_uring echo server: the floor for server CPU per message.
 * Multishot accept, multishot recv into a provided buffer ring, send of the received buffer,
 * buffer returned to the ring when the send completes. One thread, one ring, no framework.
 * Build: gcc -O2 -o uring_echo uring_echo.c -luring */
#include "uring_floor.h"

enum { ACCEPT = 1, RECV = 2, SEND = 3 };
#define UD(kind, fd, bid) (((unsigned long long)(kind) << 56) | ((unsigned long long)(bid) << 32) | (unsigned)(fd))

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7003, one = 1;
    int lfd = floor_setup(port, 1024, 0, "c io_uring echo");
    arm_accept(lfd, UD(ACCEPT, lfd, 0));

    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            n++;
            unsigned long long ud = cqe->user_data;
            int kind = ud >> 56, fd = (int)(ud & 0xffffffff), bid = (ud >> 32) & 0xffff, res = cqe->res;
            if (kind == ACCEPT) {
                if (res >= 0) { setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); arm_recv(res, UD(RECV, res, 0)); }
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(lfd, UD(ACCEPT, lfd, 0));
            } else if (kind == RECV) {
                if (res > 0) {
                    int b = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                    struct io_uring_sqe *s = sqe_get();
                    io_uring_prep_send(s, fd, bufs + (size_t)b * BUFSZ, res, MSG_NOSIGNAL);
                    io_uring_sqe_set_data64(s, UD(SEND, fd, b));
                    if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(fd, UD(RECV, fd, 0));
                } else if (res == -ENOBUFS) {
                    arm_recv(fd, UD(RECV, fd, 0));
                } else if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    close(fd);
                }
            } else if (kind == SEND) {
                give_back(bid); /* a short send would drop bytes; 64-byte echo never has one */
            }
        }
        io_uring_cq_advance(&ring, n);
    }
}
