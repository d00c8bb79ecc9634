// Trace events as lines for people: what happened, the values involved, and
// the section of VIRTIO 1.2 (virtio-v1.2-cs01) that says it should.
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from '../virtio/constants.js';
import { errnoName } from '../host/errors.js';
import type { TraceEvent } from './trace.js';

const STATUS_BITS: [number, string][] = [
  [VIRTIO_CONFIG_S_ACKNOWLEDGE, 'ACKNOWLEDGE'],
  [VIRTIO_CONFIG_S_DRIVER, 'DRIVER'],
  [VIRTIO_CONFIG_S_FEATURES_OK, 'FEATURES_OK'],
  [VIRTIO_CONFIG_S_DRIVER_OK, 'DRIVER_OK'],
  [VIRTIO_CONFIG_S_NEEDS_RESET, 'DEVICE_NEEDS_RESET'],
  [VIRTIO_CONFIG_S_FAILED, 'FAILED'],
];

export function statusNames(status: number): string {
  const names = STATUS_BITS.filter(([b]) => (status & b) !== 0).map(([, n]) => n);
  return names.length > 0 ? names.join('|') : '0';
}

export function descFlagNames(flags: number): string {
  const names: string[] = [];
  if ((flags & VIRTQ_DESC_F_NEXT) !== 0) names.push('NEXT');
  if ((flags & VIRTQ_DESC_F_WRITE) !== 0) names.push('WRITE');
  if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) names.push('INDIRECT');
  if ((flags & VIRTQ_DESC_F_AVAIL) !== 0) names.push('AVAIL');
  if ((flags & VIRTQ_DESC_F_USED) !== 0) names.push('USED');
  return names.length > 0 ? names.join('|') : '-';
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/** The spec section each kind of event follows. */
export function traceSection(e: TraceEvent): string {
  const ring = 'layout' in e && e.layout === 'packed' ? '§2.8' : '§2.7';
  switch (e.type) {
    case 'status':
      return '§2.1 Device Status Field; §3.1.1 Device Initialization';
    case 'features':
      return '§2.2 Feature Bits; §3.1.1 step 5-6 (FEATURES_OK)';
    case 'reset':
      return '§2.4 Device Reset';
    case 'broken':
      return '§2.1.2 DEVICE_NEEDS_RESET';
    case 'queue_ready':
      return `${ring} ${e.layout === 'packed' ? 'Packed' : 'Split'} Virtqueues; §3.1.1 step 7`;
    case 'kick':
      return '§2.9 Driver Notifications';
    case 'pop':
      return e.layout === 'packed'
        ? '§2.8 "Driver and Device Ring Wrap Counters", "Scatter-Gather Support"'
        : '§2.7 "The Virtqueue Available Ring", "The Virtqueue Descriptor Table"';
    case 'unpop':
      return `${ring}: the device has not used these buffers yet; it reads them again later`;
    case 'used':
      return e.layout === 'packed' ? '§2.8 "Writing Used Descriptors"' : '§2.7 "The Virtqueue Used Ring"';
    case 'notify_decision':
      return e.layout === 'packed' ? '§2.8 "Event Suppression Structure Format"' : '§2.7 "Used Buffer Notification Suppression"';
    case 'kick_suppression':
      return e.layout === 'packed' ? '§2.8 "Event Suppression Structure Format"' : '§2.7 "Available Buffer Notification Suppression"';
    case 'interrupt':
      return '§2.3 Notifications';
    case 'tap_write':
      return '§5.1.6.2 Packet Transmission';
    case 'tap_read':
      return '§5.1.6.4 Processing of Incoming Packets';
    case 'drop':
      return e.reason.startsWith('tx') ? '§5.1.6.2 Packet Transmission' : '§5.1.6.4 Processing of Incoming Packets';
  }
}

/** One readable line for an event. */
export function traceToText(e: TraceEvent): string {
  const head = `#${e.seq} ${e.t.toFixed(3).padStart(9)}ms`;
  return `${head} ${describe(e)}  [${traceSection(e)}]`;
}

function describe(e: TraceEvent): string {
  switch (e.type) {
    case 'status':
      return `status ${statusNames(e.from)} -> ${statusNames(e.to)}`;
    case 'features': {
      const names = (e.names ?? [hex(Number(e.driver & e.offered & 0xffffffffffffn))]).join(' ');
      return e.accepted
        ? `features accepted: ${names || '(none)'}`
        : `features refused (${e.reason ?? 'not a subset of the offer'}): driver asked ${hex(Number(e.driver & 0xffffffffffffn))}`;
    }
    case 'reset':
      return 'reset: status 0, queues forgotten';
    case 'broken':
      return `ring corrupt (${e.reason}): DEVICE_NEEDS_RESET set, config interrupt`;
    case 'queue_ready':
      return (
        `queue ${e.queue} ready: ${e.layout}, size ${e.size}, desc ${hex(e.desc)}, driver ${hex(e.driver)}, device ${hex(e.device)}` +
        `${e.eventIdx ? ', EVENT_IDX' : ''}${e.indirect ? ', INDIRECT_DESC' : ''}${e.inOrder ? ', IN_ORDER' : ''}`
      );
    case 'kick':
      return `kick: the driver notified queue ${e.queue}`;
    case 'pop': {
      const where = e.layout === 'packed' ? `desc[${e.at}] wrap ${e.wrap}` : `avail.ring[${e.at % 65536}] (avail.idx ${e.availIdx})`;
      const ds = e.descriptors.map((d) => `{${hex(d.addr)} len ${d.len} ${descFlagNames(d.flags)}}`).join(' ');
      const what = e.result === 'chain' ? `${e.readableBytes} readable, ${e.writableBytes} writable bytes` : `${e.result}: ${e.fault ?? ''}`;
      return `q${e.queue} pop ${where}: head ${e.head}${e.indirect ? ' (indirect)' : ''}, ${what} ${ds}`;
    }
    case 'unpop':
      return `q${e.queue} position set: the next pop reads ${e.wrap === undefined ? `avail index ${e.to}` : `desc[${e.to}] wrap ${e.wrap}`}`;
    case 'used':
      return e.layout === 'packed'
        ? `q${e.queue} used: id ${e.id} len ${e.len} written at desc[${e.at}] with AVAIL=USED=${e.wrap}`
        : `q${e.queue} used: used.ring[${e.at % 65536 }] = {id ${e.id}, len ${e.len}}`;
    case 'notify_decision': {
      let why: string;
      if (e.layout === 'split') {
        why =
          e.mode === 'event_idx'
            ? `vring_need_event(used_event ${e.usedEvent}, new ${e.new}, old ${e.old}) = ${e.send}`
            : `avail.flags ${e.flags} (NO_INTERRUPT ${(e.flags ?? 0) & 1}), used.idx ${e.old} -> ${e.new}`;
      } else {
        why =
          e.mode === 'event_idx'
            ? `driver off_wrap {off ${e.eventOffset}, wrap ${e.eventWrap}}, position ${e.old} -> ${e.new}, used wrap ${e.usedWrap}`
            : `driver event flags ${e.flags} (${['ENABLE', 'DISABLE', 'DESC', '?'][e.flags ?? 0]}), position ${e.old} -> ${e.new}`;
      }
      return `q${e.queue} ${e.send ? 'interrupt the driver' : 'no interrupt (suppressed)'}: ${why}`;
    }
    case 'kick_suppression':
      if (!e.enabled) return `q${e.queue} ask for no kicks (${e.layout === 'packed' ? 'device event flags DISABLE' : 'used.flags NO_NOTIFY'})`;
      return e.availEvent === undefined
        ? `q${e.queue} ask for kicks (${e.layout === 'packed' ? 'device event flags ENABLE' : 'used.flags 0'})`
        : `q${e.queue} ask for a kick at ${e.layout === 'packed' ? `desc ${e.availEvent} wrap ${e.wrap}` : `avail_event ${e.availEvent}`}`;
    case 'interrupt':
      return e.kind === 'config' ? 'interrupt: configuration change' : `interrupt: used buffers on queue ${e.queue}`;
    case 'tap_write':
      return `q${e.queue} TAP write ${e.bytes} bytes (header included): ${e.result >= 0 ? 'sent' : errnoName(e.result)}`;
    case 'tap_read':
      return `q${e.queue} TAP read ${e.bytes} bytes (header included) into ${e.buffers} buffer${e.buffers === 1 ? '' : 's'}`;
    case 'drop':
      return `q${e.queue} drop: ${e.reason}`;
  }
}
