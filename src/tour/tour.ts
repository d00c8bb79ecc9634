// The guided tour: one frame out of the guest and one frame into it, through
// the real device and the in-process driver, recorded step by step with the
// ring memory at each step. The TAP is the socket-pair stand-in (same native
// I/O as a TAP, no privileges needed); the tour plays the host on its far end.
import { NetDriver } from '../driver/net-driver.js';
import { NetDevice } from '../net/device.js';
import { featureNames } from '../net/features.js';
import { Tap, type TapPeer } from '../tap/tap.js';
import { descFlagNames, statusNames, traceSection } from '../trace/format.js';
import { Tracer, type TraceEvent } from '../trace/trace.js';
import { parseIpv4 } from '../util/addr.js';
import { buildArp, describeFrame } from '../util/packet.js';
import { snapshotRing, type RingSnapshot } from './snapshot.js';

export interface TourStep {
  title: string;
  /** The spec section(s) the step follows. */
  section: string;
  text: string[];
  /** The queue's memory at this step, and at the step it is compared with. */
  ring?: { snapshot: RingSnapshot; before?: RingSnapshot };
  /** Further lines: descriptors walked, bytes. */
  detail?: string[];
}

interface Moment {
  e: TraceEvent;
  snap: RingSnapshot | null;
  bytes?: Uint8Array;
}

const GUEST_MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);
const HOST_MAC = Uint8Array.of(0x02, 0x00, 0x00, 0x00, 0x00, 0x01);
const GUEST_IP = parseIpv4('198.18.0.2');
const HOST_IP = parseIpv4('198.18.0.1');
const QUEUE_NAMES = ['receiveq1', 'transmitq1', 'controlq'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function hexdump(bytes: Uint8Array, from = 0): string[] {
  const out: string[] = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = Array.from(bytes.subarray(i, i + 16), (b) => b.toString(16).padStart(2, '0')).join(' ');
    out.push(`${(from + i).toString(16).padStart(4, '0')}  ${row}`);
  }
  return out;
}

/** The device, the driver and the far end of the stand-in TAP, with every trace event recorded with its ring. */
interface TourRig {
  peer: TapPeer;
  driver: NetDriver;
  timeline: Moment[];
  /** Queue q's memory now, or null before it is ready. */
  snap: (q: number) => RingSnapshot | null;
  /** Frames the driver received. */
  received: Uint8Array[];
  close(): void;
}

function tourRig(layout: 'split' | 'packed'): TourRig {
  const { tap, peers } = Tap.socketPair({ name: 'tour0' });
  const peer = peers[0] as TapPeer;
  const tracer = new Tracer();
  const timeline: Moment[] = [];
  let driver!: NetDriver;
  const dev = new NetDevice({
    tap,
    mac: GUEST_MAC,
    interrupt: (k, q) => driver.interrupt(k, q),
    features: { RING_PACKED: layout === 'packed', MRG_RXBUF: true, EVENT_IDX: true },
    trace: tracer,
  });
  const snap = (q: number): RingSnapshot | null => {
    const dq = dev.queues[q];
    return dq ? snapshotRing(dq.mem, dq.layout, dq.addresses, QUEUE_NAMES[q] ?? `queue ${q}`) : null;
  };
  let lastRxBuffer = -1;
  tracer.subscribe((e) => {
    const m: Moment = { e: structuredClone(e), snap: 'queue' in e && e.queue >= 0 ? snap(e.queue) : null };
    if (e.type === 'pop' && e.queue === 0 && lastRxBuffer < 0) lastRxBuffer = e.descriptors[0]?.addr ?? -1;
    // The received frame as it lies in the guest's buffer, header first.
    if (e.type === 'tap_read' && lastRxBuffer >= 0) m.bytes = dev.queues[0]!.mem.view(lastRxBuffer, 12 + 42).slice();
    timeline.push(m);
  });
  driver = new NetDriver(dev, { queueSize: 4, rxBufferSize: 2048 });
  const received: Uint8Array[] = [];
  driver.onFrame = (f) => received.push(f.frame);
  const close = () => {
    dev.close();
    tap.close();
    peer.close();
  };
  return { peer, driver, timeline, snap, received, close };
}

/** Runs the tour's two frames and returns its steps. Queues of 4 entries keep the tables short. */
export async function recordTour(layout: 'split' | 'packed'): Promise<TourStep[]> {
  const r = tourRig(layout);
  const packed = layout === 'packed';
  try {
    r.driver.start();
    const steps = startSteps(r.timeline, packed, r.snap);
    const afterStartTx = r.snap(1)!;
    const afterStartRx = r.snap(0)!;
    steps.push(...(await frameOut(r, afterStartTx, packed)));
    steps.push(...(await frameIn(r, afterStartRx, packed)));
    return steps;
  } finally {
    r.close();
  }
}

// One frame out: an ARP request from the guest, read on the TAP's far end.
async function frameOut(r: TourRig, before: RingSnapshot, packed: boolean): Promise<TourStep[]> {
  const out = buildArp({ op: 1, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: new Uint8Array(6), targetIp: HOST_IP });
  const mark = r.timeline.length;
  if (!r.driver.send(out)) throw new Error('the tour could not send its frame');
  await sleep(20); // the driver reaps on the interrupt, from a microtask
  const wire = new Uint8Array(2048);
  const n = r.peer.read(wire);
  return txSteps(r.timeline.slice(mark), before, r.snap(1)!, out, n > 0 ? wire.subarray(0, n) : new Uint8Array(0), packed);
}

// One frame in: the host's ARP reply, written to the TAP's far end.
async function frameIn(r: TourRig, before: RingSnapshot, packed: boolean): Promise<TourStep[]> {
  const reply = buildArp({ op: 2, senderMac: HOST_MAC, senderIp: HOST_IP, targetMac: GUEST_MAC, targetIp: GUEST_IP });
  const mark = r.timeline.length;
  const hdr = new Uint8Array(12);
  r.peer.write(Buffer.concat([hdr, reply]));
  const deadline = Date.now() + 3000;
  while (r.received.length === 0 && Date.now() < deadline) await sleep(5);
  if (r.received.length === 0) throw new Error('the tour frame did not reach the driver');
  await sleep(10);
  return rxSteps(r.timeline.slice(mark), before, r.snap(0)!, reply, r.received[0]!, packed);
}

function startSteps(timeline: Moment[], packed: boolean, snap: (q: number) => RingSnapshot | null): TourStep[] {
  const status = timeline.filter((m) => m.e.type === 'status').map((m) => (m.e.type === 'status' ? statusNames(m.e.to) : ''));
  const features = timeline.find((m) => m.e.type === 'features')?.e;
  const ready = timeline.filter((m) => m.e.type === 'queue_ready');
  const emptyRx = ready.find((m) => m.e.type === 'queue_ready' && m.e.queue === 0)?.snap ?? undefined;
  const steps: TourStep[] = [
    {
      title: 'The driver finds the device and they agree on features',
      section: '§3.1.1 Device Initialization; §2.1 Device Status; §2.2 Feature Bits',
      text: [
        'The driver resets the device, then sets status bits one by one:',
        `  ${status.join('  ->  ')}`,
        'Between DRIVER and FEATURES_OK it reads the features the device offers and writes the subset it wants.',
        'The device keeps FEATURES_OK set only if it can work with that subset; the driver reads the status back to see.',
        features?.type === 'features' ? `Agreed: ${featureNames(features.offered & features.driver).join(' ')}` : '',
        packed
          ? 'RING_PACKED is among them: both queues use the packed layout (§2.8), one ring shared both ways.'
          : 'RING_PACKED is not: the queues use the split layout (§2.7): a descriptor table, an available ring, a used ring.',
      ],
    },
  ];
  const tx = ready.find((m) => m.e.type === 'queue_ready' && m.e.queue === 1);
  if (tx?.snap) {
    steps.push({
      title: 'The driver lays out each queue in its memory and tells the device where',
      section: packed ? '§2.8 Packed Virtqueues; §4.2.2 QueueDesc/QueueDriver/QueueDevice' : '§2.7 Split Virtqueues; §4.2.2 QueueDesc/QueueDriver/QueueDevice',
      text: [
        'Three areas per queue, at guest-physical addresses the driver chose. This is transmitq1, still empty:',
        packed
          ? 'the descriptor ring (16 bytes each: addr, len, id, flags), and two 4-byte event suppression structures.'
          : 'the descriptor table (16 bytes each: addr, len, flags, next), the available ring (the driver writes), the used ring (the device writes).',
        'Queue size 4 keeps the tables short; Linux uses 256 or more.',
      ],
      ring: { snapshot: tx.snap },
    });
  }
  const rx = snap(0);
  if (rx) {
    steps.push({
      title: 'The driver posts receive buffers before any frame arrives',
      section: '§5.1.6.3 Setting Up Receive Buffers',
      text: [
        'receiveq1 gets four empty 2048-byte buffers, each one device-writable descriptor (WRITE).',
        'With MRG_RXBUF a frame may spread over several of them; the header says how many (num_buffers).',
        packed
          ? 'Each descriptor is made available by setting its AVAIL flag equal to the driver wrap counter (1 on the first lap) and USED to its inverse.'
          : 'Each buffer head goes into avail.ring, then avail.idx moves on, which is what the device watches.',
      ],
      ring: { snapshot: rx, ...(emptyRx ? { before: emptyRx } : {}) },
    });
  }
  return steps;
}

function find(ms: Moment[], type: TraceEvent['type'], queue: number): Moment | undefined {
  return ms.find((m) => m.e.type === type && 'queue' in m.e && m.e.queue === queue);
}

function describeDecision(e: TraceEvent): string {
  if (e.type !== 'notify_decision') return '';
  if (e.layout === 'split') {
    return e.mode === 'event_idx'
      ? `used_event is ${e.usedEvent}; the used index moved ${e.old} -> ${e.new}; vring_need_event(${e.usedEvent}, ${e.new}, ${e.old}) is ${e.send}: ${e.send ? 'interrupt' : 'no interrupt'}.`
      : `avail.flags is ${e.flags}: ${e.send ? 'interrupt' : 'no interrupt'}.`;
  }
  return e.mode === 'event_idx'
    ? `the driver's event is at offset ${e.eventOffset} wrap ${e.eventWrap}; the used position moved ${e.old} -> ${e.new}: ${e.send ? 'interrupt' : 'no interrupt'}.`
    : `the driver's event flags are ${['ENABLE', 'DISABLE', 'DESC'][e.flags ?? 0]}: ${e.send ? 'interrupt' : 'no interrupt'}.`;
}

function txSteps(ms: Moment[], before: RingSnapshot, after: RingSnapshot, frame: Uint8Array, wire: Uint8Array, packed: boolean): TourStep[] {
  const kick = find(ms, 'kick', 1);
  const decision = find(ms, 'notify_decision', 1);
  return [...txChainSteps(kick, find(ms, 'pop', 1), before, frame, packed), txWriteStep(wire), ...txUsedSteps(kick, decision, after, packed)];
}

// The chain made available and kicked, then popped by the device.
function txChainSteps(kick: Moment | undefined, pop: Moment | undefined, before: RingSnapshot, frame: Uint8Array, packed: boolean): TourStep[] {
  const steps: TourStep[] = [];
  if (kick?.snap) {
    steps.push({
      title: 'Out: the driver makes a chain available and kicks',
      section: packed ? '§2.8 "Driver and Device Ring Wrap Counters"; §2.9 Driver Notifications' : '§2.7 "The Virtqueue Available Ring"; §2.9 Driver Notifications',
      text: [
        `The guest sends ${describeFrame(frame)}.`,
        'The driver writes a 12-byte virtio_net_hdr and the frame into its memory and describes them with two descriptors,',
        'the header first with NEXT set, as Linux does.',
        packed
          ? 'It writes the descriptors in ring order and sets AVAIL on the first last, so the device never sees half a chain.'
          : 'It puts the chain\'s head in avail.ring and moves avail.idx on; then it kicks (the device did not ask for quiet).',
      ],
      ring: { snapshot: kick.snap, before },
    });
  }
  if (pop?.e.type === 'pop') {
    steps.push({
      title: 'Out: the device pops the chain',
      section: traceSection(pop.e),
      text: [
        packed
          ? `The device sees desc[${pop.e.at}] available (AVAIL matches its wrap counter ${pop.e.wrap}) and walks the chain; the buffer id is in the last descriptor.`
          : `avail.idx (${pop.e.availIdx}) is past the device's last_avail_idx (${pop.e.at}): avail.ring[${pop.e.at % 4}] holds head ${pop.e.head}.`,
        'It walks the descriptors, checking each lies in guest memory and readable ones come before writable ones:',
      ],
      detail: pop.e.descriptors.map((d, i) => `  descriptor ${i}: addr 0x${d.addr.toString(16)} len ${d.len} flags ${descFlagNames(d.flags)}`),
    });
  }
  return steps;
}

function txWriteStep(wire: Uint8Array): TourStep {
  return {
    title: 'Out: one writev hands the frame to the TAP',
    section: '§5.1.6.2 Packet Transmission',
    text: [
      `The device passes header and frame to the TAP as they are, in one writev of ${wire.length} bytes:`,
      'the TAP (IFF_VNET_HDR) takes the virtio_net_hdr itself, so checksum and segmentation offloads need no copy.',
      'These are the bytes the host side read:',
    ],
    detail: hexdump(wire.subarray(0, 12 + 42)),
  };
}

// The chain returned as used with the interrupt decision, then reaped by the driver.
function txUsedSteps(kick: Moment | undefined, decision: Moment | undefined, after: RingSnapshot, packed: boolean): TourStep[] {
  const steps: TourStep[] = [];
  if (decision?.snap) {
    steps.push({
      title: 'Out: the device returns the chain as used, and decides whether to interrupt',
      section: `${packed ? '§2.8 "Writing Used Descriptors"' : '§2.7 "The Virtqueue Used Ring"'}; ${traceSection(decision.e)}`,
      text: [
        packed
          ? 'The device overwrites the chain\'s first descriptor with the buffer id and sets AVAIL and USED both to its wrap counter: that marks it used.'
          : 'The device writes {id: head, len: 0} into used.ring and then moves used.idx on (a transmit buffer gets nothing written: len 0).',
        `Then the notification decision: ${describeDecision(decision.e)}`,
      ],
      ring: { snapshot: decision.snap, ...(kick?.snap ? { before: kick.snap } : {}) },
    });
  }
  steps.push({
    title: 'Out: the driver reaps the used chain',
    section: packed ? '§2.8 "Receiving Used Buffers From The Device"' : '§2.7 "Receiving Used Buffers From The Device"',
    text: [
      'On the interrupt the driver reads the used entry, frees the two descriptors for the next frame,',
      packed
        ? 'and (with EVENT_IDX) writes in its event structure where it next wants an interrupt.'
        : 'and writes used_event: where it next wants an interrupt.',
    ],
    ring: { snapshot: after, ...(decision?.snap ? { before: decision.snap } : {}) },
  });
  return steps;
}

function rxSteps(ms: Moment[], before: RingSnapshot, after: RingSnapshot, frame: Uint8Array, got: Uint8Array, packed: boolean): TourStep[] {
  const read = find(ms, 'tap_read', 0);
  // The buffers popped for this frame: up to its read.
  const upTo = read !== undefined ? ms.indexOf(read) : ms.length;
  const pops = ms.slice(0, upTo).filter((m) => m.e.type === 'pop' && m.e.queue === 0);
  const decision = find(ms, 'notify_decision', 0);
  const steps: TourStep[] = [];
  steps.push({
    title: 'In: the host sends a frame; the device takes receive buffers',
    section: packed ? '§2.8 "Driver and Device Ring Wrap Counters"' : '§2.7 "The Virtqueue Available Ring"',
    text: [
      `The host writes ${describeFrame(frame)} to the TAP.`,
      `The TAP becomes readable; the device pops ${pops.length} available buffer${pops.length === 1 ? '' : 's'} (heads ${pops.map((m) => (m.e.type === 'pop' ? m.e.head : -1)).join(', ')}),`,
      'enough for a frame of the largest size it may get (64 KiB with the guest\'s TSO); those this frame does not fill',
      'go back to the ring (un-popped) or stay held for the next frame.',
    ],
    ring: { snapshot: pops[0]?.snap ?? before, before },
  });
  if (read?.e.type === 'tap_read') {
    steps.push({
      title: 'In: one read puts the frame straight into the guest\'s buffer',
      section: '§5.1.6.4 Processing of Incoming Packets',
      text: [
        `The read gives ${read.e.bytes} bytes: the TAP's 12-byte virtio_net_hdr, then the frame, in ${read.e.buffers} buffer${read.e.buffers === 1 ? '' : 's'}.`,
        'The device sets num_buffers (bytes 10-11, little-endian) to the count of buffers the frame took.',
        'The buffer now holds:',
      ],
      detail: read.bytes ? hexdump(read.bytes) : [],
    });
  }
  if (decision?.snap) {
    steps.push({
      title: 'In: the device returns the buffer as used, with the length written',
      section: `${packed ? '§2.8 "Writing Used Descriptors"' : '§2.7 "The Virtqueue Used Ring"'}; ${traceSection(decision.e)}`,
      text: [
        packed
          ? `The used descriptor carries the buffer id and len ${read?.e.type === 'tap_read' ? read.e.bytes : '?'}; AVAIL = USED = the device's wrap counter, and WRITE says the device wrote into it.`
          : `used.ring gets {id, len ${read?.e.type === 'tap_read' ? read.e.bytes : '?'}} and used.idx moves on.`,
        `Then the notification decision: ${describeDecision(decision.e)}`,
      ],
      ring: { snapshot: decision.snap, ...(pops[0]?.snap ? { before: pops[0].snap } : {}) },
    });
  }
  steps.push({
    title: 'In: the driver takes the frame and posts the buffer again',
    section: '§5.1.6.4 Processing of Incoming Packets; §5.1.6.3 Setting Up Receive Buffers',
    text: [
      `The driver reads the used entry, skips the header and hands the guest ${describeFrame(got)}.`,
      'Then it makes the buffer available again, so the ring never runs dry.',
      packed
        ? 'The ring has wrapped: desc[0] starts the second lap, where the driver wrap counter is 0, so available now reads AVAIL=0, USED=1.'
        : 'The split ring wraps by index alone: avail.idx and used.idx run on freely, and the slot is the index modulo the size.',
    ],
    ring: { snapshot: after, ...(decision?.snap ? { before: decision.snap } : {}) },
  });
  return steps;
}
