#!/usr/bin/env python3
"""Writes the fuzz seed inputs, per target, into OUTDIR/TARGET/: the golden vectors of
Protocols/ (blkif and netif structs per ABI, xenstore messages, xl vdev names) and the
spec examples of the DISKSPEC/VIFSPEC tests, wrapped in the input format of each target
(see its doc comment in Sources/FuzzTargets), plus a few scripts that walk each scripted
target's honest path once. scripts/fuzz.sh --seed merges them into Fuzz/corpus.

Usage: Fuzz/seeds.py OUTDIR"""
import os, re, struct, sys, warnings

warnings.simplefilter("ignore", DeprecationWarning)  # Swift's "\\(" in the quoted examples

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
out = sys.argv[1]

def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)

def table(name):
    rows = []
    for line in open(os.path.join(root, "Protocols", name)):
        if line.startswith("#") or not line.strip():
            continue
        rows.append(line.rstrip("\n").split("\t"))
    return rows[1:] if rows and rows[0][0] == "abi" else rows

# blkif: choice byte (ABI index; 4096 indirect segments offered), slot, indirect page.
abi_index = {"x86_32": 1, "x86_64": 2}
indirect_page = b"".join(struct.pack("<IBBH", 0x100 + i, 0, 7, 0) for i in range(64))
for abi, name, hexa in table("blkif-golden.tsv"):
    if name == "segment":
        continue
    slot = bytes.fromhex(hexa)
    page = indirect_page if name.startswith("indirect") else b""
    put("blkif", f"{abi}-{name}", bytes([12 + abi_index[abi]]) + slot + page)
    if abi == "x86_64":  # the host's own layout, under the native ABI
        put("blkif", f"native-{name}", bytes([12]) + slot + page)

# netif: the guest's tx slots (a golden request, then zeroes), one published, then a frame.
tcp4 = bytes.fromhex("0216" "3e000001" "0216" "3e000002" "0800"
                     "4500002800000000400600000a0000010a000002"
                     "3039005000000000000000005002ffff00000000")
tx_area = 256 * 12
rows = {(r[0], r[1]): bytes.fromhex(r[2]) for r in table("netif-golden.tsv")}
for abi in ("x86_32", "x86_64"):
    request = bytearray(rows[(abi, "tx_request")])
    request[6:8] = struct.pack("<H", 1)  # flags: checksum blank only (one slot)
    struct.pack_into("<H", request, 10, len(tcp4))
    slots = bytes(request) + b"\0" * (tx_area - len(request))
    put("netif", f"{abi}-tx_request", slots + b"\x01" + tcp4)

# xenstore: identity (toolstack), piece size, then every golden request in turn.
requests = [bytes.fromhex(line.split()[-1]) for line in open(os.path.join(root, "Protocols", "xenstore-golden.txt"))
            if not line.startswith("#") and line.split()[1:2] == ["request"]]
for i, message in enumerate(requests):
    put("xenstore", f"golden-{i:02}", b"\x00\x3f" + message)
put("xenstore", "golden-all", b"\x00\x10" + b"".join(requests))

# diskspec and vifspec: the test suites' examples (accepted and refused), the vdev names.
def quoted(path, pattern):
    text = open(os.path.join(root, path)).read()
    return sorted(set(m.encode().decode("unicode_escape") for m in re.findall(pattern, text)))
for i, spec in enumerate(quoted("Tests/XenLocalTests/DiskSpecTests.swift", r'(?:spec: |\(\s*)"((?:[^"\\]|\\.)*)"')):
    put("diskspec", f"test-{i:02}", spec.encode())
for row in table("xl-vdev.tsv"):
    if row[0] != "vdev":
        put("diskspec", f"vdev-{row[0]}", row[0].encode())
for i, spec in enumerate(quoted("Tests/XenLocalTests/VifSpecTests.swift", r'"((?:[^"\\\n]|\\.)*=(?:[^"\\\n]|\\.)*)"')):
    put("vifspec", f"test-{i:02}", spec.encode())

# nbd: a client's whole byte stream: flags, NBD_OPT_GO, then requests, then disconnect.
def option(code, data):
    return b"IHAVEOPT" + struct.pack(">II", code, len(data)) + data
def request(command, cookie, offset, length, flags=0, payload=b""):
    return struct.pack(">IHHQQI", 0x25609513, flags, command, cookie, offset, length) + payload
go = option(7, struct.pack(">I", 4) + b"fuzz" + struct.pack(">HH", 1, 3))
transmission = (request(1, 1, 0, 512, 1, b"\xa5" * 512) + request(0, 2, 0, 512) + request(3, 3, 0, 0)
                + request(4, 4, 4096, 4096) + request(6, 5, 8192, 1024, 2) + request(0, 6, 65536 - 512, 1024)
                + request(2, 7, 0, 0))
put("nbd", "go-transmission", struct.pack(">I", 3) + go + transmission)
put("nbd", "list-info-abort", struct.pack(">I", 3) + option(3, b"") + option(6, struct.pack(">I", 0) + struct.pack(">H", 0))
    + option(8, b"") + option(2, b""))
put("nbd", "export-name", struct.pack(">I", 1) + option(1, b"fuzz") + request(0, 1, 0, 4096) + request(2, 2, 0, 0))

# hypervisor: identity byte (0: dom0, else the guest), piece size, then requests.
def message(kind, payload, tag=1):
    return struct.pack("<IIIi", kind, tag, len(payload), 0) + payload
guest_session = (message(1, struct.pack("<I", 1), 1) + message(2, struct.pack("<HBBI", 0, 1, 0, 2), 2)
                 + message(9, struct.pack("<H", 0), 3) + message(6, struct.pack("<I", 1), 4)
                 + message(8, struct.pack("<I", 1) + struct.pack("<HHII", 0, 0, 0, 0) + struct.pack("<HHII", 0, 0, 0, 8)
                           + struct.pack("<H", 16) + b"\0\0", 5)
                 + message(3, struct.pack("<I", 0), 6) + message(14, b"", 7))
put("hypervisor", "guest-session", b"\x01\x40" + guest_session)
dom0_session = (message(1, struct.pack("<I", 1), 1) + message(4, struct.pack("<HBBI", 1, 1, 0, 1) + struct.pack("<I", 8), 2)
                + message(5, struct.pack("<Q", 1), 3) + message(10, struct.pack("<HHI", 1, 0, 1), 4)
                + message(11, struct.pack("<I", 1), 5) + message(12, b"other", 6) + message(15, b"", 7)
                + message(13, struct.pack("<H", 2), 8))
put("hypervisor", "dom0-session", b"\x00\x07" + dom0_session)

# Scripted targets: one honest pass each (opcodes as in each target's switch).
# blkback: abi, ring pages, indirect, slots, read-only, persistent, grants; then a read
# request (op 1), publish (2), service (3), complete (4), push (5), frontend takes (9).
read_request = bytes([1, 0, 1, 0, 0, 0, 5, 0, 0, 7, 2, 0, 1, 0, 3])
put("blkback", "read-honest", bytes([2, 0, 1, 3, 1, 1, 4]) + read_request + bytes([2, 0, 3, 4, 0, 0, 5, 9]))
# netback: features, tx buffers, rx buffers; a tx request (op 1: flags, offset, size, grant,
# id) published (3), an rx buffer posted (4) and published (5), service (6), the TAP write
# and two reads complete (7: count, then per completion its pick and for a read its frame),
# service (6), push (8), the frontend takes its responses (9).
tx = bytes([1, 0, 1, 10, 1, 6, 0, 0, 9])
frame = bytes([1, 1, 10, 1, 0, 0, 0, 0])
# netback rx alone: one tx and two rx buffers; post an rx buffer (4) and publish (5); service
# (6) polls the TAP queue; the poll completes (7) with a frame written to the queue's TAP
# socket; service reads and delivers it, push (8), the frontend takes it (9).
put("netback", "rx-delivered", bytes([0x1f, 0, 1, 4, 3, 0, 0, 5, 0, 6, 7, 0, 0]) + frame + bytes([6, 8, 9]))
put("netback", "tx-rx-honest", bytes([0x1f, 3, 1]) + tx + bytes([3, 0, 4, 3, 0, 0, 5, 0, 6])
    + bytes([7, 2, 0, 1, 0]) + frame + bytes([0]) + frame + bytes([6, 8, 9]))
# blkfront: abi, features, depth; ring 0: queue a read (0), send (1), backend takes (2),
# answers (3), publishes (4), frontend takes (6).
# The answer's bytes: pick, id, operation, the status table's last entry (built before the
# index is read), the index (0: OKAY).
put("blkfront", "read-answered", bytes([2, 0x07, 4]) + bytes([0, 0, 3, 1, 0, 0]) + bytes([0, 1, 0, 2])
    + bytes([0, 3, 0, 1, 1, 0, 0]) + bytes([0, 4, 0, 0, 6]))
# netfront: features, tx pages; post rx (1), push (2), backend takes rx (7), answers with
# 78 bytes at offset 0 (8), publishes (11), frontend takes rx into the sink (4); a frame
# (0), push, backend takes tx (5), answers okay (6), publishes (10), frontend takes tx (3).
put("netfront", "rx-tx-answered", bytes([0x0f, 4, 1, 2, 7, 8, 1, 1, 4, 1, 0, 11, 0, 4, 1])
    + bytes([0]) + frame + bytes([2, 5, 6, 1, 0, 10, 0, 3]))
# ring: one page, 64-byte slots; produce, backend drains, answers, frontend consumes.
put("ring", "honest", bytes([0, 60, 2, 4, 0, 3, 4, 4, 6, 7]))
# netifctrl: four queues; set flags, set key, set mapping size, set mapping, then a frame.
put("netifctrl", "hash-setup", bytes([3, 2, 0, 0x3f, 0, 0, 0, 0, 0, 4, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + tcp4)
