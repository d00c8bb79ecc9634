/*
 * Reference loops for `npm run bench -- tap`: one frame per syscall, plain C.
 *
 *   tap_loop write IFNAME FRAMEFILE SECONDS   write the frame in a loop
 *   tap_loop read  IFNAME SECONDS             read frames in a loop
 *   tap_loop send  IFNAME FRAMEFILE SECONDS   send the frame from the host side
 *                                             through an AF_PACKET socket
 *   tap_loop inject IFNAME FRAMEFILE COUNT    the same, COUNT times (for tests)
 *
 * write and read attach to an existing TAP (IFF_TAP|IFF_NO_PI) by name; each
 * prints one JSON line: {"frames":N,"bytes":N,"seconds":S,"errors":N}.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int attach(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) { perror("open /dev/net/tun"); exit(2); }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); exit(2); }
  return fd;
}

static size_t load(const char *path, unsigned char *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(2); }
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  return n;
}

static void report(unsigned long frames, unsigned long long bytes, double secs, unsigned long errors) {
  printf("{\"frames\":%lu,\"bytes\":%llu,\"seconds\":%.6f,\"errors\":%lu}\n", frames, bytes, secs, errors);
}

int main(int argc, char **argv) {
  static unsigned char buf[65536 + 64];
  if (argc < 4) {
    fprintf(stderr, "usage: tap_loop write|send IFNAME FRAMEFILE SECONDS | read IFNAME SECONDS\n");
    return 2;
  }
  const char *mode = argv[1];
  const char *ifname = argv[2];
  unsigned long frames = 0, errors = 0;
  unsigned long long bytes = 0;
  if (strcmp(mode, "read") == 0) {
    double secs = atof(argv[3]);
    int fd = attach(ifname);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    double start = now(), end = start + secs, t = start;
    while (t < end) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n > 0) { frames++; bytes += (size_t)n; }
      else if (n < 0 && errno != EINTR) {
        errors++;
        poll(&pfd, 1, 10);
      }
      if ((frames & 63) == 0 || n < 0) t = now();
    }
    report(frames, bytes, now() - start, errors);
    return 0;
  }
  if (argc < 5) { fprintf(stderr, "usage: tap_loop %s IFNAME FRAMEFILE SECONDS\n", mode); return 2; }
  size_t len = load(argv[3], buf, sizeof buf);
  double secs = atof(argv[4]);
  int fd;
  if (strcmp(mode, "write") == 0) {
    fd = attach(ifname);
  } else if (strcmp(mode, "send") == 0 || strcmp(mode, "inject") == 0) {
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) { perror("socket AF_PACKET"); return 2; }
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = (int)if_nametoindex(ifname);
    sll.sll_protocol = 0;
    if (sll.sll_ifindex == 0 || bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("bind"); return 2; }
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  if (strcmp(mode, "inject") == 0) {
    long count = atol(argv[4]);
    double start = now();
    for (long i = 0; i < count; i++) {
      ssize_t n = write(fd, buf, len);
      if (n > 0) { frames++; bytes += (size_t)n; } else errors++;
    }
    report(frames, bytes, now() - start, errors);
    return errors == 0 ? 0 : 1;
  }
  double start = now(), end = start + secs, t = start;
  while (t < end) {
    ssize_t n = write(fd, buf, len);
    if (n > 0) { frames++; bytes += (size_t)n; }
    else errors++;
    if ((frames & 63) == 0 || n <= 0) t = now();
  }
  report(frames, bytes, now() - start, errors);
  return 0;
}
