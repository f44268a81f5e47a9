/* Prints struct virtio_net_hdr's layout, the TAP and virtio-net constants and one
 * filled header's bytes, as the installed kernel headers define them; the Swift tests
 * compare VirtioNetHeader and TapOffloads with this output. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

#define FIELD(f) printf("field\t%s\t%zu\t%zu\n", #f, offsetof(struct virtio_net_hdr, f), \
                        sizeof(((struct virtio_net_hdr *)0)->f))
#define CONST(c) printf("const\t%s\t%lu\n", #c, (unsigned long)(c))

int main(void) {
    printf("size\t%zu\n", sizeof(struct virtio_net_hdr));
    FIELD(flags);
    FIELD(gso_type);
    FIELD(hdr_len);
    FIELD(gso_size);
    FIELD(csum_start);
    FIELD(csum_offset);
    CONST(VIRTIO_NET_HDR_F_NEEDS_CSUM);
    CONST(VIRTIO_NET_HDR_F_DATA_VALID);
    CONST(VIRTIO_NET_HDR_GSO_NONE);
    CONST(VIRTIO_NET_HDR_GSO_TCPV4);
    CONST(VIRTIO_NET_HDR_GSO_UDP);
    CONST(VIRTIO_NET_HDR_GSO_TCPV6);
    CONST(VIRTIO_NET_HDR_GSO_ECN);
    CONST(TUN_F_CSUM);
    CONST(TUN_F_TSO4);
    CONST(TUN_F_TSO6);
    CONST(TUN_F_TSO_ECN);
    CONST(TUN_F_UFO);

    /* A host-order header, as a TAP device without TUNSETVNETBE reads and writes it. */
    struct virtio_net_hdr h;
    memset(&h, 0, sizeof h);
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.gso_type = VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN;
    h.hdr_len = 0x0056;
    h.gso_size = 0x05a8;
    h.csum_start = 0x0036;
    h.csum_offset = 0x0010;
    const unsigned char *bytes = (const unsigned char *)&h;
    printf("golden\t");
    for (size_t i = 0; i < sizeof h; i++) printf("%02x", bytes[i]);
    printf("\n");
    return 0;
}
