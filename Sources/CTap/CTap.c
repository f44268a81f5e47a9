#define _GNU_SOURCE
#include "CTap.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

const int ctap_ifnamsiz = IFNAMSIZ;

const uint16_t ctap_iff_tap = IFF_TAP;
const uint16_t ctap_iff_no_pi = IFF_NO_PI;
const uint16_t ctap_iff_vnet_hdr = IFF_VNET_HDR;
const uint16_t ctap_iff_multi_queue = IFF_MULTI_QUEUE;

const uint32_t ctap_tun_f_csum = TUN_F_CSUM;
const uint32_t ctap_tun_f_tso4 = TUN_F_TSO4;
const uint32_t ctap_tun_f_tso6 = TUN_F_TSO6;
const uint32_t ctap_tun_f_tso_ecn = TUN_F_TSO_ECN;
const uint32_t ctap_tun_f_ufo = TUN_F_UFO;

const int ctap_virtio_net_hdr_size = sizeof(struct virtio_net_hdr);
const uint8_t ctap_virtio_net_hdr_f_needs_csum = VIRTIO_NET_HDR_F_NEEDS_CSUM;
const uint8_t ctap_virtio_net_hdr_f_data_valid = VIRTIO_NET_HDR_F_DATA_VALID;
const uint8_t ctap_virtio_net_hdr_gso_none = VIRTIO_NET_HDR_GSO_NONE;
const uint8_t ctap_virtio_net_hdr_gso_tcpv4 = VIRTIO_NET_HDR_GSO_TCPV4;
const uint8_t ctap_virtio_net_hdr_gso_udp = VIRTIO_NET_HDR_GSO_UDP;
const uint8_t ctap_virtio_net_hdr_gso_tcpv6 = VIRTIO_NET_HDR_GSO_TCPV6;
const uint8_t ctap_virtio_net_hdr_gso_ecn = VIRTIO_NET_HDR_GSO_ECN;

const int16_t ctap_iff_up = IFF_UP;

/// An ifreq naming `name`; the caller checked it fits (the Swift side validates names).
static int named(struct ifreq *ifr, const char *name) {
    memset(ifr, 0, sizeof(*ifr));
    size_t length = strlen(name);
    if (length >= IFNAMSIZ) return -EINVAL;
    memcpy(ifr->ifr_name, name, length);
    return 0;
}

static int ioctl_result(int rc) { return rc < 0 ? -errno : 0; }

int ctap_set_iff(int fd, const char *name, uint16_t flags, char *out_name) {
    struct ifreq ifr;
    int rc = named(&ifr, name);
    if (rc < 0) return rc;
    ifr.ifr_flags = (short)flags;
    rc = ioctl_result(ioctl(fd, TUNSETIFF, &ifr));
    if (rc == 0) memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
    return rc;
}

int ctap_set_vnet_hdr_size(int fd, int size) { return ioctl_result(ioctl(fd, TUNSETVNETHDRSZ, &size)); }

int ctap_set_offload(int fd, uint32_t flags) {
    // TUNSETOFFLOAD takes its flags as the argument itself, not through a pointer.
    return ioctl_result(ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags));
}

int ctap_set_carrier(int fd, int on) { return ioctl_result(ioctl(fd, TUNSETCARRIER, &on)); }

int ctap_get_mtu(int sock, const char *name, int *mtu) {
    struct ifreq ifr;
    int rc = named(&ifr, name);
    if (rc < 0) return rc;
    rc = ioctl_result(ioctl(sock, SIOCGIFMTU, &ifr));
    if (rc == 0) *mtu = ifr.ifr_mtu;
    return rc;
}

int ctap_set_mtu(int sock, const char *name, int mtu) {
    struct ifreq ifr;
    int rc = named(&ifr, name);
    if (rc < 0) return rc;
    ifr.ifr_mtu = mtu;
    return ioctl_result(ioctl(sock, SIOCSIFMTU, &ifr));
}

int ctap_get_flags(int sock, const char *name, int16_t *flags) {
    struct ifreq ifr;
    int rc = named(&ifr, name);
    if (rc < 0) return rc;
    rc = ioctl_result(ioctl(sock, SIOCGIFFLAGS, &ifr));
    if (rc == 0) *flags = ifr.ifr_flags;
    return rc;
}

int ctap_set_flags(int sock, const char *name, int16_t flags) {
    struct ifreq ifr;
    int rc = named(&ifr, name);
    if (rc < 0) return rc;
    ifr.ifr_flags = flags;
    return ioctl_result(ioctl(sock, SIOCSIFFLAGS, &ifr));
}

int ctap_get_hwaddr(int sock, const char *name, uint8_t *mac) {
    struct ifreq ifr;
    int rc = named(&ifr, name);
    if (rc < 0) return rc;
    rc = ioctl_result(ioctl(sock, SIOCGIFHWADDR, &ifr));
    if (rc == 0) memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return rc;
}

int ctap_set_hwaddr(int sock, const char *name, const uint8_t *mac) {
    struct ifreq ifr;
    int rc = named(&ifr, name);
    if (rc < 0) return rc;
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    return ioctl_result(ioctl(sock, SIOCSIFHWADDR, &ifr));
}

int ctap_get_ifindex(int sock, const char *name, int *index) {
    struct ifreq ifr;
    int rc = named(&ifr, name);
    if (rc < 0) return rc;
    rc = ioctl_result(ioctl(sock, SIOCGIFINDEX, &ifr));
    if (rc == 0) *index = ifr.ifr_ifindex;
    return rc;
}

int ctap_setns_net(int fd) { return setns(fd, CLONE_NEWNET) < 0 ? -errno : 0; }
