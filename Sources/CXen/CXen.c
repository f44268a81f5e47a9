#include "CXen.h"
#include <stdarg.h>
#include <xentoollog.h>

static void quiet_vmessage(struct xentoollog_logger *logger, xentoollog_level level, int errnoval,
                           const char *context, const char *format, va_list al) {
    (void)logger; (void)level; (void)errnoval; (void)context; (void)format; (void)al;
}

static void quiet_destroy(struct xentoollog_logger *logger) { (void)logger; }

// libxen never destroys a logger it was handed, and only calls vmessage; progress may be null.
static struct xentoollog_logger quiet = {
    .vmessage = quiet_vmessage,
    .progress = NULL,
    .destroy = quiet_destroy,
};

struct xentoollog_logger *cxen_quiet_logger(void) { return &quiet; }

struct cxen_copy_segment_layout cxen_copy_segment_layout(void) {
    struct cxen_copy_segment_layout l = {
        .size = sizeof(xengnttab_grant_copy_segment_t),
        .source = offsetof(xengnttab_grant_copy_segment_t, source),
        .source_ref = offsetof(xengnttab_grant_copy_segment_t, source.foreign.ref),
        .source_offset = offsetof(xengnttab_grant_copy_segment_t, source.foreign.offset),
        .source_domid = offsetof(xengnttab_grant_copy_segment_t, source.foreign.domid),
        .dest = offsetof(xengnttab_grant_copy_segment_t, dest),
        .len = offsetof(xengnttab_grant_copy_segment_t, len),
        .flags = offsetof(xengnttab_grant_copy_segment_t, flags),
        .status = offsetof(xengnttab_grant_copy_segment_t, status),
    };
    return l;
}
