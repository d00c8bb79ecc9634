// Counters of the net device: every frame is delivered or counted here.

/** Why a frame was not delivered. */
export const DROP_REASONS = [
  'tx_bad_chain', // tier-1 descriptor fault on the transmit queue
  'tx_writable_descriptor', // a transmit chain with device-writable buffers
  'tx_too_short', // shorter than the header and an Ethernet header
  'tx_too_long', // longer than any frame the TAP takes
  'tx_bad_header', // virtio_net_hdr uses what was not negotiated, or points outside the frame
  'tx_tap_rejected', // the TAP refused the frame (EINVAL, EMSGSIZE...)
  'tx_link_down', // the link is down: the device's (config status, §5.1.4) or the TAP's (EIO)
  'rx_bad_chain', // tier-1 descriptor fault on a receive queue
  'rx_buffer_too_small', // a receive chain smaller than §5.1.6.3.1 requires
  'rx_frame_truncated', // a frame larger than the buffers offered for it
  'rx_filtered_unicast',
  'rx_filtered_multicast',
  'rx_filtered_broadcast',
  'rx_filtered_vlan',
  'rx_tap_error', // a read error other than EAGAIN
  'rx_held_at_reset', // read and held for want of buffers when the queue stopped (a reset)
] as const;

export type DropReason = (typeof DROP_REASONS)[number];


/** The counters besides the drops, by name. */
export const COUNTERS = [
  'txPackets',
  'txBytes',
  'rxPackets',
  'rxBytes',
  'rxNoBuffer',
  'txTapFull',
  'tapErrors',
  'interrupts',
  'notificationsSuppressed',
  'kicks',
  'txThrottled',
  'rxThrottled',
  'configWritesRefused',
] as const;

export type CounterName = (typeof COUNTERS)[number];
const SCALARS = COUNTERS;

/**
 * The device's counters, kept in a Float64Array: a queue pair in a worker
 * thread counts into a SharedArrayBuffer that the device reads at any time.
 */
export class NetMetrics {
  /** Doubles a NetMetrics store holds. */
  static readonly SIZE = SCALARS.length + DROP_REASONS.length;
  readonly store: Float64Array;
  readonly drops: Record<DropReason, number>;
  /** Frames and bytes each way (bytes include the virtio-net header). */
  declare txPackets: number;
  declare txBytes: number;
  declare rxPackets: number;
  declare rxBytes: number;
  /** Times a frame was waiting on the TAP and the guest had posted no receive buffer. */
  declare rxNoBuffer: number;
  /** Transmit attempts that found the TAP's queue full (the chain waited). */
  declare txTapFull: number;
  /** Host errors on the TAP (tier 3). */
  declare tapErrors: number;
  /** Interrupts raised, and the decisions not to raise one. */
  declare interrupts: number;
  declare notificationsSuppressed: number;
  /** Kicks received. */
  declare kicks: number;
  /** Times a rate limiter made a direction wait. */
  declare txThrottled: number;
  declare rxThrottled: number;
  /** Driver writes to the config space refused (it is read-only, §5.1.4). */
  declare configWritesRefused: number;

  constructor(store: Float64Array = new Float64Array(NetMetrics.SIZE)) {
    if (store.length < NetMetrics.SIZE) throw new RangeError(`a NetMetrics store needs ${NetMetrics.SIZE} doubles`);
    this.store = store;
    const drops = {} as Record<DropReason, number>;
    DROP_REASONS.forEach((r, i) => {
      const at = SCALARS.length + i;
      Object.defineProperty(drops, r, { get: () => store[at]!, set: (v: number) => (store[at] = v), enumerable: true });
    });
    this.drops = drops;
  }

  /** Adds another's counters to these (a worker's into the device's total). */
  add(other: NetMetrics): void {
    for (let i = 0; i < NetMetrics.SIZE; i++) this.store[i] = this.store[i]! + other.store[i]!;
  }

  /** Every counter by name, and the drops by reason (a snapshot's part). */
  counters(): { counters: Record<CounterName, number>; drops: Record<DropReason, number> } {
    const counters = {} as Record<CounterName, number>;
    SCALARS.forEach((n, i) => (counters[n] = this.store[i]!));
    return { counters, drops: { ...this.drops } };
  }

  /** Sets every counter (a restore). */
  setCounters(counters: Record<CounterName, number>, drops: Record<DropReason, number>): void {
    SCALARS.forEach((n, i) => (this.store[i] = counters[n]));
    for (const r of DROP_REASONS) this.drops[r] = drops[r];
  }

  get dropped(): number {
    let n = 0;
    for (const r of DROP_REASONS) n += this.drops[r];
    return n;
  }

  snapshot(): Record<string, number | Record<string, number>> {
    return {
      txPackets: this.txPackets,
      txBytes: this.txBytes,
      rxPackets: this.rxPackets,
      rxBytes: this.rxBytes,
      rxNoBuffer: this.rxNoBuffer,
      txTapFull: this.txTapFull,
      tapErrors: this.tapErrors,
      interrupts: this.interrupts,
      notificationsSuppressed: this.notificationsSuppressed,
      kicks: this.kicks,
      txThrottled: this.txThrottled,
      rxThrottled: this.rxThrottled,
      configWritesRefused: this.configWritesRefused,
      dropped: this.dropped,
      drops: { ...this.drops },
    };
  }

  /** Prometheus text exposition format, with an `interface` label. */
  toPrometheus(ifname: string): string {
    const l = `interface="${escapeLabel(ifname)}"`;
    const lines: string[] = [];
    const metric = (name: string, help: string, type: string, samples: [string, number][]) => {
      lines.push(`# HELP virtio_tap_${name} ${help}`, `# TYPE virtio_tap_${name} ${type}`);
      for (const [labels, v] of samples) lines.push(`virtio_tap_${name}{${labels}} ${v}`);
    };
    metric('packets_total', 'Frames moved, by direction.', 'counter', [
      [`${l},direction="tx"`, this.txPackets],
      [`${l},direction="rx"`, this.rxPackets],
    ]);
    metric('bytes_total', 'Bytes moved (virtio-net header included), by direction.', 'counter', [
      [`${l},direction="tx"`, this.txBytes],
      [`${l},direction="rx"`, this.rxBytes],
    ]);
    metric('drops_total', 'Frames not delivered, by reason.', 'counter', DROP_REASONS.map((r) => [`${l},reason="${r}"`, this.drops[r]]));
    metric('rx_no_buffer_total', 'Times frames waited because no receive buffer was posted.', 'counter', [[l, this.rxNoBuffer]]);
    metric('tx_tap_full_total', 'Transmits that waited for the TAP to become writable.', 'counter', [[l, this.txTapFull]]);
    metric('tap_errors_total', 'Host errors on the TAP.', 'counter', [[l, this.tapErrors]]);
    metric('interrupts_total', 'Used-buffer and config interrupts raised.', 'counter', [[l, this.interrupts]]);
    metric('notifications_suppressed_total', 'Interrupts the driver asked not to get.', 'counter', [[l, this.notificationsSuppressed]]);
    metric('kicks_total', 'Driver notifications received.', 'counter', [[l, this.kicks]]);
    metric('throttled_total', 'Times a rate limiter made a direction wait.', 'counter', [
      [`${l},direction="tx"`, this.txThrottled],
      [`${l},direction="rx"`, this.rxThrottled],
    ]);
    metric('config_writes_refused_total', 'Driver writes to the read-only config space refused.', 'counter', [[l, this.configWritesRefused]]);
    return `${lines.join('\n')}\n`;
  }
}

SCALARS.forEach((name, i) => {
  Object.defineProperty(NetMetrics.prototype, name, {
    get(this: NetMetrics) {
      return this.store[i]!;
    },
    set(this: NetMetrics, v: number) {
      this.store[i] = v;
    },
  });
});

/** A label value as the Prometheus text exposition format writes it: backslash, double quote and newline escaped. */
export function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}
