#ifndef XENSPLIT_CXEN_H
#define XENSPLIT_CXEN_H
// libxen's grant (libxengnttab: xengnttab_* and xengntshr_*) and event-channel
// (libxenevtchn) interfaces, from the headers libxen-dev installs, plus a silent logger.

#include <stddef.h>
#include <stdint.h>
#include <xengnttab.h>
#include <xenevtchn.h>
#include <xen/grant_table.h>

/// A xentoollog logger that drops every message. libxen's calls report failure through
/// their return value and errno, which XenLinux turns into typed errors; without this,
/// a failed open would also print libxen's own line on stderr.
struct xentoollog_logger *cxen_quiet_logger(void);

/// Field offsets of struct xengnttab_grant_copy_segment as the C compiler lays it out,
/// so tests can check the bytes Swift fills in against the header's layout.
struct cxen_copy_segment_layout {
    size_t size;
    size_t source;
    size_t source_ref;
    size_t source_offset;
    size_t source_domid;
    size_t dest;
    size_t len;
    size_t flags;
    size_t status;
};
struct cxen_copy_segment_layout cxen_copy_segment_layout(void);

#endif
