// The device's link, as the driver reads it in the config space's status
// (VIRTIO_NET_S_LINK_UP, VIRTIO 1.2 §5.1.4): up when whoever embeds the
// device says so (NetDevice.setLinkUp) and, when the device follows its TAP,
// when the host side of the TAP is up (IFF_UP; `ip link set T down` takes it
// down). The TAP's fd says nothing when its flags change, so they are read
// on a timer, unref'd so that it keeps no process alive.
import type { LinkOps } from '../tap/link.js';

/** How often the TAP's flags are read by default. */
export const LINK_POLL_MS = 250;

export class LinkState {
  private admin = true;
  private host = true;
  private timer: NodeJS.Timeout | null = null;

  /** `onChange` hears every change of `up`. */
  constructor(private readonly onChange: (up: boolean) => void) {}

  get up(): boolean {
    return this.admin && this.host;
  }

  /** The embedder's say (setAdmin). */
  get adminUp(): boolean {
    return this.admin;
  }

  /** The embedder's say. */
  setAdmin(up: boolean): void {
    this.change(() => (this.admin = up));
  }

  /**
   * Follows the host side of `link` every `everyMs`. A read that fails (the
   * TAP closed or gone) stops following: the link is left as last read and
   * `onError` hears why, unless the TAP was closed on purpose.
   */
  follow(link: LinkOps, everyMs: number, onError: (e: Error) => void): void {
    this.stop();
    const read = (): void => {
      try {
        const up = link.isUp;
        this.change(() => (this.host = up));
      } catch (e) {
        this.stop();
        if ((e as { code?: string }).code !== 'ERR_TAP_CLOSED') onError(e as Error);
      }
    };
    read();
    this.timer = setInterval(read, everyMs);
    this.timer.unref();
  }

  /** Stops following the TAP. */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private change(set: () => void): void {
    const was = this.up;
    set();
    if (this.up !== was) this.onChange(this.up);
  }
}
