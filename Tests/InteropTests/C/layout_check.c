/*
 * Prints the layouts, constants and example encodings of the blkif and netif wire structs
 * as the C compiler sees them through the system's Xen headers. Built twice by
 * InteropTests (cc -m64 for the x86_64 ABI, cc -m32 for x86_32); its output is compared
 * with Protocols/ and with the Swift code. Every line is tab-separated, <family> being
 * blkif or netif:
 *   layout <family> <abi> <struct> <field> <offset> <size>  (field "sizeof": whole struct)
 *   const  <family> <name> <value>
 *   golden <family> <abi> <name> <hex bytes of the struct>
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ring.h leaves the barriers to the includer; this program never uses them. */
#define xen_mb()  __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include <xen/xen.h>
#include <xen/io/protocols.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/netif.h>

#if defined(__x86_64__)
static const char *abi = "x86_64";
#elif defined(__i386__)
static const char *abi = "x86_32";
#else
#error "layout_check knows only the x86 ABIs"
#endif

/* Struct names start with the family: blkif_... or netif_... */
#define FAMILY(s) (strncmp(#s, "blkif", 5) == 0 ? "blkif" : "netif")
#define FIELD(s, f) \
    printf("layout\t%s\t%s\t%s\t%s\t%zu\t%zu\n", FAMILY(s), abi, #s, #f, \
           offsetof(struct s, f), sizeof(((struct s *)0)->f))
#define SIZE(s) printf("layout\t%s\t%s\t%s\tsizeof\t0\t%zu\n", FAMILY(s), abi, #s, sizeof(struct s))
#define USIZE(u) printf("layout\t%s\t%s\t%s\tsizeof\t0\t%zu\n", FAMILY(u), abi, #u, sizeof(union u))
#define CONST(family, name) printf("const\t%s\t%s\t%lld\n", family, #name, (long long)(name))
#define SCONST(family, name) printf("const\t%s\t%s\t%s\n", family, #name, name)

static const char *family = "blkif";

static void golden(const char *name, const void *bytes, size_t n)
{
    const uint8_t *b = bytes;
    printf("golden\t%s\t%s\t%s\t", family, abi, name);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

static void layouts(void)
{
    FIELD(blkif_request_segment, gref);
    FIELD(blkif_request_segment, first_sect);
    FIELD(blkif_request_segment, last_sect);
    SIZE(blkif_request_segment);

    FIELD(blkif_request, operation);
    FIELD(blkif_request, nr_segments);
    FIELD(blkif_request, handle);
    FIELD(blkif_request, id);
    FIELD(blkif_request, sector_number);
    FIELD(blkif_request, seg);
    SIZE(blkif_request);

    FIELD(blkif_request_discard, operation);
    FIELD(blkif_request_discard, flag);
    FIELD(blkif_request_discard, handle);
    FIELD(blkif_request_discard, id);
    FIELD(blkif_request_discard, sector_number);
    FIELD(blkif_request_discard, nr_sectors);
    SIZE(blkif_request_discard);

    FIELD(blkif_request_indirect, operation);
    FIELD(blkif_request_indirect, indirect_op);
    FIELD(blkif_request_indirect, nr_segments);
    FIELD(blkif_request_indirect, id);
    FIELD(blkif_request_indirect, sector_number);
    FIELD(blkif_request_indirect, handle);
    FIELD(blkif_request_indirect, indirect_grefs);
#ifdef __i386__
    FIELD(blkif_request_indirect, pad);
#endif
    SIZE(blkif_request_indirect);

    FIELD(blkif_response, id);
    FIELD(blkif_response, operation);
    FIELD(blkif_response, status);
    SIZE(blkif_response);

    USIZE(blkif_sring_entry);

    FIELD(netif_tx_request, gref);
    FIELD(netif_tx_request, offset);
    FIELD(netif_tx_request, flags);
    FIELD(netif_tx_request, id);
    FIELD(netif_tx_request, size);
    SIZE(netif_tx_request);

    FIELD(netif_tx_response, id);
    FIELD(netif_tx_response, status);
    SIZE(netif_tx_response);

    FIELD(netif_rx_request, id);
    FIELD(netif_rx_request, pad);
    FIELD(netif_rx_request, gref);
    SIZE(netif_rx_request);

    FIELD(netif_rx_response, id);
    FIELD(netif_rx_response, offset);
    FIELD(netif_rx_response, flags);
    FIELD(netif_rx_response, status);
    SIZE(netif_rx_response);

    FIELD(netif_extra_info, type);
    FIELD(netif_extra_info, flags);
    FIELD(netif_extra_info, u.gso.size);
    FIELD(netif_extra_info, u.gso.type);
    FIELD(netif_extra_info, u.gso.pad);
    FIELD(netif_extra_info, u.gso.features);
    FIELD(netif_extra_info, u.mcast.addr);
    FIELD(netif_extra_info, u.hash.type);
    FIELD(netif_extra_info, u.hash.algorithm);
    FIELD(netif_extra_info, u.hash.value);
    SIZE(netif_extra_info);

    FIELD(xen_netif_ctrl_request, id);
    FIELD(xen_netif_ctrl_request, type);
    FIELD(xen_netif_ctrl_request, data);
    SIZE(xen_netif_ctrl_request);

    FIELD(xen_netif_ctrl_response, id);
    FIELD(xen_netif_ctrl_response, type);
    FIELD(xen_netif_ctrl_response, status);
    FIELD(xen_netif_ctrl_response, data);
    SIZE(xen_netif_ctrl_response);

    USIZE(netif_tx_sring_entry);
    USIZE(netif_rx_sring_entry);
    USIZE(xen_netif_ctrl_sring_entry);
}

static void constants(void)
{
    CONST("blkif", BLKIF_OP_READ);
    CONST("blkif", BLKIF_OP_WRITE);
    CONST("blkif", BLKIF_OP_WRITE_BARRIER);
    CONST("blkif", BLKIF_OP_FLUSH_DISKCACHE);
    CONST("blkif", BLKIF_OP_RESERVED_1);
    CONST("blkif", BLKIF_OP_DISCARD);
    CONST("blkif", BLKIF_OP_INDIRECT);
    CONST("blkif", BLKIF_MAX_SEGMENTS_PER_REQUEST);
    CONST("blkif", BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
    CONST("blkif", BLKIF_DISCARD_SECURE);
    CONST("blkif", BLKIF_RSP_EOPNOTSUPP);
    CONST("blkif", BLKIF_RSP_ERROR);
    CONST("blkif", BLKIF_RSP_OKAY);
    CONST("blkif", VDISK_CDROM);
    CONST("blkif", VDISK_REMOVABLE);
    CONST("blkif", VDISK_READONLY);
    /* The indirect page holds an array of segments; blkif.h sizes it by a 4 KiB page. */
    printf("const\tblkif\tBLKIF_SEGMENTS_PER_INDIRECT_PAGE\t%zu\n", (size_t)4096 / sizeof(struct blkif_request_segment));
    SCONST("blkif", XEN_IO_PROTO_ABI_X86_32);
    SCONST("blkif", XEN_IO_PROTO_ABI_X86_64);

    CONST("netif", XEN_NETIF_NR_SLOTS_MIN);
    CONST("netif", XEN_NETIF_MAX_TX_SIZE);
    CONST("netif", NETTXF_csum_blank);
    CONST("netif", NETTXF_data_validated);
    CONST("netif", NETTXF_more_data);
    CONST("netif", NETTXF_extra_info);
    CONST("netif", NETRXF_data_validated);
    CONST("netif", NETRXF_csum_blank);
    CONST("netif", NETRXF_more_data);
    CONST("netif", NETRXF_extra_info);
    CONST("netif", NETRXF_gso_prefix);
    CONST("netif", XEN_NETIF_EXTRA_TYPE_NONE);
    CONST("netif", XEN_NETIF_EXTRA_TYPE_GSO);
    CONST("netif", XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
    CONST("netif", XEN_NETIF_EXTRA_TYPE_MCAST_DEL);
    CONST("netif", XEN_NETIF_EXTRA_TYPE_HASH);
    CONST("netif", XEN_NETIF_EXTRA_TYPE_MAX);
    CONST("netif", XEN_NETIF_EXTRA_FLAG_MORE);
    CONST("netif", XEN_NETIF_GSO_TYPE_NONE);
    CONST("netif", XEN_NETIF_GSO_TYPE_TCPV4);
    CONST("netif", XEN_NETIF_GSO_TYPE_TCPV6);
    CONST("netif", _XEN_NETIF_CTRL_HASH_TYPE_IPV4);
    CONST("netif", _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    CONST("netif", _XEN_NETIF_CTRL_HASH_TYPE_IPV6);
    CONST("netif", _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP);
    CONST("netif", XEN_NETIF_CTRL_HASH_TYPE_IPV4);
    CONST("netif", XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    CONST("netif", XEN_NETIF_CTRL_HASH_TYPE_IPV6);
    CONST("netif", XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP);
    CONST("netif", XEN_NETIF_CTRL_HASH_ALGORITHM_NONE);
    CONST("netif", XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
    CONST("netif", XEN_NETIF_CTRL_TYPE_INVALID);
    CONST("netif", XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS);
    CONST("netif", XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS);
    CONST("netif", XEN_NETIF_CTRL_TYPE_SET_HASH_KEY);
    CONST("netif", XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE);
    CONST("netif", XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE);
    CONST("netif", XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING);
    CONST("netif", XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM);
    CONST("netif", XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE);
    CONST("netif", XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING);
    CONST("netif", XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING);
    CONST("netif", XEN_NETIF_CTRL_STATUS_SUCCESS);
    CONST("netif", XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    CONST("netif", XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CONST("netif", XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW);
    CONST("netif", NETIF_RSP_DROPPED);
    CONST("netif", NETIF_RSP_ERROR);
    CONST("netif", NETIF_RSP_OKAY);
    CONST("netif", NETIF_RSP_NULL);
}

/*
 * Example values, filled field by field into zeroed structs. The Swift tests build the
 * same values by name (BlkifGoldenTests, NetifGoldenTests) and expect these bytes.
 */
static void blkif_golden(void)
{
    struct blkif_request r;
    struct blkif_request_discard d;
    struct blkif_request_indirect in;
    struct blkif_response p;
    struct blkif_request_segment s;

    memset(&s, 0, sizeof s);
    s.gref = 0xdeadbeef; s.first_sect = 2; s.last_sect = 5;
    golden("segment", &s, sizeof s);

    memset(&r, 0, sizeof r);
    r.operation = BLKIF_OP_READ; r.nr_segments = 3; r.handle = 0x0301;
    r.id = 0x1122334455667788ULL; r.sector_number = 0x12345678ULL;
    r.seg[0].gref = 0x101; r.seg[0].first_sect = 0; r.seg[0].last_sect = 7;
    r.seg[1].gref = 0x102; r.seg[1].first_sect = 1; r.seg[1].last_sect = 6;
    r.seg[2].gref = 0x7fffffff; r.seg[2].first_sect = 3; r.seg[2].last_sect = 3;
    golden("read_3_segments", &r, sizeof r);

    memset(&r, 0, sizeof r);
    r.operation = BLKIF_OP_WRITE; r.nr_segments = BLKIF_MAX_SEGMENTS_PER_REQUEST; r.handle = 51712;
    r.id = 1; r.sector_number = 2048;
    for (int i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) {
        r.seg[i].gref = 0xa000 + i; r.seg[i].first_sect = 0; r.seg[i].last_sect = 7;
    }
    golden("write_11_segments", &r, sizeof r);

    memset(&r, 0, sizeof r);
    r.operation = BLKIF_OP_WRITE_BARRIER; r.nr_segments = 0; r.handle = 51712;
    r.id = 0xffffffffffffffffULL; r.sector_number = 0;
    golden("write_barrier_empty", &r, sizeof r);

    memset(&r, 0, sizeof r);
    r.operation = BLKIF_OP_FLUSH_DISKCACHE; r.nr_segments = 0; r.handle = 51712;
    r.id = 42; r.sector_number = 0;
    golden("flush_empty", &r, sizeof r);

    memset(&r, 0, sizeof r);
    r.operation = BLKIF_OP_FLUSH_DISKCACHE; r.nr_segments = 1; r.handle = 51728;
    r.id = 43; r.sector_number = 8;
    r.seg[0].gref = 9; r.seg[0].first_sect = 0; r.seg[0].last_sect = 0;
    golden("flush_1_segment", &r, sizeof r);

    memset(&d, 0, sizeof d);
    d.operation = BLKIF_OP_DISCARD; d.flag = 0; d.handle = 51712;
    d.id = 0x0102030405060708ULL; d.sector_number = 4096; d.nr_sectors = 0x100000000ULL;
    golden("discard", &d, sizeof d);

    memset(&d, 0, sizeof d);
    d.operation = BLKIF_OP_DISCARD; d.flag = BLKIF_DISCARD_SECURE; d.handle = 1;
    d.id = 77; d.sector_number = 0xfffffffffffffff0ULL; d.nr_sectors = 16;
    golden("discard_secure", &d, sizeof d);

    memset(&in, 0, sizeof in);
    in.operation = BLKIF_OP_INDIRECT; in.indirect_op = BLKIF_OP_READ; in.nr_segments = 600;
    in.id = 0xcafef00d; in.sector_number = 0x100000; in.handle = 51712;
    in.indirect_grefs[0] = 0x200; in.indirect_grefs[1] = 0x201;
    golden("indirect_read_600", &in, sizeof in);

    memset(&in, 0, sizeof in);
    in.operation = BLKIF_OP_INDIRECT; in.indirect_op = BLKIF_OP_WRITE; in.nr_segments = 4096;
    in.id = 5; in.sector_number = 123456789; in.handle = 768;
    for (int i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++)
        in.indirect_grefs[i] = 0x80000000u + i;
    golden("indirect_write_4096", &in, sizeof in);

    memset(&p, 0, sizeof p);
    p.id = 0xfedcba9876543210ULL; p.operation = BLKIF_OP_WRITE; p.status = BLKIF_RSP_OKAY;
    golden("response_okay", &p, sizeof p);

    memset(&p, 0, sizeof p);
    p.id = 3; p.operation = BLKIF_OP_READ; p.status = BLKIF_RSP_ERROR;
    golden("response_error", &p, sizeof p);

    memset(&p, 0, sizeof p);
    p.id = 4; p.operation = BLKIF_OP_WRITE_BARRIER; p.status = BLKIF_RSP_EOPNOTSUPP;
    golden("response_eopnotsupp", &p, sizeof p);
}

static void netif_golden(void)
{
    family = "netif";
    struct netif_tx_request tq;
    struct netif_tx_response tp;
    struct netif_rx_request rq;
    struct netif_rx_response rp;
    struct netif_extra_info x;
    static const uint8_t group[6] = { 0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb };

    memset(&tq, 0, sizeof tq);
    tq.gref = 0x12345678; tq.offset = 0x0a0b; tq.flags = NETTXF_csum_blank | NETTXF_more_data;
    tq.id = 0x0102; tq.size = 1514;
    golden("tx_request", &tq, sizeof tq);

    memset(&tq, 0, sizeof tq);
    tq.gref = 7; tq.offset = 0; tq.flags = NETTXF_data_validated | NETTXF_extra_info;
    tq.id = 0xffff; tq.size = 0xffff;
    golden("tx_request_extra", &tq, sizeof tq);

    memset(&tp, 0, sizeof tp);
    tp.id = 0x0102; tp.status = NETIF_RSP_OKAY;
    golden("tx_response_okay", &tp, sizeof tp);

    memset(&tp, 0, sizeof tp);
    tp.id = 9; tp.status = NETIF_RSP_DROPPED;
    golden("tx_response_dropped", &tp, sizeof tp);

    memset(&tp, 0, sizeof tp);
    tp.id = 10; tp.status = NETIF_RSP_NULL;
    golden("tx_response_null", &tp, sizeof tp);

    memset(&rq, 0, sizeof rq);
    rq.id = 0x0304; rq.gref = 0x89abcdef;
    golden("rx_request", &rq, sizeof rq);

    memset(&rp, 0, sizeof rp);
    rp.id = 0x0304; rp.offset = 0x10; rp.flags = NETRXF_data_validated | NETRXF_extra_info;
    rp.status = 1500;
    golden("rx_response", &rp, sizeof rp);

    memset(&rp, 0, sizeof rp);
    rp.id = 1; rp.offset = 0; rp.flags = 0; rp.status = NETIF_RSP_ERROR;
    golden("rx_response_error", &rp, sizeof rp);

    memset(&x, 0, sizeof x);
    x.type = XEN_NETIF_EXTRA_TYPE_GSO; x.flags = XEN_NETIF_EXTRA_FLAG_MORE;
    x.u.gso.size = 1448; x.u.gso.type = XEN_NETIF_GSO_TYPE_TCPV4; x.u.gso.features = 0;
    golden("extra_gso", &x, sizeof x);

    memset(&x, 0, sizeof x);
    x.type = XEN_NETIF_EXTRA_TYPE_GSO; x.flags = 0;
    x.u.gso.size = 1428; x.u.gso.type = XEN_NETIF_GSO_TYPE_TCPV6; x.u.gso.features = 0x8001;
    golden("extra_gso_v6", &x, sizeof x);

    memset(&x, 0, sizeof x);
    x.type = XEN_NETIF_EXTRA_TYPE_MCAST_ADD; x.flags = 0;
    memcpy(x.u.mcast.addr, group, sizeof group);
    golden("extra_mcast_add", &x, sizeof x);

    memset(&x, 0, sizeof x);
    x.type = XEN_NETIF_EXTRA_TYPE_MCAST_DEL; x.flags = XEN_NETIF_EXTRA_FLAG_MORE;
    memcpy(x.u.mcast.addr, group, sizeof group);
    golden("extra_mcast_del", &x, sizeof x);

    memset(&x, 0, sizeof x);
    x.type = XEN_NETIF_EXTRA_TYPE_HASH; x.flags = 0;
    x.u.hash.type = _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
    x.u.hash.algorithm = XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ;
    /* The value is stored least significant byte first. */
    x.u.hash.value[0] = 0x44; x.u.hash.value[1] = 0x33; x.u.hash.value[2] = 0x22; x.u.hash.value[3] = 0x11;
    golden("extra_hash", &x, sizeof x);
}

int main(void)
{
    layouts();
    constants();
    blkif_golden();
    netif_golden();
    return 0;
}
