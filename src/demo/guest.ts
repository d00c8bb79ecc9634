// The demo's guest: the TypeScript virtio-net driver talking to a NetDevice
// over the TAP, in this process, with a way to send a frame and to wait for
// the frame a step expects.
import { NetDriver, type ReceivedFrame } from '../driver/net-driver.js';
import { NetDevice } from '../net/device.js';
import type { PcapWriter } from '../net/pcap.js';
import type { Tap } from '../tap/tap.js';
import type { Tracer } from '../trace/trace.js';
import { completeChecksum, describeFrame } from '../util/packet.js';
import { DemoFailure, type DemoLog } from './log.js';

export interface DemoGuestOptions {
  layout?: 'split' | 'packed';
  tracer?: Tracer;
  capture?: PcapWriter;
  timeoutMs: number;
}

export class DemoGuest {
  readonly device: NetDevice;
  readonly driver: NetDriver;
  private readonly inbox: ReceivedFrame[] = [];
  private wake: (() => void) | null = null;
  private readonly log: DemoLog;
  private readonly timeoutMs: number;

  constructor(tap: Tap, o: DemoGuestOptions, log: DemoLog) {
    this.log = log;
    this.timeoutMs = o.timeoutMs;
    this.device = new NetDevice({
      tap,
      interrupt: (kind, queue) => this.driver.interrupt(kind, queue),
      features: { RING_PACKED: o.layout !== 'split' },
      ...(o.tracer !== undefined ? { trace: o.tracer } : {}),
      ...(o.capture !== undefined ? { capture: o.capture } : {}),
    });
    this.device.on('error', (e: Error) => log.fail(`device: ${e.message}`));
    this.driver = new NetDriver(this.device, { queueSize: 256 });
    this.driver.onFrame = (f) => {
      this.inbox.push(f);
      this.wake?.();
    };
  }

  /** Sends a frame from the guest; `why` names it if the queue is full. */
  send(frame: Uint8Array, why: string): void {
    if (!this.driver.send(frame)) throw new DemoFailure(`the transmit queue is full sending ${why}`);
    this.log.info(`guest → host  ${describeFrame(frame)}`);
  }

  /** The first received frame `match` takes (others are passed over); a DemoFailure after the timeout. */
  async receive<T>(what: string, match: (f: Uint8Array) => T | null): Promise<T> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const hit = this.take(match);
      if (hit !== null) return hit;
      const left = deadline - Date.now();
      if (left <= 0) throw new DemoFailure(`no ${what} within ${this.timeoutMs} ms`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = null;
          res();
        };
      });
    }
  }

  // Goes through the frames received so far, up to the first that matches.
  private take<T>(match: (f: Uint8Array) => T | null): T | null {
    while (this.inbox.length > 0) {
      const { frame, header } = this.inbox.shift()!;
      // A partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM, §5.1.6.4.1): complete it as a guest stack would.
      const partial = (header.flags & 1) !== 0;
      if (partial) completeChecksum(frame, header.csumStart, header.csumOffset);
      const hit = match(frame);
      if (hit !== null) {
        this.log.info(`host → guest  ${describeFrame(frame)}${partial ? ' (checksum completed from NEEDS_CSUM)' : ''}`);
        return hit;
      }
    }
    return null;
  }
}
