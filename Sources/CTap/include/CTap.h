// The TUN/TAP and interface ioctls Swift cannot reach directly: their request numbers
// are function-like macros (_IOW) and their argument is a struct ifreq. One wrapper per
// ioctl; each returns 0 or -errno. The constants below are the kernel headers' own
// values (linux/if_tun.h, linux/virtio_net.h, net/if.h), exported from CTap.c so this
// header need not include linux/if.h next to glibc's net/if.h.
#ifndef XENSPLIT_CTAP_H
#define XENSPLIT_CTAP_H

#include <stdint.h>

/// IFNAMSIZ: an interface name with its terminating NUL.
extern const int ctap_ifnamsiz;

/// TUNSETIFF flags (linux/if_tun.h).
extern const uint16_t ctap_iff_tap;
extern const uint16_t ctap_iff_no_pi;
extern const uint16_t ctap_iff_vnet_hdr;
extern const uint16_t ctap_iff_multi_queue;

/// TUNSETOFFLOAD flags (linux/if_tun.h).
extern const uint32_t ctap_tun_f_csum;
extern const uint32_t ctap_tun_f_tso4;
extern const uint32_t ctap_tun_f_tso6;
extern const uint32_t ctap_tun_f_tso_ecn;
extern const uint32_t ctap_tun_f_ufo;

/// struct virtio_net_hdr (linux/virtio_net.h): its size and constants.
extern const int ctap_virtio_net_hdr_size;
extern const uint8_t ctap_virtio_net_hdr_f_needs_csum;
extern const uint8_t ctap_virtio_net_hdr_f_data_valid;
extern const uint8_t ctap_virtio_net_hdr_gso_none;
extern const uint8_t ctap_virtio_net_hdr_gso_tcpv4;
extern const uint8_t ctap_virtio_net_hdr_gso_udp;
extern const uint8_t ctap_virtio_net_hdr_gso_tcpv6;
extern const uint8_t ctap_virtio_net_hdr_gso_ecn;

/// IFF_UP (net/if.h).
extern const int16_t ctap_iff_up;

/// TUNSETIFF with `flags` for the device `name` ("" lets the kernel choose); the name the
/// kernel gave is written to `out_name` (IFNAMSIZ bytes).
int ctap_set_iff(int fd, const char *name, uint16_t flags, char *out_name);
/// TUNSETVNETHDRSZ.
int ctap_set_vnet_hdr_size(int fd, int size);
/// TUNSETOFFLOAD.
int ctap_set_offload(int fd, uint32_t flags);
/// TUNSETCARRIER.
int ctap_set_carrier(int fd, int on);

/// SIOCGIFMTU / SIOCSIFMTU on a socket, for the interface `name`.
int ctap_get_mtu(int sock, const char *name, int *mtu);
int ctap_set_mtu(int sock, const char *name, int mtu);
/// SIOCGIFFLAGS / SIOCSIFFLAGS.
int ctap_get_flags(int sock, const char *name, int16_t *flags);
int ctap_set_flags(int sock, const char *name, int16_t flags);
/// SIOCGIFHWADDR / SIOCSIFHWADDR with an Ethernet (ARPHRD_ETHER) address of 6 bytes.
int ctap_get_hwaddr(int sock, const char *name, uint8_t *mac);
int ctap_set_hwaddr(int sock, const char *name, const uint8_t *mac);
/// SIOCGIFINDEX.
int ctap_get_ifindex(int sock, const char *name, int *index);

/// setns(fd, CLONE_NEWNET): moves the calling thread into a network namespace.
int ctap_setns_net(int fd);

#endif
