// Where a traced device queue reports, and the pop event both layouts emit
// (see src/trace/trace.ts). Only traced queues (traced-queue.ts) call here.
import type { TraceDescriptor, Tracer } from '../trace/trace.js';
import { chainFaultName, type DescriptorChain, Pop } from './descriptor-chain.js';

/** Where a traced queue reports. */
export interface QueueTraceTarget {
  tracer: Tracer;
  /** The virtqueue's index in its device. */
  queue: number;
}

/** The pop event for a chain just popped (`r` from popChain, not EMPTY). */
export function emitPop(
  t: QueueTraceTarget,
  layout: 'split' | 'packed',
  chain: DescriptorChain,
  r: number,
  at: number,
  where: { wrap?: number; availIdx?: number },
): void {
  const descriptors: TraceDescriptor[] = [];
  const n = Math.min(chain.descriptors, chain.capacity);
  for (let i = 0; i < n; i++) descriptors.push({ addr: chain.descAddr[i]!, len: chain.descLen[i]!, flags: chain.descFlags[i]! });
  t.tracer.emit({
    type: 'pop',
    queue: t.queue,
    layout,
    at,
    ...where,
    head: chain.head,
    result: r === Pop.CHAIN ? 'chain' : r === Pop.BAD_CHAIN ? 'bad_chain' : 'broken',
    ...(r === Pop.CHAIN ? {} : { fault: chainFaultName(chain.fault) }),
    indirect: chain.indirect,
    readableBytes: chain.readableBytes,
    writableBytes: chain.writableBytes,
    descriptors,
  });
}
