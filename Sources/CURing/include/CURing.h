#ifndef XENSPLIT_CURING_H
#define XENSPLIT_CURING_H
#include <liburing.h>
#endif
