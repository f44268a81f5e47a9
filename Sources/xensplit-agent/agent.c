// xensplit-agent: the user side of a kernel frontend, for the conformance suite.
//
// The suite plays a backend; to judge a frontend's requests it needs the frontend's user to
// do I/O on demand (Linux's blkfront: its /dev/xvdX; Linux's netfront: its ethN). This
// program runs beside such a frontend (in a domU, on its console) and does what the suite
// asks over a byte stream on stdin/stdout: block reads, writes and flushes, all in flight at
// once, with O_DIRECT so each reaches the ring; raw frames sent and received on an
// interface. The line protocol is Protocols/conformance/agent.md.
//
// C, static, no dependencies: it is copied into a busybox initramfs as it is.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define AGENT_VERSION 1
// A virtio-net header (struct virtio_net_hdr) goes before each frame on a PACKET_VNET_HDR socket.
#define VNET_HEADER 10
#define MAX_FRAME 65536
// Bounds on what one command may ask, so a garbled line cannot exhaust the guest.
#define MAX_BATCH 512
#define MAX_IO (1 << 20)

static pthread_mutex_t output_lock = PTHREAD_MUTEX_INITIALIZER;
// Batches still running: at the end of the input the agent waits for them to answer.
static pthread_mutex_t batches_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t batches_done = PTHREAD_COND_INITIALIZER;
static int batches_running;

// Writes all of `data` to stdout, retrying short writes (a console takes what fits).
static void write_all(const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = write(STDOUT_FILENO, data, length);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            exit(3);
        }
        data += n;
        length -= (size_t)n;
    }
}

// Writes one reply line, "XSA SEQ ...", whole: replies from batch threads never interleave.
static void reply(unsigned long seq, const char *format, ...) {
    char *body = NULL;
    va_list args;
    va_start(args, format);
    int n = vasprintf(&body, format, args);
    va_end(args);
    if (n < 0) exit(3);
    char *line = NULL;
    n = asprintf(&line, "XSA %lu %s\n", seq, body);
    if (n < 0) exit(3);
    pthread_mutex_lock(&output_lock);
    write_all(line, (size_t)n);
    pthread_mutex_unlock(&output_lock);
    free(line);
    free(body);
}

// --- encodings ---------------------------------------------------------------------------

static const char base64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const uint8_t *data, size_t length) {
    char *out = malloc((length + 2) / 3 * 4 + 1);
    if (!out) exit(3);
    size_t o = 0;
    for (size_t i = 0; i < length; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < length) v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < length) v |= data[i + 2];
        out[o++] = base64_alphabet[(v >> 18) & 63];
        out[o++] = base64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < length ? base64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < length ? base64_alphabet[v & 63] : '=';
    }
    out[o] = 0;
    return out;
}

static int base64_value(char c) {
    const char *p = c ? strchr(base64_alphabet, c) : NULL;
    return p ? (int)(p - base64_alphabet) : -1;
}

// Decodes `text` into `out` (room for `room` bytes); returns the length, or -1 when it is
// not base64 or too long.
static long base64_decode(const char *text, uint8_t *out, size_t room) {
    size_t length = strlen(text);
    if (length % 4 != 0) return -1;
    size_t o = 0;
    for (size_t i = 0; i < length; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = text[i + k] == '=' && i + 4 == length && k >= 2 ? 0 : base64_value(text[i + k]);
            if (v[k] < 0) return -1;
        }
        uint32_t word = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t take = text[i + 2] == '=' ? 1 : text[i + 3] == '=' ? 2 : 3;
        if (o + take > room) return -1;
        out[o++] = (uint8_t)(word >> 16);
        if (take > 1) out[o++] = (uint8_t)(word >> 8);
        if (take > 2) out[o++] = (uint8_t)word;
    }
    return (long)o;
}

static char *hex_encode(const uint8_t *data, size_t length) {
    char *out = malloc(length * 2 + 1);
    if (!out) exit(3);
    for (size_t i = 0; i < length; i++) sprintf(out + 2 * i, "%02x", data[i]);
    out[length * 2] = 0;
    return out;
}

// Decodes hex `text` into `out`; returns the length or -1.
static long hex_decode(const char *text, uint8_t *out, size_t room) {
    size_t length = strlen(text);
    if (length % 2 != 0 || length / 2 > room) return -1;
    for (size_t i = 0; i < length; i += 2) {
        unsigned value;
        if (sscanf(text + i, "%2x", &value) != 1) return -1;
        out[i / 2] = (uint8_t)value;
    }
    return (long)(length / 2);
}

// --- block I/O -----------------------------------------------------------------------------

enum op_kind { OP_READ, OP_WRITE, OP_FLUSH };

struct op {
    enum op_kind kind;
    uint64_t offset;
    size_t length;
    uint8_t *buffer;  // page-aligned, as O_DIRECT needs
    int fd;
    const char *open_error;  // why the device could not be opened for this op, or NULL
    char error[360];
    size_t done;
};

struct batch {
    unsigned long seq;
    char device[256];
    int count;
    struct op *ops;
};

static void *run_op(void *argument) {
    struct op *op = argument;
    if (op->open_error) {
        snprintf(op->error, sizeof op->error, "%s", op->open_error);
        return NULL;
    }
    switch (op->kind) {
    case OP_READ:
    case OP_WRITE:
        while (op->done < op->length) {
            ssize_t n = op->kind == OP_READ
                ? pread(op->fd, op->buffer + op->done, op->length - op->done, (off_t)(op->offset + op->done))
                : pwrite(op->fd, op->buffer + op->done, op->length - op->done, (off_t)(op->offset + op->done));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                snprintf(op->error, sizeof op->error, "%s: %s", op->kind == OP_READ ? "pread" : "pwrite", strerror(errno));
                return NULL;
            }
            if (n == 0) {
                // The device ends before the operation does.
                snprintf(op->error, sizeof op->error, "short %s: %zu of %zu bytes (the device ends)",
                         op->kind == OP_READ ? "read" : "write", op->done, op->length);
                return NULL;
            }
            op->done += (size_t)n;
        }
        break;
    case OP_FLUSH:
        if (fdatasync(op->fd) != 0) snprintf(op->error, sizeof op->error, "fdatasync: %s", strerror(errno));
        break;
    }
    return NULL;
}

// Opens the disk; a node not there yet is waited for, up to 10 s: a kernel frontend adds
// its disk just after it reports Connected, so the first batch can come before the node.
static int open_disk(const char *path, int flags) {
    for (int tries = 0;; tries++) {
        int fd = open(path, flags);
        if (fd >= 0 || (errno != ENOENT && errno != ENXIO) || tries == 200) return fd;
        usleep(50000);
    }
}

// Runs every op of the batch at once, one thread each, then replies in order.
static void *run_batch(void *argument) {
    struct batch *batch = argument;
    char open_error[320] = "";
    int fd = open_disk(batch->device, O_RDWR | O_DIRECT | O_CLOEXEC);
    int read_only = 0;
    if (fd < 0 && (errno == EROFS || errno == EACCES)) {
        // A read-only disk: reads go on, writes and flushes get the refusal the user got.
        snprintf(open_error, sizeof open_error, "open %s read-write: %s", batch->device, strerror(errno));
        fd = open_disk(batch->device, O_RDONLY | O_DIRECT | O_CLOEXEC);
        read_only = 1;
    }
    if (fd < 0) snprintf(open_error, sizeof open_error, "open %s: %s", batch->device, strerror(errno));
    pthread_t *threads = calloc((size_t)batch->count, sizeof *threads);
    int *started = calloc((size_t)batch->count, sizeof *started);
    if (!threads || !started) exit(3);
    for (int i = 0; i < batch->count; i++) {
        struct op *op = &batch->ops[i];
        op->fd = fd;
        if (fd < 0 || (read_only && op->kind != OP_READ)) op->open_error = open_error;
        started[i] = pthread_create(&threads[i], NULL, run_op, op) == 0;
        if (!started[i]) run_op(op);
    }
    for (int i = 0; i < batch->count; i++) {
        if (started[i]) pthread_join(threads[i], NULL);
    }
    if (fd >= 0) close(fd);
    for (int i = 0; i < batch->count; i++) {
        struct op *op = &batch->ops[i];
        if (op->error[0]) {
            reply(batch->seq, "%d error %s", i, op->error);
        } else if (op->kind == OP_READ) {
            char *text = base64_encode(op->buffer, op->length);
            reply(batch->seq, "%d ok %s", i, text);
            free(text);
        } else {
            reply(batch->seq, "%d ok", i);
        }
        free(op->buffer);
    }
    reply(batch->seq, "done %d", batch->count);
    free(threads);
    free(started);
    free(batch->ops);
    free(batch);
    pthread_mutex_lock(&batches_lock);
    batches_running--;
    pthread_cond_broadcast(&batches_done);
    pthread_mutex_unlock(&batches_lock);
    return NULL;
}

static char *read_line(void);

// "io DEVICE N", then N lines "r OFFSET LENGTH", "w OFFSET BASE64" or "f". The batch runs
// on a thread of its own; the next command is read meanwhile.
static void command_io(unsigned long seq, const char *arguments) {
    struct batch *batch = calloc(1, sizeof *batch);
    if (!batch) exit(3);
    batch->seq = seq;
    if (sscanf(arguments, "%255s %d", batch->device, &batch->count) != 2 || batch->count < 1 || batch->count > MAX_BATCH) {
        // The op lines that follow are still read, so the stream stays in step.
        int skip = 0;
        sscanf(arguments, "%*s %d", &skip);
        for (int i = 0; i < skip && i < MAX_BATCH; i++) free(read_line());
        reply(seq, "error io wants DEVICE and 1 to %d operations: %s", MAX_BATCH, arguments);
        free(batch);
        return;
    }
    batch->ops = calloc((size_t)batch->count, sizeof *batch->ops);
    if (!batch->ops) exit(3);
    char problem[200] = "";
    for (int i = 0; i < batch->count; i++) {
        char *line = read_line();
        if (!line) exit(0);
        struct op *op = &batch->ops[i];
        unsigned long long offset = 0, length = 0;
        char *text = NULL;
        if (line[0] == 'f' && line[1] == 0) {
            op->kind = OP_FLUSH;
        } else if (sscanf(line, "r %llu %llu", &offset, &length) == 2 && length > 0 && length <= MAX_IO) {
            op->kind = OP_READ;
            op->offset = offset;
            op->length = (size_t)length;
        } else if (sscanf(line, "w %llu %ms", &offset, &text) == 2) {
            op->kind = OP_WRITE;
            op->offset = offset;
        } else if (!problem[0]) {
            snprintf(problem, sizeof problem, "operation %d is not r OFFSET LENGTH, w OFFSET BASE64 or f: %.60s", i, line);
        }
        if (op->kind != OP_FLUSH && !problem[0]) {
            size_t room = op->kind == OP_READ ? op->length : strlen(text) / 4 * 3;
            if (room > MAX_IO) room = MAX_IO + 1;  // base64_decode then says it is too long
            size_t pages = (room + 4095) / 4096 * 4096;
            if (posix_memalign((void **)&op->buffer, 4096, pages ? pages : 4096) != 0) exit(3);
            memset(op->buffer, 0, pages ? pages : 4096);
            if (op->kind == OP_WRITE) {
                long n = base64_decode(text, op->buffer, room);
                if (n <= 0) snprintf(problem, sizeof problem, "operation %d: the data is not base64 of 1 to %d bytes", i, MAX_IO);
                else op->length = (size_t)n;
            }
        }
        free(text);
        free(line);
    }
    if (problem[0]) {
        for (int i = 0; i < batch->count; i++) free(batch->ops[i].buffer);
        free(batch->ops);
        free(batch);
        reply(seq, "error %s", problem);
        return;
    }
    pthread_mutex_lock(&batches_lock);
    batches_running++;
    pthread_mutex_unlock(&batches_lock);
    pthread_t thread;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attributes, run_batch, batch) != 0) run_batch(batch);
    pthread_attr_destroy(&attributes);
}

// --- frames --------------------------------------------------------------------------------

static int packet_socket = -1;
static char link_name[IF_NAMESIZE];

// The interface named `name`, or whose MAC address is `name` (aa:bb:cc:dd:ee:ff).
static int find_interface(const char *name, char out[IF_NAMESIZE]) {
    if (strlen(name) != 17 || name[2] != ':') {
        if (strlen(name) >= IF_NAMESIZE) return -1;
        strcpy(out, name);
        return if_nametoindex(name) ? 0 : -1;
    }
    DIR *directory = opendir("/sys/class/net");
    if (!directory) return -1;
    struct dirent *entry;
    int found = -1;
    while (found < 0 && (entry = readdir(directory))) {
        if (entry->d_name[0] == '.' || strlen(entry->d_name) >= IF_NAMESIZE) continue;
        char path[300], address[32] = "";
        snprintf(path, sizeof path, "/sys/class/net/%s/address", entry->d_name);
        FILE *file = fopen(path, "r");
        if (!file) continue;
        if (fgets(address, sizeof address, file) && strncasecmp(address, name, 17) == 0) {
            strcpy(out, entry->d_name);
            found = 0;
        }
        fclose(file);
    }
    closedir(directory);
    return found;
}

static int interface_flags(const char *name, short *flags, int set) {
    int control = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (control < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, name, IF_NAMESIZE - 1);
    int result;
    if (set) {
        request.ifr_flags = *flags;
        result = ioctl(control, SIOCSIFFLAGS, &request);
    } else {
        result = ioctl(control, SIOCGIFFLAGS, &request);
        *flags = request.ifr_flags;
    }
    int saved = errno;
    close(control);
    errno = saved;
    return result;
}

// "link NAME-OR-MAC": IPv6 off (so the guest's own stack sends nothing unasked), the link
// up, and a packet socket with virtio-net headers bound to it.
static void command_link(unsigned long seq, const char *arguments) {
    char name[IF_NAMESIZE];
    if (find_interface(arguments, name) != 0) {
        reply(seq, "error no interface %s", arguments);
        return;
    }
    char path[300];
    snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
    int knob = open(path, O_WRONLY | O_CLOEXEC);
    if (knob >= 0) {
        if (write(knob, "1", 1) < 0) { /* no IPv6 in this kernel: nothing to silence */ }
        close(knob);
    }
    short flags = 0;
    if (interface_flags(name, &flags, 0) != 0) {
        reply(seq, "error flags of %s: %s", name, strerror(errno));
        return;
    }
    flags |= IFF_UP;
    if (interface_flags(name, &flags, 1) != 0) {
        reply(seq, "error bringing %s up: %s", name, strerror(errno));
        return;
    }
    int index = (int)if_nametoindex(name);
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    int on = 1;
    struct sockaddr_ll address;
    memset(&address, 0, sizeof address);
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(ETH_P_ALL);
    address.sll_ifindex = index;
    if (fd < 0 || setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &on, sizeof on) != 0
        || bind(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        reply(seq, "error packet socket on %s: %s", name, strerror(errno));
        if (fd >= 0) close(fd);
        return;
    }
    if (packet_socket >= 0) close(packet_socket);
    packet_socket = fd;
    strcpy(link_name, name);
    reply(seq, "ok %s %d", name, index);
}

// "running": whether the linked interface is operationally up (IFF_RUNNING).
static void command_running(unsigned long seq) {
    short flags = 0;
    if (!link_name[0]) reply(seq, "error no interface linked");
    else if (interface_flags(link_name, &flags, 0) != 0) reply(seq, "error flags of %s: %s", link_name, strerror(errno));
    else reply(seq, "ok %d", (flags & IFF_RUNNING) ? 1 : 0);
}

// "send HEX": the frame, behind an all-zero virtio-net header, out of the interface.
static void command_send(unsigned long seq, const char *arguments) {
    static uint8_t packet[VNET_HEADER + MAX_FRAME];
    if (packet_socket < 0) {
        reply(seq, "error no interface linked");
        return;
    }
    memset(packet, 0, VNET_HEADER);
    long length = hex_decode(arguments, packet + VNET_HEADER, MAX_FRAME);
    if (length < 14) {
        reply(seq, "error send wants a frame of 14 to %d bytes in hex", MAX_FRAME);
        return;
    }
    ssize_t sent = send(packet_socket, packet, VNET_HEADER + (size_t)length, 0);
    if (sent != VNET_HEADER + length) reply(seq, "error writing a frame on %s: %s", link_name, sent < 0 ? strerror(errno) : "short write");
    else reply(seq, "ok");
}

// "recv MILLISECONDS": the next frame that came in (not one going out), with its header.
static void command_recv(unsigned long seq, const char *arguments) {
    static uint8_t packet[VNET_HEADER + MAX_FRAME];
    long milliseconds = atol(arguments);
    if (packet_socket < 0) {
        reply(seq, "error no interface linked");
        return;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= milliseconds) break;
        struct pollfd p = {.fd = packet_socket, .events = POLLIN};
        int ready = poll(&p, 1, (int)(milliseconds - elapsed));
        if (ready < 0 && errno != EINTR) {
            reply(seq, "error poll: %s", strerror(errno));
            return;
        }
        if (ready <= 0) continue;
        struct sockaddr_ll from;
        socklen_t length = sizeof from;
        ssize_t n = recvfrom(packet_socket, packet, sizeof packet, MSG_DONTWAIT, (struct sockaddr *)&from, &length);
        if (n < VNET_HEADER || from.sll_pkttype == PACKET_OUTGOING) continue;
        char *header = hex_encode(packet, VNET_HEADER);
        char *frame = hex_encode(packet + VNET_HEADER, (size_t)n - VNET_HEADER);
        reply(seq, "frame %s %s", header, frame);
        free(header);
        free(frame);
        return;
    }
    reply(seq, "none");
}

// "drain": drops what the socket holds.
static void command_drain(unsigned long seq) {
    static uint8_t packet[VNET_HEADER + MAX_FRAME];
    int dropped = 0;
    while (packet_socket >= 0 && recv(packet_socket, packet, sizeof packet, MSG_DONTWAIT) >= 0) dropped++;
    reply(seq, "ok %d", dropped);
}

// --- the loop ------------------------------------------------------------------------------

// The next line from stdin, without its end ("\n", and "\r" a console may add); NULL at the end.
static char *read_line(void) {
    char *line = NULL;
    size_t room = 0;
    ssize_t n = getline(&line, &room, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    return line;
}

int main(void) {
    // A console in raw mode: no echo (the suite would read its own commands back) and no
    // line editing or CR/LF translation.
    struct termios mode;
    if (tcgetattr(STDIN_FILENO, &mode) == 0) {
        cfmakeraw(&mode);
        tcsetattr(STDIN_FILENO, TCSANOW, &mode);
    }
    reply(0, "ready xensplit-agent %d", AGENT_VERSION);
    char *line;
    while ((line = read_line())) {
        unsigned long seq = 0;
        int used = 0;
        char verb[16] = "";
        // Anything that is not "SEQ VERB ..." is noise on the line (a console's own output).
        if (sscanf(line, "%lu %15s %n", &seq, verb, &used) >= 2 && seq > 0) {
            const char *arguments = line + used;
            if (strcmp(verb, "hello") == 0) reply(seq, "ok xensplit-agent %d %s", AGENT_VERSION, arguments);
            else if (strcmp(verb, "io") == 0) command_io(seq, arguments);
            else if (strcmp(verb, "link") == 0) command_link(seq, arguments);
            else if (strcmp(verb, "running") == 0) command_running(seq);
            else if (strcmp(verb, "send") == 0) command_send(seq, arguments);
            else if (strcmp(verb, "recv") == 0) command_recv(seq, arguments);
            else if (strcmp(verb, "drain") == 0) command_drain(seq);
            else reply(seq, "error unknown command %s", verb);
        }
        free(line);
    }
    pthread_mutex_lock(&batches_lock);
    while (batches_running > 0) pthread_cond_wait(&batches_done, &batches_lock);
    pthread_mutex_unlock(&batches_lock);
    return 0;
}
