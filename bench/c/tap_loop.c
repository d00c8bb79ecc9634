/*
 * Reference loops for `npm run bench -- tap`: one frame per syscall, plain C.
 *
 *   tap_loop write IFNAME FRAMEFILE SECONDS   write the frame in a loop
 *   tap_loop read  IFNAME SECONDS             read frames in a loop
 *   tap_loop send  IFNAME FRAMEFILE SECONDS   send the frame from the host side
 *                                             through an AF_PACKET socket
 *   tap_loop inject IFNAME FRAMEFILE COUNT    the same, COUNT times (for tests)
 *   tap_loop write-vnet IFNAME FRAMEFILE SECONDS  write with IFF_VNET_HDR (the file
 *                                             starts with a 12-byte virtio_net_hdr)
 *   tap_loop read-vnet IFNAME SECONDS         read with IFF_VNET_HDR and every
 *                                             offload on (GSO super-frames whole)
 *   tap_loop usend IPV4 PORT SECONDS          host sender of 64000-byte UDP
 *                                             super-frames (UDP_SEGMENT, 1472)
 *   tap_loop sink IPV4 SECONDS                a host UDP socket that is never read:
 *                                             prints {"port":N}, then sleeps
 *
 * write and read attach to an existing TAP (IFF_TAP|IFF_NO_PI) by name; each
 * prints one JSON line: {"frames":N,"bytes":N,"seconds":S,"errors":N,"cpu":S}.
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int attach_flags(const char *name, int vnet) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) { perror("open /dev/net/tun"); exit(2); }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); exit(2); }
  if (vnet) {
    int sz = 12;
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) { perror("TUNSETVNETHDRSZ"); exit(2); }
  }
  return fd;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static size_t load(const char *path, unsigned char *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(2); }
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  return n;
}

static void report(unsigned long frames, unsigned long long bytes, double secs, unsigned long errors) {
  printf("{\"frames\":%lu,\"bytes\":%llu,\"seconds\":%.6f,\"errors\":%lu,\"cpu\":%.6f}\n", frames, bytes, secs, errors,
         cpu_seconds());
}

int main(int argc, char **argv) {
  static unsigned char buf[65536 + 128];
  if (argc < 4) {
    fprintf(stderr, "usage: tap_loop write|send IFNAME FRAMEFILE SECONDS | read IFNAME SECONDS\n");
    return 2;
  }
  const char *mode = argv[1];
  const char *ifname = argv[2];
  unsigned long frames = 0, errors = 0;
  unsigned long long bytes = 0;
  if (strcmp(mode, "sink") == 0) {
    /* The kernel queues what arrives until the buffer is full, then drops:
       the same cheap end for every frame, whoever writes into the TAP. */
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in at = {.sin_family = AF_INET};
    socklen_t alen = sizeof at;
    if (fd < 0 || inet_pton(AF_INET, argv[2], &at.sin_addr) != 1 || bind(fd, (struct sockaddr *)&at, sizeof at) < 0 ||
        getsockname(fd, (struct sockaddr *)&at, &alen) < 0) {
      perror("sink");
      return 2;
    }
    printf("{\"port\":%d}\n", ntohs(at.sin_port));
    fflush(stdout);
    double end = now() + atof(argv[3]);
    while (now() < end) usleep(100000);
    return 0;
  }
  if (strcmp(mode, "usend") == 0) {
    if (argc < 5) { fprintf(stderr, "usage: tap_loop usend IPV4 PORT SECONDS\n"); return 2; }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int gso = 1472;
    if (fd < 0 || setsockopt(fd, SOL_UDP, UDP_SEGMENT, &gso, sizeof gso) < 0) { perror("UDP_SEGMENT"); return 2; }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &to.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", argv[2]); return 2; }
    memset(buf, 0x5a, 64000);
    double secs = atof(argv[4]);
    double start = now(), end = start + secs, t = start;
    while (t < end) {
      ssize_t n = sendto(fd, buf, 64000, 0, (struct sockaddr *)&to, sizeof to);
      if (n > 0) { frames++; bytes += (size_t)n; } else errors++;
      t = now();
    }
    report(frames, bytes, now() - start, errors);
    return 0;
  }
  if (strcmp(mode, "read") == 0 || strcmp(mode, "read-vnet") == 0) {
    double secs = atof(argv[3]);
    int vnet = strcmp(mode, "read-vnet") == 0;
    int fd = attach_flags(ifname, vnet);
    if (vnet) {
      unsigned long off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6;
      if (ioctl(fd, TUNSETOFFLOAD, off) < 0) { perror("TUNSETOFFLOAD"); return 2; }
    }
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
  if (strcmp(mode, "write") == 0 || strcmp(mode, "write-vnet") == 0) {
    fd = attach_flags(ifname, strcmp(mode, "write-vnet") == 0);
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
