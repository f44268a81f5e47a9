// A frontend and a backend exchanging requests over a one-page io/ring.h ring, using only
// the public XenRing and SharedMemory API. Run: swift run ring-ping-pong
import SharedMemory
import XenRing

// One page of shared memory; with Xen it would be a granted page, here it is anonymous.
let page = try MemoryRegion.anonymous(pages: 1)
// Slots as large as the bigger of request (16 bytes here) and response (8 bytes).
let shared = try SharedRing(memory: page.view, entrySize: 16)
var front = FrontRing(initializing: shared)
var back = BackRing(shared)
print("ring of \(shared.size) slots")

// The frontend queues three requests: an id and an operand.
for id in UInt64(1)...3 {
    let slot = front.requestSlot(front.requestProducerPrivate)
    slot.store(id, at: 0)
    slot.store(id * 10, at: 8)
    front.requestProducerPrivate &+= 1
}
if front.pushRequestsAndCheckNotify() { print("frontend: notify the backend") }

// The backend copies each request out once, validates, and answers with its id.
let end = try back.checkedRequestProducer()
while back.requestConsumer != end, !back.requestConsumerOverflow(back.requestConsumer) {
    let slot = back.requestSlot(back.requestConsumer)
    let id = slot.load(UInt64.self, at: 0)
    let operand = slot.load(UInt64.self, at: 8)
    back.requestConsumer &+= 1
    let reply = back.responseSlot(back.responseProducerPrivate)
    reply.store(id, at: 0)
    back.responseProducerPrivate &+= 1
    print("backend: request \(id) operand \(operand)")
}
if back.pushResponsesAndCheckNotify() { print("backend: notify the frontend") }
if try !back.finalCheckForRequests() { print("backend: idle, will be notified of the next request") }

// The frontend collects the responses.
let last = try front.checkedResponseProducer()
while front.responseConsumer != last {
    print("frontend: response for request \(front.responseSlot(front.responseConsumer).load(UInt64.self, at: 0))")
    front.responseConsumer &+= 1
}
